//! Support for Herald's end-to-end tests: [`harness`] starts the registry,
//! a worker and a receiver against a private nats-server and database;
//! [`browser`] (feature `browser`) drives Chromium through chromedriver for
//! the console's tests. The tests themselves are in `e2e/`, `traces/` and
//! `ui/` (and the integrators' checks in `integrators/`).

// Test support: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

#[cfg(feature = "browser")]
pub mod browser;
pub mod harness;
