//! The REST API under `/v1`, one router per resource.

pub mod accounts;
pub mod api_keys;
pub mod deliveries;
pub mod doc;
pub mod event_types;
pub mod extract;
pub mod health;
pub mod idempotency;
pub mod webhooks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Extensions;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::state::AppState;

/// The request body limit, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

pub fn body_limit(extensions: &Extensions) -> usize {
    extensions.get::<BodyLimit>().map_or(0, |l| l.0)
}

pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let timeout = state.config.api_timeout;
    // Waiting for a slot counts towards the timeout: a client never hangs
    // on an overloaded registry, it gets a 503 to retry.
    let limits = tower::ServiceBuilder::new()
        .layer(axum::error_handling::HandleErrorLayer::new(
            move |error: tower::BoxError| async move { overloaded(&error, timeout) },
        ))
        .timeout(timeout)
        .concurrency_limit(state.config.api_concurrency);
    let v1 = Router::new()
        .merge(accounts::router())
        .merge(webhooks::router())
        .merge(event_types::router())
        .merge(api_keys::router())
        .merge(deliveries::router())
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(limits);
    Router::new()
        .nest("/v1", v1)
        .merge(
            health::router().method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed }),
        )
        .merge(crate::ui::router(state.clone()))
        .route(
            "/metrics",
            axum::routing::get(crate::metrics::serve)
                .fallback(|| async { ApiError::MethodNotAllowed }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .fallback(|| async { ApiError::NotFound("route") })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::Extension(BodyLimit(limit)))
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(record_response),
        )
        .with_state(state)
}

/// Each request's server span, a child of the caller's `traceparent` when it sends one; the
/// route template is recorded once the router has matched it (`metrics::track`).
fn request_span<B>(request: &http::Request<B>) -> tracing::Span {
    let span = tracing::info_span!(
        "request",
        otel.name = %request.method(),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let parent = TraceContextPropagator::new()
        .extract(&opentelemetry_http::HeaderExtractor(request.headers()));
    if parent.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer records spans.
        let _ = span.set_parent(parent);
    }
    span
}

fn record_response<B>(
    response: &http::Response<B>,
    latency: std::time::Duration,
    span: &tracing::Span,
) {
    let status = response.status();
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    tracing::debug!(status = status.as_u16(), ?latency, "request finished");
}

/// A request that ran out of time (or of slots) under the API's limits.
fn overloaded(error: &tower::BoxError, timeout: std::time::Duration) -> ApiError {
    if error.is::<tower::timeout::error::Elapsed>() {
        tracing::warn!(?timeout, "an API request timed out");
        ApiError::Unavailable(format!(
            "the request did not finish within {}; retry shortly",
            humantime::format_duration(timeout)
        ))
    } else {
        ApiError::Internal(anyhow::anyhow!(
            "request failed in the API's limits: {error}"
        ))
    }
}

pub const DEFAULT_LIMIT: u64 = 50;
pub const MAX_LIMIT: u64 = 250;

/// Cursor pagination parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1–250 (default 50).
    #[param(value_type = Option<doc::Limit>)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

pub fn limit(requested: Option<u64>) -> Result<u64, ApiError> {
    match requested {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::field(
            "query:limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        )),
    }
}

/// A page of results; pass `next_cursor` as `cursor` for the next one.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListResponse<T> {
    pub data: Vec<T>,
    /// Absent on the last page.
    pub next_cursor: Option<String>,
}

/// A secret a response shows on purpose (a new key, a revealed signing
/// secret): serialised as its text, redacted in `Debug` output so that it
/// cannot reach logs through a stray `{:?}`.
#[derive(Serialize)]
#[serde(transparent)]
pub struct Revealed(pub String);

impl std::fmt::Debug for Revealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Parses an id from the path; a malformed id cannot exist, so it is "not
/// found" rather than a validation error.
pub fn path_id<T, E>(
    text: &str,
    what: &'static str,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<T, ApiError> {
    parse(text).map_err(|_| ApiError::NotFound(what))
}
