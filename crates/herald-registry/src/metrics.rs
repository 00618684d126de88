//! The registry's Prometheus metrics, through `prometheus-client`, served at `/metrics` to the
//! admin key: API requests by route template and status with their duration, outcome ingest
//! (batches, lag, outcomes recorded), and the reconciler's runs and the drift it fixed. No
//! label names an account, a webhook or a raw path: routes are templates.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use opentelemetry::trace::TraceContextExt as _;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::error::ApiError;
use crate::principal::Principal;
use crate::projection::ReconcileReport;
use crate::state::AppState;

type Labels = Vec<(&'static str, String)>;

fn duration_histogram() -> Histogram {
    // 1 ms to about 33 s: the API timeout is 30 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

#[derive(Debug)]
pub struct RegistryMetrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    request_duration: Family<Labels, Histogram, fn() -> Histogram>,
    ingest_batch: Histogram,
    ingest_lag: Histogram,
    ingest_lag_last: Gauge,
    outcomes_recorded: Counter,
    reconciles: Counter,
    reconcile_written: Counter,
    reconcile_removed: Counter,
}

impl Default for RegistryMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl RegistryMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("herald_registry");
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered, by method, route template and status",
            requests.clone(),
        );
        let request_duration = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer a request, by method and route template",
            Unit::Seconds,
            request_duration.clone(),
        );
        let ingest_batch = Histogram::new([
            1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
        ]);
        registry.register(
            "outcome_ingest_batch_size",
            "Outcomes written to the delivery log per batch",
            ingest_batch.clone(),
        );
        let ingest_lag = Histogram::new(exponential_buckets(0.005, 2.5, 14));
        registry.register_with_unit(
            "outcome_ingest_lag",
            "From an outcome stored in HERALD_OUTCOMES to its row in the delivery log",
            Unit::Seconds,
            ingest_lag.clone(),
        );
        let ingest_lag_last = Gauge::default();
        registry.register_with_unit(
            "outcome_ingest_last_lag",
            "The longest ingest lag of the last batch written",
            Unit::Seconds,
            ingest_lag_last.clone(),
        );
        let outcomes_recorded = Counter::default();
        registry.register(
            "outcomes_recorded",
            "Outcomes written to the delivery log",
            outcomes_recorded.clone(),
        );
        let reconciles = Counter::default();
        registry.register(
            "reconciles",
            "Reconciliations of the webhook bucket with the database",
            reconciles.clone(),
        );
        let reconcile_written = Counter::default();
        registry.register(
            "reconcile_written",
            "Projections the reconciler wrote because the bucket had drifted",
            reconcile_written.clone(),
        );
        let reconcile_removed = Counter::default();
        registry.register(
            "reconcile_removed",
            "Projections the reconciler removed because their webhook was gone",
            reconcile_removed.clone(),
        );
        RegistryMetrics {
            registry,
            requests,
            request_duration,
            ingest_batch,
            ingest_lag,
            ingest_lag_last,
            outcomes_recorded,
            reconciles,
            reconcile_written,
            reconcile_removed,
        }
    }

    /// One batch of outcomes written, with each one's time in the stream.
    pub fn ingested(&self, lags: &[Duration]) {
        self.ingest_batch.observe(lags.len() as f64);
        self.outcomes_recorded.inc_by(lags.len() as u64);
        for lag in lags {
            self.ingest_lag.observe(lag.as_secs_f64());
        }
        let longest = lags.iter().max().copied().unwrap_or_default();
        self.ingest_lag_last
            .set(i64::try_from(longest.as_secs()).unwrap_or(i64::MAX));
    }

    pub fn reconciled(&self, report: &ReconcileReport) {
        self.reconciles.inc();
        self.reconcile_written.inc_by(report.written as u64);
        self.reconcile_removed.inc_by(report.removed as u64);
    }

    fn request(&self, method: &str, route: &str, status: StatusCode, took: Duration) {
        self.requests
            .get_or_create(&vec![
                ("method", method.to_owned()),
                ("route", route.to_owned()),
                ("status", status.as_u16().to_string()),
            ])
            .inc();
        self.request_duration
            .get_or_create(&vec![
                ("method", method.to_owned()),
                ("route", route.to_owned()),
            ])
            .observe(took.as_secs_f64());
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Records every routed request under its route template (a `route_layer`, so only matched
/// routes: anything else is one 404 and would only add unbounded paths).
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    // The request's span (see `api::request_span`) learns its route template here, where the
    // router has matched it.
    let span = tracing::Span::current();
    span.record("http.route", route.as_str());
    let context = span.context();
    if context.has_active_span() {
        context.span().update_name(format!("{method} {route}"));
    }
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .request(&method, &route, response.status(), started.elapsed());
    response
}

/// `GET /metrics`, for the admin key only: counts are not for tenants.
pub async fn serve(State(state): State<AppState>, principal: Principal) -> Response {
    if !principal.is_admin() {
        return ApiError::Forbidden.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
