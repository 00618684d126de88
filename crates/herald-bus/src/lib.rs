//! Herald's NATS topology: streams, durable consumers, the webhook specs bucket, subjects and
//! headers, connecting, and publishing events.
//!
//! This is the only crate that spells a stream, subject, consumer, bucket or header name; the
//! others ask it. It targets nats-server 2.9 as well as current servers, which is why it avoids
//! multi-subject consumer filters and falls back from `create_key_value` to the bucket's stream.

pub mod connect;
pub mod headers;
pub mod kv;
pub mod names;
pub mod publish;
pub mod status;
pub mod tiers;
pub mod topology;
pub mod trace;

pub use connect::{ConnectError, ConnectRetry, connect, connect_with, jetstream, redact_url};
pub use kv::{Current, Held, KvError, SpecChange, SpecWatch, WebhookBucket, Written};
pub use names::DeadSource;
pub use publish::{
    Outgoing, Persistence, PublishError, PublishReceipt, Publisher, dead_letter, publish,
    publish_all,
};
pub use status::{ConsumerStatus, Status, StatusError, StreamStatus, status};
pub use tiers::{RetryTier, RetryTiers, TierError};
pub use topology::{
    BucketMade, ConsumerLimits, Ensured, LaneLimits, ProvisionOptions, ProvisionReport, Topology,
    TopologyError, create_bucket_if_missing, ensure_consumer, ensure_stream,
};

/// Any failure of this crate, for callers that handle them alike (e.g. at start-up).
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Tier(#[from] TierError),
}
