//! The router: turns each published event into one delivery task per matching webhook.
//!
//! An event is acknowledged only once every one of its tasks is stored, so a crash mid-fan-out
//! leads to a redelivery of the event, and the derived delivery ids make the repeated fan-out a
//! no-op for the tasks already stored.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use herald_bus::headers::{content_type, traceparent};
use herald_bus::names::{
    delivery_msg_id, delivery_subject, event_subject, lane_subject, outcome_subject,
};
use herald_bus::{DeadSource, Outgoing, Persistence, PublishError, dead_letter};
use herald_core::{DeliveryId, Event, WebhookId};
use herald_proto::deliveries::v1::{DeliveryOutcome, DeliveryStatus, Trigger};
use herald_proto::{decode_event, encode_event};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};
use tracing::Instrument as _;

use crate::attempt::new_traceparent;
use crate::counters::{Counters, DeadReason};
use crate::index::SharedIndex;
use crate::lanes::LaneOpener;
use crate::shutdown::{Stopping, ack, in_progress, nak};
use crate::task::msg_id;

/// How long a failed fan-out waits before the event is tried again; long enough not to spin
/// through a NATS outage, short enough that events are not noticeably late after one.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// How long a fan-out is retried (through a NATS restart, say), the event held meanwhile,
/// before the event is handed back.
const ROUTE_PATIENCE: Duration = Duration::from_secs(20);

/// Room a delivery task must leave under the server's largest message for what later hops
/// add: a due time, headers, and the outcome's response body and request headers.
pub const TASK_HEADROOM: usize = 16 * 1024;

/// Encoded delivery tasks the router holds at once, across its handlers, by default
/// (`HERALD_ROUTER_TASK_BYTES`). A fan-out encodes a copy of the event into each task, so 256
/// handlers each fanning a large event out to many webhooks could otherwise hold gigabytes,
/// and one event to a hundred thousand webhooks alone could.
pub const TASK_BYTES: usize = 64 * 1024 * 1024;

/// What a task adds to its event, at most: two ids, an attempt, a trigger, protobuf framing.
const TASK_OVERHEAD: usize = 256;
/// What a task's message adds to its payload, at most: its subject and headers (message id,
/// content type, `traceparent`).
const MESSAGE_OVERHEAD: usize = 1024;

/// Room for encoded tasks, shared by the router's handlers (see [`TASK_BYTES`]).
#[derive(Debug)]
pub struct TaskBytes {
    room: Semaphore,
    size: usize,
}

impl TaskBytes {
    /// Room for `size` bytes of encoded tasks.
    pub fn new(size: usize) -> Self {
        TaskBytes {
            room: Semaphore::new(size),
            size,
        }
    }

    /// How many tasks of at most `each` bytes a fan-out stores at once: as many as fit in the
    /// room, and at least one. A larger fan-out is stored in parts, one after the other.
    pub fn part(&self, each: usize) -> usize {
        (self.size / each.max(1)).max(1)
    }

    /// Waits for room for `tasks` tasks of at most `each` bytes, held until the permit is
    /// dropped. A part larger than all the room (one task larger than it) takes all of it, so
    /// it runs alone.
    pub async fn take(&self, tasks: usize, each: usize) -> Option<SemaphorePermit<'_>> {
        let wanted = tasks.saturating_mul(each).clamp(1, self.size);
        // The room is never closed; `None` would only mean going ahead without it.
        self.room
            .acquire_many(u32::try_from(wanted).unwrap_or(u32::MAX))
            .await
            .ok()
    }
}

/// Why routing one event failed. The event is handed back and routed again.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("the webhook index is being reloaded; routing waits for it")]
    StaleIndex,
}

/// Shared state of the router's handlers.
#[derive(Debug)]
pub struct Router {
    pub js: jetstream::Context,
    pub index: SharedIndex,
    /// A webhook whose lane is open here gets its new tasks straight in the lane, behind its
    /// backlog, instead of through the shared consumer and a move.
    pub lanes: LaneOpener,
    /// The router consumer's ack wait; an event held longer reports progress.
    pub ack_wait: Duration,
    pub counters: Arc<Counters>,
    pub stopping: Stopping,
    /// Where this worker is in the events stream, to resume there if the consumer must be
    /// created again.
    pub positions: Positions,
    /// Bounds the memory the handlers' encoded tasks take together.
    pub task_bytes: TaskBytes,
    pub max_payload: MaxPayload,
}

/// The server's largest message, read again at most once a second: reading it copies the
/// server's whole description, which every event would otherwise pay for.
#[derive(Debug)]
pub struct MaxPayload {
    since: Instant,
    bytes: AtomicUsize,
    read_at_ms: AtomicU64,
}

impl Default for MaxPayload {
    fn default() -> Self {
        MaxPayload {
            since: Instant::now(),
            bytes: AtomicUsize::new(0),
            read_at_ms: AtomicU64::new(0),
        }
    }
}

impl MaxPayload {
    const FRESH_MS: u64 = 1_000;

    fn now_ms(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn of(&self, js: &jetstream::Context) -> usize {
        let bytes = self.bytes.load(Ordering::Relaxed);
        let age = self
            .now_ms()
            .saturating_sub(self.read_at_ms.load(Ordering::Relaxed));
        if bytes != 0 && age < Self::FRESH_MS {
            return bytes;
        }
        self.fresh(js)
    }

    /// Reads the limit from the server's description now, and keeps it for the next second.
    fn fresh(&self, js: &jetstream::Context) -> usize {
        let bytes = js.client().server_info().max_payload;
        self.bytes.store(bytes, Ordering::Relaxed);
        self.read_at_ms.store(self.now_ms(), Ordering::Relaxed);
        bytes
    }
}

/// Where routing had got to, for making the router's consumer again if it is lost: the stream
/// sequences of the events this worker is routing (or handed back) and the highest it has
/// finished, and the consumer's ack floor as last read (every few seconds): every event up to
/// it is acknowledged, by this worker or another.
///
/// The resume point never passes an event that was not acknowledged when the floor was read
/// (another replica may hold it or have handed it back), and the events acknowledged since are
/// routed again, their tasks dropped by the deliveries stream's duplicate window. Events at or
/// below the floor are forgotten here: one this worker handed back and another routed would
/// otherwise hold the resume point back for good.
#[derive(Debug, Default)]
pub struct Positions {
    inner: Mutex<PositionsInner>,
}

#[derive(Debug, Default)]
struct PositionsInner {
    /// Being routed here, or handed back from here.
    open: BTreeSet<u64>,
    /// The highest finished here.
    finished: u64,
    /// The consumer's ack floor as last read; 0 before a reading that says anything.
    ack_floor: u64,
}

impl Positions {
    fn lock(&self) -> MutexGuard<'_, PositionsInner> {
        // Updated in single statements; a poisoned value is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn started(&self, sequence: u64) {
        self.lock().open.insert(sequence);
    }

    fn finished(&self, sequence: u64) {
        let mut positions = self.lock();
        positions.open.remove(&sequence);
        positions.finished = positions.finished.max(sequence);
    }

    /// Takes the router consumer's ack floor from a reading of the streams.
    pub fn observe(&self, status: &herald_bus::Status) {
        let floor = status
            .streams
            .iter()
            .filter(|stream| stream.name == herald_bus::names::EVENTS_STREAM)
            .flat_map(|stream| &stream.consumers)
            .find(|consumer| consumer.name == herald_bus::names::ROUTER_CONSUMER)
            .map(|consumer| consumer.ack_floor);
        if let Some(floor) = floor {
            self.acknowledged_up_to(floor);
        }
    }

    fn acknowledged_up_to(&self, floor: u64) {
        let mut positions = self.lock();
        positions.ack_floor = floor;
        positions.open.retain(|&sequence| sequence > floor);
    }

    /// The first event not known to be finished: the lowest still being routed (or handed back)
    /// here, or the one after the highest finished here, but never past the one after the ack
    /// floor; `None` before anything is known.
    pub fn resume_at(&self) -> Option<u64> {
        let positions = self.lock();
        let here = match positions.open.first() {
            Some(lowest) => Some(*lowest),
            None => (positions.finished > 0).then_some(positions.finished + 1),
        };
        let floor = (positions.ack_floor > 0).then_some(positions.ack_floor + 1);
        match (here, floor) {
            (Some(here), Some(floor)) => Some(here.min(floor)),
            (here, floor) => here.or(floor),
        }
    }
}

impl Router {
    /// Routes one event and settles its message.
    pub async fn handle(
        self: Arc<Self>,
        message: jetstream::Message,
        _permit: OwnedSemaphorePermit,
    ) {
        // The reply subject is parsed once: its sequence places the event, its time stands in
        // for an event that does not say when it happened.
        let (sequence, received_at) = match message.info() {
            Ok(info) => (
                Some(info.stream_sequence),
                DateTime::<Utc>::from(SystemTime::from(info.published)),
            ),
            Err(_) => (None, Utc::now()),
        };
        if let Some(sequence) = sequence {
            self.positions.started(sequence);
        }
        // A consumer span, child of the publisher's; the tasks carry it on to the sender.
        let span = tracing::info_span!(
            target: herald_bus::trace::HOP_TARGET,
            "route",
            otel.name = "route event",
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.destination.name = %message.subject,
        );
        herald_bus::trace::continue_from(&span, message.headers.as_ref());
        let routed = tokio::select! {
            routed = in_progress(&message, self.ack_wait, Box::pin(self.route(&message, received_at))).instrument(span) => routed,
            () = self.stopping.hard.cancelled() => {
                nak(&message, None, &self.counters).await;
                return;
            }
        };
        match routed {
            Ok(()) => {
                ack(&message).await;
                if let Some(sequence) = sequence {
                    self.positions.finished(sequence);
                }
            }
            Err(RouteError::StaleIndex) => {
                tracing::debug!(subject = %message.subject, "index not current; event handed back");
                nak(&message, Some(RETRY_DELAY), &self.counters).await;
            }
            Err(err) => {
                tracing::warn!(subject = %message.subject, %err, "routing failed; the event will be routed again");
                nak(&message, Some(RETRY_DELAY), &self.counters).await;
            }
        }
    }

    async fn route(
        &self,
        message: &jetstream::Message,
        received_at: DateTime<Utc>,
    ) -> Result<(), RouteError> {
        let headers = message.headers.as_ref();
        let decoded = decode_event(
            headers.and_then(content_type),
            &message.payload,
            received_at,
        )
        .map_err(|err| (DeadReason::Undecodable, err.to_string()))
        .and_then(|event| {
            // The subject is what NATS permissions guard: a publisher allowed only
            // `events.<its account>.>` must not reach another account's webhooks by
            // naming it in the payload.
            let expected = event_subject(&event.account, &event.event_type);
            if message.subject.as_str() == expected {
                Ok(event)
            } else {
                Err((
                    DeadReason::SubjectMismatch,
                    format!(
                        "subject {} does not match the event's account and type (expected {expected})",
                        message.subject
                    ),
                ))
            }
        });
        let event = match decoded {
            Ok(event) => event,
            Err((kind, reason)) => {
                tracing::warn!(subject = %message.subject, %reason, "undecodable event dead-lettered");
                dead_letter(
                    &self.js,
                    DeadSource::Events,
                    &reason,
                    &message.subject,
                    headers,
                    message.payload.clone(),
                )
                .await?;
                self.counters.dead_letter(kind);
                return Ok(());
            }
        };

        // A stale index could miss a webhook created meanwhile (and ack the event as matching
        // nothing): the event waits until the index follows the bucket again.
        if !self.index.is_current() {
            return Err(RouteError::StaleIndex);
        }
        // Only the ids are copied under the index's lock (a fan-out to 1,000 webhooks holds it
        // for some tens of microseconds, which only a webhook change can wait for); the
        // delivery ids are hashed after.
        let webhooks: Vec<WebhookId> =
            self.index
                .with_matching(&event.account, &event.event_type, |matching| {
                    matching.iter().map(|webhook| webhook.id.clone()).collect()
                });
        if webhooks.is_empty() {
            self.counters.events_unmatched(1);
            self.counters.events_routed(1);
            return Ok(());
        }
        // One trace for all of the event's deliveries, also when the publisher sent none: this
        // span's when OpenTelemetry records it, else the publisher's as it came.
        let traceparent = herald_bus::trace::traceparent_of(&tracing::Span::current())
            .or_else(|| headers.and_then(traceparent).map(str::to_owned))
            .unwrap_or_else(new_traceparent);
        let tasks: Vec<(WebhookId, DeliveryId)> = webhooks
            .into_iter()
            .map(|webhook| {
                let delivery_id = DeliveryId::derive(&event.id, &webhook);
                (webhook, delivery_id)
            })
            .collect();
        self.fan_out(message, &event, &tasks, &traceparent).await?;
        self.counters.events_routed(1);
        Ok(())
    }

    /// Publishes every task, pipelined, then waits for all acknowledgements, in parts as large
    /// as the router's room for encoded tasks allows, one after the other: one event fanned out
    /// to very many webhooks holds no more memory than that. A task goes to the deliveries
    /// stream, or to its webhook's lane while that is open here. An event too large to make
    /// tasks of ends here, visibly: see [`refuse`](Self::refuse).
    async fn fan_out(
        &self,
        message: &jetstream::Message,
        event: &Event,
        tasks: &[(WebhookId, DeliveryId)],
        traceparent: &str,
    ) -> Result<(), RouteError> {
        // Encoded once: every task carries these bytes as they are.
        let event_bytes = herald_proto::encode(&encode_event(event));
        let limit = self.max_payload.of(&self.js).saturating_sub(TASK_HEADROOM);
        let each = event_bytes.len() + TASK_OVERHEAD;
        // Only an event near the limit has its tasks measured, before any is stored. Ids all
        // have one length, so the first task, on either subject, is as large as any.
        if each + MESSAGE_OVERHEAD > limit
            && let Some((webhook, delivery_id)) = tasks.first()
        {
            let size = [false, true]
                .map(|laned| task_message(webhook, delivery_id, &event_bytes, traceparent, laned))
                .iter()
                .map(Outgoing::size)
                .max()
                .unwrap_or(0);
            // Refusing cannot be undone: the limit is read afresh first, in case the server's
            // grew within the second the cached one is kept.
            let limit = self
                .max_payload
                .fresh(&self.js)
                .saturating_sub(TASK_HEADROOM);
            if size > limit {
                return self.refuse(message, event, tasks, size, limit).await;
            }
        }
        for part in tasks.chunks(self.task_bytes.part(each)) {
            let _room = self.task_bytes.take(part.len(), each).await;
            let mut laned = Vec::new();
            let outgoing: Vec<Outgoing> = part
                .iter()
                .map(|(webhook, delivery_id)| {
                    let lane = self.lanes.is_open(webhook);
                    if lane {
                        laned.push(webhook.clone());
                    }
                    task_message(webhook, delivery_id, &event_bytes, traceparent, lane)
                })
                .collect();
            let receipts =
                herald_bus::publish_all(&self.js, &outgoing, Persistence::patient(ROUTE_PATIENCE))
                    .await?;
            let duplicates = receipts.iter().filter(|receipt| receipt.duplicate).count() as u64;
            self.counters.tasks_duplicate(duplicates);
            self.counters
                .tasks_published(receipts.len() as u64 - duplicates);
            self.counters.laned(laned.len() as u64);
            for webhook in &laned {
                self.lanes.stored(webhook);
            }
        }
        Ok(())
    }

    /// Ends an event whose delivery tasks would be larger than a message may be: it goes to
    /// HERALD_DEAD with the reason (without its payload if that does not fit either), and each
    /// webhook it was for gets an exhausted delivery in the log that says why, so the event is
    /// neither retried forever nor lost without a trace.
    async fn refuse(
        &self,
        message: &jetstream::Message,
        event: &Event,
        tasks: &[(WebhookId, DeliveryId)],
        size: usize,
        limit: usize,
    ) -> Result<(), RouteError> {
        let reason = format!(
            "not sent: the event makes delivery tasks of {size} bytes, more than the {limit} \
             bytes a task may be (the server's largest message less {TASK_HEADROOM} bytes)"
        );
        tracing::warn!(subject = %message.subject, event = %event.id, %reason, "event too large to deliver");
        dead_letter(
            &self.js,
            DeadSource::Events,
            &reason,
            &message.subject,
            message.headers.as_ref(),
            message.payload.clone(),
        )
        .await?;
        let mut without_data = encode_event(event);
        without_data.data.clear();
        let now = Utc::now();
        let outcomes: Vec<Outgoing> = tasks
            .iter()
            .map(|(webhook, delivery_id)| {
                let outcome = DeliveryOutcome {
                    delivery_id: delivery_id.to_string(),
                    webhook_id: webhook.to_string(),
                    event: Some(without_data.clone()),
                    attempt: 1,
                    status: DeliveryStatus::Exhausted as i32,
                    error: reason.clone(),
                    attempted_at: Some(herald_proto::timestamp(now)),
                    trigger: Trigger::Event as i32,
                    ..DeliveryOutcome::default()
                };
                Outgoing::protobuf(
                    outcome_subject(webhook),
                    &format!("{delivery_id}:1"),
                    Bytes::from(herald_proto::encode(&outcome)),
                )
            })
            .collect();
        herald_bus::publish_all(&self.js, &outcomes, Persistence::patient(ROUTE_PATIENCE)).await?;
        self.counters.dead_letter(DeadReason::TooLarge);
        self.counters.too_large(1);
        Ok(())
    }
}

/// The first attempt's task of `delivery_id` for `webhook`: on the webhook's lane when `laned`,
/// under the id the sender would move it there with, so that the two ways in are one step.
fn task_message(
    webhook: &WebhookId,
    delivery_id: &DeliveryId,
    event: &[u8],
    traceparent: &str,
    laned: bool,
) -> Outgoing {
    let id = delivery_msg_id(delivery_id.as_str(), 1);
    let (subject, id) = if laned {
        (lane_subject(webhook), msg_id::lane(&id))
    } else {
        (delivery_subject(webhook), id)
    };
    let payload = herald_proto::encode_task(
        delivery_id.as_str(),
        webhook.as_str(),
        event,
        1,
        None,
        Trigger::Event,
    );
    Outgoing::protobuf(subject, &id, Bytes::from(payload)).traceparent(Some(traceparent))
}

#[cfg(test)]
mod tests {
    use futures::FutureExt as _;

    use super::*;

    #[tokio::test]
    async fn fan_outs_share_a_bounded_room_and_one_larger_than_it_runs_alone() {
        let room = TaskBytes::new(TASK_BYTES);
        let small = room.take(1_000, 1_000).await;
        assert!(small.is_some());
        // Room is left for another small fan-out, not for one that wants it all.
        assert!(room.take(1_000, 1_000).now_or_never().is_some());
        let mut huge = Box::pin(room.take(1_000, 1024 * 1024));
        assert!((&mut huge).now_or_never().is_none());
        drop(small);
        let huge = huge.now_or_never().flatten();
        assert!(huge.is_some());
        assert!(room.take(1, 1).now_or_never().is_none());
        drop(huge);
        assert!(room.take(1, 1).now_or_never().is_some());
    }

    #[test]
    fn a_fan_out_larger_than_the_room_is_stored_in_parts() {
        let room = TaskBytes::new(10_000);
        assert_eq!(room.part(1_000), 10);
        assert_eq!(room.part(3_000), 3);
        // A task larger than all the room goes alone.
        assert_eq!(room.part(50_000), 1);
        assert_eq!(room.part(0), 10_000);
        assert_eq!(TaskBytes::new(TASK_BYTES).part(1_256), 53_430);
    }

    #[test]
    fn the_resume_point_is_the_first_event_not_finished() {
        let positions = Positions::default();
        assert_eq!(positions.resume_at(), None);
        for sequence in [3, 4, 5] {
            positions.started(sequence);
        }
        positions.finished(4);
        assert_eq!(positions.resume_at(), Some(3));
        positions.finished(3);
        assert_eq!(positions.resume_at(), Some(5));
        positions.finished(5);
        assert_eq!(positions.resume_at(), Some(6));
    }

    #[test]
    fn the_resume_point_never_passes_what_the_ack_floor_has_not() {
        let positions = Positions::default();
        // Another replica holds 8 to 10: the floor read says 7, while this worker finished 11.
        positions.started(11);
        positions.finished(11);
        positions.acknowledged_up_to(7);
        assert_eq!(positions.resume_at(), Some(8));
        // A floor alone, before this worker routed anything.
        let fresh = Positions::default();
        fresh.acknowledged_up_to(20);
        assert_eq!(fresh.resume_at(), Some(21));
        fresh.acknowledged_up_to(0);
        assert_eq!(fresh.resume_at(), None, "a floor of 0 says nothing");
    }

    #[test]
    fn an_event_handed_back_here_and_routed_elsewhere_stops_holding_the_resume_point() {
        let positions = Positions::default();
        positions.started(5);
        // Handed back (never finished here), then routed by another replica; this worker
        // finishes later events meanwhile.
        for sequence in 6..=9 {
            positions.started(sequence);
            positions.finished(sequence);
        }
        assert_eq!(positions.resume_at(), Some(5));
        positions.acknowledged_up_to(9);
        assert_eq!(positions.resume_at(), Some(10));
        assert!(
            positions.lock().open.is_empty(),
            "forgotten, not kept for good"
        );
    }

    #[test]
    fn the_floor_is_read_from_the_router_consumer_of_the_events_stream() {
        let consumer = |name: &str, ack_floor| herald_bus::ConsumerStatus {
            name: name.into(),
            pending: 0,
            ack_pending: 0,
            redelivered: 0,
            ack_floor,
            consumers: 1,
        };
        let stream = |name: &str, consumers| herald_bus::StreamStatus {
            name: name.into(),
            role: "",
            messages: 0,
            bytes: 0,
            oldest_age_seconds: None,
            replicas: 1,
            leader: None,
            consumers,
        };
        let positions = Positions::default();
        positions.observe(&herald_bus::Status {
            streams: vec![
                stream(
                    herald_bus::names::DELIVERIES_STREAM,
                    vec![consumer(herald_bus::names::SENDER_CONSUMER, 90)],
                ),
                stream(
                    herald_bus::names::EVENTS_STREAM,
                    vec![
                        consumer("someone-else", 70),
                        consumer(herald_bus::names::ROUTER_CONSUMER, 41),
                    ],
                ),
            ],
        });
        assert_eq!(positions.resume_at(), Some(42));
        // A reading without the consumer (it is being made again) changes nothing.
        positions.observe(&herald_bus::Status { streams: vec![] });
        assert_eq!(positions.resume_at(), Some(42));
    }
}
