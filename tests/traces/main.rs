//! One trace from `Publisher::publish` to the receiver's request: spans recorded by the
//! OpenTelemetry SDK's in-memory exporter, across the publisher, the router, the sender (each
//! attempt) and the registry's API and database calls.
//!
//! The subscriber that records them is the process's global default, which is why this test is
//! a binary of its own. SQLite's connections run on threads of their own, and a span whose last
//! handle goes on such a thread hands its parent back to that thread's default subscriber
//! (tracing-subscriber's registry does so when a child span closes). Were the subscriber only
//! this test thread's default, the parent would never be released: the request span above a
//! transaction would stay open whenever the connection's thread let go of its query span last.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is a failure with its message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_core::{DeliveryId, WebhookId};
use herald_testkit::Response;
use herald_worker::OutboundTrace;
use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceId, TracerProvider as _};
use opentelemetry::{Key, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;
use tracing::Instrument as _;
use tracing::span::{Attributes, Id};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

use herald_e2e::harness::{Herald, WAIT};

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == Key::from(key.to_owned()))
        .map(|kv| &kv.value)
}

fn named<'a>(spans: &'a [SpanData], trace: TraceId, name: &str) -> Vec<&'a SpanData> {
    spans
        .iter()
        .filter(|s| s.span_context.trace_id() == trace && s.name == name)
        .collect()
}

/// A span not yet closed: its name, its parent's id, and the thread that last entered it.
struct Open {
    name: &'static str,
    parent: Option<u64>,
    entered_on: String,
}

/// The spans not yet closed, so that a failed run says what keeps a request's span open: a span
/// closes once every handle on it has gone and every child of it has closed.
#[derive(Clone, Default)]
struct OpenSpans(Arc<Mutex<HashMap<u64, Open>>>);

impl OpenSpans {
    fn any_named(&self, name: &str) -> bool {
        self.0
            .lock()
            .unwrap()
            .values()
            .any(|span| span.name == name)
    }

    /// One line per open span: its name, its ancestors' names and where it was last entered.
    fn describe(&self) -> String {
        let open = self.0.lock().unwrap();
        let mut lines: Vec<String> = open
            .values()
            .map(|span| {
                let mut chain = vec![span.name];
                let mut parent = span.parent.and_then(|id| open.get(&id));
                while let Some(up) = parent {
                    chain.push(up.name);
                    parent = up.parent.and_then(|id| open.get(&id));
                }
                format!(
                    "{} (last entered on {})",
                    chain.join(" < "),
                    span.entered_on
                )
            })
            .collect();
        lines.sort_unstable();
        lines.join("\n")
    }
}

impl<S> tracing_subscriber::Layer<S> for OpenSpans
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = ctx
            .span(id)
            .and_then(|span| span.parent())
            .map(|parent| parent.id().into_u64());
        let span = Open {
            name: attrs.metadata().name(),
            parent,
            entered_on: "no thread".to_owned(),
        };
        self.0.lock().unwrap().insert(id.into_u64(), span);
    }

    fn on_enter(&self, id: &Id, _ctx: Context<'_, S>) {
        if let Some(span) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            let thread = std::thread::current();
            span.entered_on = thread.name().unwrap_or("an unnamed thread").to_owned();
        }
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        self.0.lock().unwrap().remove(&id.into_u64());
    }
}

#[tokio::test]
async fn one_trace_runs_from_publish_through_router_and_sender_to_the_request() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let open = OpenSpans::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("e2e")))
        .with(open.clone());
    tracing::subscriber::set_global_default(subscriber)
        .expect("the only test of this binary installs the subscriber");
    // As the `herald` command does when it installs the layer.
    herald_bus::trace::record();

    let mut herald = Herald::start(Duration::from_millis(500), 2).await;
    herald.stop_worker().await;
    herald
        .start_worker_with(Duration::from_millis(500), 2, |config| {
            config.outbound_trace = OutboundTrace::Platform;
        })
        .await;
    let account = herald.account().await;
    let (hook, _) = herald
        .webhook(&account, "/traced", json!(["booking.created"]))
        .await;
    herald.wait_for_spec(&hook, 1).await;
    // The first attempt fails, so the second is a retry linked to it.
    herald
        .receiver
        .respond_seq("/traced", [Response::status(503), Response::ok()]);

    // The platform's own span, around the publish.
    let platform = tracing::info_span!("platform request");
    let trace = platform.context().span().span_context().trace_id();
    let platform_span = platform.context().span().span_context().span_id();
    let event = herald
        .publish(&account, "booking.created", json!({ "booking_id": "bk_1" }))
        .instrument(platform)
        .await;
    let delivery = DeliveryId::derive(&event, &WebhookId::parse(&hook).unwrap()).to_string();
    let requests = herald
        .receiver
        .wait_for_requests("/traced", 2, WAIT)
        .await
        .unwrap();
    herald
        .wait_for_delivery(&account, &delivery, |d| d["status"] == "delivered")
        .await;

    // Spans are exported as they end; the second attempt's ends once its outcome is stored.
    let spans = herald_testkit::wait_for(WAIT, || async {
        let spans = exporter.get_finished_spans().unwrap();
        (named(&spans, trace, "POST webhook").len() == 2).then_some(spans)
    })
    .await
    .expect("both attempts' spans are exported");

    let publish = named(&spans, trace, "publish events");
    assert_eq!(publish.len(), 1, "one publish span in the platform's trace");
    assert_eq!(publish[0].parent_span_id, platform_span);
    let route = named(&spans, trace, "route event");
    assert_eq!(route.len(), 1, "one route span in the same trace");
    assert_eq!(route[0].parent_span_id, publish[0].span_context.span_id());

    let mut attempts = named(&spans, trace, "POST webhook");
    attempts.sort_by_key(|s| match attribute(s, "herald.attempt") {
        Some(Value::I64(n)) => *n,
        other => panic!("an attempt span without its number: {other:?}"),
    });
    for (attempt, request) in attempts.iter().zip(&requests) {
        assert_eq!(
            attempt.parent_span_id,
            route[0].span_context.span_id(),
            "each attempt is a child of the route span"
        );
        assert_eq!(
            request.header("traceparent"),
            Some(format!("00-{trace}-{}-01", attempt.span_context.span_id()).as_str()),
            "the request's traceparent names its attempt's span"
        );
        assert_eq!(
            attribute(attempt, "herald.delivery_id").map(Value::as_str),
            Some(delivery.as_str().into())
        );
    }
    assert_eq!(
        attribute(attempts[0], "http.response.status_code"),
        Some(&Value::I64(503))
    );
    assert_eq!(
        attribute(attempts[1], "http.response.status_code"),
        Some(&Value::I64(200))
    );
    let links: Vec<SpanId> = attempts[1]
        .links
        .iter()
        .map(|link| link.span_context.span_id())
        .collect();
    assert_eq!(
        links,
        vec![attempts[0].span_context.span_id()],
        "the retry links to the attempt before"
    );

    // The registry's API requests are server spans named by their route template, with the
    // database calls they made as children. A request's span ends once its children have, and
    // SQLite's connection threads let go of a query's span just after they answer it: the
    // registry is stopped (its connections closed) before the spans are read.
    herald.stop_registry().await;
    let registry_spans = herald_testkit::wait_for(WAIT, || async {
        // Every request's span has ended (`request` is its name before the OpenTelemetry
        // layer renames it): none is left open in the subscriber.
        if open.any_named("request") {
            return None;
        }
        let spans = exporter.get_finished_spans().unwrap();
        let created = spans.iter().position(|s| {
            attribute(s, "http.route").map(Value::as_str) == Some("/v1/accounts".into())
                && attribute(s, "http.request.method").map(Value::as_str) == Some("POST".into())
        })?;
        // The last read: the ones before it may have come before the log held the delivery
        // (404), or before it was delivered.
        let read = spans
            .iter()
            .rposition(|s| s.name == "GET /v1/accounts/{account_id}/deliveries/{delivery_id}")?;
        Some((spans, created, read))
    })
    .await;
    let Ok((spans, created, read)) = registry_spans else {
        // Which of the two is missing, and what did end, for whoever reads a failed run.
        let spans = exporter.get_finished_spans().unwrap();
        let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        names.sort_unstable();
        names.dedup();
        panic!(
            "every API request is a span that ends, and the account's creation and the \
             delivery's reads are named by their route template; after the registry stopped, \
             the finished spans are {names:?}, and these are still open:\n{}",
            open.describe()
        );
    };
    let created = &spans[created];
    assert_eq!(created.name, "POST /v1/accounts");
    assert_eq!(
        attribute(created, "http.response.status_code"),
        Some(&Value::I64(201))
    );
    let trace_of_created = created.span_context.trace_id();
    assert!(
        spans
            .iter()
            .any(|s| s.span_context.trace_id() == trace_of_created
                && attribute(s, "db.system").is_some()),
        "the request's database calls are spans in its trace"
    );
    assert_eq!(
        attribute(&spans[read], "http.response.status_code"),
        Some(&Value::I64(200))
    );

    herald.stop_worker().await;
    provider.shutdown().unwrap();
}
