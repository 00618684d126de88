//! End-to-end tests of herald-registry over HTTP, with a real nats-server and
//! a fresh database per test. One test binary, so the suite links once.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is a failure with its message.

mod common;

mod accounts;
mod console;
mod deliveries;
mod event_types;
mod isolation;
mod projection;
mod robustness;
mod validation;
mod webhooks;
