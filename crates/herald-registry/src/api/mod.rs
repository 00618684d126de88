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
use serde::{Deserialize, Serialize};
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
        .merge(crate::ui::router())
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
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
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
