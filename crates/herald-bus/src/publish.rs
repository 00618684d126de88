//! Publishing to Herald's streams, one way for every caller: a message is given its headers
//! (`Nats-Msg-Id`, content type, trace context), published, and its acknowledgement awaited,
//! with retries paced by `backon` as the caller's [`Persistence`] allows. Every message carries
//! an id, so a retried publish whose first acknowledgement was lost is dropped by the stream.
//!
//! On top of it: the booking platform's one-call event [`Publisher`], and dead-lettering of
//! messages that cannot be processed.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use backon::{ExponentialBuilder, Retryable as _};
use bytes::Bytes;
use futures::StreamExt as _;
use herald_core::{AccountId, Event, EventId, EventType};
use herald_proto::{CONTENT_TYPE_JSON, CONTENT_TYPE_PROTOBUF, encode_event};
use tracing::Instrument as _;

use crate::headers::{name, set_traceparent, single_line, traceparent};
use crate::names::{DEAD_STREAM, DeadSource, EVENTS_STREAM, dead_subject, event_subject, header};

/// Longest dead-letter reason kept; a reason is a diagnosis, not a dump.
const MAX_REASON_LEN: usize = 1024;

/// Why a message was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(
        "no stream {stream} answered for {subject}: it is missing (provision Herald's NATS \
         topology first) or, in a cluster, electing a new leader ({source})"
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
    #[error("a message of {size} bytes to {subject} is larger than the server accepts ({source})")]
    TooLarge {
        subject: String,
        size: usize,
        #[source]
        source: async_nats::Error,
    },
}

impl PublishError {
    /// Worth trying again: the server may be restarting, or an acknowledgement was lost. A
    /// message too large never fits.
    pub fn is_transient(&self) -> bool {
        !matches!(self, PublishError::TooLarge { .. })
    }
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

impl From<&jetstream::publish::PublishAck> for PublishReceipt {
    fn from(ack: &jetstream::publish::PublishAck) -> Self {
        PublishReceipt {
            duplicate: ack.duplicate,
            sequence: ack.sequence,
        }
    }
}

/// A message for one of Herald's streams.
#[derive(Debug, Clone)]
pub struct Outgoing {
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
    /// Insist on this stream: a subject captured by another stream would be acknowledged by it.
    stream: Option<&'static str>,
}

impl Outgoing {
    /// `payload` of `content_type` for `subject`, de-duplicated by `id`.
    pub fn new(subject: impl Into<String>, id: &str, content_type: &str, payload: Bytes) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(name(header::MSG_ID), id);
        headers.insert(name(header::CONTENT_TYPE), content_type);
        Outgoing {
            subject: subject.into(),
            headers,
            payload,
            stream: None,
        }
    }

    /// A protobuf `payload` for `subject`, de-duplicated by `id`.
    pub fn protobuf(subject: impl Into<String>, id: &str, payload: Bytes) -> Self {
        Outgoing::new(subject, id, CONTENT_TYPE_PROTOBUF, payload)
    }

    /// Carries the trace on, if there is one.
    pub fn traceparent(mut self, traceparent: Option<&str>) -> Self {
        if let Some(traceparent) = traceparent {
            set_traceparent(&mut self.headers, traceparent);
        }
        self
    }

    /// Carries on the trace context of the message `headers` came with: its `traceparent` and
    /// the attempt a retry follows.
    pub fn trace_from(self, headers: Option<&HeaderMap>) -> Self {
        self.traceparent(headers.and_then(traceparent))
            .previous_attempt(headers.and_then(crate::headers::previous_attempt))
    }

    /// Names the attempt a retry follows, if OpenTelemetry recorded it.
    pub fn previous_attempt(mut self, traceparent: Option<&str>) -> Self {
        if let Some(traceparent) = traceparent {
            self.headers
                .insert(name(header::PREVIOUS_ATTEMPT), traceparent);
        }
        self
    }

    /// Adds `headers`, replacing those of the same names.
    pub fn headers(mut self, headers: &HeaderMap) -> Self {
        for (name, values) in headers.iter() {
            for value in values {
                self.headers.insert(name.clone(), value.clone());
            }
        }
        self
    }

    /// Only this stream may store the message.
    pub fn in_stream(mut self, stream: &'static str) -> Self {
        self.stream = Some(stream);
        self
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The value of header `name`, if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.as_str())
    }

    /// Bytes on the wire, near enough: the payload and the headers.
    pub fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, values)| {
                values
                    .iter()
                    .map(|value| name.to_string().len() + value.as_str().len() + 4)
                    .sum::<usize>()
            })
            .sum();
        self.payload.len() + headers + 12
    }
}

/// How hard a publish tries before it reports failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persistence {
    /// Attempts in all, at least one.
    pub attempts: usize,
    /// Wait after the first failure; it doubles, with jitter, up to `max_delay`.
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Longest time spent waiting between attempts in all.
    pub total: Duration,
}

impl Persistence {
    /// One attempt: the caller retries in its own way.
    pub const ONCE: Persistence = Persistence {
        attempts: 1,
        min_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
        total: Duration::ZERO,
    };

    /// A few quick attempts within about two seconds: a lost acknowledgement is usually a
    /// blip, and a caller that waits for the publish should not wait long.
    pub const BRIEF: Persistence = Persistence {
        attempts: 5,
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(800),
        total: Duration::from_secs(2),
    };

    /// Keeps trying for up to `total`, pausing at most a second, so that a NATS restart is
    /// ridden out and noticed within a second of the server being back.
    pub const fn patient(total: Duration) -> Persistence {
        Persistence {
            attempts: usize::MAX,
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
            total,
        }
    }

    fn backoff(self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.attempts.max(1) - 1)
            .with_total_delay(Some(self.total))
            .with_jitter()
    }
}

/// Stores `message`, trying as hard as `persistence` says.
pub async fn publish(
    js: &jetstream::Context,
    message: &Outgoing,
    persistence: Persistence,
) -> Result<PublishReceipt, PublishError> {
    (|| publish_once(js, message))
        .retry(persistence.backoff())
        .when(PublishError::is_transient)
        .notify(|err, wait| {
            tracing::debug!(subject = %message.subject, %err, ?wait, "publish not stored; retrying");
        })
        .await
}

/// Messages of one [`publish_all`] sent and not yet acknowledged at once: far below the
/// JetStream context's limit of unacknowledged publishes (5,000 by default), and enough to keep
/// a fan-out's publishes pipelined.
pub const PUBLISH_WINDOW: usize = 256;

/// Stores every message: they are sent pipelined, up to [`PUBLISH_WINDOW`] unacknowledged at
/// a time, their acknowledgements awaited as they come, then any that failed are retried as
/// `persistence` says. Receipts are in `messages`' order.
pub async fn publish_all(
    js: &jetstream::Context,
    messages: &[Outgoing],
    persistence: Persistence,
) -> Result<Vec<PublishReceipt>, PublishError> {
    // One message (most events have one task) needs no queue of acknowledgements.
    if let [message] = messages {
        let receipt = match send_and_ack(js, message).await {
            Some(ack) => PublishReceipt::from(&ack),
            None => publish(js, message, persistence).await?,
        };
        return Ok(vec![receipt]);
    }
    // Each message's future takes one of the context's permits for unacknowledged publishes and
    // gives it back with its own acknowledgement; all of them are polled together, so no
    // message holds a permit while it waits for another (sending everything before awaiting
    // anything stalled as soon as one fan-out, or several at once, passed the limit).
    let mut acked = Vec::with_capacity(messages.len());
    let mut in_flight = futures::stream::FuturesOrdered::new();
    for message in messages {
        if in_flight.len() >= PUBLISH_WINDOW
            && let Some(ack) = in_flight.next().await
        {
            acked.push(ack);
        }
        in_flight.push_back(send_and_ack(js, message));
    }
    while let Some(ack) = in_flight.next().await {
        acked.push(ack);
    }
    let mut receipts = Vec::with_capacity(messages.len());
    for (message, ack) in messages.iter().zip(acked) {
        receipts.push(match ack {
            Some(ack) => PublishReceipt::from(&ack),
            None => publish(js, message, persistence).await?,
        });
    }
    Ok(receipts)
}

/// Sends `message` and waits for its acknowledgement; `None` when either failed.
async fn send_and_ack(
    js: &jetstream::Context,
    message: &Outgoing,
) -> Option<jetstream::publish::PublishAck> {
    let ack = js
        .send_publish(message.subject.clone(), build(message))
        .await
        .ok()?;
    ack.into_future().await.ok()
}

fn build(message: &Outgoing) -> PublishMessage {
    let built = PublishMessage::build()
        .headers(message.headers.clone())
        .payload(message.payload.clone());
    match message.stream {
        Some(stream) => built.expected_stream(stream),
        None => built,
    }
}

async fn publish_once(
    js: &jetstream::Context,
    message: &Outgoing,
) -> Result<PublishReceipt, PublishError> {
    let subject = message.subject.clone();
    let failed = |err: jetstream::context::PublishError| match err.kind() {
        PublishErrorKind::StreamNotFound => PublishError::NoStream {
            stream: message.stream.unwrap_or("(any)"),
            subject: subject.clone(),
            source: err.into(),
        },
        PublishErrorKind::MaxPayloadExceeded => PublishError::TooLarge {
            subject: subject.clone(),
            size: message.size(),
            source: err.into(),
        },
        _ => PublishError::NotAcknowledged {
            subject: subject.clone(),
            source: err.into(),
        },
    };
    let ack = match js
        .send_publish(message.subject.clone(), build(message))
        .await
    {
        Ok(pending) => pending.await,
        Err(err) => Err(err),
    }
    .map_err(failed)?;
    Ok(PublishReceipt::from(&ack))
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
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<PublishReceipt, PublishError> {
        // A producer span, child of the caller's span (or of the `traceparent` it passed); the
        // event carries it on to the router.
        let span = tracing::info_span!(
            target: crate::trace::HOP_TARGET,
            "publish",
            otel.name = "publish events",
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.destination.name = %subject,
            messaging.message.id = %event_id,
        );
        crate::trace::continue_from(&span, Some(&headers));
        let own = crate::trace::traceparent_of(&span);
        let message = Outgoing::new(subject, event_id.as_str(), content_type, payload)
            .headers(&headers)
            .traceparent(own.as_deref())
            .in_stream(EVENTS_STREAM);
        publish(&self.js, &message, Persistence::BRIEF)
            .instrument(span)
            .await
    }
}

/// Publishes `payload` to `HERALD_DEAD` under `source`, with `reason` and the original subject in
/// headers, and the original headers (including `Nats-Msg-Id`, so that dead-lettering the same
/// message twice stores it once). A payload too large to be stored with them is left out, and
/// the letter says so: it still names the message and why it could not be processed.
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
    headers.insert(name(header::DEAD_REASON), reason.as_str());
    headers.insert(name(header::DEAD_SUBJECT), original_subject);
    let letter = |payload: Bytes, headers: &HeaderMap| Outgoing {
        subject: dead_subject(source),
        headers: headers.clone(),
        payload,
        stream: Some(DEAD_STREAM),
    };
    let size = payload.len();
    match publish(js, &letter(payload, &headers), Persistence::BRIEF).await {
        Err(PublishError::TooLarge { .. }) => {
            headers.insert(
                name(header::DEAD_PAYLOAD_OMITTED),
                format!("{size} bytes, more than the server accepts").as_str(),
            );
            publish(js, &letter(Bytes::new(), &headers), Persistence::BRIEF).await
        }
        stored => stored,
    }
}
