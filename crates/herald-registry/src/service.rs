//! Operations of the registry: validation against the catalogue and the
//! SSRF policy, storage, then projection. Handlers call exactly one of these.

use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_core::{
    AccountId, ApiKeyId, DeliveryId, Event, EventData, EventFilter, EventId, EventPattern,
    EventType, SigningSecret, WebhookId,
};
use herald_proto::deliveries::v1::Trigger;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::state::AppState;
use crate::store::{
    Account, ApiKey, Attempt, Delivery, DeliveryFilter, DeliveryState, DeliveryStats,
    EventTypeRecord, NewApiKey, NewWebhook, Page, PendingDelivery, SecretRecord, StoreError,
    Webhook, WebhookFilter, WebhookPatch,
};

/// The longest rotation grace period: old secrets must not sign forever.
pub const MAX_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Checks `name` as a display name: trimmed, 1–`max` characters.
pub fn display_name(field: &str, name: &str, max: usize) -> Result<String, FieldError> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if trimmed.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(trimmed.to_owned())
}

fn one(result: Result<String, FieldError>) -> ApiResult<String> {
    result.map_err(|e| ApiError::Invalid(vec![e]))
}

#[derive(Debug)]
pub struct WebhookInput {
    pub name: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub events: Vec<EventPattern>,
    pub url: herald_core::WebhookUrl,
    pub secret: Option<SigningSecret>,
}

#[derive(Debug, Default)]
pub struct WebhookChange {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
    pub events: Option<Vec<EventPattern>>,
    pub url: Option<herald_core::WebhookUrl>,
}

impl AppState {
    // Accounts ----------------------------------------------------------

    pub async fn create_account(&self, principal: &Principal, name: &str) -> ApiResult<Account> {
        principal.require_admin()?;
        let name = one(display_name("name", name, 200))?;
        Ok(self.store.create_account(&name).await?)
    }

    pub async fn list_accounts(
        &self,
        principal: &Principal,
        cursor: Option<&str>,
        limit: u64,
    ) -> ApiResult<Page<Account>> {
        principal.require_admin()?;
        Ok(self.store.list_accounts(cursor, limit).await?)
    }

    pub async fn get_account(&self, principal: &Principal, id: &AccountId) -> ApiResult<Account> {
        let scope = self.store.authorize(principal, id).await?;
        self.store
            .get_account(scope.account())
            .await?
            .ok_or(ApiError::NotFound("account"))
    }

    pub async fn rename_account(
        &self,
        principal: &Principal,
        id: &AccountId,
        name: &str,
    ) -> ApiResult<Account> {
        let scope = self.store.authorize(principal, id).await?;
        principal.require_admin()?;
        let name = one(display_name("name", name, 200))?;
        Ok(self.store.rename_account(scope.account(), &name).await?)
    }

    pub async fn delete_account(&self, principal: &Principal, id: &AccountId) -> ApiResult<()> {
        let scope = self.store.authorize(principal, id).await?;
        principal.require_admin()?;
        for webhook in self.store.delete_account(scope.account()).await? {
            self.projector.remove(&webhook).await;
        }
        Ok(())
    }

    // Webhooks ----------------------------------------------------------

    /// Checks event patterns against the catalogue: an exact type must exist
    /// and not be deprecated; a wildcard must match at least one type.
    async fn check_events(&self, patterns: Vec<EventPattern>) -> ApiResult<EventFilter> {
        let catalogue = self.store.list_event_types().await?;
        let mut errors = Vec::new();
        for (i, pattern) in patterns.iter().enumerate() {
            let field = format!("events[{i}]");
            match pattern.exact() {
                Some(exact) => match catalogue.iter().find(|t| t.name == exact.as_str()) {
                    None => errors.push(FieldError::new(
                        field,
                        format!("unknown event type {exact}; see GET /v1/event-types"),
                    )),
                    Some(t) if t.deprecated => errors.push(FieldError::new(
                        field,
                        format!("event type {exact} is deprecated"),
                    )),
                    Some(_) => {}
                },
                None => {
                    let matches_any = catalogue.iter().any(|t| {
                        herald_core::EventType::parse(&t.name).is_ok_and(|t| pattern.matches(&t))
                    });
                    if !matches_any {
                        errors.push(FieldError::new(
                            field,
                            format!(
                                "{} matches no event type in the catalogue",
                                pattern.as_str()
                            ),
                        ));
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(EventFilter::new(patterns))
        } else {
            Err(ApiError::Invalid(errors))
        }
    }

    fn check_url(&self, url: &herald_core::WebhookUrl) -> ApiResult<()> {
        self.config
            .address_policy
            .check_url(url)
            .map_err(|forbidden| ApiError::field("url", forbidden.to_string()))
    }

    fn check_description(description: Option<String>) -> ApiResult<Option<String>> {
        match description {
            Some(d) if d.chars().count() > 1000 => Err(ApiError::field(
                "description",
                "must be at most 1000 characters",
            )),
            other => Ok(other),
        }
    }

    pub async fn create_webhook(
        &self,
        principal: &Principal,
        account: &AccountId,
        input: WebhookInput,
    ) -> ApiResult<(Webhook, SigningSecret)> {
        let scope = self.store.authorize(principal, account).await?;
        let name = one(display_name("name", &input.name, 100))?;
        let description = Self::check_description(input.description)?;
        self.check_url(&input.url)?;
        let events = self.check_events(input.events).await?;
        let secret = input.secret.unwrap_or_else(SigningSecret::generate);
        let new = NewWebhook {
            name,
            description,
            enabled: input.enabled,
            events,
            url: input.url,
            secret: secret.clone(),
        };
        let webhook = self.store.create_webhook(&scope, new).await?;
        self.projector
            .project(&self.store, &scope, &webhook.id)
            .await;
        Ok((webhook, secret))
    }

    pub async fn list_webhooks(
        &self,
        principal: &Principal,
        account: &AccountId,
        filter: &WebhookFilter,
        cursor: Option<&str>,
        limit: u64,
    ) -> ApiResult<Page<Webhook>> {
        let scope = self.store.authorize(principal, account).await?;
        Ok(self
            .store
            .list_webhooks(&scope, filter, cursor, limit)
            .await?)
    }

    pub async fn get_webhook(
        &self,
        principal: &Principal,
        account: &AccountId,
        id: &WebhookId,
    ) -> ApiResult<Webhook> {
        let scope = self.store.authorize(principal, account).await?;
        Ok(self.store.get_webhook(&scope, id).await?)
    }

    pub async fn update_webhook(
        &self,
        principal: &Principal,
        account: &AccountId,
        id: &WebhookId,
        expected_version: Option<u64>,
        change: WebhookChange,
    ) -> ApiResult<Webhook> {
        let scope = self.store.authorize(principal, account).await?;
        let name = change
            .name
            .map(|n| one(display_name("name", &n, 100)))
            .transpose()?;
        let description = match change.description {
            Some(d) => Some(Self::check_description(d)?),
            None => None,
        };
        if let Some(url) = &change.url {
            self.check_url(url)?;
        }
        let events = match change.events {
            Some(patterns) => Some(self.check_events(patterns).await?),
            None => None,
        };
        let patch = WebhookPatch {
            name,
            description,
            enabled: change.enabled,
            events,
            url: change.url,
        };
        let webhook = self
            .store
            .update_webhook(&scope, id, expected_version, patch)
            .await?;
        self.projector
            .project(&self.store, &scope, &webhook.id)
            .await;
        Ok(webhook)
    }

    pub async fn delete_webhook(
        &self,
        principal: &Principal,
        account: &AccountId,
        id: &WebhookId,
    ) -> ApiResult<()> {
        let scope = self.store.authorize(principal, account).await?;
        self.store.delete_webhook(&scope, id).await?;
        self.projector.remove(id).await;
        Ok(())
    }

    pub async fn webhook_secrets(
        &self,
        principal: &Principal,
        account: &AccountId,
        id: &WebhookId,
    ) -> ApiResult<Vec<SecretRecord>> {
        let scope = self.store.authorize(principal, account).await?;
        Ok(self.store.webhook_secrets(&scope, id).await?)
    }

    pub async fn rotate_secret(
        &self,
        principal: &Principal,
        account: &AccountId,
        id: &WebhookId,
        secret: Option<SigningSecret>,
        grace: Option<Duration>,
    ) -> ApiResult<(Webhook, SigningSecret)> {
        let scope = self.store.authorize(principal, account).await?;
        let grace = grace.unwrap_or(DEFAULT_GRACE);
        if grace > MAX_GRACE {
            return Err(ApiError::field(
                "grace_period_seconds",
                format!("must be at most {}", MAX_GRACE.as_secs()),
            ));
        }
        let secret = secret.unwrap_or_else(SigningSecret::generate);
        let webhook = self.store.rotate_secret(&scope, id, &secret, grace).await?;
        self.projector.project(&self.store, &scope, id).await;
        Ok((webhook, secret))
    }

    // Event types -------------------------------------------------------

    pub async fn list_event_types(&self) -> ApiResult<Vec<EventTypeRecord>> {
        Ok(self.store.list_event_types().await?)
    }

    pub async fn create_event_type(
        &self,
        principal: &Principal,
        name: &herald_core::EventType,
        description: &str,
    ) -> ApiResult<EventTypeRecord> {
        principal.require_admin()?;
        Ok(self
            .store
            .create_event_type(name.as_str(), description)
            .await?)
    }

    pub async fn update_event_type(
        &self,
        principal: &Principal,
        name: &str,
        description: Option<String>,
        deprecated: Option<bool>,
    ) -> ApiResult<EventTypeRecord> {
        principal.require_admin()?;
        Ok(self
            .store
            .update_event_type(name, description, deprecated)
            .await?)
    }

    // API keys ------------------------------------------------------------

    pub async fn create_api_key(
        &self,
        principal: &Principal,
        account: &AccountId,
        name: &str,
    ) -> ApiResult<NewApiKey> {
        let scope = self.store.authorize(principal, account).await?;
        principal.require_admin()?;
        let name = one(display_name("name", name, 100))?;
        Ok(self.store.create_api_key(&scope, &name).await?)
    }

    pub async fn list_api_keys(
        &self,
        principal: &Principal,
        account: &AccountId,
    ) -> ApiResult<Vec<ApiKey>> {
        let scope = self.store.authorize(principal, account).await?;
        principal.require_admin()?;
        Ok(self.store.list_api_keys(&scope).await?)
    }

    pub async fn revoke_api_key(
        &self,
        principal: &Principal,
        account: &AccountId,
        id: &ApiKeyId,
    ) -> ApiResult<ApiKey> {
        let scope = self.store.authorize(principal, account).await?;
        principal.require_admin()?;
        Ok(self.store.revoke_api_key(&scope, id).await?)
    }
}

/// A hand-over that NATS did not take: the cause is logged, the client gets
/// a fixed message.
fn unavailable(error: anyhow::Error) -> ApiError {
    tracing::warn!(
        error = format!("{error:#}"),
        "cannot hand a task to the workers"
    );
    ApiError::Unavailable("the delivery queue is unavailable; retry shortly".into())
}

/// The most deliveries one replay hands over; replay again for more.
pub const MAX_REPLAY: u64 = 10_000;

/// Deliveries a replay reads at once.
const REPLAY_PAGE: u64 = 100;

/// How long one replay request may hand over before it answers with what it
/// did; replay again for the rest.
pub const REPLAY_TIME_LIMIT: Duration = Duration::from_secs(20);

/// What a test event carries when the caller gives no data.
const TEST_DATA: &str = r#"{"message":"This is a test event sent by Herald."}"#;

impl AppState {
    // Deliveries ----------------------------------------------------------

    pub async fn list_deliveries(
        &self,
        principal: &Principal,
        account: &AccountId,
        filter: &DeliveryFilter,
        cursor: Option<&str>,
        limit: u64,
    ) -> ApiResult<Page<Delivery>> {
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

    pub async fn get_delivery(
        &self,
        principal: &Principal,
        account: &AccountId,
        id: &DeliveryId,
    ) -> ApiResult<(Delivery, Vec<Attempt>)> {
        let scope = self.store.authorize(principal, account).await?;
        Ok(self.store.get_delivery(&scope, id).await?)
    }

    pub async fn delivery_stats(
        &self,
        principal: &Principal,
        account: &AccountId,
        webhook: &WebhookId,
    ) -> ApiResult<DeliveryStats> {
        let scope = self.store.authorize(principal, account).await?;
        self.store.get_webhook(&scope, webhook).await?;
        Ok(self.store.delivery_stats(&scope, webhook).await?)
    }

    /// Sends one delivery again, as one more attempt with the same
    /// `webhook-id`, so receivers that already processed it can tell.
    pub async fn redeliver(
        &self,
        principal: &Principal,
        account: &AccountId,
        id: &DeliveryId,
    ) -> ApiResult<Delivery> {
        let scope = self.store.authorize(principal, account).await?;
        let (delivery, _) = self.store.get_delivery(&scope, id).await?;
        let webhook = self.store.get_webhook(&scope, &delivery.webhook_id).await?;
        if !webhook.enabled {
            return Err(ApiError::Conflict(
                "the webhook is disabled; enable it before redelivering".into(),
            ));
        }
        if delivery.state == DeliveryState::Failed {
            return Err(ApiError::Conflict(
                "this delivery has a retry scheduled; redeliver once it is delivered or exhausted"
                    .into(),
            ));
        }
        self.requeue(&delivery, Trigger::Redelivery).await?;
        Ok(self.store.get_delivery(&scope, id).await?.0)
    }

    async fn requeue(&self, delivery: &Delivery, trigger: Trigger) -> ApiResult<()> {
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
        Ok(())
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
    ) -> ApiResult<usize> {
        let scope = self.store.authorize(principal, account).await?;
        let hook = self.store.get_webhook(&scope, webhook).await?;
        if !hook.enabled {
            return Err(ApiError::Conflict(
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
    ) -> ApiResult<Delivery> {
        let scope = self.store.authorize(principal, account).await?;
        let hook = self.store.get_webhook(&scope, webhook).await?;
        if !hook.enabled {
            return Err(ApiError::Conflict(
                "the webhook is disabled; enable it to test it".into(),
            ));
        }
        let event_type = match event_type {
            Some(t) => {
                match self.store.get_event_type(t.as_str()).await {
                    Ok(_) => {}
                    Err(StoreError::NotFound(_)) => {
                        return Err(ApiError::field(
                            "event_type",
                            format!("unknown event type {t}"),
                        ));
                    }
                    Err(e) => return Err(e.into()),
                }
                t
            }
            None => EventType::parse("herald.test")
                .map_err(|e| ApiError::Internal(anyhow::anyhow!("test event type: {e}")))?,
        };
        let data = match data {
            Some(d) => d,
            None => EventData::parse(TEST_DATA)
                .map_err(|e| ApiError::Internal(anyhow::anyhow!("test data: {e}")))?,
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
        Ok(self.store.get_delivery(&scope, &delivery_id).await?.0)
    }
}
