//! W3C trace context across NATS hops, through OpenTelemetry's propagator.
//!
//! Each hop (publish, route, send) is a `tracing` span; when the OpenTelemetry layer is
//! installed it becomes an OpenTelemetry span whose parent is the context the message carried,
//! and the message it publishes carries that span's context on. Without the layer nothing is
//! recorded and these functions cost a flag's load: the headers pass through unchanged, and
//! nothing parses or formats trace context.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::HeaderMap;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of every hop's span (`publish`, `route`, `attempt`). They are made for traces:
/// a log line names what it is about in its own fields, so logs can leave them out, and
/// without an OpenTelemetry layer such a span then costs nothing.
pub const HOP_TARGET: &str = "herald::hop";

/// Whether an OpenTelemetry layer records this process's spans: set once, by whoever installs
/// the layer.
static RECORDING: AtomicBool = AtomicBool::new(false);

/// Says that an OpenTelemetry layer records this process's spans from now on, so that the
/// functions here carry trace context. Until then they leave it as it came.
pub fn record() {
    RECORDING.store(true, Ordering::Relaxed);
}

/// Whether OpenTelemetry may record `span`: a layer is installed and the span is enabled.
pub fn recording(span: &tracing::Span) -> bool {
    RECORDING.load(Ordering::Relaxed) && !span.is_disabled()
}

/// NATS headers as the propagator reads them.
struct Carrier<'a>(&'a HeaderMap);

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// The trace context `headers` carry (`traceparent`, `tracestate`); empty when they carry
/// none or an invalid one.
pub fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&Carrier(headers))
}

/// The span context a W3C `traceparent` value names, if it is valid.
pub fn span_context(traceparent: &str) -> Option<SpanContext> {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// Makes `span` (not yet entered) a child of the trace context `headers` carry, if any.
pub fn continue_from(span: &tracing::Span, headers: Option<&HeaderMap>) {
    let Some(headers) = headers.filter(|_| recording(span)) else {
        return;
    };
    let parent = extract(headers);
    if parent.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer records spans: nothing to continue then.
        let _ = span.set_parent(parent);
    }
}

/// The W3C `traceparent` naming `span`, when OpenTelemetry records it.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if !recording(span) {
        return None;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use super::*;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_header_is_extracted() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", TRACEPARENT);
        let context = extract(&headers);
        let span = context.span().span_context().clone();
        assert_eq!(
            span.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(span.span_id().to_string(), "00f067aa0ba902b7");
        assert!(span.is_remote() && span.is_sampled());
        assert_eq!(span_context(TRACEPARENT), Some(span));
    }

    #[test]
    fn a_malformed_traceparent_is_no_context() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", "00-not-a-trace-01");
        assert!(!extract(&headers).span().span_context().is_valid());
        assert_eq!(span_context("garbage"), None);
        assert_eq!(span_context(""), None);
    }

    #[test]
    fn with_a_layer_recording_a_span_continues_the_trace_it_came_with() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        record();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let own = tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("hop");
            let mut headers = HeaderMap::new();
            headers.insert("traceparent", TRACEPARENT);
            continue_from(&span, Some(&headers));
            traceparent_of(&span)
        });
        let own = own.unwrap();
        assert_eq!(&own[..36], &TRACEPARENT[..36], "same trace: {own}");
        assert_ne!(own, TRACEPARENT, "its own span: {own}");
    }

    #[test]
    fn without_an_opentelemetry_layer_a_span_names_no_trace() {
        let span = tracing::info_span!("hop");
        continue_from(&span, None);
        assert_eq!(traceparent_of(&span), None);
    }
}
