//! herald-worker: routes published events to the webhooks that subscribe to them and delivers
//! them as signed HTTP requests, with durable retries through delay lines.

pub mod breaker;
pub mod config;
pub mod http;
pub mod index;

pub use config::{ConfigError, WorkerConfig};
