//! Test support shared by every Herald integration test: a private `nats-server` per test, a
//! fresh database per test, a scriptable webhook receiver and condition waiting with deadlines.
//!
//! Nothing here is shared between tests: each fixture owns its port, its folder and its
//! database, and cleans up on drop, so tests can run in parallel and in any order.

mod database;
mod nats;
mod net;
mod receiver;
mod stream;
mod wait;

pub use database::{Backend, TestDatabase};
pub use nats::{NatsCluster, NatsServer};
pub use net::free_port;
pub use receiver::{Receiver, Recorded, Response};
pub use stream::fetch_ready;
pub use wait::{wait_for, wait_until};
