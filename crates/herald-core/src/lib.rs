//! Herald's domain: ids, events and subscriptions, endpoint URLs and the address policy that
//! guards them, webhook signatures, sealed secrets, and the retry policy.
//!
//! This crate does no I/O: no network, no files, no async runtime. Everything here is a value
//! and a rule about values, so every other crate can share it and tests run in microseconds.

pub mod event;
pub mod id;
pub mod net;
pub mod retry;
pub mod seal;
pub mod signing;
pub mod url;

pub use event::{Event, EventData, EventError, EventFilter, EventPattern, EventType};
pub use id::{AccountId, ApiKeyId, AttemptId, DeliveryId, EventId, IdError, Ulid, WebhookId};
pub use net::{AddressPolicy, Forbidden, Reason};
pub use retry::{Disposition, RetryError, RetrySchedule, classify, jittered, parse_retry_after};
pub use seal::{Keyring, KeyringError, SealError};
pub use signing::{
    DEFAULT_TOLERANCE, SecretError, SigningSecret, VerifyError, signature_header, verify,
};
pub use url::{UrlError, WebhookUrl};
