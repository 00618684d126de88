//! Events and what a webhook subscribes to: event types, patterns, filters, and the webhook body.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::{AccountId, EventId};

/// Longest event type, in characters.
pub const EVENT_TYPE_MAX_LEN: usize = 128;

/// How much of an offending value an error message repeats; the rest is elided so that a
/// megabyte of garbage does not become a megabyte of log line.
const SHOWN_LEN: usize = 64;

/// Why a piece of text is not an event type, pattern or payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("invalid event type `{value}`: {reason}")]
    InvalidType { value: String, reason: String },
    #[error("invalid event pattern `{value}`: {reason}")]
    InvalidPattern { value: String, reason: String },
    #[error("event data must be a JSON object: {reason}")]
    InvalidData { reason: String },
}

fn shown(value: &str) -> String {
    match value.char_indices().nth(SHOWN_LEN) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}

/// Checks the event type grammar and says which rule `text` breaks.
fn type_rule_broken(text: &str) -> Option<String> {
    if text.is_empty() {
        return Some("must not be empty".to_owned());
    }
    if text.len() > EVENT_TYPE_MAX_LEN {
        return Some(format!("must be at most {EVENT_TYPE_MAX_LEN} characters"));
    }
    for segment in text.split('.') {
        let Some(first) = segment.chars().next() else {
            return Some("has an empty segment (a leading, trailing or doubled `.`)".to_owned());
        };
        if let Some(bad) = segment
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-')))
        {
            return Some(format!(
                "may contain only a-z, 0-9, `_`, `-` and `.`, found {bad:?}"
            ));
        }
        if !first.is_ascii_alphanumeric() {
            return Some(format!(
                "segment `{segment}` must start with a lower-case letter or a digit"
            ));
        }
    }
    None
}

/// A type of event, such as `booking.created` or `booking.refund.partial`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventType(String);

impl EventType {
    pub fn parse(text: &str) -> Result<Self, EventError> {
        match type_rule_broken(text) {
            None => Ok(Self(text.to_owned())),
            Some(reason) => Err(EventError::InvalidType {
                value: shown(text),
                reason,
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventType({:?})", self.0)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for EventType {
    type Err = EventError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl AsRef<str> for EventType {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// What a webhook subscribes to: one event type, or every type under a prefix (`booking.*`).
///
/// A wildcard matches at any depth (`booking.*` matches `booking.refund.partial`) but not the
/// prefix itself (`booking.*` does not match `booking`), as with NATS's `>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EventPattern(Pattern);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Pattern {
    Exact(EventType),
    /// The whole pattern text, `<prefix>.*`, kept so that `as_str` can borrow it.
    Wildcard(String),
}

impl EventPattern {
    const WILDCARD_SUFFIX: &'static str = ".*";

    pub fn parse(text: &str) -> Result<Self, EventError> {
        let invalid = |reason: String| EventError::InvalidPattern {
            value: shown(text),
            reason,
        };
        if text.len() > EVENT_TYPE_MAX_LEN {
            return Err(invalid(format!(
                "must be at most {EVENT_TYPE_MAX_LEN} characters"
            )));
        }
        if text == "*" {
            return Err(invalid(
                "`*` alone is not a pattern; an empty event list already means every event"
                    .to_owned(),
            ));
        }
        if let Some(prefix) = text.strip_suffix(Self::WILDCARD_SUFFIX) {
            if let Some(reason) = type_rule_broken(prefix) {
                let reason = if prefix.contains('*') {
                    "`*` is allowed only as the whole last segment, as in `booking.*`".to_owned()
                } else {
                    format!("the part before `.*` {reason}")
                };
                return Err(invalid(reason));
            }
            return Ok(Self(Pattern::Wildcard(text.to_owned())));
        }
        if text.contains('*') {
            return Err(invalid(
                "`*` is allowed only as the whole last segment, as in `booking.*`".to_owned(),
            ));
        }
        match type_rule_broken(text) {
            None => Ok(Self(Pattern::Exact(EventType(text.to_owned())))),
            Some(reason) => Err(invalid(reason)),
        }
    }

    pub fn matches(&self, event_type: &EventType) -> bool {
        match &self.0 {
            Pattern::Exact(exact) => exact == event_type,
            Pattern::Wildcard(text) => {
                // Keep the `.` of the suffix: `booking.` must be followed by at least one more
                // character, and event types cannot end with `.`, so this is "a deeper type".
                let with_dot = &text[..text.len() - 1];
                event_type.as_str().len() > with_dot.len()
                    && event_type.as_str().starts_with(with_dot)
            }
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Pattern::Exact(exact) => exact.as_str(),
            Pattern::Wildcard(text) => text,
        }
    }

    /// The event type, when this pattern names exactly one.
    pub fn exact(&self) -> Option<&EventType> {
        match &self.0 {
            Pattern::Exact(exact) => Some(exact),
            Pattern::Wildcard(_) => None,
        }
    }

    /// For a wildcard, the part before `.*` (`booking` for `booking.*`).
    pub fn prefix(&self) -> Option<&str> {
        match &self.0 {
            Pattern::Exact(_) => None,
            Pattern::Wildcard(text) => Some(&text[..text.len() - Self::WILDCARD_SUFFIX.len()]),
        }
    }

    pub fn is_wildcard(&self) -> bool {
        matches!(self.0, Pattern::Wildcard(_))
    }
}

impl From<EventType> for EventPattern {
    fn from(event_type: EventType) -> Self {
        Self(Pattern::Exact(event_type))
    }
}

// Ordered by text, so that a sorted filter reads alphabetically whatever the kinds.
impl Ord for EventPattern {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for EventPattern {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventPattern({:?})", self.as_str())
    }
}

impl fmt::Display for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventPattern {
    type Err = EventError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl AsRef<str> for EventPattern {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Serialize for EventPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The event types a webhook receives. Empty means every event type.
///
/// Patterns are kept sorted and without duplicates, so two filters that accept the same list in
/// any order compare equal and serialise the same.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EventFilter(Vec<EventPattern>);

impl EventFilter {
    /// The filter that lets every event through.
    pub fn all() -> Self {
        Self(Vec::new())
    }

    pub fn new(mut patterns: Vec<EventPattern>) -> Self {
        patterns.sort();
        patterns.dedup();
        Self(patterns)
    }

    pub fn patterns(&self) -> &[EventPattern] {
        &self.0
    }

    pub fn is_all(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, event_type: &EventType) -> bool {
        self.is_all() || self.0.iter().any(|pattern| pattern.matches(event_type))
    }
}

impl FromIterator<EventPattern> for EventFilter {
    fn from_iter<I: IntoIterator<Item = EventPattern>>(iter: I) -> Self {
        Self::new(iter.into_iter().collect())
    }
}

impl Serialize for EventFilter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for EventFilter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<EventPattern>::deserialize(deserializer).map(Self::new)
    }
}

/// An event's payload: the text of a JSON object, kept exactly as the publisher sent it.
///
/// Keeping the text rather than a parsed value means key order, number formatting and whitespace
/// reach the receiver unchanged, and the hot path never re-serialises a payload.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EventData(String);

impl EventData {
    pub const EMPTY: &'static str = "{}";

    /// Accepts the text of one JSON object; empty text means `{}`.
    pub fn parse(text: &str) -> Result<Self, EventError> {
        Self::try_from(text.to_owned())
    }

    /// The empty object `{}`.
    pub fn empty() -> Self {
        Self(Self::EMPTY.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl Default for EventData {
    fn default() -> Self {
        Self::empty()
    }
}

impl TryFrom<String> for EventData {
    type Error = EventError;

    /// Like [`EventData::parse`], without copying the text.
    fn try_from(text: String) -> Result<Self, Self::Error> {
        if text.is_empty() {
            return Ok(Self::empty());
        }
        let mut deserializer = serde_json::Deserializer::from_str(&text);
        deserializer
            .deserialize_map(ObjectOnly)
            .and_then(|()| deserializer.end())
            .map_err(|err| EventError::InvalidData {
                // A data error can only be the top-level value's type; serde's wording for it
                // ("invalid type: sequence … at line 1 column 0") is noise to a publisher.
                reason: if err.is_data() {
                    format!("found {}", json_kind(&text))
                } else {
                    err.to_string()
                },
            })?;
        Ok(Self(text))
    }
}

/// What kind of JSON value `text`, known to be well-formed and not an object, starts with.
fn json_kind(text: &str) -> &'static str {
    match text.trim_start().as_bytes().first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// Walks a JSON object without building it, so validating a payload allocates nothing.
struct ObjectOnly;

impl<'de> Visitor<'de> for ObjectOnly {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

impl fmt::Debug for EventData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventData({})", self.0)
    }
}

impl fmt::Display for EventData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One domain event as published by the booking platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: EventId,
    pub event_type: EventType,
    pub account: AccountId,
    pub timestamp: DateTime<Utc>,
    pub data: EventData,
}

impl Event {
    /// The JSON body POSTed to every webhook that receives this event:
    /// `{"id":…,"type":…,"timestamp":…,"account":…,"data":{…}}`.
    ///
    /// Built by hand rather than through a serialiser so that `data` is copied verbatim. The
    /// timestamp is RFC 3339 in UTC, with milliseconds only when it has a fraction of a second.
    pub fn webhook_body(&self) -> String {
        let precision = if self.timestamp.timestamp_subsec_nanos() == 0 {
            SecondsFormat::Secs
        } else {
            SecondsFormat::Millis
        };
        let timestamp = self.timestamp.to_rfc3339_opts(precision, true);
        let mut body = String::with_capacity(96 + self.data.as_str().len());
        body.push_str("{\"id\":");
        push_json_string(&mut body, self.id.as_str());
        body.push_str(",\"type\":");
        push_json_string(&mut body, self.event_type.as_str());
        body.push_str(",\"timestamp\":");
        push_json_string(&mut body, &timestamp);
        body.push_str(",\"account\":");
        push_json_string(&mut body, self.account.as_str());
        body.push_str(",\"data\":");
        body.push_str(self.data.as_str());
        body.push('}');
        body
    }
}

/// Appends `text` as a JSON string literal. The id and type grammars exclude every character that
/// needs escaping, but the body must stay valid JSON even if those grammars are ever relaxed.
fn push_json_string(out: &mut String, text: &str) {
    use std::fmt::Write as _;
    let plain = |byte: &u8| *byte >= 0x20 && *byte != b'"' && *byte != b'\\';
    if text.as_bytes().iter().all(plain) {
        out.push('"');
        out.push_str(text);
        out.push('"');
        return;
    }
    // Writing to a String cannot fail, and Value's Display escapes exactly as serde_json does.
    let _ = write!(out, "{}", serde_json::Value::from(text));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event_type(text: &str) -> EventType {
        EventType::parse(text).unwrap()
    }

    fn pattern(text: &str) -> EventPattern {
        EventPattern::parse(text).unwrap()
    }

    #[test]
    fn event_type_grammar() {
        for ok in [
            "booking.created",
            "booking.refund.partial",
            "a",
            "0.9",
            "payment_v2.succeeded-late",
            &"a".repeat(128),
        ] {
            assert_eq!(event_type(ok).as_str(), ok);
        }
        let check = |text: &str, expect: &str| {
            let err = EventType::parse(text).unwrap_err();
            assert_eq!(err.to_string(), expect, "{text}");
        };
        check("", "invalid event type ``: must not be empty");
        check(
            &"a".repeat(129),
            &format!(
                "invalid event type `{}…`: must be at most 128 characters",
                "a".repeat(64)
            ),
        );
        check(
            "booking..created",
            "invalid event type `booking..created`: has an empty segment (a leading, trailing or doubled `.`)",
        );
        check(
            ".booking",
            "invalid event type `.booking`: has an empty segment (a leading, trailing or doubled `.`)",
        );
        check(
            "booking.",
            "invalid event type `booking.`: has an empty segment (a leading, trailing or doubled `.`)",
        );
        check(
            "Booking.created",
            "invalid event type `Booking.created`: may contain only a-z, 0-9, `_`, `-` and `.`, found 'B'",
        );
        check(
            "booking created",
            "invalid event type `booking created`: may contain only a-z, 0-9, `_`, `-` and `.`, found ' '",
        );
        check(
            "booking._x",
            "invalid event type `booking._x`: segment `_x` must start with a lower-case letter or a digit",
        );
        check(
            "-booking",
            "invalid event type `-booking`: segment `-booking` must start with a lower-case letter or a digit",
        );
    }

    #[test]
    fn pattern_grammar() {
        assert_eq!(
            pattern("booking.created").exact(),
            Some(&event_type("booking.created"))
        );
        assert_eq!(pattern("booking.created").prefix(), None);
        assert_eq!(pattern("booking.*").prefix(), Some("booking"));
        assert_eq!(pattern("booking.refund.*").prefix(), Some("booking.refund"));
        assert_eq!(pattern("booking.*").exact(), None);
        assert_eq!(pattern("booking.*").as_str(), "booking.*");

        let check = |text: &str, expect: &str| {
            let err = EventPattern::parse(text).unwrap_err();
            assert_eq!(err.to_string(), expect, "{text}");
        };
        check(
            "*",
            "invalid event pattern `*`: `*` alone is not a pattern; an empty event list already means every event",
        );
        check(
            "booking*",
            "invalid event pattern `booking*`: `*` is allowed only as the whole last segment, as in `booking.*`",
        );
        check(
            "*.created",
            "invalid event pattern `*.created`: `*` is allowed only as the whole last segment, as in `booking.*`",
        );
        check(
            "booking.*.*",
            "invalid event pattern `booking.*.*`: `*` is allowed only as the whole last segment, as in `booking.*`",
        );
        check(
            ".*",
            "invalid event pattern `.*`: the part before `.*` must not be empty",
        );
        check(
            "Booking.*",
            "invalid event pattern `Booking.*`: the part before `.*` may contain only a-z, 0-9, `_`, `-` and `.`, found 'B'",
        );
        check(
            "booking..x",
            "invalid event pattern `booking..x`: has an empty segment (a leading, trailing or doubled `.`)",
        );
    }

    #[test]
    fn pattern_matching() {
        let check = |pattern_text: &str, type_text: &str, expect: bool| {
            assert_eq!(
                pattern(pattern_text).matches(&event_type(type_text)),
                expect,
                "{pattern_text} vs {type_text}"
            );
        };
        check("booking.created", "booking.created", true);
        check("booking.created", "booking.created.late", false);
        check("booking.created", "booking", false);
        check("booking.*", "booking.created", true);
        check("booking.*", "booking.refund.partial", true);
        check("booking.*", "booking", false);
        check("booking.*", "bookings.created", false);
        check("booking.*", "payment.succeeded", false);
        check("booking.refund.*", "booking.refund.full", true);
        check("booking.refund.*", "booking.refunded", false);
        check("booking.refund.*", "booking.created", false);
    }

    #[test]
    fn filters() {
        let all = EventFilter::all();
        assert!(all.is_all());
        assert!(all.matches(&event_type("anything.at.all")));
        assert_eq!(EventFilter::default(), all);

        let filter = EventFilter::new(vec![
            pattern("payment.failed"),
            pattern("booking.*"),
            pattern("payment.failed"),
        ]);
        assert_eq!(
            filter.patterns(),
            &[pattern("booking.*"), pattern("payment.failed")]
        );
        assert!(!filter.is_all());
        assert!(filter.matches(&event_type("booking.created")));
        assert!(filter.matches(&event_type("payment.failed")));
        assert!(!filter.matches(&event_type("payment.succeeded")));

        let json = serde_json::to_string(&filter).unwrap();
        assert_eq!(json, r#"["booking.*","payment.failed"]"#);
        let back: EventFilter =
            serde_json::from_str(r#"["payment.failed","booking.*","booking.*"]"#).unwrap();
        assert_eq!(back, filter);
        assert!(serde_json::from_str::<EventFilter>(r#"["Booking"]"#).is_err());
    }

    #[test]
    fn event_data() {
        assert_eq!(EventData::parse("").unwrap().as_str(), "{}");
        let verbatim = "{ \"b\": 1.50, \"a\": [true, null], \"b\": \"dup\" }";
        assert_eq!(EventData::parse(verbatim).unwrap().as_str(), verbatim);

        let errors: Vec<String> = [
            "[1]",
            "\"x\"",
            "null",
            " true",
            "-1.5",
            "{\"a\":1",
            "{} {}",
            " ",
            "{\"a\" 1}",
        ]
        .into_iter()
        .map(|text| format!("{text:?}: {}", EventData::parse(text).unwrap_err()))
        .collect();
        expect_test::expect![[r#"
            "[1]": event data must be a JSON object: found an array
            "\"x\"": event data must be a JSON object: found a string
            "null": event data must be a JSON object: found null
            " true": event data must be a JSON object: found a boolean
            "-1.5": event data must be a JSON object: found a number
            "{\"a\":1": event data must be a JSON object: EOF while parsing an object at line 1 column 6
            "{} {}": event data must be a JSON object: trailing characters at line 1 column 4
            " ": event data must be a JSON object: EOF while parsing a value at line 1 column 1
            "{\"a\" 1}": event data must be a JSON object: expected `:` at line 1 column 6"#]].assert_eq(&errors.join("\n"));
    }

    #[test]
    fn webhook_body_snapshot() {
        let event = Event {
            id: EventId::parse("evt_01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap(),
            event_type: event_type("booking.created"),
            account: AccountId::parse("acct_01BX5ZZKBKACTAV9WEVGEMMVRZ").unwrap(),
            timestamp: "2026-11-27T10:00:00Z".parse().unwrap(),
            data: EventData::parse(
                r#"{"booking_id": "bk_1", "guests": 2, "note": "caf\u00e9 \"x\""}"#,
            )
            .unwrap(),
        };
        let body = event.webhook_body();
        expect_test::expect![[r#"{"id":"evt_01ARZ3NDEKTSV4RRFFQ69G5FAV","type":"booking.created","timestamp":"2026-11-27T10:00:00Z","account":"acct_01BX5ZZKBKACTAV9WEVGEMMVRZ","data":{"booking_id": "bk_1", "guests": 2, "note": "caf\u00e9 \"x\""}}"#]].assert_eq(&body);
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["data"]["guests"], 2);

        let with_millis = Event {
            timestamp: "2026-11-27T10:00:00.123456789Z".parse().unwrap(),
            data: EventData::empty(),
            ..event
        };
        expect_test::expect![[r#"{"id":"evt_01ARZ3NDEKTSV4RRFFQ69G5FAV","type":"booking.created","timestamp":"2026-11-27T10:00:00.123Z","account":"acct_01BX5ZZKBKACTAV9WEVGEMMVRZ","data":{}}"#]].assert_eq(&with_millis.webhook_body());
    }

    fn arb_type() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9_-]{0,8}(\\.[a-z0-9][a-z0-9_-]{0,8}){0,4}"
    }

    proptest! {
        #[test]
        fn strings_in_a_body_are_written_as_serde_json_writes_them(
            chars in prop::collection::vec(
                prop_oneof![
                    any::<char>(),
                    Just('"'),
                    Just('\\'),
                    Just('\u{7f}'),
                    (0u8..0x20).prop_map(char::from),
                ],
                0..24,
            )
        ) {
            let text = String::from_iter(chars);
            let mut out = String::new();
            push_json_string(&mut out, &text);
            prop_assert_eq!(out, serde_json::to_string(&text).unwrap());
        }

        #[test]
        fn valid_types_parse(text in arb_type()) {
            let parsed = EventType::parse(&text).unwrap();
            prop_assert_eq!(parsed.as_str(), text.as_str());
        }

        #[test]
        fn type_parse_never_panics(text in "\\PC{0,40}") {
            let _ = EventType::parse(&text);
            let _ = EventPattern::parse(&text);
        }

        #[test]
        fn exact_pattern_matches_only_itself(a in arb_type(), b in arb_type()) {
            let p = pattern(&a);
            prop_assert!(p.matches(&event_type(&a)));
            prop_assert_eq!(p.matches(&event_type(&b)), a == b);
        }

        #[test]
        fn wildcard_matches_every_deeper_type(prefix in arb_type(), rest in arb_type()) {
            let p = pattern(&format!("{prefix}.*"));
            let deeper = format!("{prefix}.{rest}");
            prop_assume!(deeper.len() <= EVENT_TYPE_MAX_LEN);
            prop_assert!(p.matches(&event_type(&deeper)));
            prop_assert!(!p.matches(&event_type(&prefix)));
        }

        #[test]
        fn wildcard_agrees_with_segment_prefix(prefix in arb_type(), candidate in arb_type()) {
            let p = pattern(&format!("{prefix}.*"));
            let prefix_segments: Vec<&str> = prefix.split('.').collect();
            let segments: Vec<&str> = candidate.split('.').collect();
            let expect = segments.len() > prefix_segments.len()
                && segments[..prefix_segments.len()] == prefix_segments[..];
            prop_assert_eq!(p.matches(&event_type(&candidate)), expect);
        }

        #[test]
        fn filter_is_order_insensitive(mut texts in proptest::collection::vec(arb_type(), 0..6)) {
            let forward = EventFilter::new(texts.iter().map(|t| pattern(t)).collect());
            texts.reverse();
            let backward: EventFilter = texts.iter().map(|t| pattern(t)).collect();
            prop_assert_eq!(forward, backward);
        }

        #[test]
        fn data_objects_are_kept_verbatim(
            entries in proptest::collection::btree_map("\\PC{0,8}", any::<i64>(), 0..5),
            pretty: bool,
        ) {
            let text = if pretty {
                serde_json::to_string_pretty(&entries).unwrap()
            } else {
                serde_json::to_string(&entries).unwrap()
            };
            let parsed = EventData::parse(&text).unwrap();
            prop_assert_eq!(parsed.as_str(), text.as_str());
        }
    }
}
