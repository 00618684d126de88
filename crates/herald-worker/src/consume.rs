//! Pulling from a shared durable consumer in bounded batches, one handler task per message.
//!
//! Each pull asks for no more messages than there are free permits, so a busy worker stops
//! taking work (its replicas take it instead) rather than buffering messages whose ack wait is
//! running. Pull requests are short-lived: a pull lost to a NATS restart simply expires and the
//! next one is made, so the loop needs no reconnection logic of its own.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use crate::counters::Counters;
use crate::shutdown::{Backoff, Stopping, nak};

/// How long one pull request waits for messages. It bounds how long a stopping worker waits
/// for messages already on their way, and how quickly a lost pull request is replaced.
pub const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// How long a stopping loop waits for its open pull request to end. The server ends it at
/// [`PULL_EXPIRES`]; if it does not (a lost connection), nothing more can arrive anyway.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Where to pull from and how much at once.
pub struct Pull<Open> {
    /// For logs: `router`, `sender`.
    pub name: &'static str,
    /// Opens the durable consumer; called again after errors.
    pub open: Open,
    pub batch: usize,
    /// One permit per message being handled.
    pub permits: Arc<Semaphore>,
}

impl<Open> std::fmt::Debug for Pull<Open> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pull")
            .field("name", &self.name)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

/// Pulls until `stopping.fetch` is cancelled, spawning `handle(message, permit)` on `tracker`
/// for each message. Errors are logged and retried after a bounded back-off; the loop only ends
/// at shutdown, after handing back any message that arrives while stopping.
pub async fn pull_loop<Open, OpenFut, E, Handle, HandleFut>(
    pull: Pull<Open>,
    stopping: Stopping,
    tracker: TaskTracker,
    counters: Arc<Counters>,
    handle: Handle,
) where
    Open: Fn() -> OpenFut,
    OpenFut: Future<Output = Result<PullConsumer, E>>,
    E: std::fmt::Display,
    Handle: Fn(jetstream::Message, OwnedSemaphorePermit) -> HandleFut,
    HandleFut: Future<Output = ()> + Send + 'static,
{
    let stop = &stopping.fetch;
    let mut backoff = Backoff::new();
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
                        tracing::warn!(loop_name = pull.name, %err, "cannot open the consumer; retrying");
                        backoff.wait(stop).await;
                        continue;
                    }
                }
            }
        };

        let first = tokio::select! {
            () = stop.cancelled() => break,
            permit = pull.permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed; if it were, there would be nothing to do.
                Err(_) => break,
            },
        };
        let mut permits = vec![first];
        while permits.len() < pull.batch {
            match pull.permits.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }

        let batch = current
            .batch()
            .max_messages(permits.len())
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(err) => {
                tracing::warn!(loop_name = pull.name, %err, "pull request failed; retrying");
                backoff.wait(stop).await;
                continue;
            }
        };
        let mut healthy = true;
        loop {
            let next = tokio::select! {
                biased;
                () = stop.cancelled() => {
                    hand_back(pull.name, &mut batch, &counters).await;
                    return;
                }
                next = batch.next() => next,
            };
            match next {
                None => break,
                Some(Ok(message)) => {
                    backoff.reset();
                    match permits.pop() {
                        Some(permit) => {
                            let work = handle(message, permit);
                            let stopping = stopping.clone();
                            tracker.spawn(async move { stopping.unless_crashed(work).await });
                        }
                        // The server sends at most the batch asked for, one permit each.
                        None => nak(&message, None, &counters).await,
                    }
                }
                Some(Err(err)) => {
                    // 408/409 statuses (leadership changes, a deleted consumer, too many pending
                    // acks) end the batch; the next pull sorts itself out.
                    tracing::debug!(loop_name = pull.name, %err, "pull request ended with an error");
                    healthy = false;
                    break;
                }
            }
        }
        if healthy {
            consumer = Some(current);
        } else {
            backoff.wait(stop).await;
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
