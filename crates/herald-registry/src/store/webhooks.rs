//! Webhooks and their signing secrets, always within an [`AccountScope`].

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use herald_core::{
    AccountId, EventFilter, EventPattern, EventType, SigningSecret, WebhookId, WebhookUrl,
};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, Condition, ConnectionTrait, EntityTrait as _,
    QueryFilter as _, QueryOrder as _, QuerySelect as _, Set,
};
use secrecy::{ExposeSecret as _, SecretString};

use super::entities::{webhook, webhook_secret};
use super::{AccountScope, Page, Store, StoreError, StoreResult, decode_cursor, now, page};

#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: WebhookId,
    pub account: AccountId,
    pub name: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub events: EventFilter,
    pub url: WebhookUrl,
    pub version: u64,
    /// Why Herald disabled the webhook by itself (e.g. the endpoint answered
    /// 410 Gone); cleared when a person enables it again.
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug)]
pub struct NewWebhook {
    pub name: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub events: EventFilter,
    pub url: WebhookUrl,
    pub secret: SigningSecret,
}

#[derive(Debug, Default)]
pub struct WebhookPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
    pub events: Option<EventFilter>,
    pub url: Option<WebhookUrl>,
}

#[derive(Debug, Default, Clone)]
pub struct WebhookFilter {
    pub enabled: Option<bool>,
    /// Only webhooks that would receive this event type.
    pub event: Option<EventType>,
}

#[derive(Debug)]
pub struct SecretRecord {
    pub secret: SigningSecret,
    pub created_at: DateTime<Utc>,
    /// None for the current secret.
    pub expires_at: Option<DateTime<Utc>>,
}

fn events_to_json(events: &EventFilter) -> String {
    let patterns: Vec<&str> = events.patterns().iter().map(EventPattern::as_str).collect();
    // Serialising a list of strings cannot fail.
    serde_json::to_string(&patterns).unwrap_or_else(|_| "[]".into())
}

fn events_from_json(text: &str) -> anyhow::Result<EventFilter> {
    let patterns: Vec<String> = serde_json::from_str(text).context("stored events are not JSON")?;
    let patterns = patterns
        .iter()
        .map(|p| EventPattern::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .context("stored event pattern is invalid")?;
    Ok(EventFilter::new(patterns))
}

impl TryFrom<webhook::Model> for Webhook {
    type Error = StoreError;

    fn try_from(row: webhook::Model) -> StoreResult<Self> {
        Ok(Self {
            id: WebhookId::parse(&row.id).context("stored webhook id is invalid")?,
            account: AccountId::parse(&row.account_id).context("stored account id is invalid")?,
            name: row.name,
            description: row.description,
            enabled: row.enabled,
            events: events_from_json(&row.events)?,
            url: WebhookUrl::parse(&row.url).context("stored webhook URL is invalid")?,
            version: u64::try_from(row.version).context("stored version is negative")?,
            disabled_reason: row.disabled_reason,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// How many rows a filtered list reads at a time while filling a page.
const SCAN_BATCH: u64 = 200;

impl Store {
    pub async fn create_webhook(
        &self,
        scope: &AccountScope,
        new: NewWebhook,
    ) -> StoreResult<Webhook> {
        let at = now();
        let id = WebhookId::new();
        let txn = self.write().await?;
        let row = webhook::ActiveModel {
            id: Set(id.to_string()),
            account_id: Set(scope.account().to_string()),
            name: Set(new.name),
            description: Set(new.description),
            enabled: Set(new.enabled),
            events: Set(events_to_json(&new.events)),
            url: Set(new.url.to_string()),
            version: Set(1),
            disabled_reason: Set(None),
            created_at: Set(at),
            updated_at: Set(at),
        }
        .insert(&txn)
        .await?;
        self.insert_secret(&txn, &id, &new.secret, at).await?;
        txn.commit().await?;
        row.try_into()
    }

    async fn insert_secret(
        &self,
        conn: &impl ConnectionTrait,
        webhook: &WebhookId,
        secret: &SigningSecret,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let sealed = self.keyring.seal(
            &SecretString::from(secret.expose_whsec()),
            webhook.as_str().as_bytes(),
        );
        webhook_secret::ActiveModel {
            id: Set(ulid::Ulid::new().to_string()),
            webhook_id: Set(webhook.to_string()),
            secret: Set(sealed),
            created_at: Set(at),
            expires_at: Set(None),
        }
        .insert(conn)
        .await?;
        Ok(())
    }

    pub async fn get_webhook(&self, scope: &AccountScope, id: &WebhookId) -> StoreResult<Webhook> {
        self.find_webhook_row(&self.db, scope, id).await?.try_into()
    }

    async fn find_webhook_row(
        &self,
        conn: &impl ConnectionTrait,
        scope: &AccountScope,
        id: &WebhookId,
    ) -> StoreResult<webhook::Model> {
        webhook::Entity::find_by_id(id.as_str())
            .filter(webhook::Column::AccountId.eq(scope.account().as_str()))
            .one(conn)
            .await?
            .ok_or(StoreError::NotFound("webhook"))
    }

    /// The webhook's row, locked until the transaction `txn` ends (on
    /// PostgreSQL; SQLite's write transactions hold the whole database), so
    /// that concurrent writers take turns instead of failing on a version
    /// that moved under them.
    async fn lock_webhook_row(
        &self,
        txn: &impl ConnectionTrait,
        scope: &AccountScope,
        id: &WebhookId,
    ) -> StoreResult<webhook::Model> {
        webhook::Entity::find_by_id(id.as_str())
            .filter(webhook::Column::AccountId.eq(scope.account().as_str()))
            .lock_exclusive()
            .one(txn)
            .await?
            .ok_or(StoreError::NotFound("webhook"))
    }

    pub async fn list_webhooks(
        &self,
        scope: &AccountScope,
        filter: &WebhookFilter,
        cursor: Option<&str>,
        limit: u64,
    ) -> StoreResult<Page<Webhook>> {
        let mut after = cursor.and_then(decode_cursor);
        let mut matched = Vec::new();
        loop {
            let mut query = webhook::Entity::find()
                .filter(webhook::Column::AccountId.eq(scope.account().as_str()))
                .order_by_asc(webhook::Column::Id);
            if let Some(enabled) = filter.enabled {
                query = query.filter(webhook::Column::Enabled.eq(enabled));
            }
            if let Some(after) = &after {
                query = query.filter(webhook::Column::Id.gt(after.as_str()));
            }
            let rows = query.limit(SCAN_BATCH).all(&self.db).await?;
            let exhausted = (rows.len() as u64) < SCAN_BATCH;
            after = rows.last().map(|r| r.id.clone());
            for row in rows {
                let webhook = Webhook::try_from(row)?;
                if filter
                    .event
                    .as_ref()
                    .is_none_or(|t| webhook.events.matches(t))
                {
                    matched.push(webhook);
                }
            }
            if exhausted || matched.len() as u64 > limit {
                break;
            }
        }
        page(matched, limit, |w| w.id.to_string(), Ok)
    }

    /// Applies `patch` if the webhook is still at `expected_version` (when
    /// given); bumps the version.
    pub async fn update_webhook(
        &self,
        scope: &AccountScope,
        id: &WebhookId,
        expected_version: Option<u64>,
        patch: WebhookPatch,
    ) -> StoreResult<Webhook> {
        let txn = self.write().await?;
        let row = self.lock_webhook_row(&txn, scope, id).await?;
        let current = u64::try_from(row.version).context("stored version is negative")?;
        if let Some(expected) = expected_version
            && expected != current
        {
            return Err(StoreError::VersionMismatch { expected, current });
        }
        let mut active: webhook::ActiveModel = row.clone().into();
        if let Some(name) = patch.name {
            active.name = Set(name);
        }
        if let Some(description) = patch.description {
            active.description = Set(description);
        }
        if let Some(enabled) = patch.enabled {
            active.enabled = Set(enabled);
            if enabled {
                active.disabled_reason = Set(None);
            }
        }
        if let Some(events) = &patch.events {
            active.events = Set(events_to_json(events));
        }
        if let Some(url) = &patch.url {
            active.url = Set(url.to_string());
        }
        self.bump(&txn, &row, active).await?;
        let updated = self.find_webhook_row(&txn, scope, id).await?;
        txn.commit().await?;
        updated.try_into()
    }

    /// Writes `active` with version + 1, guarded by the version read, so two
    /// concurrent writers cannot both win.
    pub(super) async fn bump(
        &self,
        conn: &impl ConnectionTrait,
        row: &webhook::Model,
        mut active: webhook::ActiveModel,
    ) -> StoreResult<()> {
        active.version = Set(row.version + 1);
        active.updated_at = Set(now());
        let result = webhook::Entity::update_many()
            .set(active)
            .filter(webhook::Column::Id.eq(row.id.as_str()))
            .filter(webhook::Column::Version.eq(row.version))
            .exec(conn)
            .await?;
        if result.rows_affected == 0 {
            let current = webhook::Entity::find_by_id(row.id.as_str())
                .one(conn)
                .await?
                .ok_or(StoreError::NotFound("webhook"))?;
            return Err(StoreError::VersionMismatch {
                expected: row.version as u64,
                current: current.version as u64,
            });
        }
        Ok(())
    }

    pub async fn delete_webhook(&self, scope: &AccountScope, id: &WebhookId) -> StoreResult<()> {
        let result = webhook::Entity::delete_many()
            .filter(webhook::Column::Id.eq(id.as_str()))
            .filter(webhook::Column::AccountId.eq(scope.account().as_str()))
            .exec(&self.db)
            .await?;
        if result.rows_affected == 0 {
            return Err(StoreError::NotFound("webhook"));
        }
        Ok(())
    }

    /// The secrets that sign now: the current one first, then those still in
    /// their rotation grace period.
    pub async fn webhook_secrets(
        &self,
        scope: &AccountScope,
        id: &WebhookId,
    ) -> StoreResult<Vec<SecretRecord>> {
        self.find_webhook_row(&self.db, scope, id).await?;
        self.live_secrets(&self.db, id).await
    }

    async fn live_secrets(
        &self,
        conn: &impl ConnectionTrait,
        id: &WebhookId,
    ) -> StoreResult<Vec<SecretRecord>> {
        let rows = webhook_secret::Entity::find()
            .filter(webhook_secret::Column::WebhookId.eq(id.as_str()))
            .filter(
                Condition::any()
                    .add(webhook_secret::Column::ExpiresAt.is_null())
                    .add(webhook_secret::Column::ExpiresAt.gt(now())),
            )
            .order_by_asc(webhook_secret::Column::Id)
            .all(conn)
            .await?;
        let mut secrets = rows
            .into_iter()
            .map(|row| {
                let opened = self
                    .keyring
                    .open(&row.secret, id.as_str().as_bytes())
                    .context("cannot open a secret")?;
                let secret = SigningSecret::parse(opened.expose_secret())
                    .context("stored secret is invalid")?;
                Ok(SecretRecord {
                    secret,
                    created_at: row.created_at,
                    expires_at: row.expires_at,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        // Current first, then the newest of the expiring ones.
        secrets.sort_by_key(|s| (s.expires_at.is_some(), std::cmp::Reverse(s.created_at)));
        Ok(secrets)
    }

    /// Makes `new` the current secret; the old one keeps signing for
    /// `grace`. Bumps the webhook's version so the projection changes.
    pub async fn rotate_secret(
        &self,
        scope: &AccountScope,
        id: &WebhookId,
        new: &SigningSecret,
        grace: Duration,
    ) -> StoreResult<Webhook> {
        let at = now();
        let expires = at + chrono::Duration::from_std(grace).context("grace period too long")?;
        let txn = self.write().await?;
        let row = self.lock_webhook_row(&txn, scope, id).await?;
        // Secrets already past their grace period are of no further use.
        webhook_secret::Entity::delete_many()
            .filter(webhook_secret::Column::WebhookId.eq(id.as_str()))
            .filter(webhook_secret::Column::ExpiresAt.lte(at))
            .exec(&txn)
            .await?;
        webhook_secret::Entity::update_many()
            .col_expr(webhook_secret::Column::ExpiresAt, Expr::value(expires))
            .filter(webhook_secret::Column::WebhookId.eq(id.as_str()))
            .filter(
                Condition::any()
                    .add(webhook_secret::Column::ExpiresAt.is_null())
                    .add(webhook_secret::Column::ExpiresAt.gt(expires)),
            )
            .exec(&txn)
            .await?;
        self.insert_secret(&txn, id, new, at)
            .await
            // Its foreign key names the webhook, deleted meanwhile.
            .map_err(|e| match e {
                StoreError::NotFound(_) => StoreError::NotFound("webhook"),
                other => other,
            })?;
        self.bump(&txn, &row, row.clone().into()).await?;
        let updated = self.find_webhook_row(&txn, scope, id).await?;
        txn.commit().await?;
        updated.try_into()
    }

    /// One page of every webhook with its live secrets, for the projection
    /// into NATS. Not tenant-scoped: only the reconciler calls it.
    pub async fn projection_page(
        &self,
        after: Option<&str>,
        limit: u64,
    ) -> StoreResult<Vec<(Webhook, Vec<SecretRecord>)>> {
        let mut query = webhook::Entity::find().order_by_asc(webhook::Column::Id);
        if let Some(after) = after {
            query = query.filter(webhook::Column::Id.gt(after));
        }
        let rows = query.limit(limit).all(&self.db).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let webhook = Webhook::try_from(row)?;
            let secrets = self.live_secrets(&self.db, &webhook.id).await?;
            out.push((webhook, secrets));
        }
        Ok(out)
    }

    /// The webhook with its live secrets, for projecting one change.
    pub async fn projection_of(
        &self,
        scope: &AccountScope,
        id: &WebhookId,
    ) -> StoreResult<(Webhook, Vec<SecretRecord>)> {
        let webhook = self.get_webhook(scope, id).await?;
        let secrets = self.live_secrets(&self.db, id).await?;
        Ok((webhook, secrets))
    }

    /// Seals again, with the keyring's sealing key, every stored secret
    /// sealed otherwise: with an older key, or not at all because no key was
    /// configured when it was made. Returns how many rows changed. A row is
    /// rewritten only if it still holds what was read, so a concurrent
    /// rotation is never overwritten; run at start-up, after which the old
    /// key can be retired once every registry has run with the new one.
    pub async fn reseal_secrets(&self) -> StoreResult<usize> {
        let Some(current) = self.keyring.sealing_prefix() else {
            return Ok(0);
        };
        let mut resealed = 0;
        let mut after = String::new();
        loop {
            // Only rows sealed otherwise are read: a start-up after no rotation reads none.
            let rows = webhook_secret::Entity::find()
                .filter(webhook_secret::Column::Secret.not_like(format!("{current}%")))
                .filter(webhook_secret::Column::Id.gt(after.as_str()))
                .order_by_asc(webhook_secret::Column::Id)
                .limit(500)
                .all(&self.db)
                .await?;
            let Some(last) = rows.last() else {
                return Ok(resealed);
            };
            after.clone_from(&last.id);
            for row in rows {
                let context = row.webhook_id.as_bytes();
                let opened = self
                    .keyring
                    .open(&row.secret, context)
                    .with_context(|| format!("cannot open the secret {} to reseal it", row.id))?;
                let changed = webhook_secret::Entity::update_many()
                    .col_expr(
                        webhook_secret::Column::Secret,
                        Expr::value(self.keyring.seal(&opened, context)),
                    )
                    .filter(webhook_secret::Column::Id.eq(row.id.as_str()))
                    .filter(webhook_secret::Column::Secret.eq(row.secret.as_str()))
                    .exec(&self.db)
                    .await?;
                resealed += usize::try_from(changed.rows_affected).unwrap_or(0);
            }
        }
    }

    /// The secret column exactly as stored, for checking that secrets are
    /// sealed at rest.
    #[doc(hidden)]
    pub async fn raw_secret_rows_for_tests(&self) -> StoreResult<Vec<String>> {
        Ok(webhook_secret::Entity::find()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| row.secret)
            .collect())
    }

    /// Whether a webhook still exists, whichever account it belongs to; for
    /// the reconciler only.
    pub async fn webhook_exists(&self, id: &WebhookId) -> StoreResult<bool> {
        Ok(webhook::Entity::find_by_id(id.as_str())
            .one(&self.db)
            .await?
            .is_some())
    }
}
