//! The delivery log, its health summaries, and the deliveries the registry
//! hands to the workers itself: test events, redeliveries and replays.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use herald_core::{AccountId, DeliveryId, Event, EventData, EventId, EventType, WebhookId};
use herald_proto::deliveries::v1::Trigger;

use super::{ServiceError, ServiceResult};
use crate::principal::Principal;
use crate::state::AppState;
use crate::store::{
    Attempt, Delivery, DeliveryFilter, DeliveryState, DeliveryStats, Page, PendingDelivery,
    StoreError,
};

/// The most deliveries one replay hands over; replay again for more.
pub const MAX_REPLAY: u64 = 10_000;

/// Deliveries a replay reads at once.
const REPLAY_PAGE: u64 = 100;

/// How long one replay request may hand over before it answers with what it
/// did; replay again for the rest.
pub const REPLAY_TIME_LIMIT: Duration = Duration::from_secs(20);

/// What a test event carries when the caller gives no data.
const TEST_DATA: &str = r#"{"message":"This is a test event sent by Herald."}"#;

/// Why a delivery of an event too large to deliver is not sent again.
pub const NOT_KEPT: &str = "the event was too large to deliver and its data was not kept, \
     so this delivery cannot be sent again; publish the event again, smaller";

/// The window of the health summaries.
const HEALTH_WINDOW: TimeDelta = TimeDelta::hours(24);

/// Deliveries of one webhook created in the last 24 hours, by where they
/// stand now.
pub type WebhookHealth = DeliveryStats;

/// Attempts of one webhook in one hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourlyHealth {
    pub hour: DateTime<Utc>,
    pub delivered: u64,
    /// Attempts that failed, whether retried or the last.
    pub failed: u64,
}

/// A hand-over that NATS did not take: the cause is logged, the caller gets
/// a fixed message.
fn unavailable(error: anyhow::Error) -> ServiceError {
    tracing::warn!(
        error = format!("{error:#}"),
        "cannot hand a task to the workers"
    );
    ServiceError::Unavailable("the delivery queue is unavailable; retry shortly".into())
}

impl AppState {
    pub async fn list_deliveries(
        &self,
        principal: &Principal,
        account: &AccountId,
        filter: &DeliveryFilter,
        cursor: Option<&str>,
        limit: u64,
    ) -> ServiceResult<Page<Delivery>> {
        let scope = self.store.authorize(principal, account).await?;
        if let Some(webhook) = &filter.webhook {
            // A foreign or unknown webhook is "not found", not an empty list.
            self.store.get_webhook(&scope, webhook).await?;
        }
        Ok(self
            .store
            .list_deliveries(&scope, filter, cursor, limit)
            .await?)
    }

    /// The deliveries among `ids` that belong to `account`, in no order.
    pub async fn deliveries_by_ids(
        &self,
        principal: &Principal,
        account: &AccountId,
        ids: &[DeliveryId],
    ) -> ServiceResult<Vec<Delivery>> {
        let scope = self.store.authorize(principal, account).await?;
        Ok(self.store.deliveries_by_ids(&scope, ids).await?)
    }

    pub async fn get_delivery(
        &self,
        principal: &Principal,
        account: &AccountId,
        id: &DeliveryId,
    ) -> ServiceResult<(Delivery, Vec<Attempt>)> {
        let scope = self.store.authorize(principal, account).await?;
        Ok(self.store.get_delivery(&scope, id).await?)
    }

    pub async fn delivery_stats(
        &self,
        principal: &Principal,
        account: &AccountId,
        webhook: &WebhookId,
    ) -> ServiceResult<DeliveryStats> {
        let scope = self.store.authorize(principal, account).await?;
        self.store.get_webhook(&scope, webhook).await?;
        Ok(self.store.delivery_stats(&scope, webhook).await?)
    }

    /// Per webhook of the account, its deliveries created in the last 24
    /// hours by where they stand; webhooks without any are absent.
    pub async fn recent_health(
        &self,
        principal: &Principal,
        account: &AccountId,
    ) -> ServiceResult<HashMap<WebhookId, WebhookHealth>> {
        let scope = self.store.authorize(principal, account).await?;
        Ok(self
            .store
            .recent_stats(&scope, Utc::now() - HEALTH_WINDOW)
            .await?)
    }

    /// The webhook's attempts per hour over the last 24 hours, oldest hour
    /// first; the last bucket is the hour in progress.
    pub async fn hourly_health(
        &self,
        principal: &Principal,
        account: &AccountId,
        webhook: &WebhookId,
    ) -> ServiceResult<Vec<HourlyHealth>> {
        let scope = self.store.authorize(principal, account).await?;
        self.store.get_webhook(&scope, webhook).await?;
        let now = Utc::now();
        let current = now
            .duration_trunc(TimeDelta::hours(1))
            .map_err(|e| anyhow::anyhow!("truncating the time to the hour: {e}"))?;
        let mut hours = Vec::with_capacity(24);
        for back in (0..24).rev() {
            let hour = current - TimeDelta::hours(back);
            let (delivered, failed) = self
                .store
                .attempt_counts(webhook, hour, hour + TimeDelta::hours(1))
                .await?;
            hours.push(HourlyHealth {
                hour,
                delivered,
                failed,
            });
        }
        Ok(hours)
    }

    /// Sends one delivery again, as one more attempt with the same
    /// `webhook-id`, so receivers that already processed it can tell.
    /// Returns the delivery as it is now and the number of the attempt
    /// handed over (a fast worker may already have recorded it).
    pub async fn redeliver(
        &self,
        principal: &Principal,
        account: &AccountId,
        id: &DeliveryId,
    ) -> ServiceResult<(Delivery, u32)> {
        let scope = self.store.authorize(principal, account).await?;
        let (delivery, _) = self.store.get_delivery(&scope, id).await?;
        let webhook = self.store.get_webhook(&scope, &delivery.webhook_id).await?;
        if !webhook.enabled {
            return Err(ServiceError::Conflict(
                "the webhook is disabled; enable it before redelivering".into(),
            ));
        }
        if delivery.state == DeliveryState::Failed {
            return Err(ServiceError::Conflict(
                "this delivery has a retry scheduled; redeliver once it is delivered or exhausted"
                    .into(),
            ));
        }
        // Its attempt would be the one on its way, which the stream drops as a repeat.
        if delivery.state == DeliveryState::Pending {
            return Err(ServiceError::Conflict(
                "an attempt of this delivery is on its way; redeliver once it is answered".into(),
            ));
        }
        let attempt = self.requeue(&delivery, Trigger::Redelivery).await?;
        Ok((self.store.get_delivery(&scope, id).await?.0, attempt))
    }

    /// Hands the delivery over as its next attempt; returns that attempt's number.
    async fn requeue(&self, delivery: &Delivery, trigger: Trigger) -> ServiceResult<u32> {
        if delivery.payload_omitted {
            return Err(ServiceError::Conflict(NOT_KEPT.into()));
        }
        let event = crate::deliveries::event_of(delivery)?;
        let attempt = delivery.last_attempt + 1;
        let task =
            crate::deliveries::task(&delivery.id, &delivery.webhook_id, &event, attempt, trigger);
        // Marked first: the outcome of a fast attempt must land after it.
        self.store.mark_requeued(&delivery.id, attempt).await?;
        if let Err(error) = crate::deliveries::hand_over(&self.js, &task).await {
            // Nothing was handed over: the delivery is as it was, not pending forever.
            if let Err(e) = self
                .store
                .unmark_requeued(&delivery.id, attempt, delivery.state)
                .await
            {
                tracing::warn!(error = %e, delivery = %delivery.id, "cannot undo a pending mark");
            }
            return Err(unavailable(error));
        }
        self.log_notices
            .announce(&delivery.account, &delivery.webhook_id, &delivery.id)
            .await;
        Ok(attempt)
    }

    /// Sends every exhausted delivery of a webhook created since `since`
    /// again; returns how many were handed over. Reads them in pages and
    /// stops at [`MAX_REPLAY`] or after [`REPLAY_TIME_LIMIT`]: a replay
    /// asked again goes on where this one stopped (what was handed over is
    /// no longer exhausted).
    pub async fn replay(
        &self,
        principal: &Principal,
        account: &AccountId,
        webhook: &WebhookId,
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    ) -> ServiceResult<usize> {
        let scope = self.store.authorize(principal, account).await?;
        let hook = self.store.get_webhook(&scope, webhook).await?;
        if !hook.enabled {
            return Err(ServiceError::Conflict(
                "the webhook is disabled; enable it before replaying".into(),
            ));
        }
        let deadline = tokio::time::Instant::now() + REPLAY_TIME_LIMIT;
        let mut handed_over = 0usize;
        let mut after: Option<(DateTime<Utc>, DeliveryId)> = None;
        while (handed_over as u64) < MAX_REPLAY {
            let page = self
                .store
                .exhausted_since(
                    &scope,
                    webhook,
                    since,
                    until,
                    after.as_ref().map(|(at, id)| (*at, id)),
                    REPLAY_PAGE.min(MAX_REPLAY - handed_over as u64),
                )
                .await?;
            let Some(last) = page.last() else { break };
            after = Some((last.created_at, last.id.clone()));
            for delivery in &page {
                if tokio::time::Instant::now() >= deadline {
                    tracing::info!(handed_over, "replay stopped at its time limit");
                    return Ok(handed_over);
                }
                self.requeue(delivery, Trigger::Replay).await?;
                handed_over += 1;
            }
        }
        Ok(handed_over)
    }

    /// Sends a test event to one webhook, whatever its event filter.
    pub async fn send_test(
        &self,
        principal: &Principal,
        account: &AccountId,
        webhook: &WebhookId,
        event_type: Option<EventType>,
        data: Option<EventData>,
    ) -> ServiceResult<Delivery> {
        let scope = self.store.authorize(principal, account).await?;
        let hook = self.store.get_webhook(&scope, webhook).await?;
        if !hook.enabled {
            return Err(ServiceError::Conflict(
                "the webhook is disabled; enable it to test it".into(),
            ));
        }
        let event_type = match event_type {
            Some(t) => {
                match self.store.get_event_type(t.as_str()).await {
                    Ok(_) => {}
                    Err(StoreError::NotFound(_)) => {
                        return Err(ServiceError::field(
                            "event_type",
                            format!("unknown event type {t}"),
                        ));
                    }
                    Err(e) => return Err(e.into()),
                }
                t
            }
            None => EventType::parse("herald.test")
                .map_err(|e| anyhow::anyhow!("test event type: {e}"))?,
        };
        let data = match data {
            Some(d) => d,
            None => EventData::parse(TEST_DATA).map_err(|e| anyhow::anyhow!("test data: {e}"))?,
        };
        let event = Event {
            id: EventId::generate(),
            event_type,
            account: account.clone(),
            timestamp: Utc::now(),
            data,
        };
        let delivery_id = DeliveryId::derive(&event.id, webhook);
        let pending = PendingDelivery {
            delivery_id: delivery_id.clone(),
            webhook_id: webhook.clone(),
            event_id: event.id.to_string(),
            event_type: event.event_type.to_string(),
            event_timestamp: event.timestamp,
            payload: event.data.as_str().to_owned(),
            payload_omitted: false,
        };
        self.store.record_pending(&scope, &pending).await?;
        let task = crate::deliveries::task(&delivery_id, webhook, &event, 1, Trigger::Test);
        if let Err(error) = crate::deliveries::hand_over(&self.js, &task).await {
            // No attempt will ever be made: do not leave it pending forever.
            if let Err(e) = self.store.forget_pending(&delivery_id).await {
                tracing::warn!(error = %e, delivery = %delivery_id, "cannot forget a test delivery");
            }
            return Err(unavailable(error));
        }
        self.log_notices
            .announce(account, webhook, &delivery_id)
            .await;
        Ok(self.store.get_delivery(&scope, &delivery_id).await?.0)
    }
}
