//! herald-registry: webhook definitions, the REST API and the projection of
//! webhooks into NATS for the workers.

pub mod api;
pub mod auth;
pub mod config;
pub mod deliveries;
pub mod error;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod principal;
pub mod projection;
pub mod service;
pub mod state;
pub mod store;
pub mod ui;

use std::sync::Arc;

use anyhow::Context as _;
use secrecy::ExposeSecret as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
use projection::Projector;
use state::AppState;
use store::Store;

/// A registry that has connected to its database and NATS and is ready to
/// serve.
#[derive(Debug)]
pub struct Registry {
    state: AppState,
}

impl Registry {
    /// Connects, migrates, provisions NATS and reconciles the projection once.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let store = Store::connect(&config.database_url, config.keyring.clone()).await?;
        if config.keyring.is_empty() {
            tracing::warn!(
                "NO ENCRYPTION KEY: signing secrets are stored in the clear in the database and \
                 in the herald-webhooks bucket, where anyone who can read either holds every \
                 tenant's signing key. Set HERALD_ENCRYPTION_KEY (openssl rand -base64 32) on \
                 the registry and on every worker."
            );
        } else {
            let resealed = store
                .reseal_secrets()
                .await
                .context("cannot reseal signing secrets with the current encryption key")?;
            tracing::info!(
                keys = ?config.keyring.key_ids().collect::<Vec<_>>(),
                resealed,
                "signing secrets sealed at rest; the first key seals"
            );
        }
        let nats = herald_bus::connect(&config.nats_url, "herald-registry").await?;
        let js = async_nats::jetstream::new(nats.clone());
        let topology = herald_bus::ProvisionOptions {
            replicas: config.stream_replicas,
            ..herald_bus::ProvisionOptions::default()
        };
        herald_bus::Topology::provision_registry(&js, &topology)
            .await
            .context("cannot provision Herald's NATS streams")?;
        let bucket = herald_bus::WebhookBucket::open(&js)
            .await
            .context("cannot open the webhook bucket")?;
        let projector = Projector::new(bucket, config.keyring.clone());
        let report = projector
            .reconcile(&store)
            .await
            .context("initial reconciliation failed")?;
        tracing::info!(?report, "webhook projections reconciled");
        let metrics = Arc::new(metrics::RegistryMetrics::new());
        metrics.reconciled(&report);
        let admin_key_hash = store::hash_key(config.admin_api_key.expose_secret()).into();
        let state = AppState {
            store,
            projector,
            config: Arc::new(config),
            admin_key_hash,
            log_notices: live::LogNotices::new(nats.clone()),
            metrics,
            nats,
            js,
        };
        Ok(Self { state })
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    pub fn projector(&self) -> &Projector {
        &self.state.projector
    }

    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` is cancelled, reconciling in the
    /// background.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let reconciler = tokio::spawn(self.state.projector.clone().run_reconciler(
            self.state.store.clone(),
            self.state.config.reconcile_interval,
            self.state.metrics.clone(),
            shutdown.clone(),
        ));
        let purge = tokio::spawn(purge_expired(
            self.state.store.clone(),
            self.state.config.idempotency_ttl,
            shutdown.clone(),
        ));
        let ingest = tokio::spawn(deliveries::run_ingest(
            self.state.js.clone(),
            self.state.store.clone(),
            self.state.projector.clone(),
            self.state.log_notices.clone(),
            self.state.metrics.clone(),
            shutdown.clone(),
        ));
        let notices = tokio::spawn(self.state.log_notices.clone().run(shutdown.clone()));
        let address = listener.local_addr().context("listener has no address")?;
        tracing::info!(%address, "herald-registry listening");
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .context("HTTP server failed")?;
        shutdown.cancel();
        for (name, task) in [
            ("reconciler", reconciler),
            ("outcome ingest", ingest),
            ("purge", purge),
            ("delivery log notices", notices),
        ] {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, task = name, "background task ended abnormally");
            }
        }
        self.state.store.close().await;
        Ok(())
    }
}

/// Forgets idempotency keys older than `ttl` and expired console sessions,
/// every tenth of `ttl`.
async fn purge_expired(store: Store, ttl: std::time::Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval((ttl / 10).max(std::time::Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(error) = store.purge_idempotency_keys(ttl).await {
            tracing::warn!(
                error = format!("{:#}", anyhow::Error::from(error)),
                "purging idempotency keys failed"
            );
        }
        if let Err(error) = store.purge_sessions().await {
            tracing::warn!(
                error = format!("{:#}", anyhow::Error::from(error)),
                "purging expired console sessions failed"
            );
        }
    }
}

/// Runs the registry on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    Registry::build(config)
        .await?
        .serve(listener, shutdown)
        .await
}
