//! The messages that cross Herald's process boundaries, generated from `proto/` by prost, and
//! their conversions to and from herald-core's domain types.
//!
//! Only this crate knows protobuf: other crates hand it bytes or core types.

mod event;

pub use event::{DecodeError, decode_event, encode_event};

use chrono::{DateTime, Utc};

// Generated code is checked by prost-build's own tests, not by our lints; its doc comments are
// copied from the .proto files and do not follow rustdoc conventions.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    rustdoc::all
)]
pub mod events {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/herald.events.v1.rs"));
    }
}

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    rustdoc::all
)]
pub mod webhooks {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/herald.webhooks.v1.rs"));
    }
}

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    rustdoc::all
)]
pub mod deliveries {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/herald.deliveries.v1.rs"));
    }
}

/// Any of Herald's messages as protobuf bytes, so that no other crate needs
/// prost to put one on the wire.
pub fn encode<M: prost::Message>(message: &M) -> Vec<u8> {
    message.encode_to_vec()
}

/// One of Herald's messages from protobuf bytes; the error names the
/// message and says what was wrong.
pub fn decode<M: prost::Message + Default>(bytes: &[u8]) -> Result<M, prost::DecodeError> {
    M::decode(bytes)
}

/// Content type of a protobuf-encoded message.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/protobuf";

/// Content type of a JSON-encoded event, and the default when a message has none.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// `time` as a protobuf timestamp.
///
/// chrono represents a leap second as a nanosecond count of 1e9 or more, which protobuf forbids;
/// such an instant becomes the last nanosecond of its second.
pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    let nanos = time.timestamp_subsec_nanos().min(999_999_999);
    prost_types::Timestamp {
        seconds: time.timestamp(),
        // Below 1e9 after the clamp, so it always fits.
        nanos: i32::try_from(nanos).unwrap_or(999_999_999),
    }
}

/// The instant a protobuf timestamp names, or `None` when its nanoseconds are outside
/// 0..1e9 or its seconds are beyond what chrono represents.
pub fn datetime(timestamp: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    if nanos > 999_999_999 {
        return None;
    }
    DateTime::from_timestamp(timestamp.seconds, nanos)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timestamps() {
        let time: DateTime<Utc> = "2026-11-27T10:00:00.123456789Z".parse().unwrap();
        let ts = timestamp(time);
        assert_eq!((ts.seconds, ts.nanos), (1_795_773_600, 123_456_789));
        assert_eq!(datetime(&ts), Some(time));

        let check_invalid = |seconds: i64, nanos: i32| {
            let ts = prost_types::Timestamp { seconds, nanos };
            assert_eq!(datetime(&ts), None, "{ts:?}");
        };
        check_invalid(0, -1);
        check_invalid(0, 1_000_000_000);
        check_invalid(i64::MAX, 0);
    }

    proptest! {
        #[test]
        fn timestamp_roundtrip(seconds in -62_135_596_800i64..=253_402_300_799, nanos in 0u32..1_000_000_000) {
            let time = DateTime::from_timestamp(seconds, nanos).unwrap();
            prop_assert_eq!(datetime(&timestamp(time)), Some(time));
        }
    }
}

/// A task's bytes made from its event's bytes, encoded once for all of the event's tasks: the
/// same bytes as encoding a [`DeliveryTask`](deliveries::v1::DeliveryTask) holding that event
/// with no `not_before`, without a copy of the event's fields per task.
pub fn encode_task(
    delivery_id: &str,
    webhook_id: &str,
    event: &[u8],
    attempt: u32,
    trigger: deliveries::v1::Trigger,
) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
    // As prost writes a message: fields in tag order, proto3 defaults (empty, zero) left out,
    // the event always there (an empty one too).
    let bytes_len = |tag: u32, value: &[u8]| {
        key_len(tag) + encoded_len_varint(value.len() as u64) + value.len()
    };
    let string_len = |tag: u32, value: &str| match value.len() {
        0 => 0,
        _ => bytes_len(tag, value.as_bytes()),
    };
    let varint_len = |tag: u32, value: u64| match value {
        0 => 0,
        _ => key_len(tag) + encoded_len_varint(value),
    };
    let trigger = trigger as u64;
    // Exactly as long as it will be: a vector with spare room costs `Bytes` an allocation of
    // its own.
    let mut buf = Vec::with_capacity(
        string_len(1, delivery_id)
            + string_len(2, webhook_id)
            + bytes_len(3, event)
            + varint_len(4, u64::from(attempt))
            + varint_len(6, trigger),
    );
    let bytes_field = |tag: u32, value: &[u8], buf: &mut Vec<u8>| {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(value.len() as u64, buf);
        buf.extend_from_slice(value);
    };
    let varint_field = |tag: u32, value: u64, buf: &mut Vec<u8>| {
        if value != 0 {
            encode_key(tag, WireType::Varint, buf);
            encode_varint(value, buf);
        }
    };
    for (tag, value) in [(1, delivery_id), (2, webhook_id)] {
        if !value.is_empty() {
            bytes_field(tag, value.as_bytes(), &mut buf);
        }
    }
    bytes_field(3, event, &mut buf);
    varint_field(4, u64::from(attempt), &mut buf);
    varint_field(6, trigger, &mut buf);
    buf
}

#[cfg(test)]
mod task_tests {
    use proptest::prelude::*;
    use prost::Message as _;

    use super::deliveries::v1::{DeliveryTask, Trigger};
    use super::events::v1::Event;
    use super::*;

    fn triggers() -> impl Strategy<Value = Trigger> {
        prop_oneof![
            Just(Trigger::Unspecified),
            Just(Trigger::Event),
            Just(Trigger::Redelivery),
            Just(Trigger::Replay),
            Just(Trigger::Test),
        ]
    }

    #[test]
    fn an_empty_event_is_still_carried() {
        let task = DeliveryTask {
            event: Some(Event::default()),
            ..DeliveryTask::default()
        };
        let made = encode_task(
            "",
            "",
            &Event::default().encode_to_vec(),
            0,
            Trigger::Unspecified,
        );
        assert_eq!(made, task.encode_to_vec());
        assert_eq!(made, [0x1a, 0x00]);
    }

    proptest! {
        #[test]
        fn a_task_from_its_events_bytes_is_the_task_prost_encodes(
            delivery_id in "(dlv_[0-9A-Z]{26})?",
            webhook_id in "(wh_[0-9A-Z]{26})?",
            id in "\\PC{0,30}",
            r#type in "[a-z.]{0,20}",
            account_id in "\\PC{0,30}",
            seconds in proptest::option::of(0i64..4_000_000_000),
            data in proptest::collection::vec(any::<u8>(), 0..300),
            attempt in prop_oneof![Just(0u32), Just(1), any::<u32>()],
            trigger in triggers(),
        ) {
            let event = Event {
                id,
                r#type,
                account_id,
                occurred_at: seconds.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
                data,
            };
            let task = DeliveryTask {
                delivery_id: delivery_id.clone(),
                webhook_id: webhook_id.clone(),
                event: Some(event.clone()),
                attempt,
                not_before: None,
                trigger: trigger as i32,
            };
            let made = encode_task(&delivery_id, &webhook_id, &event.encode_to_vec(), attempt, trigger);
            prop_assert_eq!(&made, &task.encode_to_vec());
            prop_assert_eq!(made.capacity(), made.len());
            prop_assert_eq!(DeliveryTask::decode(made.as_slice()).expect("a task decodes"), task);
        }
    }
}
