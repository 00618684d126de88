//! Whether a worker is doing its job: what `/readyz` answers.
//!
//! Every loop of a worker runs until shutdown. A loop that ends before (a bug, a panic) stops
//! the worker, which is then failed: it says so here, and `herald worker` exits with an error so
//! that whatever runs it starts a fresh one, rather than staying up and ready while delivering
//! nothing.

use std::sync::{Arc, Mutex, PoisonError};

/// A worker's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthState {
    /// Consuming and delivering.
    Running,
    /// Shutting down as asked.
    Stopping,
    /// Stopped because something that must run ended; the reason says what.
    Failed(String),
}

impl HealthState {
    /// Whether the worker should get traffic (be counted as a replica that consumes).
    pub fn is_ready(&self) -> bool {
        *self == HealthState::Running
    }
}

/// A worker's shared state, cheap to clone.
#[derive(Debug, Clone)]
pub struct Health {
    state: Arc<Mutex<HealthState>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: Arc::new(Mutex::new(HealthState::Running)),
        }
    }
}

impl Health {
    pub fn state(&self) -> HealthState {
        // Updates replace the whole value, so a poisoned lock still holds a valid state.
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Marks a shutdown as asked for, unless the worker has failed already.
    pub(crate) fn stopping(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if *state == HealthState::Running {
            *state = HealthState::Stopping;
        }
    }

    pub(crate) fn failed(&self, reason: String) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = HealthState::Failed(reason);
    }
}
