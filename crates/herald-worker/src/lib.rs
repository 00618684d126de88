//! herald-worker: routes published events to the webhooks that subscribe to them and delivers
//! them as signed HTTP requests, with durable retries through delay lines.
//!
//! [`Worker::start`] runs one in-process (tests, `herald dev`); [`run`] runs one until a
//! shutdown token is cancelled (`herald worker`).

mod attempt;
pub mod breaker;
pub mod config;
mod consume;
pub mod counters;
mod delay;
pub mod http;
pub mod index;
mod router;
mod sender;
mod shutdown;
mod task;
mod watch;
mod worker;

pub use breaker::BreakerConfig;
pub use config::{ConfigError, WorkerConfig};
pub use counters::{CounterSnapshot, Counters};
pub use index::{SharedIndex, Subscription};
pub use worker::{Worker, run};
