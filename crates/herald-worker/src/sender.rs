//! The sender: takes delivery tasks, POSTs them, records every attempt's outcome, and schedules
//! retries through the delay lines.
//!
//! A task's message is acknowledged only after its outcome (and its retry, if any) is stored, so
//! a crash at any point leads to a repeated attempt rather than a lost one.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use herald_bus::headers::{msg_id as header_msg_id, previous_attempt, traceparent};
use herald_bus::names::{lane_subject, outcome_subject};
use herald_bus::{DeadSource, Outgoing, Persistence, PublishError, RetryTiers};
use herald_core::RetrySchedule;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::attempt::{self, AttemptError, Attempted, Verdict, new_traceparent};
use crate::breaker::{Admission, Breakers};
use crate::config::OutboundTrace;
use crate::counters::{Counters, DeadReason};
use crate::http::DeliveryClient;
use crate::index::SharedIndex;
use crate::lanes::{LaneOpener, LanePass};
use crate::limits::{Slot, WebhookLimits};
use crate::metrics::Metrics;
use crate::outcomes::Outcomes;
use crate::shutdown::{Stopping, ack, bury, in_progress, nak};
use crate::task::{Task, msg_id};

/// How long a task handed back (its aftermath could not be stored, or its webhook is not known
/// yet) waits before it is tried again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Deliveries of a task whose webhook is missing or disabled before it is dropped: enough for
/// a replica whose bucket watch lags a little behind the router's to catch up.
const MISSING_WEBHOOK_DELIVERIES: i64 = 3;

/// A task due within this long is held back with a NAK delay; one due later goes through a
/// delay line, so that long waits never sit in the consumer's pending set.
const SHORT_WAIT: Duration = Duration::from_secs(5);

/// How long the sender keeps trying to store an attempt's outcome (and retry) once its request
/// was made, holding the task meanwhile: handing it back would repeat the request.
pub(crate) const SETTLE_PATIENCE: Duration = Duration::from_secs(60);

/// The first wait of a task handed back because its attempt's aftermath could not be stored;
/// it doubles with each delivery up to [`UNSETTLED_MAX_DELAY`], so that an outage of the
/// outcomes stream repeats a request at most that often rather than every second.
const UNSETTLED_DELAY: Duration = Duration::from_secs(30);
const UNSETTLED_MAX_DELAY: Duration = Duration::from_secs(10 * 60);

/// The trace context an attempt's retry carries: the router's span as parent, this attempt's
/// span to link to.
#[derive(Debug)]
struct Trace {
    parent: String,
    attempt: Option<String>,
}

/// Why a task could not be settled; it is handed back and attempted again.
#[derive(Debug, thiserror::Error)]
pub enum SendTaskError {
    /// Nothing was sent yet.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The request was made but its outcome (or retry) could not be stored: trying again
    /// repeats the request.
    #[error("the attempt was made, but its aftermath could not be stored: {0}")]
    Aftermath(#[source] PublishError),
}

/// The wait before a task whose attempt could not be settled is delivered again, by how many
/// times it has been delivered.
fn unsettled_delay(delivered: i64) -> Duration {
    let doublings = u32::try_from(delivered.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
    (UNSETTLED_DELAY * 2u32.pow(doublings)).min(UNSETTLED_MAX_DELAY)
}

/// Shared state of the sender's handlers.
#[derive(Debug)]
pub struct Sender {
    pub js: jetstream::Context,
    pub index: SharedIndex,
    pub client: DeliveryClient,
    pub breakers: Arc<Breakers>,
    /// Requests in flight per webhook, and which webhooks have a lane open here.
    pub limits: Arc<WebhookLimits>,
    /// Starts or wakes the reader of a lane the sender has moved a task to.
    pub lanes: LaneOpener,
    pub schedule: RetrySchedule,
    pub tiers: RetryTiers,
    /// Age of an event past which its tasks are no longer deferred by an open breaker.
    pub defer_limit: Duration,
    /// The sender's consumers' ack wait; a task held longer reports progress.
    pub ack_wait: Duration,
    /// What a request's `traceparent` names.
    pub outbound_trace: OutboundTrace,
    pub counters: Arc<Counters>,
    pub metrics: Arc<Metrics>,
    pub stopping: Stopping,
    /// Stores attempts' outcomes, several to a publish when they settle together.
    pub outcomes: Outcomes,
}

/// Where a task came from, and what it holds.
#[derive(Debug)]
enum Route {
    /// The shared consumer: the task needs a slot of its webhook, or moves to its lane.
    Shared,
    /// The webhook's lane, whose reader took a slot before it pulled the task.
    Lane(Slot),
}

impl Sender {
    /// Handles one task of the shared consumer from start to acknowledgement.
    pub async fn handle(
        self: Arc<Self>,
        message: jetstream::Message,
        _permit: OwnedSemaphorePermit,
    ) {
        self.settle_or_hand_back(&message, Route::Shared).await;
    }

    /// Handles one task of a webhook's lane from start to acknowledgement.
    pub async fn handle_lane(self: Arc<Self>, message: jetstream::Message, pass: LanePass) {
        let LanePass { slot, .. } = pass;
        self.settle_or_hand_back(&message, Route::Lane(slot)).await;
    }

    async fn settle_or_hand_back(&self, message: &jetstream::Message, route: Route) {
        match self.process(message, route).await {
            Ok(()) => {}
            Err(err @ SendTaskError::Aftermath(_)) => {
                let delivered = message.info().map_or(1, |info| info.delivered);
                let delay = unsettled_delay(delivered);
                tracing::error!(
                    subject = %message.subject,
                    %err,
                    ?delay,
                    "attempt made but not recorded; the task is handed back and its request will be repeated"
                );
                self.counters.unsettled(1);
                nak(message, Some(delay), &self.counters).await;
            }
            Err(err) => {
                tracing::warn!(subject = %message.subject, %err, "task not settled; it will be attempted again");
                nak(message, Some(RETRY_DELAY), &self.counters).await;
            }
        }
    }

    async fn process(
        &self,
        message: &jetstream::Message,
        route: Route,
    ) -> Result<(), SendTaskError> {
        let task = match Task::decode(&message.payload) {
            Ok(task) => task,
            Err(err) => {
                let reason = err.to_string();
                bury(
                    &self.js,
                    DeadSource::Deliveries,
                    message,
                    (DeadReason::Undecodable, &reason),
                    &self.counters,
                )
                .await?;
                return Ok(());
            }
        };

        let now = Utc::now();
        if let Some(not_before) = task.not_before
            && let Ok(early) = (not_before - now).to_std()
            && !early.is_zero()
        {
            if early <= SHORT_WAIT {
                nak(message, Some(early), &self.counters).await;
            } else {
                self.defer(message, &task, not_before).await?;
            }
            return Ok(());
        }

        let held = self.index.get(&task.webhook);
        let Some(subscription) = held.clone().filter(|s| s.enabled) else {
            // A stale index (being reloaded) may not know a webhook created or enabled
            // meanwhile: its word is not taken until it follows the bucket again.
            if !self.index.is_current() {
                nak(message, Some(RETRY_DELAY), &self.counters).await;
                return Ok(());
            }
            // Another replica may have made this task from a spec this one has not seen yet, so
            // the verdict "gone" is only trusted once it has held for a few redeliveries.
            let delivered = message.info().map_or(1, |info| info.delivered);
            if delivered < MISSING_WEBHOOK_DELIVERIES {
                nak(message, Some(RETRY_DELAY), &self.counters).await;
                return Ok(());
            }
            // Deleted or disabled: the registry's word is final. The log says so before the
            // task goes.
            let reason = if held.is_some() {
                "not sent: the webhook is disabled"
            } else {
                "not sent: the webhook was deleted"
            };
            tracing::debug!(webhook = %task.webhook, delivery = %task.delivery_id, reason, "task dropped");
            let outcome = attempt::not_sent(&task, reason, now);
            self.publish(
                outcome_subject(&task.webhook),
                msg_id::outcome(&task),
                None,
                Bytes::from(outcome),
                Persistence::BRIEF,
            )
            .await?;
            self.counters.dropped(1);
            ack(message).await;
            return Ok(());
        };

        // Defence in depth: the router only makes tasks for the event's own account, so a
        // mismatch is a forged or corrupt task and must not be signed with this webhook's key.
        if subscription.account != task.event.account {
            let reason = format!(
                "task for webhook {} carries an event of another account",
                task.webhook
            );
            bury(
                &self.js,
                DeadSource::Deliveries,
                message,
                (DeadReason::WrongAccount, &reason),
                &self.counters,
            )
            .await?;
            return Ok(());
        }

        // The breaker first: while it is open, tasks leave the consumer for a delay line
        // instead of occupying its pending set with short NAKs. Deferring uses no attempt, so
        // an endpoint that never recovers would keep its tasks circling forever; once an event
        // is older than the whole retry span, its tasks are attempted regardless and run out
        // their schedule.
        let overdue = (now - task.event.timestamp)
            .to_std()
            .is_ok_and(|age| age > self.defer_limit);
        let admission = if overdue {
            Admission::Send
        } else {
            self.breakers.admit(&task.webhook)
        };
        let probe = match admission {
            Admission::Send => false,
            Admission::Probe => true,
            Admission::Defer(rest) => {
                let shortest = self
                    .tiers
                    .tiers()
                    .first()
                    .map_or(Duration::ZERO, herald_bus::RetryTier::delay);
                let until = now + chrono_duration(rest.max(shortest));
                self.defer(message, &task, until).await?;
                return Ok(());
            }
        };
        let slot = match route {
            Route::Lane(slot) => slot,
            Route::Shared => match self.limits.try_send(&task.webhook) {
                Some(slot) => slot,
                None => {
                    if probe {
                        self.breakers.probe_abandoned(&task.webhook);
                    }
                    self.move_to_lane(message, &task).await?;
                    return Ok(());
                }
            },
        };

        // The attempt's span: a child of the router's (the task carries its context), linked
        // to the attempt before when this is a retry.
        let span = tracing::info_span!(
            target: herald_bus::trace::HOP_TARGET,
            "attempt",
            otel.name = "POST webhook",
            otel.kind = "client",
            http.request.method = "POST",
            server.address = %subscription.url.host(),
            herald.delivery_id = %task.delivery_id,
            herald.webhook_id = %task.webhook,
            herald.attempt = i64::from(task.attempt),
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let headers = message.headers.as_ref();
        herald_bus::trace::continue_from(&span, headers);
        if let Some(previous) = headers
            .filter(|_| herald_bus::trace::recording(&span))
            .and_then(previous_attempt)
            .and_then(herald_bus::trace::span_context)
        {
            span.add_link(previous);
        }
        let carried = headers.and_then(traceparent);
        let outbound =
            attempt::outbound_traceparent(self.outbound_trace, &span, &task.delivery_id, carried);
        let in_flight = self.metrics.request_started();
        let attempted = tokio::select! {
            attempted = Box::pin(attempt::send(&self.client, &subscription, &task, Some(&outbound))
                .instrument(span.clone())) => attempted,
            () = self.stopping.hard.cancelled() => {
                nak(message, None, &self.counters).await;
                return Ok(());
            }
        };
        drop(slot);
        drop(in_flight);
        attempt::record_on(&span, &attempted);
        // A retry stays in the router's trace (a sibling of this attempt) and links to this one.
        let trace = Trace {
            parent: carried.map_or_else(new_traceparent, str::to_owned),
            attempt: herald_bus::trace::traceparent_of(&span),
        };

        let verdict = attempt::decide(&task, &attempted, &self.schedule, &mut rand::rng());
        self.update_breaker(&task, &attempted, verdict, probe);
        // The request is made: repeating it is what must not happen now, so the aftermath is
        // stored with patience, the task held (its ack wait extended) meanwhile.
        in_progress(
            message,
            self.ack_wait,
            Box::pin(self.settle(message, &task, &attempted, verdict, &trace)),
        )
        .await
        .map_err(|err| match err {
            SendTaskError::Publish(err) | SendTaskError::Aftermath(err) => {
                SendTaskError::Aftermath(err)
            }
        })?;
        ack(message).await;
        let age = (attempted.answered_at() - task.event.timestamp)
            .to_std()
            .unwrap_or_default();
        // Metrics before counters: whoever sees a counter move finds the metrics recorded.
        self.metrics.attempt(&attempted, verdict, task.attempt, age);
        self.count(&attempted, verdict);
        Ok(())
    }

    fn update_breaker(&self, task: &Task, attempted: &Attempted, verdict: Verdict, probe: bool) {
        let refused = matches!(
            &attempted.result,
            Err(AttemptError::Send(err)) if err.is_refused_by_policy()
        ) || matches!(
            attempted.result,
            Err(AttemptError::NoSigningSecret | AttemptError::SecretSealed(_))
        );
        if verdict == Verdict::Delivered {
            if self.breakers.succeeded(&task.webhook) {
                tracing::info!(webhook = %task.webhook, "endpoint recovered; circuit closed");
            }
        } else if refused {
            // Nothing reached the endpoint, so this says nothing about its health.
            if probe {
                self.breakers.probe_abandoned(&task.webhook);
            }
        } else if self.breakers.failed(&task.webhook) {
            tracing::warn!(webhook = %task.webhook, probe, "endpoint failing; circuit opened");
        }
    }

    fn count(&self, attempted: &Attempted, verdict: Verdict) {
        match verdict {
            Verdict::Delivered => self.counters.delivered(1),
            Verdict::Retry(_) => self.counters.failed(1),
            Verdict::Exhausted { disable } => {
                self.counters.exhausted(1);
                if disable {
                    self.counters.disabled(1);
                }
            }
        }
        if matches!(&attempted.result, Err(AttemptError::Send(err)) if err.is_refused_by_policy()) {
            self.counters.refused(1);
        }
    }

    /// Stores the attempt's outcome and, for a retry, the next attempt in its delay line. Both
    /// are published together and both must be acknowledged before the task is.
    async fn settle(
        &self,
        message: &jetstream::Message,
        task: &Task,
        attempted: &Attempted,
        verdict: Verdict,
        trace: &Trace,
    ) -> Result<(), SendTaskError> {
        let outcome = Bytes::from(attempt::outcome(task, attempted, verdict));
        let patient = Persistence::patient(SETTLE_PATIENCE);
        let outcome_publish = self
            .outcomes
            .store(outcome, &task.webhook, msg_id::outcome(task));
        let retry_publish = async {
            let Verdict::Retry(delay) = verdict else {
                return Ok(());
            };
            let next = task.attempt + 1;
            let not_before = attempted.next_at(delay);
            let tier = self.tiers.for_delay(delay);
            let retry = Outgoing::protobuf(
                tier.subject(),
                &msg_id::retry(task, next),
                task.encode_for(next, not_before),
            )
            .traceparent(Some(&trace.parent))
            .previous_attempt(trace.attempt.as_deref());
            herald_bus::publish(&self.js, &retry, patient).await?;
            Ok::<_, SendTaskError>(())
        };
        let (outcome_stored, retry_stored) = tokio::join!(outcome_publish, retry_publish);
        outcome_stored?;
        retry_stored?;
        tracing::debug!(
            subject = %message.subject,
            delivery = %task.delivery_id,
            attempt = task.attempt,
            ?verdict,
            "attempt settled"
        );
        Ok(())
    }

    /// Forgets the circuit breakers of webhooks the index no longer holds (their in-flight
    /// slots go with their last request). Only on a current index: a stale one may not know
    /// a webhook yet.
    pub fn forget_deleted(&self) {
        if self.index.is_current() {
            self.breakers
                .retain(|webhook| self.index.get(webhook).is_some());
        }
    }

    /// Moves `task`, whose webhook is at its cap, to the webhook's lane: stored there first, then
    /// acknowledged here, then the lane's reader is started or told.
    async fn move_to_lane(
        &self,
        message: &jetstream::Message,
        task: &Task,
    ) -> Result<(), SendTaskError> {
        let arrived_with = message
            .headers
            .as_ref()
            .and_then(header_msg_id)
            .map_or_else(|| msg_id::retry(task, task.attempt), str::to_owned);
        self.publish(
            lane_subject(&task.webhook),
            msg_id::lane(&arrived_with),
            message.headers.as_ref(),
            message.payload.clone(),
            Persistence::BRIEF,
        )
        .await?;
        ack(message).await;
        self.counters.laned(1);
        self.lanes.stored(&task.webhook);
        Ok(())
    }

    /// Puts `task` off until `until` through a delay line, without using an attempt.
    async fn defer(
        &self,
        message: &jetstream::Message,
        task: &Task,
        until: DateTime<Utc>,
    ) -> Result<(), SendTaskError> {
        let wait = (until - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        let tier = self.tiers.for_delay(wait);
        self.publish(
            tier.subject(),
            msg_id::deferral(task, until),
            message.headers.as_ref(),
            task.encode_for(task.attempt, until),
            Persistence::BRIEF,
        )
        .await?;
        ack(message).await;
        self.counters.deferred(1);
        Ok(())
    }

    async fn publish(
        &self,
        subject: String,
        id: String,
        trace_of: Option<&async_nats::HeaderMap>,
        payload: Bytes,
        persistence: Persistence,
    ) -> Result<(), SendTaskError> {
        let message = Outgoing::protobuf(subject, &id, payload).trace_from(trace_of);
        herald_bus::publish(&self.js, &message, persistence).await?;
        Ok(())
    }
}

/// A std duration as chrono's, saturating: the delays here are at most days.
pub fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsettled_task_waits_longer_each_time_up_to_a_bound() {
        let waits: Vec<u64> = [1, 2, 3, 4, 5, 6, 100, i64::MAX]
            .into_iter()
            .map(|delivered| unsettled_delay(delivered).as_secs())
            .collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 600, 600, 600]);
        assert_eq!(unsettled_delay(0), UNSETTLED_DELAY);
    }
}
