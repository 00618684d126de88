//! Projects webhooks into the NATS KV bucket that workers read.
//!
//! The database is the source of truth. Each write projects its webhook
//! straight away; the reconciler re-projects everything at start-up and
//! periodically and removes keys whose webhook is gone, so a crash or a NATS
//! outage between the two writes heals by itself.
//!
//! Signing secrets are sealed in the bucket with the registry's keyring,
//! bound to their webhook's id, so a reader of the bucket without the key
//! holds no tenant's secret. A projection is compared with what the bucket
//! holds by opening it: a spec sealed with a retired key, or unsealed, counts
//! as changed, so the reconciler reseals the bucket after a key rotation.

use std::collections::HashSet;
use std::time::Duration;

use herald_bus::{WebhookBucket, Written};
use herald_core::{Keyring, WebhookId};
use herald_proto::webhooks::v1::{SigningKey, WebhookSpec};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::store::{AccountScope, SecretRecord, Store, StoreError, Webhook};

/// Webhooks read from the database per reconciliation step.
const RECONCILE_PAGE: u64 = 500;

/// How long a request waits for its projection before leaving it to the
/// reconciler: an API write must not hang on a NATS outage.
const PROJECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads and conditional writes a projection tries before leaving the
/// webhook to the reconciler (only under a storm of writes to it).
const PROJECT_ROUNDS: usize = 5;

#[derive(Debug, Clone)]
pub struct Projector {
    bucket: WebhookBucket,
    keyring: Keyring,
}

/// What one reconciliation changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileReport {
    pub written: usize,
    pub unchanged: usize,
    pub removed: usize,
}

/// The spec of a webhook with its secrets in the clear; [`Projector::sealed`]
/// seals them before it is written.
pub fn spec_of(webhook: &Webhook, secrets: &[SecretRecord]) -> WebhookSpec {
    WebhookSpec {
        id: webhook.id.to_string(),
        account_id: webhook.account.to_string(),
        name: webhook.name.clone(),
        enabled: webhook.enabled,
        event_patterns: webhook
            .events
            .patterns()
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        url: webhook.url.to_string(),
        signing_keys: secrets
            .iter()
            .map(|s| SigningKey {
                secret: s.secret.expose_whsec(),
                expires_at: s.expires_at.map(herald_proto::timestamp),
            })
            .collect(),
        version: webhook.version,
        updated_at: Some(herald_proto::timestamp(webhook.updated_at)),
    }
}

impl Projector {
    pub fn new(bucket: WebhookBucket, keyring: Keyring) -> Self {
        Self { bucket, keyring }
    }

    /// `spec` as it is written to the bucket: every secret sealed for its
    /// webhook.
    fn sealed(&self, spec: &WebhookSpec) -> WebhookSpec {
        let mut sealed = spec.clone();
        for key in &mut sealed.signing_keys {
            let secret = SecretString::from(std::mem::take(&mut key.secret));
            key.secret = self.keyring.seal(&secret, spec.id.as_bytes());
        }
        sealed
    }

    /// Whether the bucket's `held` spec already says what the clear `spec`
    /// says, sealed with the current key: `held` opened is `spec`.
    fn holds(&self, held: &WebhookSpec, spec: &WebhookSpec) -> bool {
        use secrecy::ExposeSecret as _;
        let mut opened = held.clone();
        for key in &mut opened.signing_keys {
            if !self.keyring.is_current(&key.secret) {
                return false;
            }
            match self.keyring.open(&key.secret, held.id.as_bytes()) {
                Ok(secret) => key.secret = secret.expose_secret().to_owned(),
                Err(_) => return false,
            }
        }
        opened == *spec
    }

    /// Projects one webhook after a write. A failure is logged, not returned:
    /// the write has committed and the reconciler will repair the bucket.
    pub async fn project(&self, store: &Store, scope: &AccountScope, id: &WebhookId) {
        let result = tokio::time::timeout(PROJECT_TIMEOUT, self.project_now(store, scope, id))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out after {PROJECT_TIMEOUT:?}")));
        if let Err(error) = result {
            tracing::warn!(
                webhook = %id,
                error = format!("{error:#}"),
                "projection failed; the reconciler will repair it"
            );
        }
    }

    /// Makes the bucket hold the database's spec of `id` (or nothing), unless it holds a newer
    /// version. The bucket is read before the database and written only if unchanged since,
    /// so a writer that read an older state (a concurrent update, or a delete) never wins: it
    /// reads both again and decides again.
    async fn project_now(
        &self,
        store: &Store,
        scope: &AccountScope,
        id: &WebhookId,
    ) -> anyhow::Result<()> {
        for _ in 0..PROJECT_ROUNDS {
            let current = self.bucket.current(id.as_str()).await?;
            let written = match store.projection_of(scope, id).await {
                Ok((webhook, secrets)) => {
                    let spec = spec_of(&webhook, &secrets);
                    match current.spec() {
                        Some(held) if held.version > spec.version || self.holds(held, &spec) => {
                            return Ok(());
                        }
                        _ => {
                            self.bucket
                                .put_if(&self.sealed(&spec), current.revision())
                                .await?
                        }
                    }
                }
                // Deleted in the database, which is final: removed whatever the bucket holds.
                Err(StoreError::NotFound(_)) => {
                    if current.spec().is_some() {
                        self.bucket.delete(id.as_str()).await?;
                    }
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            if let Written::Stored(_) = written {
                return Ok(());
            }
        }
        anyhow::bail!("the bucket kept changing under {PROJECT_ROUNDS} attempts")
    }

    /// Removes a deleted webhook's projection; failures as in [`Self::project`].
    pub async fn remove(&self, id: &WebhookId) {
        let result = tokio::time::timeout(PROJECT_TIMEOUT, self.bucket.delete(id.as_str()))
            .await
            .map_err(|_| anyhow::anyhow!("timed out after {PROJECT_TIMEOUT:?}"))
            .and_then(|r| r.map_err(anyhow::Error::from));
        if let Err(error) = result {
            tracing::warn!(
                webhook = %id,
                error = format!("{error:#}"),
                "removing a projection failed; the reconciler will repair it"
            );
        }
    }

    /// Makes the bucket equal to the database.
    ///
    /// Safe beside concurrent API writes (and other registry replicas): the
    /// bucket's keys are listed before the database is read, so a webhook
    /// created meanwhile is never taken for an orphan; every write names the
    /// revision the snapshot saw, so a spec written meanwhile (newer, by the
    /// database's order) is left to the writer that wrote it; and a spec
    /// written for a webhook that was deleted meanwhile is removed again at
    /// once.
    pub async fn reconcile(&self, store: &Store) -> anyhow::Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        // One read of the whole bucket rather than a request per webhook.
        let held = self.bucket.snapshot().await?;
        let mut live = HashSet::new();
        let mut after: Option<String> = None;
        loop {
            let page = store
                .projection_page(after.as_deref(), RECONCILE_PAGE)
                .await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.id.to_string());
            for (webhook, secrets) in &page {
                let spec = spec_of(webhook, secrets);
                live.insert(spec.id.clone());
                let expected = match held.get(&spec.id) {
                    Some(current) if self.holds(&current.spec, &spec) => {
                        report.unchanged += 1;
                        continue;
                    }
                    // Written meanwhile by a newer API write: leave it.
                    Some(current) if current.spec.version > spec.version => {
                        report.unchanged += 1;
                        continue;
                    }
                    Some(current) => current.revision,
                    // Absent from the snapshot: never written, or removed; read which.
                    None => self.bucket.current(&spec.id).await?.revision(),
                };
                match self.bucket.put_if(&self.sealed(&spec), expected).await? {
                    Written::Stored(_) => {
                        report.written += 1;
                        if !store.webhook_exists(&webhook.id).await? {
                            self.bucket.delete(&spec.id).await?;
                        }
                    }
                    // Someone wrote it since the snapshot; the next round looks again.
                    Written::Changed => report.unchanged += 1,
                }
            }
        }
        for (key, current) in &held {
            if !live.contains(key)
                && self.bucket.delete_if(key, current.revision).await?
                    == Written::Stored(current.revision)
            {
                report.removed += 1;
            }
        }
        Ok(report)
    }

    /// Reconciles now and then every `interval` until cancelled.
    pub async fn run_reconciler(
        self,
        store: Store,
        interval: Duration,
        metrics: std::sync::Arc<crate::metrics::RegistryMetrics>,
        shutdown: CancellationToken,
    ) {
        // The first reconciliation ran at start-up (`Registry::build`).
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                result = self.reconcile(&store) => result,
            };
            if let Ok(report) = &result {
                metrics.reconciled(report);
            }
            match result {
                Ok(report) if report.written + report.removed > 0 => {
                    tracing::info!(?report, "reconciled webhook projections");
                }
                Ok(report) => tracing::debug!(?report, "webhook projections up to date"),
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "reconciliation failed; will retry"
                    );
                }
            }
        }
    }
}
