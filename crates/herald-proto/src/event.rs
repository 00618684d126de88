//! Published events: decoding what a publisher sent (protobuf or JSON) into a core `Event`, and
//! encoding a core `Event` for the streams.

use chrono::{DateTime, Utc};
use herald_core::{AccountId, Event, EventData, EventId, EventType};
use prost::Message as _;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::events::v1 as proto;
use crate::{CONTENT_TYPE_JSON, CONTENT_TYPE_PROTOBUF, datetime, timestamp};

/// The other protobuf media type in common use, accepted from publishers.
const CONTENT_TYPE_X_PROTOBUF: &str = "application/x-protobuf";

/// How much of an unrecognised content type an error repeats.
const SHOWN_LEN: usize = 100;

/// Why a published message is not an event. Its `Display` is the reason recorded when the message
/// is dead-lettered, so it says which field and which rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "unsupported content type `{0}`: send {CONTENT_TYPE_JSON} (the default) or {CONTENT_TYPE_PROTOBUF}"
    )]
    UnsupportedContentType(String),
    #[error("malformed JSON event: {0}")]
    Json(String),
    #[error("malformed protobuf event: {0}")]
    Protobuf(String),
    #[error("field `{field}` is invalid: {reason}")]
    Field { field: &'static str, reason: String },
}

impl DecodeError {
    fn field(field: &'static str, reason: impl ToString) -> Self {
        DecodeError::Field {
            field,
            reason: reason.to_string(),
        }
    }
}

/// Decodes a published event.
///
/// `content_type` is the message's `Content-Type` header: `application/protobuf` (or
/// `application/x-protobuf`) for the protobuf `Event`, `application/json` or nothing for the JSON
/// form. An event without a time gets `received_at`.
pub fn decode_event(
    content_type: Option<&str>,
    payload: &[u8],
    received_at: DateTime<Utc>,
) -> Result<Event, DecodeError> {
    let media_type = content_type
        .map(|value| value.split(';').next().unwrap_or_default().trim())
        .filter(|media_type| !media_type.is_empty());
    match media_type {
        None => decode_json(payload, received_at),
        Some(t) if t.eq_ignore_ascii_case(CONTENT_TYPE_JSON) => decode_json(payload, received_at),
        Some(t)
            if t.eq_ignore_ascii_case(CONTENT_TYPE_PROTOBUF)
                || t.eq_ignore_ascii_case(CONTENT_TYPE_X_PROTOBUF) =>
        {
            let mut message = proto::Event::decode(payload)
                .map_err(|err| DecodeError::Protobuf(err.to_string()))?;
            let data = std::mem::take(&mut message.data);
            from_proto(&message, data, Some(received_at))
        }
        Some(_) => {
            let shown: String = content_type
                .unwrap_or_default()
                .chars()
                .take(SHOWN_LEN)
                .collect();
            Err(DecodeError::UnsupportedContentType(shown))
        }
    }
}

/// The protobuf form of `event`, with its time always set.
pub fn encode_event(event: &Event) -> proto::Event {
    proto::Event {
        id: event.id.as_str().to_owned(),
        r#type: event.event_type.as_str().to_owned(),
        account_id: event.account.as_str().to_owned(),
        occurred_at: Some(timestamp(event.timestamp)),
        data: event.data.as_str().as_bytes().to_vec(),
    }
}

/// Validates an event that Herald itself encoded, as carried inside a delivery task or outcome.
/// Unlike [`decode_event`] there is no arrival time to fall back on, so `occurred_at` is required.
impl TryFrom<proto::Event> for Event {
    type Error = DecodeError;

    fn try_from(mut message: proto::Event) -> Result<Self, Self::Error> {
        let data = std::mem::take(&mut message.data);
        from_proto(&message, data, None)
    }
}

/// Like the conversion of an owned message, copying only what the event keeps.
impl TryFrom<&proto::Event> for Event {
    type Error = DecodeError;

    fn try_from(message: &proto::Event) -> Result<Self, Self::Error> {
        from_proto(message, message.data.clone(), None)
    }
}

/// The event `message` names, with `data` (its data, taken out or copied).
fn from_proto(
    message: &proto::Event,
    data: Vec<u8>,
    received_at: Option<DateTime<Utc>>,
) -> Result<Event, DecodeError> {
    let timestamp = match (&message.occurred_at, received_at) {
        (Some(occurred_at), _) => datetime(occurred_at).ok_or_else(|| {
            DecodeError::field(
                "occurred_at",
                "nanos must be 0 to 999999999 and seconds within years 1 to 9999",
            )
        })?,
        (None, Some(received_at)) => received_at,
        (None, None) => return Err(DecodeError::field("occurred_at", REQUIRED)),
    };
    let data = String::from_utf8(data)
        .map_err(|err| DecodeError::field("data", format!("is not UTF-8: {err}")))?;
    Ok(Event {
        id: required("id", &message.id, EventId::parse)?,
        event_type: required("type", &message.r#type, EventType::parse)?,
        account: required("account_id", &message.account_id, AccountId::parse)?,
        timestamp,
        data: EventData::try_from(data).map_err(|err| DecodeError::field("data", err))?,
    })
}

/// The JSON form of an event, as documented in `event.proto`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEvent<'a> {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    account: String,
    #[serde(default)]
    timestamp: Option<String>,
    /// Borrowed as raw text so that the payload reaches receivers exactly as published.
    /// `null` counts as absent, that is `{}`.
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

fn decode_json(payload: &[u8], received_at: DateTime<Utc>) -> Result<Event, DecodeError> {
    // serde would also accept a struct written as an array, and then describe the mismatch in
    // terms of its own internals; an event is an object, so say that.
    if payload.trim_ascii_start().first() != Some(&b'{') {
        return Err(DecodeError::Json(
            "an event must be a JSON object with `id`, `type` and `account`".to_owned(),
        ));
    }
    let message: JsonEvent<'_> =
        serde_json::from_slice(payload).map_err(|err| DecodeError::Json(err.to_string()))?;
    let timestamp = match &message.timestamp {
        None => received_at,
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map(|time| time.with_timezone(&Utc))
            .map_err(|_| {
                // chrono's own messages ("premature end of input") do not help a publisher.
                let shown: String = text.chars().take(SHOWN_LEN).collect();
                DecodeError::field(
                    "timestamp",
                    format!("{shown:?} is not an RFC 3339 date-time such as 2026-11-27T10:00:00Z"),
                )
            })?,
    };
    let data = match message.data {
        None => EventData::empty(),
        Some(raw) => EventData::parse(raw.get()).map_err(|err| DecodeError::field("data", err))?,
    };
    Ok(Event {
        id: required("id", &message.id, EventId::parse)?,
        event_type: required("type", &message.event_type, EventType::parse)?,
        account: required("account", &message.account, AccountId::parse)?,
        timestamp,
        data,
    })
}

const REQUIRED: &str = "is required";

/// Parses a required text field; protobuf cannot tell an empty string from a missing one, so
/// both read "is required".
fn required<T, E: ToString>(
    field: &'static str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, DecodeError> {
    if value.is_empty() {
        return Err(DecodeError::field(field, REQUIRED));
    }
    parse(value).map_err(|err| DecodeError::field(field, err))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use super::*;
    use herald_core::id::Ulid;
    use proptest::prelude::*;

    const ID: &str = "evt_01ARZ3NDEKTSV4RRFFQ69G5FAV";
    const ACCOUNT: &str = "acct_01BX5ZZKBKACTAV9WEVGEMMVRZ";

    fn received_at() -> DateTime<Utc> {
        "2026-11-27T10:00:05Z".parse().unwrap()
    }

    fn sample() -> Event {
        Event {
            id: EventId::parse(ID).unwrap(),
            event_type: EventType::parse("booking.created").unwrap(),
            account: AccountId::parse(ACCOUNT).unwrap(),
            timestamp: "2026-11-27T10:00:00.250Z".parse().unwrap(),
            data: EventData::parse(r#"{"booking_id": "bk_1",  "guests": 2}"#).unwrap(),
        }
    }

    fn decode(content_type: Option<&str>, payload: &[u8]) -> Result<Event, DecodeError> {
        decode_event(content_type, payload, received_at())
    }

    #[test]
    fn json_and_protobuf_decode_to_the_same_event() {
        let json = format!(
            r#"{{"id":"{ID}","type":"booking.created","account":"{ACCOUNT}",
                "timestamp":"2026-11-27T11:00:00.250+01:00",
                "data":{{"booking_id": "bk_1",  "guests": 2}}}}"#
        );
        let from_json = decode(Some("application/json; charset=utf-8"), json.as_bytes()).unwrap();
        let bytes = encode_event(&sample()).encode_to_vec();
        let from_proto = decode(Some(CONTENT_TYPE_PROTOBUF), &bytes).unwrap();
        assert_eq!(from_json, sample());
        assert_eq!(from_proto, sample());
        // The payload is kept byte for byte, odd spacing included.
        assert_eq!(
            from_json.data.as_str(),
            r#"{"booking_id": "bk_1",  "guests": 2}"#
        );
    }

    #[test]
    fn content_types() {
        let json = format!(r#"{{"id":"{ID}","type":"booking.created","account":"{ACCOUNT}"}}"#);
        let bytes = encode_event(&sample()).encode_to_vec();
        for content_type in [
            None,
            Some(""),
            Some("application/json"),
            Some("Application/JSON"),
        ] {
            assert!(
                decode(content_type, json.as_bytes()).is_ok(),
                "{content_type:?}"
            );
        }
        for content_type in [
            "application/protobuf",
            "application/x-protobuf",
            "application/protobuf; proto=herald.events.v1.Event",
        ] {
            assert!(decode(Some(content_type), &bytes).is_ok(), "{content_type}");
        }
        assert_eq!(
            decode(Some("text/plain"), json.as_bytes())
                .unwrap_err()
                .to_string(),
            "unsupported content type `text/plain`: send application/json (the default) or \
             application/protobuf"
        );
    }

    #[test]
    fn json_defaults() {
        let json = format!(r#"{{"id":"{ID}","type":"booking.created","account":"{ACCOUNT}"}}"#);
        let event = decode(None, json.as_bytes()).unwrap();
        assert_eq!(event.timestamp, received_at());
        assert_eq!(event.data.as_str(), "{}");
        let json = format!(
            r#"{{"id":"{ID}","type":"booking.created","account":"{ACCOUNT}","data":null}}"#
        );
        assert_eq!(decode(None, json.as_bytes()).unwrap().data.as_str(), "{}");
    }

    #[test]
    fn protobuf_defaults() {
        let message = proto::Event {
            occurred_at: None,
            data: Vec::new(),
            ..encode_event(&sample())
        };
        let event = decode(Some(CONTENT_TYPE_PROTOBUF), &message.encode_to_vec()).unwrap();
        assert_eq!(event.timestamp, received_at());
        assert_eq!(event.data.as_str(), "{}");
        // Inside Herald there is no arrival time to fall back on.
        assert_eq!(
            Event::try_from(message).unwrap_err().to_string(),
            "field `occurred_at` is invalid: is required"
        );
    }

    /// Each JSON case replaces one field of a valid event; the snapshot holds each error.
    #[test]
    fn json_errors_name_the_field() {
        let valid = serde_json::json!({
            "id": ID, "type": "booking.created", "account": ACCOUNT,
            "timestamp": "2026-11-27T10:00:00Z", "data": {}
        });
        let cases = [
            ("id", serde_json::json!("")),
            ("id", serde_json::json!("evt 1")),
            ("type", serde_json::json!("Booking.Created")),
            ("type", serde_json::json!("booking..created")),
            (
                "account",
                serde_json::json!("wh_01BX5ZZKBKACTAV9WEVGEMMVRZ"),
            ),
            ("timestamp", serde_json::json!("yesterday")),
            ("timestamp", serde_json::json!("2026-11-27 10:00:00")),
            ("data", serde_json::json!([1, 2])),
            ("data", serde_json::json!("{}")),
            ("id", serde_json::json!(42)),
            ("extra", serde_json::json!(true)),
        ];
        let mut report = String::new();
        for (field, value) in cases {
            let mut event = valid.clone();
            event[field] = value.clone();
            let err = decode(None, event.to_string().as_bytes()).unwrap_err();
            report.push_str(&format!("{field} = {value}: {err}\n"));
        }
        for missing in ["id", "type", "account"] {
            let mut event = valid.clone();
            event.as_object_mut().unwrap().remove(missing);
            let err = decode(None, event.to_string().as_bytes()).unwrap_err();
            report.push_str(&format!("without {missing}: {err}\n"));
        }
        for payload in ["", "[]", " 7", "{\"id\":"] {
            let err = decode(None, payload.as_bytes()).unwrap_err();
            report.push_str(&format!("{payload:?}: {err}\n"));
        }
        expect_test::expect![[r#"
            id = "": field `id` is invalid: is required
            id = "evt 1": field `id` is invalid: event id may contain only A-Z, a-z, 0-9 and `._:-`, found ' '
            type = "Booking.Created": field `type` is invalid: invalid event type `Booking.Created`: may contain only a-z, 0-9, `_`, `-` and `.`, found 'B'
            type = "booking..created": field `type` is invalid: invalid event type `booking..created`: has an empty segment (a leading, trailing or doubled `.`)
            account = "wh_01BX5ZZKBKACTAV9WEVGEMMVRZ": field `account` is invalid: account id must start with `acct_`
            timestamp = "yesterday": field `timestamp` is invalid: "yesterday" is not an RFC 3339 date-time such as 2026-11-27T10:00:00Z
            timestamp = "2026-11-27 10:00:00": field `timestamp` is invalid: "2026-11-27 10:00:00" is not an RFC 3339 date-time such as 2026-11-27T10:00:00Z
            data = [1,2]: field `data` is invalid: event data must be a JSON object: found an array
            data = "{}": field `data` is invalid: event data must be a JSON object: found a string
            id = 42: malformed JSON event: invalid type: integer `42`, expected a string at line 1 column 62
            extra = true: malformed JSON event: unknown field `extra`, expected one of `id`, `type`, `account`, `timestamp`, `data` at line 1 column 62
            without id: malformed JSON event: missing field `id` at line 1 column 115
            without type: malformed JSON event: missing field `type` at line 1 column 128
            without account: malformed JSON event: missing field `account` at line 1 column 109
            "": malformed JSON event: an event must be a JSON object with `id`, `type` and `account`
            "[]": malformed JSON event: an event must be a JSON object with `id`, `type` and `account`
            " 7": malformed JSON event: an event must be a JSON object with `id`, `type` and `account`
            "{\"id\":": malformed JSON event: EOF while parsing a value at line 1 column 6
        "#]].assert_eq(&report);
    }

    #[test]
    fn protobuf_errors_name_the_field() {
        let valid = encode_event(&sample());
        let cases = [
            proto::Event {
                id: String::new(),
                ..valid.clone()
            },
            proto::Event {
                id: "x".repeat(129),
                ..valid.clone()
            },
            proto::Event {
                r#type: "booking.*".to_owned(),
                ..valid.clone()
            },
            proto::Event {
                account_id: "acct_01bx5zzkbkactav9wevgemmvrz".to_owned(),
                ..valid.clone()
            },
            proto::Event {
                occurred_at: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: -1,
                }),
                ..valid.clone()
            },
            proto::Event {
                data: vec![0xff, 0xfe],
                ..valid.clone()
            },
            proto::Event {
                data: b"[]".to_vec(),
                ..valid.clone()
            },
        ];
        let mut report = String::new();
        for message in cases {
            let err = decode(Some(CONTENT_TYPE_PROTOBUF), &message.encode_to_vec()).unwrap_err();
            assert_eq!(Event::try_from(message).unwrap_err(), err);
            report.push_str(&format!("{err}\n"));
        }
        let err = decode(Some(CONTENT_TYPE_PROTOBUF), b"\x0a\x05ab").unwrap_err();
        report.push_str(&format!("{err}\n"));
        expect_test::expect![[r#"
            field `id` is invalid: is required
            field `id` is invalid: event id must be 1 to 128 characters, found 129
            field `type` is invalid: invalid event type `booking.*`: may contain only a-z, 0-9, `_`, `-` and `.`, found '*'
            field `account_id` is invalid: account id must be `acct_` followed by a ULID in upper-case Crockford base32 (0-9, A-Z without I, L, O, U; first character 0-7)
            field `occurred_at` is invalid: nanos must be 0 to 999999999 and seconds within years 1 to 9999
            field `data` is invalid: is not UTF-8: invalid utf-8 sequence of 1 bytes from index 0
            field `data` is invalid: event data must be a JSON object: found an array
            malformed protobuf event: failed to decode Protobuf message: Event.id: buffer underflow
        "#]].assert_eq(&report);
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        (
            "[A-Za-z0-9._:-]{1,128}",
            "[a-z0-9][a-z0-9_-]{0,8}(\\.[a-z0-9][a-z0-9_-]{0,8}){0,3}",
            any::<u128>(),
            -62_135_596_800i64..=253_402_300_799,
            0u32..1_000_000_000,
            proptest::collection::btree_map("\\PC{0,8}", "\\PC{0,8}", 0..4),
        )
            .prop_map(|(id, event_type, account, seconds, nanos, data)| Event {
                id: EventId::parse(&id).unwrap(),
                event_type: EventType::parse(&event_type).unwrap(),
                account: AccountId::from_ulid(Ulid(account)),
                timestamp: DateTime::from_timestamp(seconds, nanos).unwrap(),
                data: EventData::parse(&serde_json::to_string_pretty(&data).unwrap()).unwrap(),
            })
    }

    proptest! {
        #[test]
        fn protobuf_roundtrip(event in arb_event()) {
            let bytes = encode_event(&event).encode_to_vec();
            let decoded = decode_event(Some(CONTENT_TYPE_PROTOBUF), &bytes, received_at()).unwrap();
            prop_assert_eq!(&decoded, &event);
            prop_assert_eq!(Event::try_from(encode_event(&event)).unwrap(), event);
        }

        #[test]
        fn decode_never_panics(payload: Vec<u8>, json: bool) {
            let content_type = if json { CONTENT_TYPE_JSON } else { CONTENT_TYPE_PROTOBUF };
            let _ = decode_event(Some(content_type), &payload, received_at());
        }
    }
}
