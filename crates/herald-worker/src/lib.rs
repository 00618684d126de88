//! herald-worker: routes published events to the webhooks that subscribe to them and delivers
//! them as signed HTTP requests, with durable retries through delay lines.
//!
//! [`Worker::start`] runs one in-process (tests, `herald dev`); [`run`] runs one until a
//! shutdown token is cancelled (`herald worker`).
//!
//! The flow, one module per step: [`watch`] keeps the [`index`] equal to the webhook bucket;
//! `router` fans each event out into delivery tasks; `sender` signs and POSTs them through the
//! [`http`] client, guarded by the [`breaker`]s and the per-webhook cap (`limits`), records
//! every attempt's outcome and schedules retries; `delay` lines hold retries until they are
//! due; `lanes` hold the backlog of a webhook at its cap, at no cost to the others. Every step acknowledges its input
//! only after its output is stored, and every output carries a message id that makes a repeated
//! step a no-op, so a crash anywhere repeats work instead of losing it.

pub mod breaker;
pub mod config;
pub mod counters;
pub mod health;
pub mod http;
pub mod index;
pub mod metrics;
pub mod watch;

mod attempt;
mod consume;
mod delay;
mod lanes;
mod limits;
mod outcomes;
mod router;
mod sender;
mod shutdown;
mod task;
mod worker;

pub use attempt::{delivery_trace_id, webhook_headers};
pub use breaker::BreakerConfig;
pub use config::{ConfigError, OutboundTrace, WorkerConfig};
pub use counters::{CounterSnapshot, Counters};
pub use health::{Health, HealthState};
pub use index::{SharedIndex, Subscription};
pub use worker::{Worker, run};
