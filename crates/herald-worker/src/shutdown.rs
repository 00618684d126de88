//! Graceful shutdown: stop fetching, let work in flight finish up to a deadline, then hand what
//! is left back to NATS for immediate redelivery to another replica.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::counters::{Counters, DeadReason};

/// How long handlers get to hand their messages back once the deadline has passed; they only
/// send a NAK, so this is generous.
const HAND_BACK_GRACE: Duration = Duration::from_secs(2);

/// The stages of stopping, shared by every loop and handler.
///
/// Shared behind one `Arc`: every message's handler holds it, and cloning (or dropping) a
/// `CancellationToken` takes its tree's lock, three times per message for three tokens.
#[derive(Debug, Clone, Default)]
pub struct Stopping(Arc<Stages>);

/// See [`Stopping`].
#[derive(Debug, Default)]
pub struct Stages {
    /// Cancelled when shutdown starts: no new messages are fetched.
    pub fetch: CancellationToken,
    /// Cancelled when the deadline has passed: handlers abandon their work and NAK.
    pub hard: CancellationToken,
    /// Cancelled when the worker is dropped without a shutdown: handlers are abandoned where
    /// they stand, settling nothing, as if the process had died.
    pub crash: CancellationToken,
}

impl std::ops::Deref for Stopping {
    type Target = Stages;

    fn deref(&self) -> &Stages {
        &self.0
    }
}

impl Stopping {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `work` unless the worker crashes first, in which case it is dropped mid-way.
    pub async fn unless_crashed(&self, work: impl Future<Output = ()>) {
        tokio::select! {
            biased;
            () = self.crash.cancelled() => {}
            () = work => {}
        }
    }
}

/// Cancels the crash token when dropped, unless disarmed after an orderly shutdown.
#[derive(Debug)]
pub struct CrashGuard(Option<CancellationToken>);

impl CrashGuard {
    pub fn new(stopping: &Stopping) -> Self {
        Self(Some(stopping.crash.clone()))
    }

    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CrashGuard {
    fn drop(&mut self) {
        if let Some(crash) = self.0.take() {
            crash.cancel();
        }
    }
}

/// Hands `message` back for redelivery after `delay` (at once when `None`). A failure is only
/// logged: the server redelivers an unacknowledged message after its ack wait anyway.
pub async fn nak(message: &jetstream::Message, delay: Option<Duration>, counters: &Counters) {
    counters.nacked(1);
    if let Err(err) = message.ack_with(AckKind::Nak(delay)).await {
        tracing::warn!(
            subject = %message.subject,
            %err,
            "could not hand a message back; it is redelivered after its ack wait"
        );
    }
}

/// Runs `work` while telling the server that `message` is still being worked on, three times
/// per `ack_wait`, so that it is not redelivered meanwhile (a publish ridden out through a NATS
/// restart, a long wait). A failed progress report is only logged: the worst case is a
/// redelivery, which every handler tolerates.
pub async fn in_progress<T>(
    message: &jetstream::Message,
    ack_wait: Duration,
    work: impl Future<Output = T>,
) -> T {
    let every = (ack_wait / 3).max(Duration::from_millis(100));
    let mut ticker = tokio::time::interval_at(Instant::now() + every, every);
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticker.tick() => {
                if let Err(err) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!(subject = %message.subject, %err, "progress report failed");
                }
            }
        }
    }
}

/// Sets `message` aside in HERALD_DEAD with `reason`, counts it and acknowledges it, so that a
/// message that can never be handled does not block its stream.
pub async fn bury(
    js: &jetstream::Context,
    source: herald_bus::DeadSource,
    message: &jetstream::Message,
    (kind, reason): (DeadReason, &str),
    counters: &Counters,
) -> Result<(), herald_bus::PublishError> {
    tracing::warn!(subject = %message.subject, %reason, "message dead-lettered");
    herald_bus::dead_letter(
        js,
        source,
        reason,
        &message.subject,
        message.headers.as_ref(),
        message.payload.clone(),
    )
    .await?;
    counters.dead_letter(kind);
    ack(message).await;
    Ok(())
}

/// Acknowledges `message`. A lost ack means one redelivery, which every handler tolerates.
pub async fn ack(message: &jetstream::Message) {
    if let Err(err) = message.ack().await {
        tracing::warn!(
            subject = %message.subject,
            %err,
            "could not acknowledge a message; it will be redelivered"
        );
    }
}

/// Waits for handlers in `tracker` to finish by `deadline`, then tells the rest to hand their
/// messages back and waits briefly for them to do so. The fetch loops must already have stopped
/// (no new handlers may start).
pub async fn drain(tracker: &TaskTracker, stopping: &Stopping, deadline: Instant) {
    tracker.close();
    if tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .is_ok()
    {
        return;
    }
    tracing::warn!(
        in_flight = tracker.len(),
        "shutdown deadline passed; handing the remaining messages back"
    );
    stopping.hard.cancel();
    if tokio::time::timeout(HAND_BACK_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            in_flight = tracker.len(),
            "some handlers did not stop; their messages are redelivered after the ack wait"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_handlers_then_cuts_them_short() {
        let tracker = TaskTracker::new();
        let stopping = Stopping::new();
        let hard = stopping.hard.clone();
        tracker.spawn(async move {
            // A handler that only stops when told to.
            hard.cancelled().await;
        });
        tracker.spawn(tokio::time::sleep(Duration::from_millis(100)));
        let started = Instant::now();
        drain(&tracker, &stopping, started + Duration::from_secs(1)).await;
        assert!(stopping.hard.is_cancelled());
        assert!(tracker.is_empty());
        assert!(started.elapsed() >= Duration::from_secs(1));
    }
}
