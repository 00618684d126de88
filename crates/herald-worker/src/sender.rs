//! The sender: takes delivery tasks, POSTs them, records every attempt's outcome, and schedules
//! retries through the delay lines.
//!
//! A task's message is acknowledged only after its outcome (and its retry, if any) is stored, so
//! a crash at any point leads to a repeated attempt rather than a lost one.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use herald_bus::headers::{msg_id as header_msg_id, set_traceparent, traceparent};
use herald_bus::names::{header, lane_subject, outcome_subject};
use herald_bus::{DeadSource, RetryTiers};
use herald_core::RetrySchedule;
use herald_proto::CONTENT_TYPE_PROTOBUF;
use tokio::sync::OwnedSemaphorePermit;

use crate::attempt::{self, AttemptError, Attempted, Verdict, new_traceparent};
use crate::breaker::{Admission, Breakers};
use crate::counters::Counters;
use crate::http::DeliveryClient;
use crate::index::SharedIndex;
use crate::lanes::{LaneOpener, LanePass};
use crate::limits::{Slot, WebhookLimits};
use crate::shutdown::{Stopping, ack, bury, nak};
use crate::task::{Task, msg_id};

/// How long a task handed back (its aftermath could not be stored, or its webhook is not known
/// yet) waits before it is tried again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Deliveries of a task whose webhook is missing or disabled before it is dropped: enough for
/// a replica whose bucket watch lags a little behind the router's to catch up.
const MISSING_WEBHOOK_DELIVERIES: i64 = 3;

/// A task due within this long is held back with a NAK delay; one due later goes through a
/// delay line, so that long waits never sit in the consumer's pending set.
const SHORT_WAIT: Duration = Duration::from_secs(5);

/// Retries of a publish whose acknowledgement did not come, before the task is handed back.
const PUBLISH_ATTEMPTS: u32 = 3;

/// Why a task's aftermath could not be stored; the task is handed back and attempted again.
#[derive(Debug, thiserror::Error)]
pub enum SendTaskError {
    #[error("cannot publish to {subject}: {source}")]
    Publish {
        subject: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("cannot dead-letter an undecodable task: {0}")]
    DeadLetter(#[from] herald_bus::PublishError),
}

/// Shared state of the sender's handlers.
#[derive(Debug)]
pub struct Sender {
    pub js: jetstream::Context,
    pub index: SharedIndex,
    pub client: DeliveryClient,
    pub breakers: Breakers,
    /// Requests in flight per webhook, and which webhooks have a lane open here.
    pub limits: Arc<WebhookLimits>,
    /// Starts or wakes the reader of a lane the sender has moved a task to.
    pub lanes: LaneOpener,
    pub schedule: RetrySchedule,
    pub tiers: RetryTiers,
    /// Age of an event past which its tasks are no longer deferred by an open breaker.
    pub defer_limit: Duration,
    pub counters: Arc<Counters>,
    pub stopping: Stopping,
}

/// Where a task came from, and what it holds.
#[derive(Debug)]
enum Route {
    /// The shared consumer: the task needs a slot of its webhook, or moves to its lane.
    Shared,
    /// The webhook's lane, whose reader took a slot before it pulled the task.
    Lane(Slot),
}

impl Sender {
    /// Handles one task of the shared consumer from start to acknowledgement.
    pub async fn handle(
        self: Arc<Self>,
        message: jetstream::Message,
        _permit: OwnedSemaphorePermit,
    ) {
        self.settle_or_hand_back(&message, Route::Shared).await;
    }

    /// Handles one task of a webhook's lane from start to acknowledgement.
    pub async fn handle_lane(self: Arc<Self>, message: jetstream::Message, pass: LanePass) {
        let LanePass { slot, .. } = pass;
        self.settle_or_hand_back(&message, Route::Lane(slot)).await;
    }

    async fn settle_or_hand_back(&self, message: &jetstream::Message, route: Route) {
        if let Err(err) = self.process(message, route).await {
            tracing::warn!(subject = %message.subject, %err, "task not settled; it will be attempted again");
            nak(message, Some(RETRY_DELAY), &self.counters).await;
        }
    }

    async fn process(
        &self,
        message: &jetstream::Message,
        route: Route,
    ) -> Result<(), SendTaskError> {
        let task = match Task::decode(&message.payload) {
            Ok(task) => task,
            Err(err) => {
                let reason = err.to_string();
                bury(
                    &self.js,
                    DeadSource::Deliveries,
                    message,
                    &reason,
                    &self.counters,
                )
                .await?;
                return Ok(());
            }
        };

        let now = Utc::now();
        if let Some(not_before) = task.not_before
            && let Ok(early) = (not_before - now).to_std()
            && !early.is_zero()
        {
            if early <= SHORT_WAIT {
                nak(message, Some(early), &self.counters).await;
            } else {
                self.defer(message, &task, not_before).await?;
            }
            return Ok(());
        }

        let held = self.index.get(&task.webhook);
        let Some(subscription) = held.clone().filter(|s| s.enabled) else {
            // Another replica may have made this task from a spec this one has not seen yet, so
            // the verdict "gone" is only trusted once it has held for a few redeliveries.
            let delivered = message.info().map_or(1, |info| info.delivered);
            if delivered < MISSING_WEBHOOK_DELIVERIES {
                nak(message, Some(RETRY_DELAY), &self.counters).await;
                return Ok(());
            }
            // Deleted or disabled: the registry's word is final. The log says so before the
            // task goes.
            let reason = if held.is_some() {
                "not sent: the webhook is disabled"
            } else {
                "not sent: the webhook was deleted"
            };
            tracing::debug!(webhook = %task.webhook, delivery = %task.delivery_id, reason, "task dropped");
            let outcome = attempt::not_sent(&task, reason, now);
            self.publish(
                outcome_subject(&task.webhook),
                msg_id::outcome(&task),
                None,
                Bytes::from(herald_proto::encode(&outcome)),
            )
            .await?;
            self.counters.dropped(1);
            ack(message).await;
            return Ok(());
        };

        // Defence in depth: the router only makes tasks for the event's own account, so a
        // mismatch is a forged or corrupt task and must not be signed with this webhook's key.
        if subscription.account != task.event.account {
            let reason = format!(
                "task for webhook {} carries an event of another account",
                task.webhook
            );
            bury(
                &self.js,
                DeadSource::Deliveries,
                message,
                &reason,
                &self.counters,
            )
            .await?;
            return Ok(());
        }

        // The breaker first: while it is open, tasks leave the consumer for a delay line
        // instead of occupying its pending set with short NAKs. Deferring uses no attempt, so
        // an endpoint that never recovers would keep its tasks circling forever; once an event
        // is older than the whole retry span, its tasks are attempted regardless and run out
        // their schedule.
        let overdue = (now - task.event.timestamp)
            .to_std()
            .is_ok_and(|age| age > self.defer_limit);
        let admission = if overdue {
            Admission::Send
        } else {
            self.breakers.admit(&task.webhook)
        };
        let probe = match admission {
            Admission::Send => false,
            Admission::Probe => true,
            Admission::Defer(rest) => {
                let shortest = self
                    .tiers
                    .tiers()
                    .first()
                    .map_or(Duration::ZERO, herald_bus::RetryTier::delay);
                let until = now + chrono_duration(rest.max(shortest));
                self.defer(message, &task, until).await?;
                return Ok(());
            }
        };
        let slot = match route {
            Route::Lane(slot) => slot,
            Route::Shared => match self.limits.try_send(&task.webhook) {
                Some(slot) => slot,
                None => {
                    if probe {
                        self.breakers.probe_abandoned(&task.webhook);
                    }
                    self.move_to_lane(message, &task).await?;
                    return Ok(());
                }
            },
        };

        let trace = message
            .headers
            .as_ref()
            .and_then(traceparent)
            .map_or_else(new_traceparent, str::to_owned);
        let attempted = tokio::select! {
            attempted = attempt::send(&self.client, &subscription, &task, Some(&trace)) => attempted,
            () = self.stopping.hard.cancelled() => {
                nak(message, None, &self.counters).await;
                return Ok(());
            }
        };
        drop(slot);

        let verdict = attempt::decide(&task, &attempted, &self.schedule, &mut rand::rng());
        self.update_breaker(&task, &attempted, verdict, probe);
        self.settle(message, &task, &attempted, verdict, &trace)
            .await?;
        ack(message).await;
        self.count(&attempted, verdict);
        Ok(())
    }

    fn update_breaker(&self, task: &Task, attempted: &Attempted, verdict: Verdict, probe: bool) {
        let refused = matches!(
            &attempted.result,
            Err(AttemptError::Send(err)) if err.is_refused_by_policy()
        ) || matches!(attempted.result, Err(AttemptError::NoSigningSecret));
        if verdict == Verdict::Delivered {
            if self.breakers.succeeded(&task.webhook) {
                tracing::info!(webhook = %task.webhook, "endpoint recovered; circuit closed");
            }
        } else if refused {
            // Nothing reached the endpoint, so this says nothing about its health.
            if probe {
                self.breakers.probe_abandoned(&task.webhook);
            }
        } else if self.breakers.failed(&task.webhook) {
            tracing::warn!(webhook = %task.webhook, probe, "endpoint failing; circuit opened");
        }
    }

    fn count(&self, attempted: &Attempted, verdict: Verdict) {
        match verdict {
            Verdict::Delivered => self.counters.delivered(1),
            Verdict::Retry(_) => self.counters.failed(1),
            Verdict::Exhausted { disable } => {
                self.counters.exhausted(1);
                if disable {
                    self.counters.disabled(1);
                }
            }
        }
        if matches!(&attempted.result, Err(AttemptError::Send(err)) if err.is_refused_by_policy()) {
            self.counters.refused(1);
        }
    }

    /// Stores the attempt's outcome and, for a retry, the next attempt in its delay line. Both
    /// are published together and both must be acknowledged before the task is.
    async fn settle(
        &self,
        message: &jetstream::Message,
        task: &Task,
        attempted: &Attempted,
        verdict: Verdict,
        trace: &str,
    ) -> Result<(), SendTaskError> {
        let outcome = attempt::outcome(task, attempted, verdict);
        let outcome_publish = self.publish(
            outcome_subject(&task.webhook),
            msg_id::outcome(task),
            None,
            Bytes::from(herald_proto::encode(&outcome)),
        );
        let retry_publish = async {
            let Verdict::Retry(delay) = verdict else {
                return Ok(());
            };
            let next = task.attempt + 1;
            let not_before = attempted.next_at(delay);
            let tier = self.tiers.for_delay(delay);
            self.publish(
                tier.subject(),
                msg_id::retry(task, next),
                Some(trace),
                task.encode_for(next, not_before),
            )
            .await
        };
        let (outcome_stored, retry_stored) = tokio::join!(outcome_publish, retry_publish);
        outcome_stored?;
        retry_stored?;
        tracing::debug!(
            subject = %message.subject,
            delivery = %task.delivery_id,
            attempt = task.attempt,
            ?verdict,
            "attempt settled"
        );
        Ok(())
    }

    /// Moves `task`, whose webhook is at its cap, to the webhook's lane: stored there first, then
    /// acknowledged here, then the lane's reader is started or told.
    async fn move_to_lane(
        &self,
        message: &jetstream::Message,
        task: &Task,
    ) -> Result<(), SendTaskError> {
        let arrived_with = message
            .headers
            .as_ref()
            .and_then(header_msg_id)
            .map_or_else(|| msg_id::retry(task, task.attempt), str::to_owned);
        let trace = message.headers.as_ref().and_then(traceparent);
        self.publish(
            lane_subject(&task.webhook),
            msg_id::lane(&arrived_with),
            trace,
            message.payload.clone(),
        )
        .await?;
        ack(message).await;
        self.counters.laned(1);
        self.lanes.stored(&task.webhook);
        Ok(())
    }

    /// Puts `task` off until `until` through a delay line, without using an attempt.
    async fn defer(
        &self,
        message: &jetstream::Message,
        task: &Task,
        until: DateTime<Utc>,
    ) -> Result<(), SendTaskError> {
        let wait = (until - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        let tier = self.tiers.for_delay(wait);
        let trace = message.headers.as_ref().and_then(traceparent);
        self.publish(
            tier.subject(),
            msg_id::deferral(task, until),
            trace,
            task.encode_for(task.attempt, until),
        )
        .await?;
        ack(message).await;
        self.counters.deferred(1);
        Ok(())
    }

    /// Publishes with a few quick retries: a lost acknowledgement is usually a blip, and the
    /// message id makes a repeated publish harmless.
    async fn publish(
        &self,
        subject: String,
        id: String,
        trace: Option<&str>,
        payload: Bytes,
    ) -> Result<(), SendTaskError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::MSG_ID, id.as_str());
        headers.insert(header::CONTENT_TYPE, CONTENT_TYPE_PROTOBUF);
        if let Some(trace) = trace {
            set_traceparent(&mut headers, trace);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let publish = PublishMessage::build()
                .headers(headers.clone())
                .payload(payload.clone());
            let stored = match self.js.send_publish(subject.clone(), publish).await {
                Ok(ack) => ack.await.map(|_| ()),
                Err(err) => Err(err),
            };
            match stored {
                Ok(()) => return Ok(()),
                Err(err) if attempt >= PUBLISH_ATTEMPTS || self.stopping.hard.is_cancelled() => {
                    return Err(SendTaskError::Publish {
                        subject,
                        source: err.into(),
                    });
                }
                Err(err) => {
                    tracing::debug!(%subject, %err, attempt, "publish not acknowledged; retrying");
                    tokio::time::sleep(Duration::from_millis(100) * attempt).await;
                }
            }
        }
    }
}

/// A std duration as chrono's, saturating: the delays here are at most days.
pub fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}
