//! The worker end to end: a real nats-server, a real HTTP receiver and the worker in-process.
//! One test binary with modules, so it is linked once.

// Tests fail by panicking; unwrap and expect keep them readable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod dead;
mod delivery;
mod durability;
mod isolation;
mod recovery;
mod retries;
mod shutdown;
mod ssrf;
