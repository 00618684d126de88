//! End-to-end tests of Herald across its services live in `e2e/`; this
//! library is empty so that Cargo has a target to hang them on.
