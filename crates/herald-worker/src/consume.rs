//! Pulling from a shared durable consumer in bounded batches, one handler task per message.
//!
//! Each pull asks for no more messages than there are free permits (and, for a lane, free
//! slots of its webhook), so a busy worker stops taking work (its replicas take it instead)
//! rather than buffering messages whose ack wait is running. Pull requests are short-lived: a pull lost to a NATS restart simply expires and the
//! next one is made, so the loop needs no reconnection logic of its own.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::PullConsumer;
use backon::{BackoffBuilder as _, ExponentialBackoff, ExponentialBuilder};
use futures::StreamExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::counters::Counters;
use crate::shutdown::{Stopping, nak};

/// How long one pull request waits for messages. It bounds how long a stopping worker waits
/// for messages already on their way, and how quickly a lost pull request is replaced.
pub const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// How long past [`PULL_EXPIRES`] a pull request is waited for. The server ends it at
/// `PULL_EXPIRES`; one made just as the server went away is never answered (async-nats would
/// wait five more seconds), and the next pull must go to the server once it is back.
pub const PULL_GRACE: Duration = Duration::from_secs(1);

/// How long a stopping loop waits for its open pull request to end. The server ends it at
/// [`PULL_EXPIRES`]; if it does not (a lost connection), nothing more can arrive anyway.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Where to pull from, and what a message needs before it is pulled.
pub struct Pull<Open, Acquire> {
    /// For logs: `router`, `sender`, `lane wh_…`.
    pub name: String,
    /// Opens the durable consumer; called again after errors.
    pub open: Open,
    /// Takes what handling a message needs (permits, slots): waits for one, then takes as many
    /// more as are free, up to a batch. Each pull asks for one message per item; `None` ends
    /// the loop.
    pub acquire: Acquire,
}

impl<Open, Acquire> std::fmt::Debug for Pull<Open, Acquire> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pull")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Pauses between failed attempts at something that runs until shutdown (opening a consumer,
/// pulling, reloading the bucket): backon's exponential back-off with jitter, from 50 ms up to
/// 2 s so that a recovered NATS is noticed within a couple of seconds, started over after a
/// success, and cut short by shutdown.
#[derive(Debug)]
pub struct Pauses {
    delays: ExponentialBackoff,
}

impl Pauses {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(2);

    pub fn new() -> Self {
        Pauses {
            delays: Self::builder().build(),
        }
    }

    fn builder() -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Self::FIRST)
            .with_max_delay(Self::MAX)
            .with_jitter()
            .without_max_times()
    }

    /// After a success: the next failure pauses briefly again.
    pub fn reset(&mut self) {
        self.delays = Self::builder().build();
    }

    /// Pauses before the next attempt. Returns false when `stop` was cancelled meanwhile.
    pub async fn pause(&mut self, stop: &CancellationToken) -> bool {
        let delay = self.delays.next().unwrap_or(Self::MAX);
        tokio::select! {
            () = stop.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

impl Default for Pauses {
    fn default() -> Self {
        Self::new()
    }
}

/// Waits for one permit of `permits`, then takes as many more as are free, up to `max`.
pub async fn take_permits(
    permits: Arc<Semaphore>,
    max: usize,
) -> Option<Vec<OwnedSemaphorePermit>> {
    // The semaphore is never closed; if it were, there would be nothing left to do.
    let first = permits.clone().acquire_owned().await.ok()?;
    let mut taken = vec![first];
    while taken.len() < max {
        match permits.clone().try_acquire_owned() {
            Ok(permit) => taken.push(permit),
            Err(_) => break,
        }
    }
    Some(taken)
}

/// Pulls until `stopping.fetch` is cancelled, spawning `handle(message, item)` on `tracker`
/// for each message, with one of the items `pull.acquire` took. Errors are logged and retried
/// after a bounded back-off. After a pull that brought nothing, `idle()` decides whether the
/// loop ends (lanes end when empty; the shared consumers never do). When stopping, messages
/// that arrive are handed back.
pub async fn pull_loop<Open, OpenFut, E, Acquire, AcquireFut, Item, Handle, HandleFut>(
    mut pull: Pull<Open, Acquire>,
    stopping: Stopping,
    tracker: TaskTracker,
    counters: Arc<Counters>,
    handle: Handle,
    mut idle: impl FnMut() -> bool,
) where
    Open: Fn() -> OpenFut,
    OpenFut: Future<Output = Result<PullConsumer, E>>,
    E: std::fmt::Display,
    Acquire: FnMut() -> AcquireFut,
    AcquireFut: Future<Output = Option<Vec<Item>>>,
    Handle: Fn(jetstream::Message, Item) -> HandleFut,
    HandleFut: Future<Output = ()> + Send + 'static,
{
    let name = pull.name.as_str();
    let stop = &stopping.fetch;
    let mut backoff = Pauses::new();
    let mut consumer: Option<PullConsumer> = None;
    while !stop.is_cancelled() {
        let current = match consumer.take() {
            Some(current) => current,
            None => {
                let opened = tokio::select! {
                    () = stop.cancelled() => break,
                    opened = (pull.open)() => opened,
                };
                match opened {
                    Ok(opened) => opened,
                    Err(err) => {
                        tracing::warn!(loop_name = name, %err, "cannot open the consumer; retrying");
                        backoff.pause(stop).await;
                        continue;
                    }
                }
            }
        };

        let mut items = tokio::select! {
            () = stop.cancelled() => break,
            items = (pull.acquire)() => match items {
                Some(items) if !items.is_empty() => items,
                _ => break,
            },
        };

        let batch = current
            .batch()
            .max_messages(items.len())
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(err) => {
                tracing::warn!(loop_name = name, %err, "pull request failed; retrying");
                backoff.pause(stop).await;
                continue;
            }
        };
        let mut healthy = true;
        let mut received = 0usize;
        let lost = tokio::time::sleep(PULL_EXPIRES + PULL_GRACE);
        tokio::pin!(lost);
        loop {
            let next = tokio::select! {
                biased;
                () = stop.cancelled() => {
                    hand_back(name, &mut batch, &counters).await;
                    return;
                }
                next = batch.next() => next,
                () = &mut lost => {
                    tracing::debug!(loop_name = name, "pull request unanswered; making another");
                    healthy = false;
                    break;
                }
            };
            match next {
                None => break,
                Some(Ok(message)) => {
                    backoff.reset();
                    received += 1;
                    match items.pop() {
                        Some(item) => {
                            // Boxed: a handler's future is large, and spawning it by value
                            // copies all of it (measured: memcpy near a tenth of the CPU).
                            let work = Box::pin(handle(message, item));
                            let stopping = stopping.clone();
                            tracker.spawn(async move { stopping.unless_crashed(work).await });
                        }
                        // The server sends at most the batch asked for, one item each.
                        None => nak(&message, None, &counters).await,
                    }
                }
                Some(Err(err)) => {
                    // 408/409 statuses (leadership changes, a deleted consumer, too many pending
                    // acks) end the batch; the consumer is opened again before the next pull.
                    tracing::debug!(loop_name = name, %err, "pull request ended with an error");
                    healthy = false;
                    break;
                }
            }
        }
        // Items not used go back before anything else happens.
        drop(items);
        if !healthy {
            backoff.pause(stop).await;
            continue;
        }
        consumer = Some(current);
        if received == 0 && idle() {
            return;
        }
    }
}

/// Hands back the messages of a pull request that arrive after shutdown started, so another
/// replica gets them at once instead of after the ack wait.
pub async fn hand_back(
    name: &str,
    batch: &mut jetstream::consumer::pull::Batch,
    counters: &Counters,
) {
    let drained = tokio::time::timeout(DRAIN_LIMIT, async {
        let mut handed_back = 0usize;
        while let Some(next) = batch.next().await {
            if let Ok(message) = next {
                nak(&message, None, counters).await;
                handed_back += 1;
            }
        }
        handed_back
    })
    .await;
    match drained {
        Ok(0) => {}
        Ok(handed_back) => tracing::info!(
            loop_name = name,
            handed_back,
            "handed back messages fetched during shutdown"
        ),
        Err(_) => tracing::warn!(loop_name = name, "pull request did not end while stopping"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pauses_grow_to_their_bound_start_over_and_stop_on_cancel() {
        let stop = CancellationToken::new();
        let mut pauses = Pauses::new();
        let mut lengths = Vec::new();
        for _ in 0..10 {
            let started = tokio::time::Instant::now();
            assert!(pauses.pause(&stop).await);
            lengths.push(started.elapsed());
        }
        // Doubling from 50 ms (jitter adds up to one more delay), then held at the bound.
        assert!(
            lengths[0] >= Duration::from_millis(50) && lengths[0] <= Duration::from_millis(100)
        );
        assert!(
            lengths
                .iter()
                .all(|length| *length <= Duration::from_secs(4))
        );
        assert!(lengths[9] >= Duration::from_secs(2));
        pauses.reset();
        let started = tokio::time::Instant::now();
        assert!(pauses.pause(&stop).await);
        assert!(started.elapsed() <= Duration::from_millis(100));
        stop.cancel();
        assert!(!pauses.pause(&stop).await);
    }
}
