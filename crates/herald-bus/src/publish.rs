//! Publishing to Herald's streams: the booking platform's one-call event publisher, and
//! dead-lettering of messages that cannot be processed.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use bytes::Bytes;
use herald_core::{AccountId, Event, EventId, EventType};
use herald_proto::{CONTENT_TYPE_JSON, CONTENT_TYPE_PROTOBUF, encode_event};

use crate::headers::single_line;
use crate::names::{DEAD_STREAM, DeadSource, EVENTS_STREAM, dead_subject, event_subject, header};

/// Longest dead-letter reason kept; a reason is a diagnosis, not a dump.
const MAX_REASON_LEN: usize = 1024;

/// Why a message was not handed over.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(
        "no stream {stream} captures {subject}: provision Herald's NATS topology first ({source})"
    )]
    NoStream {
        stream: &'static str,
        subject: String,
        #[source]
        source: async_nats::Error,
    },
    #[error(
        "publishing to {subject} was not acknowledged: {source}; the message may or may not be \
         stored, so publish it again (its id de-duplicates it)"
    )]
    NotAcknowledged {
        subject: String,
        #[source]
        source: async_nats::Error,
    },
}

/// What the stream said about a published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishReceipt {
    /// The stream already held a message with this id (within its duplicate window) and
    /// dropped this one: a re-publish, which is safe.
    pub duplicate: bool,
    /// The stream sequence of the stored message (of the original one, for a duplicate).
    pub sequence: u64,
}

/// Publishes domain events to the `EVENTS` stream.
///
/// Each call waits for the stream's acknowledgement, so once it returns `Ok` the event is
/// stored (at-least-once hand-off). Publishing the same event again is safe: the stream drops
/// it by its id and the receipt says `duplicate`.
#[derive(Debug, Clone)]
pub struct Publisher {
    js: jetstream::Context,
}

impl Publisher {
    pub fn new(js: jetstream::Context) -> Publisher {
        Publisher { js }
    }

    /// Publishes `event` as protobuf.
    pub async fn publish(&self, event: &Event) -> Result<PublishReceipt, PublishError> {
        self.publish_with_headers(event, HeaderMap::new()).await
    }

    /// Publishes `event` as protobuf with extra headers, e.g. a `traceparent`
    /// ([`crate::headers::set_traceparent`]).
    pub async fn publish_with_headers(
        &self,
        event: &Event,
        headers: HeaderMap,
    ) -> Result<PublishReceipt, PublishError> {
        let payload = Bytes::from(herald_proto::encode(&encode_event(event)));
        self.send(
            event_subject(&event.account, &event.event_type),
            &event.id,
            CONTENT_TYPE_PROTOBUF,
            headers,
            payload,
        )
        .await
    }

    /// Publishes an event already encoded as JSON (`{"id":…,"type":…,"account":…,…}`), for
    /// publishers that hold JSON. The id, type and account name the subject and the
    /// de-duplication key, so they must be the ones in `json`; the body is not parsed here.
    pub async fn publish_json(
        &self,
        account: &AccountId,
        event_type: &EventType,
        event_id: &EventId,
        json: Bytes,
    ) -> Result<PublishReceipt, PublishError> {
        self.send(
            event_subject(account, event_type),
            event_id,
            CONTENT_TYPE_JSON,
            HeaderMap::new(),
            json,
        )
        .await
    }

    async fn send(
        &self,
        subject: String,
        event_id: &EventId,
        content_type: &str,
        mut headers: HeaderMap,
        payload: Bytes,
    ) -> Result<PublishReceipt, PublishError> {
        headers.insert(header::CONTENT_TYPE, content_type);
        headers.insert(header::MSG_ID, event_id.as_str());
        let message = PublishMessage::build()
            .headers(headers)
            .payload(payload)
            // A subject captured by some other stream would be acknowledged by it; insisting on
            // EVENTS turns that misconfiguration into an error.
            .expected_stream(EVENTS_STREAM);
        publish(&self.js, EVENTS_STREAM, subject, message).await
    }
}

/// Publishes `payload` to `HERALD_DEAD` under `source`, with `reason` and the original subject in
/// headers, and the original headers (including `Nats-Msg-Id`, so that dead-lettering the same
/// message twice stores it once).
pub async fn dead_letter(
    js: &jetstream::Context,
    source: DeadSource,
    reason: &str,
    original_subject: &str,
    original_headers: Option<&HeaderMap>,
    payload: Bytes,
) -> Result<PublishReceipt, PublishError> {
    let mut headers = original_headers.cloned().unwrap_or_default();
    let mut reason = single_line(reason);
    if reason.len() > MAX_REASON_LEN {
        let mut end = MAX_REASON_LEN;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    headers.insert(header::DEAD_REASON, reason.as_str());
    headers.insert(header::DEAD_SUBJECT, original_subject);
    let message = PublishMessage::build().headers(headers).payload(payload);
    publish(js, DEAD_STREAM, dead_subject(source), message).await
}

async fn publish(
    js: &jetstream::Context,
    stream: &'static str,
    subject: String,
    message: PublishMessage,
) -> Result<PublishReceipt, PublishError> {
    let failed = |subject: String, err: jetstream::context::PublishError| {
        if matches!(err.kind(), PublishErrorKind::StreamNotFound) {
            PublishError::NoStream {
                stream,
                subject,
                source: err.into(),
            }
        } else {
            PublishError::NotAcknowledged {
                subject,
                source: err.into(),
            }
        }
    };
    let ack = match js.send_publish(subject.clone(), message).await {
        Ok(pending) => pending.await,
        Err(err) => Err(err),
    }
    .map_err(|err| failed(subject, err))?;
    Ok(PublishReceipt {
        duplicate: ack.duplicate,
        sequence: ack.sequence,
    })
}
