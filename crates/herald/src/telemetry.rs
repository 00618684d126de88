//! Logs and traces.
//!
//! Logs: `RUST_LOG` filters (default info), `HERALD_LOG_FORMAT=json` for
//! machine-readable lines. The spans of a delivery's hops (target `herald::hop`) are left
//! out of logs unless `RUST_LOG` names that target.
//!
//! Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, spans go to that collector
//! over OTLP (HTTP, protobuf), with the standard `OTEL_*` variables honoured:
//! `OTEL_SERVICE_NAME` (default `herald-registry` or `herald-worker`),
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and its argument,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SDK_DISABLED`. `HERALD_TRACE_FILTER`
//! chooses which spans are exported (default: Herald's, the API's and the
//! database's at info). When no endpoint is set no OpenTelemetry layer is
//! installed, and a span that the logs leave out is not made at all.

use herald_bus::trace::HOP_TARGET;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

const LOG_FILTER: &str = "info,sea_orm=warn,sqlx=warn,async_nats=warn";
/// The exporter's own HTTP client must not trace itself.
const TRACE_FILTER: &str =
    "info,sqlx=warn,async_nats=warn,hyper=off,h2=off,reqwest=off,tower=off,opentelemetry=off";

/// Keeps the trace exporter running; dropping it flushes the spans still buffered.
#[derive(Debug)]
#[must_use = "dropping the guard stops exporting traces"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("herald: could not flush the last traces: {error}");
        }
    }
}

/// A layer of the process's subscriber, with its own filter.
type FilteredLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs logging, and tracing export when configured, for `service`.
pub fn init(service: &'static str) -> Telemetry {
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let json = std::env::var("HERALD_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let logs = log_layer(std::io::stderr, json, filter);
    let (provider, problem) = match tracer_provider(service) {
        Ok(provider) => (provider, None),
        Err(error) => (None, Some(error)),
    };
    let traces = provider.as_ref().map(|provider| {
        let filter = std::env::var("HERALD_TRACE_FILTER")
            .ok()
            .and_then(|text| EnvFilter::try_new(text).ok())
            .unwrap_or_else(|| EnvFilter::new(TRACE_FILTER));
        trace_layer(provider.tracer(service), filter)
    });
    if let Err(error) = subscriber(logs, traces).try_init() {
        eprintln!("herald: logging already initialised: {error}");
    }
    if let Some(error) = problem {
        tracing::error!(%error, "traces are not exported: the OTLP exporter could not be built");
    } else if provider.is_some() {
        herald_bus::trace::record();
        tracing::info!(service, "exporting traces over OTLP");
    }
    Telemetry { provider }
}

/// The subscriber: logs, and traces when they are exported. A span or event is made only
/// when one of them wants it. The layers are a list rather than an `Option` layer: a `None`
/// layer in the stack would enable every span at the logs' level, even those the logs leave
/// out, and each would cost its slot and its closing.
fn subscriber(
    logs: FilteredLayer,
    traces: Option<FilteredLayer>,
) -> impl tracing::Subscriber + Send + Sync + 'static {
    let mut layers = vec![logs];
    layers.extend(traces);
    tracing_subscriber::registry().with(layers)
}

/// Log lines written to `writer`, as text or JSON, filtered by `filter`.
fn log_layer<W>(writer: W, json: bool, filter: EnvFilter) -> FilteredLayer
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let logs = tracing_subscriber::fmt::layer().with_writer(writer);
    if json {
        logs.json().with_filter(filter).boxed()
    } else {
        logs.with_filter(filter).boxed()
    }
}

/// Spans exported through `tracer`, filtered by `filter`.
fn trace_layer(tracer: opentelemetry_sdk::trace::SdkTracer, filter: EnvFilter) -> FilteredLayer {
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter)
        .boxed()
}

/// What logs show: `rust_log`'s directives, or [`LOG_FILTER`] when it is unset or invalid,
/// and no hop's span unless `rust_log` names [`HOP_TARGET`]. A hop's span is made for traces;
/// were it enabled for logs, every delivery would make it and format its fields to give log
/// lines a context they do not need (about a tenth of the worker's CPU at the default level).
fn log_filter(rust_log: Option<&str>) -> EnvFilter {
    let filter = rust_log
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(LOG_FILTER));
    if rust_log.is_some_and(|directives| directives.contains(HOP_TARGET)) {
        return filter;
    }
    match format!("{HOP_TARGET}=off").parse() {
        Ok(hops_off) => filter.add_directive(hops_off),
        Err(_) => filter,
    }
}

/// The OTLP tracer provider, when an endpoint is configured and the SDK not disabled.
fn tracer_provider(
    service: &'static str,
) -> Result<Option<SdkTracerProvider>, opentelemetry_otlp::ExporterBuildError> {
    let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    if disabled
        || !(set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    // The standard detectors read OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; Herald's
    // name applies only when neither names the service.
    let named = set("OTEL_SERVICE_NAME")
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    let mut resource = Resource::builder();
    if !named {
        resource = resource.with_service_name(service);
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_resource(resource.build())
            .with_batch_exporter(exporter)
            .build(),
    ))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Log lines kept in memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut lines = self.0.lock().map_err(|_| std::io::ErrorKind::Other)?;
            lines.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn text(&self) -> String {
            let bytes = self.0.lock().map(|bytes| bytes.clone()).unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }

    /// Logs filtered as `rust_log` says, written as JSON (no colours, each line's spans
    /// named) to the lines returned.
    fn logs(rust_log: Option<&str>) -> (FilteredLayer, Lines) {
        let lines = Lines::default();
        let writer = lines.clone();
        let layer = log_layer(move || writer.clone(), true, log_filter(rust_log));
        (layer, lines)
    }

    /// Under `subscriber`: whether a hop's span is made, and what an event inside it logs.
    fn a_hop(subscriber: impl tracing::Subscriber + Send + Sync + 'static) -> bool {
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(target: HOP_TARGET, "route", subject = "events.a.b");
            span.in_scope(|| tracing::warn!("routing failed"));
            !span.is_disabled()
        })
    }

    #[test]
    fn without_traces_a_hops_span_is_not_made_unless_the_logs_ask_for_it() {
        for rust_log in [None, Some("info"), Some("herald=debug"), Some("debug")] {
            let (logs, lines) = logs(rust_log);
            assert!(!a_hop(subscriber(logs, None)), "{rust_log:?}");
            let text = lines.text();
            assert!(text.contains("routing failed"), "{rust_log:?}: {text}");
            assert!(!text.contains(r#""name":"route""#), "{rust_log:?}: {text}");
        }
        let (logs, lines) = logs(Some("info,herald::hop=info"));
        assert!(a_hop(subscriber(logs, None)));
        let text = lines.text();
        assert!(
            text.contains(r#"{"subject":"events.a.b","name":"route"}"#),
            "{text}"
        );
    }

    #[test]
    fn with_traces_a_hops_span_is_made_for_them_and_left_out_of_the_logs() {
        let provider = SdkTracerProvider::builder().build();
        let traces = trace_layer(provider.tracer("test"), EnvFilter::new(TRACE_FILTER));
        let (logs, lines) = logs(None);
        let subscriber = subscriber(logs, Some(traces));
        let traced = tracing::subscriber::with_default(subscriber, || {
            use opentelemetry::trace::TraceContextExt as _;
            use tracing_opentelemetry::OpenTelemetrySpanExt as _;
            let span = tracing::info_span!(target: HOP_TARGET, "route", subject = "events.a.b");
            span.in_scope(|| tracing::warn!("routing failed"));
            span.context().span().span_context().is_valid()
        });
        assert!(traced, "the hop's span is an OpenTelemetry span");
        let text = lines.text();
        assert!(text.contains("routing failed"), "{text}");
        assert!(!text.contains(r#""name":"route""#), "{text}");
    }

    #[test]
    fn other_spans_stay_in_the_logs() {
        let (logs, lines) = logs(None);
        tracing::subscriber::with_default(subscriber(logs, None), || {
            let span = tracing::info_span!("request", method = "GET");
            span.in_scope(|| tracing::warn!("slow"));
        });
        let text = lines.text();
        assert!(
            text.contains(r#"{"method":"GET","name":"request"}"#),
            "{text}"
        );
    }
}
