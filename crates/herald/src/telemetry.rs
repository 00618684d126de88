//! Logs and traces.
//!
//! Logs: `RUST_LOG` filters (default info), `HERALD_LOG_FORMAT=json` for
//! machine-readable lines.
//!
//! Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, spans go to that collector
//! over OTLP (HTTP, protobuf), with the standard `OTEL_*` variables honoured:
//! `OTEL_SERVICE_NAME` (default `herald-registry` or `herald-worker`),
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and its argument,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SDK_DISABLED`. `HERALD_TRACE_FILTER`
//! chooses which spans are exported (default: Herald's, the API's and the
//! database's at info). When no endpoint is set no OpenTelemetry layer is
//! installed and spans cost what `tracing` spans cost.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

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

/// Installs logging, and tracing export when configured, for `service`.
pub fn init(service: &'static str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(LOG_FILTER));
    let json = std::env::var("HERALD_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if json {
        logs.json().with_filter(filter).boxed()
    } else {
        logs.with_filter(filter).boxed()
    };
    let (provider, problem) = match tracer_provider(service) {
        Ok(provider) => (provider, None),
        Err(error) => (None, Some(error)),
    };
    let traces = provider.as_ref().map(|provider| {
        let filter = std::env::var("HERALD_TRACE_FILTER")
            .ok()
            .and_then(|text| EnvFilter::try_new(text).ok())
            .unwrap_or_else(|| EnvFilter::new(TRACE_FILTER));
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            .with_filter(filter)
    });
    if let Err(error) = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
    {
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
