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

/// How many bytes a length-delimited field `tag` of `len` bytes takes.
fn delimited_len(tag: u32, len: usize) -> usize {
    prost::encoding::key_len(tag) + prost::encoding::encoded_len_varint(len as u64) + len
}

/// Writes the key and length of the length-delimited field `tag`, `len` bytes long; its value
/// follows.
fn put_delimited_head(tag: u32, len: usize, buf: &mut Vec<u8>) {
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, buf);
    prost::encoding::encode_varint(len as u64, buf);
}

/// Writes `value` as the length-delimited field `tag` (bytes, a string or an encoded message).
fn put_delimited(tag: u32, value: &[u8], buf: &mut Vec<u8>) {
    put_delimited_head(tag, value.len(), buf);
    buf.extend_from_slice(value);
}

/// As prost leaves a proto3 string out when it is empty: its length as field `tag`.
fn string_len(tag: u32, value: &str) -> usize {
    match value.len() {
        0 => 0,
        len => delimited_len(tag, len),
    }
}

/// As prost leaves a proto3 string out when it is empty: writes it as field `tag`.
fn put_string(tag: u32, value: &str, buf: &mut Vec<u8>) {
    if !value.is_empty() {
        put_delimited(tag, value.as_bytes(), buf);
    }
}

/// A task's bytes made from its event's bytes, encoded once for all of the event's tasks: the
/// same bytes as encoding a [`DeliveryTask`](deliveries::v1::DeliveryTask) holding that event,
/// without a copy of the event's fields per task.
pub fn encode_task(
    delivery_id: &str,
    webhook_id: &str,
    event: &[u8],
    attempt: u32,
    not_before: Option<&prost_types::Timestamp>,
    trigger: deliveries::v1::Trigger,
) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
    // As prost writes a message: fields in tag order, proto3 defaults (empty, zero) left out,
    // the event always there (an empty one too).
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
            + delimited_len(3, event.len())
            + varint_len(4, u64::from(attempt))
            + not_before.map_or(0, |at| prost::encoding::message::encoded_len(5, at))
            + varint_len(6, trigger),
    );
    let varint_field = |tag: u32, value: u64, buf: &mut Vec<u8>| {
        if value != 0 {
            encode_key(tag, WireType::Varint, buf);
            encode_varint(value, buf);
        }
    };
    put_string(1, delivery_id, &mut buf);
    put_string(2, webhook_id, &mut buf);
    put_delimited(3, event, &mut buf);
    varint_field(4, u64::from(attempt), &mut buf);
    if let Some(at) = not_before {
        prost::encoding::message::encode(5, at, &mut buf);
    }
    varint_field(6, trigger, &mut buf);
    buf
}

/// How many bytes an outcome `outcome_len` long takes as an entry of a
/// [`DeliveryOutcomes`](deliveries::v1::DeliveryOutcomes) message.
pub fn outcomes_entry_len(outcome_len: usize) -> usize {
    delimited_len(1, outcome_len)
}

/// A [`DeliveryOutcomes`](deliveries::v1::DeliveryOutcomes) message made from its outcomes'
/// bytes, each already encoded, without decoding them.
pub fn encode_outcomes<'a>(outcomes: impl IntoIterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let len = outcomes
        .clone()
        .into_iter()
        .map(|outcome| outcomes_entry_len(outcome.len()))
        .sum();
    let mut buf = Vec::with_capacity(len);
    for outcome in outcomes {
        put_delimited(1, outcome, &mut buf);
    }
    buf
}

/// Why bytes are not a message Herald wrote; the text says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedMessage(String);

impl From<prost::DecodeError> for MalformedMessage {
    fn from(err: prost::DecodeError) -> Self {
        MalformedMessage(err.to_string())
    }
}

/// A task's fields as its bytes hold them, the event left encoded: what [`encode_task`] wrote,
/// read back without a copy of the event (a task carries its event on, to a retry and into its
/// outcome, as it came).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskParts<'a> {
    pub delivery_id: &'a str,
    pub webhook_id: &'a str,
    /// The event's own bytes, a view of the task's; `None` when the task has no event.
    pub event: Option<prost::bytes::Bytes>,
    pub attempt: u32,
    pub not_before: Option<prost_types::Timestamp>,
    /// As prost keeps an enum: the number, known or not.
    pub trigger: i32,
}

/// Reads a [`DeliveryTask`](deliveries::v1::DeliveryTask)'s bytes as prost would, except that
/// the event stays encoded and a second event in one task is refused rather than merged into
/// the first (Herald never writes one). Unknown fields are skipped.
pub fn decode_task(payload: &prost::bytes::Bytes) -> Result<TaskParts<'_>, MalformedMessage> {
    use prost::Message as _;
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};

    fn text<'a>(field: &str, value: &'a [u8]) -> Result<&'a str, MalformedMessage> {
        std::str::from_utf8(value)
            .map_err(|_| MalformedMessage(format!("field `{field}` is not valid UTF-8")))
    }
    let mut parts = TaskParts::default();
    let mut rest: &[u8] = payload;
    while !rest.is_empty() {
        let (tag, wire_type) = decode_key(&mut rest)?;
        match (tag, wire_type) {
            (1 | 2 | 3 | 5, WireType::LengthDelimited) => {
                let len = usize::try_from(decode_varint(&mut rest)?)
                    .ok()
                    .filter(|len| *len <= rest.len())
                    .ok_or_else(|| MalformedMessage(format!("field {tag} runs past the end")))?;
                let start = payload.len() - rest.len();
                let (value, after) = rest.split_at(len);
                rest = after;
                match tag {
                    1 => parts.delivery_id = text("delivery_id", value)?,
                    2 => parts.webhook_id = text("webhook_id", value)?,
                    3 if parts.event.is_some() => {
                        return Err(MalformedMessage("the task holds two events".to_owned()));
                    }
                    3 => parts.event = Some(payload.slice(start..start + len)),
                    // A second timestamp merges into the first, as prost merges it.
                    _ => parts
                        .not_before
                        .get_or_insert_with(Default::default)
                        .merge(value)?,
                }
            }
            // Truncated to 32 bits, as prost reads a uint32 or an enum.
            (4, WireType::Varint) => parts.attempt = decode_varint(&mut rest)? as u32,
            (6, WireType::Varint) => parts.trigger = decode_varint(&mut rest)? as i32,
            (1..=6, _) => {
                return Err(MalformedMessage(format!(
                    "field {tag} has the wrong wire type {wire_type:?}"
                )));
            }
            _ => skip_field(wire_type, tag, &mut rest, DecodeContext::default())?,
        }
    }
    Ok(parts)
}

/// An outcome's bytes: `outcome` with `event`, the event's bytes as its task carried them, and
/// `request_headers`, without a copy of either into the message (any event or headers
/// `outcome` held are left out). Those two fields follow the others, which protobuf allows:
/// the bytes decode to `outcome` holding that event and those headers.
pub fn encode_outcome<V: AsRef<str>>(
    mut outcome: deliveries::v1::DeliveryOutcome,
    event: &[u8],
    request_headers: &[(&str, V)],
) -> Vec<u8> {
    use prost::Message as _;

    outcome.event = None;
    outcome.request_headers.clear();
    // As prost writes a map's entries: an empty key or value is left out.
    let entry_len = |(name, value): &(&str, V)| string_len(1, name) + string_len(2, value.as_ref());
    let len = outcome.encoded_len()
        + delimited_len(3, event.len())
        + request_headers
            .iter()
            .map(|entry| delimited_len(14, entry_len(entry)))
            .sum::<usize>();
    let mut buf = Vec::with_capacity(len);
    outcome.encode_raw(&mut buf);
    put_delimited(3, event, &mut buf);
    for entry in request_headers {
        // The entry's head, then its key and value, each written straight into the buffer.
        put_delimited_head(14, entry_len(entry), &mut buf);
        put_string(1, entry.0, &mut buf);
        put_string(2, entry.1.as_ref(), &mut buf);
    }
    buf
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
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
            None,
            Trigger::Unspecified,
        );
        assert_eq!(made, task.encode_to_vec());
        assert_eq!(made, [0x1a, 0x00]);
        let made = prost::bytes::Bytes::from(made);
        let parts = decode_task(&made).unwrap();
        assert_eq!(parts.event.as_deref(), Some(&[][..]));
    }

    #[test]
    fn a_task_that_is_not_one_says_what_is_wrong() {
        // The attempt and the event's bytes, or the error's text.
        let decode = |bytes: &[u8]| {
            decode_task(&prost::bytes::Bytes::copy_from_slice(bytes))
                .map(|parts| (parts.attempt, parts.event))
                .map_err(|err| err.to_string())
        };
        let event = Event::default().encode_to_vec();
        let twice = [
            encode_task("", "", &event, 0, None, Trigger::Event),
            encode_task("", "", &event, 0, None, Trigger::Event),
        ]
        .concat();
        assert_eq!(decode(&twice).unwrap_err(), "the task holds two events");
        // Field 1 claims ten bytes and holds two.
        assert_eq!(
            decode(&[0x0a, 0x0a, b'd', b'l']).unwrap_err(),
            "field 1 runs past the end"
        );
        assert_eq!(
            decode(&[0x0a, 0x02, 0xff, 0xfe]).unwrap_err(),
            "field `delivery_id` is not valid UTF-8"
        );
        // The attempt (field 4) as a string.
        assert!(
            decode(&[0x22, 0x01, b'1'])
                .unwrap_err()
                .starts_with("field 4 has the wrong wire type")
        );
        // An unknown field (15, a varint) is skipped, as prost skips it.
        assert_eq!(decode(&[0x78, 0x01, 0x20, 0x02]), Ok((2, None)));
        assert!(decode(&[0x78]).is_err(), "a key without its value");
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
            not_before in proptest::option::of((any::<i64>(), 0i32..1_000_000_000)),
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
                not_before: not_before
                    .map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
                trigger: trigger as i32,
            };
            let event_bytes = event.encode_to_vec();
            let made = encode_task(
                &delivery_id,
                &webhook_id,
                &event_bytes,
                attempt,
                task.not_before.as_ref(),
                trigger,
            );
            prop_assert_eq!(&made, &task.encode_to_vec());
            prop_assert_eq!(made.capacity(), made.len());
            prop_assert_eq!(DeliveryTask::decode(made.as_slice()).expect("a task decodes"), task.clone());

            let made = prost::bytes::Bytes::from(made);
            let parts = decode_task(&made).expect("a task's parts decode");
            prop_assert_eq!(parts.delivery_id, task.delivery_id.as_str());
            prop_assert_eq!(parts.webhook_id, task.webhook_id.as_str());
            prop_assert_eq!(parts.event.as_deref(), Some(event_bytes.as_slice()));
            prop_assert_eq!(parts.attempt, task.attempt);
            prop_assert_eq!(parts.not_before, task.not_before);
            prop_assert_eq!(parts.trigger, task.trigger);

            // Cut short anywhere, the task is refused exactly when prost refuses it.
            for end in 0..made.len() {
                let cut = made.slice(..end);
                prop_assert_eq!(
                    decode_task(&cut).is_ok(),
                    DeliveryTask::decode(cut.as_ref()).is_ok(),
                    "cut at {}", end
                );
            }
        }

        #[test]
        fn an_outcome_with_its_events_bytes_decodes_as_the_outcome_holding_them(
            delivery_id in "(dlv_[0-9A-Z]{26})?",
            attempt in any::<u32>(),
            status in 0i32..4,
            http_status in prop_oneof![Just(0u32), 100u32..600],
            error in "\\PC{0,40}",
            response_body in "\\PC{0,40}",
            next in proptest::option::of(any::<i64>()),
            disable_webhook in any::<bool>(),
            trigger in triggers(),
            id in "\\PC{0,30}",
            data in proptest::collection::vec(any::<u8>(), 0..300),
            headers in proptest::collection::btree_map("[a-z-]{0,20}", "\\PC{0,40}", 0..8),
        ) {
            use super::deliveries::v1::DeliveryOutcome;

            let event = Event { id, data, ..Event::default() };
            let outcome = DeliveryOutcome {
                delivery_id,
                webhook_id: "wh_1".to_owned(),
                attempt,
                status,
                http_status,
                error,
                response_body,
                next_attempt_at: next.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
                disable_webhook,
                trigger: trigger as i32,
                ..DeliveryOutcome::default()
            };
            let pairs: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            // An event and headers the outcome held already are replaced, not merged.
            let held = DeliveryOutcome {
                event: Some(Event { id: "held".to_owned(), ..Event::default() }),
                request_headers: [("held".to_owned(), "x".to_owned())].into(),
                ..outcome.clone()
            };
            let made = encode_outcome(held, &event.encode_to_vec(), &pairs);
            prop_assert_eq!(made.capacity(), made.len());
            let whole = DeliveryOutcome {
                event: Some(event),
                request_headers: headers.into_iter().collect(),
                ..outcome
            };
            prop_assert_eq!(DeliveryOutcome::decode(made.as_slice()).expect("an outcome decodes"), whole);
        }
    }
}
