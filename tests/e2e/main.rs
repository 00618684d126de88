//! Herald end to end: the registry's API, the projection, a worker, a real
//! receiver and the delivery log, each test with its own nats-server and
//! database.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is a failure with its message.

use herald_e2e::harness;

mod cluster;
mod flows;
mod outages;
mod secrets;
