//! Delay lines: one stream per retry tier, whose consumer holds the head task until it is due
//! and then moves it back to the deliveries stream.
//!
//! Every task in a tier waits about the same time, so FIFO order is due order and only the head
//! needs watching. The consumer allows one unacknowledged message across all replicas, so the
//! replicas take turns at the head instead of racing past it. While waiting, the held message's
//! ack wait is extended with progress acks.
//!
//! A task may wait longer than its tier's delay (a `Retry-After`, a circuit breaker's rest, a
//! delay between two tiers). Holding such a head would stall every task behind it, so a head is
//! held at most its tier's delay plus the jitter allowance ([`HOLD`]) after it was stored; a
//! task still not due then goes to the back of the line that fits its remaining wait.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, AckKind};
use chrono::{DateTime, Utc};
use herald_bus::headers::msg_id as header_msg_id;
use herald_bus::names::delivery_subject;
use herald_bus::tiers::HOLD;
use herald_bus::{DeadSource, Outgoing, Persistence, PublishError, RetryTier, RetryTiers};
use tokio::sync::OwnedSemaphorePermit;

use crate::counters::{Counters, DeadReason};
use crate::sender::chrono_duration;
use crate::shutdown::{Stopping, ack, bury, in_progress, nak};
use crate::task::{Task, msg_id};

/// How long a failed move waits before the held task is tried again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// How long a move is retried (through a NATS restart, say) before the head is handed back.
const MOVE_PATIENCE: Duration = Duration::from_secs(30);

/// Why moving a task failed; the message is handed back and tried again.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct DelayError(#[from] PublishError);

/// One tier's delay line.
#[derive(Debug)]
pub struct DelayLine {
    pub js: jetstream::Context,
    pub tier: RetryTier,
    pub tiers: RetryTiers,
    /// The consumer's ack wait; progress is reported three times within it.
    pub ack_wait: Duration,
    pub counters: Arc<Counters>,
    pub stopping: Stopping,
}

impl DelayLine {
    /// Handles the head the line's loop pulled: moves it on when due, or hands it back.
    pub async fn handle(
        self: Arc<Self>,
        message: jetstream::Message,
        _permit: OwnedSemaphorePermit,
    ) {
        if let Err(err) = self.hold(&message).await {
            tracing::warn!(tier = %self.tier, %err, "could not move a task; retrying");
            nak(&message, Some(RETRY_DELAY), &self.counters).await;
        }
    }

    /// Holds the head until it is due (or has been held long enough), then moves it on.
    async fn hold(&self, message: &jetstream::Message) -> Result<(), DelayError> {
        let task = match Task::decode(&message.payload) {
            Ok(task) => task,
            Err(err) => {
                let reason = err.to_string();
                bury(
                    &self.js,
                    DeadSource::Retry,
                    message,
                    (DeadReason::Undecodable, &reason),
                    &self.counters,
                )
                .await?;
                return Ok(());
            }
        };
        let stored_at = message
            .info()
            .map(|info| DateTime::<Utc>::from(SystemTime::from(info.published)))
            .unwrap_or_else(|_| Utc::now());
        let due = task.not_before.unwrap_or(stored_at);
        let hold_limit = stored_at + chrono_duration(self.tier.delay().mul_f64(HOLD));
        let wake = due.min(hold_limit);
        let progress_every = self.ack_wait / 3;
        // `to_std` fails once `wake` has passed.
        while let Ok(wait) = (wake - Utc::now()).to_std() {
            if wait.is_zero() {
                break;
            }
            tokio::select! {
                () = self.stopping.fetch.cancelled() => {
                    // Another replica takes the head at once.
                    nak(message, None, &self.counters).await;
                    return Ok(());
                }
                () = tokio::time::sleep(wait.min(progress_every)) => {}
            }
            if wait > progress_every
                && let Err(err) = message.ack_with(AckKind::Progress).await
            {
                tracing::debug!(tier = %self.tier, %err, "progress ack failed");
            }
        }

        let arrived_with = message.headers.as_ref().and_then(header_msg_id);
        let now = Utc::now();
        if due <= now {
            // Back to the deliveries stream under the id of the step it carries, so that a
            // redelivered head is de-duplicated there.
            let id = arrived_with
                .and_then(msg_id::step)
                .map_or_else(|| msg_id::retry(&task, task.attempt), str::to_owned);
            self.publish(message, delivery_subject(&task.webhook), &id)
                .await?;
            ack(message).await;
            self.counters.retries_released(1);
        } else {
            let remaining = (due - now).to_std().unwrap_or(Duration::ZERO);
            let line = self.tiers.for_delay(remaining);
            let base =
                arrived_with.map_or_else(|| msg_id::retry(&task, task.attempt), str::to_owned);
            let id = msg_id::requeue(&base, stored_at.timestamp_millis());
            self.publish(message, line.subject(), &id).await?;
            ack(message).await;
            self.counters.requeued(1);
        }
        Ok(())
    }

    async fn publish(
        &self,
        message: &jetstream::Message,
        subject: String,
        id: &str,
    ) -> Result<(), DelayError> {
        let outgoing = Outgoing::protobuf(subject, id, message.payload.clone())
            .trace_from(message.headers.as_ref());
        let patient = Persistence::patient(MOVE_PATIENCE);
        in_progress(
            message,
            self.ack_wait,
            herald_bus::publish(&self.js, &outgoing, patient),
        )
        .await?;
        Ok(())
    }
}
