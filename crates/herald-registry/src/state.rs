//! Shared state of the registry's request handlers.

use std::sync::Arc;

use crate::config::Config;
use crate::live::LogNotices;
use crate::metrics::RegistryMetrics;
use crate::projection::Projector;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub projector: Projector,
    pub config: Arc<Config>,
    /// Hash of the admin key, compared in constant time.
    pub admin_key_hash: Arc<str>,
    pub nats: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    /// Changes to the delivery log, for the console's live pages.
    pub log_notices: LogNotices,
    pub metrics: Arc<RegistryMetrics>,
}
