//! Reading and writing Herald's message headers: trace context propagation, content type and
//! dead-letter reasons.

use async_nats::{HeaderMap, HeaderName};

use crate::names::header;

/// One of Herald's header names, as async-nats keys them: made from the static text, where a
/// `&str` key would be copied into a new name on every lookup and insert.
pub const fn name(text: &'static str) -> HeaderName {
    HeaderName::from_static(text)
}

/// The W3C `traceparent` of a message, if it carries one.
pub fn traceparent(headers: &HeaderMap) -> Option<&str> {
    non_empty(headers, header::TRACEPARENT)
}

/// Sets the W3C `traceparent`, replacing any earlier value, so a trace continues across the
/// hop.
pub fn set_traceparent(headers: &mut HeaderMap, traceparent: &str) {
    headers.insert(name(header::TRACEPARENT), traceparent);
}

/// Copies the `traceparent` of `from`, if any, into `to`.
pub fn propagate_traceparent(from: &HeaderMap, to: &mut HeaderMap) {
    if let Some(value) = traceparent(from) {
        set_traceparent(to, value);
    }
}

/// The `traceparent` of the attempt a retry's task follows, if it names one.
pub fn previous_attempt(headers: &HeaderMap) -> Option<&str> {
    non_empty(headers, header::PREVIOUS_ATTEMPT)
}

/// The message's `Content-Type`, if set.
pub fn content_type(headers: &HeaderMap) -> Option<&str> {
    non_empty(headers, header::CONTENT_TYPE)
}

/// The message's `Nats-Msg-Id`, if set.
pub fn msg_id(headers: &HeaderMap) -> Option<&str> {
    non_empty(headers, header::MSG_ID)
}

/// Why a dead-lettered message was dead-lettered.
pub fn dead_reason(headers: &HeaderMap) -> Option<&str> {
    non_empty(headers, header::DEAD_REASON)
}

/// Header values must be a single line; a reason built from an error message may not be.
pub(crate) fn single_line(text: &str) -> String {
    text.split(['\r', '\n'])
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn non_empty<'a>(headers: &'a HeaderMap, text: &'static str) -> Option<&'a str> {
    headers
        .get(name(text))
        .map(|value| value.as_str())
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_round_trips_and_propagates() {
        let mut incoming = HeaderMap::new();
        assert_eq!(traceparent(&incoming), None);
        set_traceparent(&mut incoming, "stale");
        set_traceparent(&mut incoming, TRACEPARENT);
        assert_eq!(traceparent(&incoming), Some(TRACEPARENT));

        let mut outgoing = HeaderMap::new();
        propagate_traceparent(&incoming, &mut outgoing);
        assert_eq!(traceparent(&outgoing), Some(TRACEPARENT));

        let mut untouched = HeaderMap::new();
        propagate_traceparent(&HeaderMap::new(), &mut untouched);
        assert!(untouched.is_empty());
    }

    #[test]
    fn empty_values_count_as_absent() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "");
        assert_eq!(content_type(&headers), None);
        headers.insert(header::CONTENT_TYPE, "application/json");
        assert_eq!(content_type(&headers), Some("application/json"));
    }

    #[test]
    fn reasons_become_one_line() {
        assert_eq!(
            single_line("bad event\r\n  field `id`\n\n"),
            "bad event field `id`"
        );
    }
}
