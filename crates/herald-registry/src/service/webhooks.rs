//! Webhooks and their signing secrets.

use std::time::Duration;

use herald_core::{AccountId, EventFilter, EventPattern, SigningSecret, WebhookId, WebhookUrl};

use super::{FieldError, ServiceError, ServiceResult, display_name};
use crate::principal::Principal;
use crate::state::AppState;
use crate::store::{NewWebhook, Page, SecretRecord, Webhook, WebhookFilter, WebhookPatch};

/// The longest rotation grace period: old secrets must not sign forever.
pub const MAX_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

const MAX_NAME: usize = 100;
const MAX_DESCRIPTION: usize = 1000;

#[derive(Debug)]
pub struct WebhookInput {
    pub name: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub events: Vec<EventPattern>,
    pub url: WebhookUrl,
    pub secret: Option<SigningSecret>,
}

#[derive(Debug, Default)]
pub struct WebhookChange {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
    pub events: Option<Vec<EventPattern>>,
    pub url: Option<WebhookUrl>,
}

/// A webhook's name as it is kept: trimmed, 1–100 characters.
pub fn webhook_name(name: &str) -> ServiceResult<String> {
    display_name("name", name, MAX_NAME)
}

fn check_description(description: Option<String>) -> ServiceResult<Option<String>> {
    if let Some(d) = &description {
        super::free_text("description", d, MAX_DESCRIPTION)?;
    }
    Ok(description)
}

impl AppState {
    /// Checks event patterns against the catalogue: an exact type must exist
    /// and not be deprecated, unless the webhook already has it (`kept`: a
    /// webhook subscribed to a type keeps it when the type is deprecated, and
    /// saving the webhook again must not take it away); a wildcard must match
    /// at least one type.
    async fn check_events(
        &self,
        patterns: Vec<EventPattern>,
        kept: &[EventPattern],
    ) -> ServiceResult<EventFilter> {
        let catalogue = self.store.list_event_types().await?;
        let mut errors = Vec::new();
        for (i, pattern) in patterns.iter().enumerate() {
            let field = format!("events[{i}]");
            match pattern.exact() {
                Some(exact) => match catalogue.iter().find(|t| t.name == exact.as_str()) {
                    None => errors.push(FieldError::new(
                        field,
                        format!(
                            "unknown event type {exact}: it is not in the event type catalogue"
                        ),
                    )),
                    Some(t) if t.deprecated && !kept.contains(pattern) => errors.push(
                        FieldError::new(field, format!("event type {exact} is deprecated")),
                    ),
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
            Err(ServiceError::Invalid(errors))
        }
    }

    fn check_url(&self, url: &WebhookUrl) -> ServiceResult<()> {
        self.config
            .address_policy
            .check_url(url)
            .map_err(|forbidden| ServiceError::field("url", forbidden.to_string()))
    }

    pub async fn create_webhook(
        &self,
        principal: &Principal,
        account: &AccountId,
        input: WebhookInput,
    ) -> ServiceResult<(Webhook, SigningSecret)> {
        let scope = self.store.authorize(principal, account).await?;
        let name = webhook_name(&input.name)?;
        let description = check_description(input.description)?;
        self.check_url(&input.url)?;
        let events = self.check_events(input.events, &[]).await?;
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
    ) -> ServiceResult<Page<Webhook>> {
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
    ) -> ServiceResult<Webhook> {
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
    ) -> ServiceResult<Webhook> {
        let scope = self.store.authorize(principal, account).await?;
        let name = change.name.map(|n| webhook_name(&n)).transpose()?;
        let description = match change.description {
            Some(d) => Some(check_description(d)?),
            None => None,
        };
        if let Some(url) = &change.url {
            self.check_url(url)?;
        }
        let events = match change.events {
            Some(patterns) => {
                let current = self.store.get_webhook(&scope, id).await?;
                Some(
                    self.check_events(patterns, current.events.patterns())
                        .await?,
                )
            }
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
    ) -> ServiceResult<()> {
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
    ) -> ServiceResult<Vec<SecretRecord>> {
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
    ) -> ServiceResult<(Webhook, SigningSecret)> {
        let scope = self.store.authorize(principal, account).await?;
        let grace = grace.unwrap_or(DEFAULT_GRACE);
        if grace > MAX_GRACE {
            return Err(ServiceError::field(
                "grace_period_seconds",
                format!("must be at most {}", MAX_GRACE.as_secs()),
            ));
        }
        let secret = secret.unwrap_or_else(SigningSecret::generate);
        let webhook = self.store.rotate_secret(&scope, id, &secret, grace).await?;
        self.projector.project(&self.store, &scope, id).await;
        Ok((webhook, secret))
    }
}
