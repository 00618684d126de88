//! One delivery attempt: the signed request exactly as integrators are promised it, what the
//! answer means for the delivery, and the outcome recorded for the delivery log.

use std::time::Duration;

use ::http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use herald_core::{DeliveryId, Disposition, RetrySchedule, classify, jittered, parse_retry_after};
use herald_proto::deliveries::v1::{DeliveryOutcome, DeliveryStatus};
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use sha2::{Digest as _, Sha256};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::config::OutboundTrace;
use crate::http::{self, DeliveryClient, SendError};
use crate::index::Subscription;
use crate::task::Task;

const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Why an attempt got no HTTP answer. `Display` is the outcome's curated error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    #[error(transparent)]
    Send(#[from] SendError),
    /// Sending unsigned would teach receivers to accept unsigned requests.
    #[error("the webhook has no signing secret that is still valid; nothing was sent")]
    NoSigningSecret,
    /// The worker lacks the key the registry sealed the webhook's secret with.
    #[error("the worker cannot open the webhook's signing secret: {0}; nothing was sent")]
    SecretSealed(herald_core::SealError),
}

impl AttemptError {
    /// A short, bounded name of the failure, for spans (`error.type`).
    pub fn kind(&self) -> &'static str {
        match self {
            AttemptError::Send(SendError::Forbidden(_) | SendError::ForbiddenName { .. }) => {
                "forbidden_address"
            }
            AttemptError::Send(SendError::Dns { .. }) => "dns",
            AttemptError::Send(SendError::Timeout(_)) => "timeout",
            AttemptError::Send(SendError::ConnectionRefused) => "connection_refused",
            AttemptError::Send(SendError::ConnectionReset) => "connection_reset",
            AttemptError::Send(SendError::Connect(_)) => "connect",
            AttemptError::Send(SendError::Request(_)) => "request",
            AttemptError::NoSigningSecret => "no_signing_secret",
            AttemptError::SecretSealed(_) => "secret_sealed",
        }
    }
}

/// An attempt as made: when, how long until the answer, and the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempted {
    pub at: DateTime<Utc>,
    pub latency: Duration,
    pub result: Result<http::Response, AttemptError>,
    /// The request's headers as sent; empty when nothing was sent.
    pub request_headers: HeaderMap,
}

impl Attempted {
    /// When the answer (or the failure) came. Waits are counted from here: an endpoint that
    /// says "retry after 1 s" means one second after it said so.
    pub fn answered_at(&self) -> DateTime<Utc> {
        self.at + chrono::Duration::from_std(self.latency).unwrap_or(chrono::Duration::MAX)
    }

    /// When the attempt after a wait of `delay` is due.
    pub fn next_at(&self, delay: Duration) -> DateTime<Utc> {
        self.answered_at() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX)
    }
}

/// A signed webhook request's own headers, as Standard Webhooks names them: `webhook-id`,
/// `webhook-timestamp`, `webhook-signature` (`signature`, the header's whole value) and the
/// JSON content type. The map has room for a trace context and the user agent besides.
pub fn webhook_headers(id: &str, timestamp: i64, signature: String) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(8);
    // Ids are ASCII by construction and signatures are base64, so these conversions only fail
    // on a broken invariant; such a header is left out rather than failing the delivery.
    for (name, value) in [
        (WEBHOOK_ID, HeaderValue::from_str(id)),
        (WEBHOOK_TIMESTAMP, Ok(HeaderValue::from(timestamp))),
        // The header takes the signature's own buffer rather than a copy of it.
        (WEBHOOK_SIGNATURE, HeaderValue::try_from(signature)),
    ] {
        match value {
            Ok(value) => {
                headers.insert(name, value);
            }
            Err(err) => tracing::error!(header = %name, %err, "unrepresentable header value"),
        }
    }
    headers.insert(CONTENT_TYPE, APPLICATION_JSON);
    headers
}

/// The request headers of one attempt: `webhook-id` is the delivery id (stable across retries,
/// for receivers to deduplicate on), `webhook-signature` holds one signature per live secret.
pub fn request_headers(
    subscription: &Subscription,
    task: &Task,
    body: &[u8],
    traceparent: Option<&str>,
    now: DateTime<Utc>,
) -> Result<HeaderMap, AttemptError> {
    if let Some(err) = &subscription.unopened {
        return Err(AttemptError::SecretSealed(err.clone()));
    }
    let secrets = subscription.live_secrets(now);
    if secrets.is_empty() {
        return Err(AttemptError::NoSigningSecret);
    }
    let id = task.delivery_id.as_str();
    let timestamp = now.timestamp();
    let signature = herald_core::signature_header(&secrets, id, timestamp, body);
    let mut headers = webhook_headers(id, timestamp, signature);
    if let Some(traceparent) = traceparent.and_then(|value| HeaderValue::from_str(value).ok()) {
        headers.insert(TRACEPARENT, traceparent);
    }
    Ok(headers)
}

/// Signs and POSTs `task` to `subscription`.
pub async fn send(
    client: &DeliveryClient,
    subscription: &Subscription,
    task: &Task,
    traceparent: Option<&str>,
) -> Attempted {
    let at = Utc::now();
    let body = Bytes::from(task.event.webhook_body());
    let mut headers = match request_headers(subscription, task, &body, traceparent, at) {
        Ok(headers) => headers,
        Err(err) => {
            return Attempted {
                at,
                latency: Duration::ZERO,
                result: Err(err),
                request_headers: HeaderMap::new(),
            };
        }
    };
    // Set here rather than as the client's default so that the log records
    // exactly what was sent.
    headers.insert(USER_AGENT, client.user_agent().clone());
    let attempt = client.post(&subscription.url, &headers, body).await;
    Attempted {
        at,
        latency: attempt.latency,
        result: attempt.result.map_err(AttemptError::Send),
        request_headers: headers,
    }
}

/// Records the answer (or its absence) on the attempt's span, in OpenTelemetry's HTTP terms.
pub fn record_on(span: &tracing::Span, attempted: &Attempted) {
    match &attempted.result {
        Ok(response) => {
            span.record("http.response.status_code", i64::from(response.status));
            if response.status >= 400 {
                span.record("error.type", response.status.to_string());
                span.record("otel.status_code", "ERROR");
            }
        }
        Err(err) => {
            span.record("error.type", err.kind());
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// What happens to the delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again after this long.
    Retry(Duration),
    /// No further attempt; `disable` when the endpoint answered 410 Gone.
    Exhausted {
        disable: bool,
    },
}

/// Decides what an attempt means. `rng` jitters scheduled delays.
pub fn decide(
    task: &Task,
    attempted: &Attempted,
    schedule: &RetrySchedule,
    rng: &mut impl rand::Rng,
) -> Verdict {
    let (disposition, retry_after) = match &attempted.result {
        Ok(response) => (classify(response.status), response.retry_after.as_deref()),
        Err(_) => (Disposition::Retry, None),
    };
    match disposition {
        Disposition::Delivered => return Verdict::Delivered,
        Disposition::Disable => return Verdict::Exhausted { disable: true },
        Disposition::Retry | Disposition::RetryHonouringRetryAfter => {}
    }
    let exhausted = Verdict::Exhausted { disable: false };
    if !task.follows_schedule() {
        return exhausted;
    }
    let Some(scheduled) = schedule.delay_after(task.attempt) else {
        return exhausted;
    };
    let hinted = (disposition == Disposition::RetryHonouringRetryAfter)
        .then(|| retry_after.and_then(|header| parse_retry_after(header, attempted.answered_at())))
        .flatten();
    match hinted {
        // Not jittered: jitter could bring the retry before the time the endpoint asked for.
        Some(retry_after) => Verdict::Retry(schedule.clamp_retry_after(retry_after, task.attempt)),
        None => Verdict::Retry(jittered(scheduled, rng)),
    }
}

/// The curated error of a failed attempt: what an integrator needs to fix their endpoint.
pub fn error_text(attempted: &Attempted) -> String {
    match &attempted.result {
        Ok(response) => match response.status {
            200..=299 => String::new(),
            status @ 300..=399 => format!("HTTP {status} (redirects are not followed)"),
            410 => "HTTP 410 Gone: the endpoint asked for the webhook to be disabled".to_owned(),
            status => format!("HTTP {status}"),
        },
        Err(err) => err.to_string(),
    }
}

/// The outcome of an attempt, for the registry's delivery log, encoded: it carries the task's
/// event as the task carried it, and the request's headers as sent, without copies of either.
pub fn outcome(task: &Task, attempted: &Attempted, verdict: Verdict) -> Vec<u8> {
    let (status, next_attempt_at, disable) = match verdict {
        Verdict::Delivered => (DeliveryStatus::Delivered, None, false),
        Verdict::Retry(delay) => (
            DeliveryStatus::Failed,
            Some(attempted.next_at(delay)),
            false,
        ),
        Verdict::Exhausted { disable } => (DeliveryStatus::Exhausted, None, disable),
    };
    let (http_status, response_body) = match &attempted.result {
        Ok(response) => (u32::from(response.status), response.body.clone()),
        Err(_) => (0, String::new()),
    };
    let outcome = DeliveryOutcome {
        delivery_id: task.delivery_id.to_string(),
        webhook_id: task.webhook.to_string(),
        event: None,
        attempt: task.attempt,
        status: status as i32,
        http_status,
        latency_ms: u32::try_from(attempted.latency.as_millis()).unwrap_or(u32::MAX),
        error: error_text(attempted),
        response_body,
        attempted_at: Some(herald_proto::timestamp(attempted.at)),
        next_attempt_at: next_attempt_at.map(herald_proto::timestamp),
        disable_webhook: disable,
        trigger: task.trigger as i32,
        request_headers: Default::default(),
    };
    // Herald's own header values are ASCII, so this borrows; anything else is shown lossily.
    let headers: Vec<(&str, std::borrow::Cow<'_, str>)> = attempted
        .request_headers
        .iter()
        .map(|(name, value)| (name.as_str(), String::from_utf8_lossy(value.as_bytes())))
        .collect();
    herald_proto::encode_outcome(outcome, &task.event_bytes, &headers)
}

/// The outcome of a task that is not sent because its webhook was disabled or deleted, encoded:
/// the log then shows why instead of a delivery pending forever, and it can be replayed once
/// the webhook is enabled again.
pub fn not_sent(task: &Task, reason: &str, at: DateTime<Utc>) -> Vec<u8> {
    let outcome = DeliveryOutcome {
        delivery_id: task.delivery_id.to_string(),
        webhook_id: task.webhook.to_string(),
        event: None,
        attempt: task.attempt,
        status: DeliveryStatus::Exhausted as i32,
        http_status: 0,
        latency_ms: 0,
        error: reason.to_owned(),
        response_body: String::new(),
        attempted_at: Some(herald_proto::timestamp(at)),
        next_attempt_at: None,
        disable_webhook: false,
        trigger: task.trigger as i32,
        request_headers: Default::default(),
    };
    herald_proto::encode_outcome::<&str>(outcome, &task.event_bytes, &[])
}

/// A fresh W3C trace context, for events published without one, so that every request of one
/// event's deliveries can still be correlated.
pub fn new_traceparent() -> String {
    let trace_id: u128 = rand::random::<u128>().max(1);
    let span_id: u64 = rand::random::<u64>().max(1);
    format!("00-{trace_id:032x}-{span_id:016x}-01")
}

/// The `traceparent` a webhook request carries, by `policy`: its parent id names `span` (the
/// sender's span for this attempt) when OpenTelemetry records it, a fresh id otherwise. With
/// [`OutboundTrace::Delivery`] the trace id is the delivery's own, the same on every attempt;
/// with [`OutboundTrace::Platform`] it is the trace the event came in (`carried` when
/// OpenTelemetry is off).
pub fn outbound_traceparent(
    policy: OutboundTrace,
    span: &tracing::Span,
    delivery: &DeliveryId,
    carried: Option<&str>,
) -> String {
    if policy == OutboundTrace::Platform {
        return herald_bus::trace::traceparent_of(span)
            .or_else(|| carried.map(str::to_owned))
            .unwrap_or_else(new_traceparent);
    }
    let own = herald_bus::trace::recording(span)
        .then(|| span.context().span().span_context().clone())
        .filter(SpanContext::is_valid);
    let (span_id, flags) = if let Some(own) = own {
        (own.span_id().to_string(), own.trace_flags().to_u8())
    } else {
        (format!("{:016x}", rand::random::<u64>().max(1)), 1)
    };
    format!("00-{}-{span_id}-{flags:02x}", delivery_trace_id(delivery))
}

/// The trace id an integrator sees for `delivery`: 16 bytes of SHA-256 of its id, in hex.
pub fn delivery_trace_id(delivery: &DeliveryId) -> String {
    let digest = Sha256::new()
        .chain_update(b"herald-trace:")
        .chain_update(delivery.as_str())
        .finalize();
    hex::encode(&digest[..16])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use super::*;
    use herald_core::{AccountId, DeliveryId, Event, EventData, EventId, EventType, WebhookId};
    use herald_proto::deliveries::v1::{DeliveryTask, Trigger};
    use herald_proto::webhooks::v1::{SigningKey, WebhookSpec};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn task(attempt: u32, trigger: Trigger) -> Task {
        let event = Event {
            id: EventId::parse("evt_1").unwrap(),
            event_type: EventType::parse("booking.created").unwrap(),
            account: AccountId::parse("acct_01BX5ZZKBKACTAV9WEVGEMMVRZ").unwrap(),
            timestamp: "2026-11-27T10:00:00Z".parse().unwrap(),
            data: EventData::parse(r#"{"n":1}"#).unwrap(),
        };
        let webhook = WebhookId::parse("wh_01BX5ZZKBKACTAV9WEVGEMMVRZ").unwrap();
        Task::from_message(DeliveryTask {
            delivery_id: DeliveryId::derive(&event.id, &webhook).to_string(),
            webhook_id: webhook.to_string(),
            event: Some(herald_proto::encode_event(&event)),
            attempt,
            not_before: None,
            trigger: trigger as i32,
        })
        .unwrap()
    }

    fn subscription() -> Subscription {
        let spec = WebhookSpec {
            id: "wh_01BX5ZZKBKACTAV9WEVGEMMVRZ".to_owned(),
            account_id: "acct_01BX5ZZKBKACTAV9WEVGEMMVRZ".to_owned(),
            name: "hook".to_owned(),
            enabled: true,
            event_patterns: vec![],
            url: "https://example.com/hook".to_owned(),
            signing_keys: vec![SigningKey {
                secret: SECRET.to_owned(),
                expires_at: None,
            }],
            version: 1,
            updated_at: None,
        };
        Subscription::from_spec(&spec.id, &spec, &herald_core::Keyring::default()).unwrap()
    }

    fn answered(status: u16, retry_after: Option<&str>) -> Attempted {
        Attempted {
            at: "2026-11-27T10:00:00Z".parse().unwrap(),
            latency: Duration::from_millis(12),
            result: Ok(http::Response {
                status,
                retry_after: retry_after.map(str::to_owned),
                body: "nope".to_owned(),
            }),
            request_headers: HeaderMap::from_iter([(
                WEBHOOK_ID,
                HeaderValue::from_static("dlv_01BX5ZZKBKACTAV9WEVGEMMVRZ"),
            )]),
        }
    }

    fn schedule() -> RetrySchedule {
        RetrySchedule::new(vec![Duration::from_secs(10), Duration::from_secs(100)]).unwrap()
    }

    const PLATFORM: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn delivery() -> DeliveryId {
        DeliveryId::derive(&EventId::generate(), &WebhookId::new())
    }

    /// Runs `f` with an OpenTelemetry layer recording spans on this thread.
    fn recorded<T>(f: impl FnOnce() -> T) -> T {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        herald_bus::trace::record();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f)
    }

    /// The `traceparent` an attempt span, child of the platform's trace, sends by `policy`,
    /// and that span's id.
    fn sent_from_platform_trace(
        policy: OutboundTrace,
        delivery: &DeliveryId,
    ) -> (String, opentelemetry::trace::SpanId) {
        recorded(|| {
            let span = tracing::info_span!("attempt");
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("traceparent", PLATFORM);
            herald_bus::trace::continue_from(&span, Some(&headers));
            let sent = outbound_traceparent(policy, &span, delivery, Some(PLATFORM));
            (sent, span.context().span().span_context().span_id())
        })
    }

    fn parts(traceparent: &str) -> Vec<String> {
        traceparent.split('-').map(str::to_owned).collect()
    }

    #[test]
    fn by_default_a_request_names_the_attempt_span_in_the_deliverys_own_trace() {
        let delivery = delivery();
        let (sent, span_id) = sent_from_platform_trace(OutboundTrace::Delivery, &delivery);
        let sent_parts = parts(&sent);
        assert_eq!(sent_parts[1], delivery_trace_id(&delivery), "{sent}");
        assert_ne!(
            sent_parts[1],
            parts(PLATFORM)[1],
            "the platform's trace stays inside"
        );
        assert_eq!(sent_parts[2], span_id.to_string(), "{sent}");
        assert_eq!(sent_parts[3], "01");
        assert_eq!(delivery_trace_id(&delivery).len(), 32);
        assert_ne!(
            delivery_trace_id(&delivery),
            delivery_trace_id(&self::delivery())
        );
    }

    #[test]
    fn passing_the_platforms_trace_through_names_the_attempt_span_in_it() {
        let delivery = delivery();
        let (sent, span_id) = sent_from_platform_trace(OutboundTrace::Platform, &delivery);
        let sent_parts = parts(&sent);
        assert_eq!(sent_parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "{sent}");
        assert_eq!(sent_parts[2], span_id.to_string(), "{sent}");
    }

    #[test]
    fn without_opentelemetry_the_policy_still_holds() {
        let delivery = delivery();
        let span = tracing::info_span!("attempt");
        let own = outbound_traceparent(OutboundTrace::Delivery, &span, &delivery, Some(PLATFORM));
        assert_eq!(parts(&own)[1], delivery_trace_id(&delivery));
        assert!(herald_bus::trace::span_context(&own).is_some(), "{own}");
        let passed =
            outbound_traceparent(OutboundTrace::Platform, &span, &delivery, Some(PLATFORM));
        assert_eq!(passed, PLATFORM);
    }

    #[test]
    fn headers_are_signed_with_the_delivery_id() {
        let task = task(1, Trigger::Event);
        let now: DateTime<Utc> = "2026-11-27T10:00:00Z".parse().unwrap();
        let body = task.event.webhook_body();
        let headers = request_headers(
            &subscription(),
            &task,
            body.as_bytes(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            now,
        )
        .unwrap();
        let shown: Vec<String> = headers
            .iter()
            .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap()))
            .collect();
        expect_test::expect![[r#"
            webhook-id: dlv_4P4SR9SE95YKXG244CQR91R8WA
            webhook-timestamp: 1795773600
            webhook-signature: v1,yc4nwLdBJG6+pUIkgepGlcVNW2dAbxE0YHDuv598DYE=
            content-type: application/json
            traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"#]]
        .assert_eq(&shown.join("\n"));
        herald_core::verify(
            &[herald_core::SigningSecret::parse(SECRET).unwrap()],
            task.delivery_id.as_str(),
            "1795773600",
            headers[WEBHOOK_SIGNATURE].to_str().unwrap(),
            body.as_bytes(),
            now.timestamp(),
            herald_core::DEFAULT_TOLERANCE,
        )
        .unwrap();
    }

    #[test]
    fn expired_secrets_do_not_sign() {
        let mut subscription = subscription();
        subscription.keys[0].expires_at = Some("2026-01-01T00:00:00Z".parse().unwrap());
        let task = task(1, Trigger::Event);
        let err = request_headers(&subscription, &task, b"{}", None, Utc::now()).unwrap_err();
        assert_eq!(err, AttemptError::NoSigningSecret);
    }

    #[test]
    fn a_secret_that_did_not_open_sends_nothing() {
        let mut subscription = subscription();
        subscription.unopened = Some(herald_core::SealError::NoKey);
        let task = task(1, Trigger::Event);
        let err = request_headers(&subscription, &task, b"{}", None, Utc::now()).unwrap_err();
        assert_eq!(
            err,
            AttemptError::SecretSealed(herald_core::SealError::NoKey)
        );
        assert!(err.to_string().contains("HERALD_ENCRYPTION_KEY"), "{err}");
    }

    #[test]
    fn verdicts() {
        let mut rng = StdRng::seed_from_u64(1);
        let schedule = schedule();
        let check = |task: &Task, attempted: &Attempted, expect: &str| {
            let mut rng = StdRng::seed_from_u64(2);
            let verdict = match decide(task, attempted, &schedule, &mut rng) {
                Verdict::Delivered => "delivered".to_owned(),
                Verdict::Retry(delay) => format!("retry in {}s", delay.as_secs()),
                Verdict::Exhausted { disable } => format!("exhausted, disable {disable}"),
            };
            assert_eq!(verdict, expect, "{attempted:?}");
        };
        let first = task(1, Trigger::Event);
        check(&first, &answered(204, None), "delivered");
        check(&first, &answered(410, None), "exhausted, disable true");
        // Jittered within ±20 % of 10 s.
        let Verdict::Retry(delay) = decide(&first, &answered(500, None), &schedule, &mut rng)
        else {
            panic!("500 is retried");
        };
        assert!((8_000..=12_000).contains(&delay.as_millis()), "{delay:?}");
        // Retry-After is honoured exactly, within the schedule's bounds.
        check(&first, &answered(429, Some("42")), "retry in 42s");
        check(&first, &answered(503, Some("1")), "retry in 10s");
        check(&first, &answered(503, Some("9999")), "retry in 100s");
        // Retry-After means nothing on other statuses.
        let Verdict::Retry(delay) = decide(&first, &answered(500, Some("42")), &schedule, &mut rng)
        else {
            panic!("500 is retried");
        };
        assert!(delay.as_secs() <= 12);
        // After the last attempt.
        check(
            &task(3, Trigger::Event),
            &answered(500, None),
            "exhausted, disable false",
        );
        check(&task(3, Trigger::Event), &answered(200, None), "delivered");
        // Single-attempt triggers.
        check(
            &task(1, Trigger::Redelivery),
            &answered(500, None),
            "exhausted, disable false",
        );
        check(
            &task(1, Trigger::Replay),
            &answered(503, Some("5")),
            "exhausted, disable false",
        );
        check(
            &task(1, Trigger::Test),
            &answered(429, Some("42")),
            "retry in 42s",
        );
        let refused = Attempted {
            result: Err(AttemptError::Send(SendError::ConnectionRefused)),
            ..answered(0, None)
        };
        // Failures without a response follow the (jittered) schedule.
        let Verdict::Retry(delay) = decide(&task(2, Trigger::Event), &refused, &schedule, &mut rng)
        else {
            panic!("a refused connection is retried");
        };
        assert!((80..=120).contains(&delay.as_secs()), "{delay:?}");
    }

    #[test]
    fn outcomes_record_the_attempt() {
        let task = task(1, Trigger::Event);
        let attempted = answered(302, None);
        let outcome = decoded(&outcome(
            &task,
            &attempted,
            Verdict::Retry(Duration::from_secs(10)),
        ));
        assert_eq!(
            outcome.event,
            Some(herald_proto::encode_event(&task.event)),
            "the task's event, as it came"
        );
        assert_eq!(outcome.delivery_id, task.delivery_id.as_str());
        assert_eq!(outcome.webhook_id, task.webhook.as_str());
        assert_eq!(outcome.attempt, 1);
        assert_eq!(outcome.status, DeliveryStatus::Failed as i32);
        assert_eq!(outcome.http_status, 302);
        assert_eq!(outcome.latency_ms, 12);
        assert_eq!(outcome.error, "HTTP 302 (redirects are not followed)");
        assert_eq!(outcome.response_body, "nope");
        // Counted from the answer, 12 ms after the request.
        let next = outcome.next_attempt_at.unwrap();
        assert_eq!(
            herald_proto::datetime(&next),
            Some(attempted.at + chrono::Duration::milliseconds(10_012))
        );
        assert!(!outcome.disable_webhook);
        assert_eq!(outcome.trigger, Trigger::Event as i32);
        assert_eq!(
            outcome
                .request_headers
                .get("webhook-id")
                .map(String::as_str),
            Some("dlv_01BX5ZZKBKACTAV9WEVGEMMVRZ")
        );

        let gone = decoded(&super::outcome(
            &task,
            &answered(410, None),
            Verdict::Exhausted { disable: true },
        ));
        assert_eq!(gone.status, DeliveryStatus::Exhausted as i32);
        assert!(gone.disable_webhook);
        assert_eq!(gone.next_attempt_at, None);

        let timed_out = Attempted {
            result: Err(AttemptError::Send(SendError::Timeout(Duration::from_secs(
                15,
            )))),
            ..answered(0, None)
        };
        let failed = decoded(&super::outcome(
            &task,
            &timed_out,
            Verdict::Exhausted { disable: false },
        ));
        assert_eq!(failed.http_status, 0);
        assert_eq!(failed.error, "timed out after 15s");
    }

    fn decoded(bytes: &[u8]) -> DeliveryOutcome {
        herald_proto::decode(bytes).unwrap()
    }

    #[test]
    fn a_task_not_sent_says_why_and_keeps_its_event() {
        let task = task(2, Trigger::Replay);
        let at: DateTime<Utc> = "2026-11-27T10:00:05Z".parse().unwrap();
        let outcome = decoded(&not_sent(&task, "not sent: the webhook is disabled", at));
        assert_eq!(outcome.status, DeliveryStatus::Exhausted as i32);
        assert_eq!(outcome.error, "not sent: the webhook is disabled");
        assert_eq!((outcome.attempt, outcome.http_status), (2, 0));
        assert_eq!(outcome.trigger, Trigger::Replay as i32);
        assert_eq!(outcome.attempted_at, Some(herald_proto::timestamp(at)));
        assert_eq!(outcome.event, Some(herald_proto::encode_event(&task.event)));
        assert!(outcome.request_headers.is_empty());
    }

    #[test]
    fn traceparents_are_well_formed() {
        let traceparent = new_traceparent();
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len(), parts[3]),
            ("00", 32, 16, "01")
        );
    }
}
