//! Delivery tasks as the sender and the delay lines handle them: decoding and validating the
//! protobuf message once, and the `Nats-Msg-Id`s that keep every hop idempotent.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use herald_core::{DeliveryId, Event, WebhookId};
use herald_proto::deliveries::v1::Trigger;

/// Why a message is not a usable delivery task. Its `Display` is the dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    #[error("malformed protobuf delivery task: {0}")]
    Protobuf(String),
    #[error("delivery task field `{field}` is invalid: {reason}")]
    Field { field: &'static str, reason: String },
}

impl TaskError {
    fn field(field: &'static str, reason: impl ToString) -> Self {
        TaskError::Field {
            field,
            reason: reason.to_string(),
        }
    }
}

/// A decoded, validated delivery task. The event's bytes are kept as they came, to be carried
/// on unchanged: into a retry (with only the attempt and `not_before` changed) and into the
/// attempt's outcome.
#[derive(Debug, Clone)]
pub struct Task {
    pub delivery_id: DeliveryId,
    pub webhook: WebhookId,
    pub event: Event,
    /// The event as the task carries it: a view of the task's bytes.
    pub event_bytes: Bytes,
    /// Counted from 1; a task that says 0 is treated as its first attempt.
    pub attempt: u32,
    pub not_before: Option<DateTime<Utc>>,
    pub trigger: Trigger,
}

impl Task {
    pub fn decode(payload: &Bytes) -> Result<Task, TaskError> {
        let parts = herald_proto::decode_task(payload)
            .map_err(|err| TaskError::Protobuf(err.to_string()))?;
        let delivery_id = DeliveryId::parse(parts.delivery_id)
            .map_err(|err| TaskError::field("delivery_id", err))?;
        let webhook = WebhookId::parse(parts.webhook_id)
            .map_err(|err| TaskError::field("webhook_id", err))?;
        let event_bytes = parts
            .event
            .ok_or_else(|| TaskError::field("event", "is required"))?;
        let event = herald_proto::decode::<herald_proto::events::v1::Event>(&event_bytes)
            .map_err(|err| TaskError::Protobuf(err.to_string()))
            .and_then(|event| {
                Event::try_from(event).map_err(|err| TaskError::field("event", err))
            })?;
        let not_before = match &parts.not_before {
            None => None,
            Some(at) => Some(
                herald_proto::datetime(at)
                    .ok_or_else(|| TaskError::field("not_before", "is out of range"))?,
            ),
        };
        let trigger = Trigger::try_from(parts.trigger)
            .map_err(|_| TaskError::field("trigger", format!("{} is unknown", parts.trigger)))?;
        Ok(Task {
            delivery_id,
            webhook,
            event,
            event_bytes,
            attempt: parts.attempt.max(1),
            not_before,
            trigger,
        })
    }

    /// The task `message` encodes.
    #[cfg(test)]
    pub fn from_message(
        message: herald_proto::deliveries::v1::DeliveryTask,
    ) -> Result<Task, TaskError> {
        Task::decode(&Bytes::from(herald_proto::encode(&message)))
    }

    /// Whether a failed attempt may be followed by another. Redeliveries and replays are one
    /// user-requested attempt each; a failure is final and the user can ask again.
    pub fn follows_schedule(&self) -> bool {
        matches!(
            self.trigger,
            Trigger::Event | Trigger::Test | Trigger::Unspecified
        )
    }

    /// This task for attempt `attempt`, not to be sent before `not_before`, encoded.
    pub fn encode_for(&self, attempt: u32, not_before: DateTime<Utc>) -> Bytes {
        Bytes::from(herald_proto::encode_task(
            self.delivery_id.as_str(),
            self.webhook.as_str(),
            &self.event_bytes,
            attempt,
            Some(&herald_proto::timestamp(not_before)),
            self.trigger,
        ))
    }
}

/// Message ids of the hops a task makes. Each stream de-duplicates within its window, so every
/// hop of one logical step must carry the same id (a redelivered step is then dropped), and two
/// different steps of one delivery must never share an id in one stream (the second would be
/// dropped, and the delivery lost).
pub mod msg_id {
    use chrono::{DateTime, Utc};

    use super::Task;

    /// Separates a delay line's own re-queue suffix from the id of the step it carries.
    const REQUEUE: &str = "~r";
    /// Separates a breaker deferral's suffix from the attempt it defers.
    const DEFERRAL: &str = "~d";
    /// Marks a task's move to its webhook's lane.
    const LANE: &str = "~l";

    /// The task carrying attempt `attempt` of `task`, into a delay line and back out of it.
    pub fn retry(task: &Task, attempt: u32) -> String {
        herald_bus::names::delivery_msg_id(task.delivery_id.as_str(), attempt)
    }

    /// The same attempt put off until `until` by an open circuit breaker. The attempt number
    /// alone would collide with the hop that brought this attempt in, so the due time is added:
    /// it is what distinguishes one deferral from the next.
    pub fn deferral(task: &Task, until: DateTime<Utc>) -> String {
        format!(
            "{}{DEFERRAL}{}",
            retry(task, task.attempt),
            until.timestamp_millis()
        )
    }

    /// A delay line moving a task that is not due yet to the back of a line. The stream may be
    /// the one it came from, so the id must differ from the one it arrived with; the time the
    /// message was stored makes it unique and the same on every redelivery.
    pub fn requeue(arrived_with: &str, stored_at_millis: i64) -> String {
        format!(
            "{}{REQUEUE}{stored_at_millis}",
            step(arrived_with).unwrap_or(arrived_with)
        )
    }

    /// The id a delay line publishes a due task back to the deliveries stream with: the id of
    /// the step it carries, without re-queue suffixes.
    pub fn step(arrived_with: &str) -> Option<&str> {
        let step = arrived_with
            .split_once(REQUEUE)
            .map_or(arrived_with, |(step, _)| step);
        (!step.is_empty()).then_some(step)
    }

    /// A task moving to its webhook's lane, under the id it arrived with: each step reaches the
    /// deliveries stream under an id of its own, so a move repeated after a lost ack is dropped
    /// by the lanes stream, and two different steps never share a lane id.
    pub fn lane(arrived_with: &str) -> String {
        format!("{arrived_with}{LANE}")
    }

    /// The id of an attempt's outcome; the registry's log keeps one row per attempt.
    pub fn outcome(task: &Task) -> String {
        format!("{}:{}", task.delivery_id, task.attempt)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use super::*;
    use herald_core::{AccountId, EventData, EventId, EventType};
    use herald_proto::deliveries::v1::DeliveryTask;

    fn task_message() -> DeliveryTask {
        let event = Event {
            id: EventId::parse("evt_1").unwrap(),
            event_type: EventType::parse("booking.created").unwrap(),
            account: AccountId::parse("acct_01BX5ZZKBKACTAV9WEVGEMMVRZ").unwrap(),
            timestamp: "2026-11-27T10:00:00Z".parse().unwrap(),
            data: EventData::empty(),
        };
        let webhook = WebhookId::parse("wh_01BX5ZZKBKACTAV9WEVGEMMVRZ").unwrap();
        DeliveryTask {
            delivery_id: DeliveryId::derive(&event.id, &webhook).to_string(),
            webhook_id: webhook.to_string(),
            event: Some(herald_proto::encode_event(&event)),
            attempt: 1,
            not_before: None,
            trigger: Trigger::Event as i32,
        }
    }

    #[test]
    fn round_trip_and_re_encoding() {
        let task = Task::decode(&Bytes::from(herald_proto::encode(&task_message()))).unwrap();
        assert_eq!(task.attempt, 1);
        assert!(task.follows_schedule());
        let at: DateTime<Utc> = "2026-11-27T10:00:05Z".parse().unwrap();
        let next = Task::decode(&task.encode_for(2, at)).unwrap();
        assert_eq!(next.attempt, 2);
        assert_eq!(next.not_before, Some(at));
        assert_eq!(next.delivery_id, task.delivery_id);
        assert_eq!(next.webhook, task.webhook);
        assert_eq!(next.trigger, task.trigger);
        assert_eq!(next.event, task.event);
        assert_eq!(
            next.event_bytes, task.event_bytes,
            "the event's bytes, as they came"
        );
    }

    #[test]
    fn invalid_tasks_say_why() {
        let check = |message: DeliveryTask, expect: &str| {
            let err = Task::from_message(message).unwrap_err();
            assert_eq!(err.to_string(), expect);
        };
        check(
            DeliveryTask {
                delivery_id: "x".to_owned(),
                ..task_message()
            },
            "delivery task field `delivery_id` is invalid: delivery id must start with `dlv_`",
        );
        check(
            DeliveryTask {
                event: None,
                ..task_message()
            },
            "delivery task field `event` is invalid: is required",
        );
        check(
            DeliveryTask {
                trigger: 99,
                ..task_message()
            },
            "delivery task field `trigger` is invalid: 99 is unknown",
        );
        assert!(
            Task::decode(&Bytes::from_static(b"\xff\xff\xff"))
                .unwrap_err()
                .to_string()
                .starts_with("malformed protobuf delivery task: ")
        );
    }

    #[test]
    fn redeliveries_and_replays_are_single_attempts() {
        for (trigger, follows) in [
            (Trigger::Event, true),
            (Trigger::Test, true),
            (Trigger::Redelivery, false),
            (Trigger::Replay, false),
        ] {
            let task = Task::from_message(DeliveryTask {
                trigger: trigger as i32,
                ..task_message()
            })
            .unwrap();
            assert_eq!(task.follows_schedule(), follows, "{trigger:?}");
        }
    }

    #[test]
    fn message_ids_of_every_hop() {
        let task = Task::from_message(DeliveryTask {
            attempt: 2,
            ..task_message()
        })
        .unwrap();
        let id = task.delivery_id.to_string();
        assert_eq!(msg_id::retry(&task, 3), format!("{id}.3"));
        let until: DateTime<Utc> = "2026-11-27T10:00:05Z".parse().unwrap();
        let deferred = msg_id::deferral(&task, until);
        assert_eq!(deferred, format!("{id}.2~d1795773605000"));
        assert_eq!(msg_id::step(&deferred), Some(deferred.as_str()));

        let requeued = msg_id::requeue(&deferred, 42);
        assert_eq!(requeued, format!("{deferred}~r42"));
        // Re-queueing again replaces the suffix rather than growing the id.
        let again = msg_id::requeue(&requeued, 43);
        assert_eq!(again, format!("{deferred}~r43"));
        assert_eq!(msg_id::step(&again), Some(deferred.as_str()));
        assert_eq!(msg_id::step("~r1"), None);
        assert_eq!(msg_id::outcome(&task), format!("{id}:2"));
        assert_eq!(msg_id::lane(&deferred), format!("{deferred}~l"));
    }
}
