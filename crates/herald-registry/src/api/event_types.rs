//! `/v1/event-types`: the catalogue webhooks subscribe against.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, patch};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use herald_core::EventType;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::ApiJson;
use super::idempotency;
use crate::error::{ApiResult, Problem};
use crate::principal::Principal;
use crate::state::AppState;
use crate::store::EventTypeRecord;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/event-types", get(list).post(create))
        .route("/event-types/{name}", patch(update))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypeOut {
    #[schema(example = "booking.created")]
    pub name: String,
    pub description: String,
    /// Deprecated types cannot be newly subscribed to; existing
    /// subscriptions keep receiving them.
    pub deprecated: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<EventTypeRecord> for EventTypeOut {
    fn from(t: EventTypeRecord) -> Self {
        Self {
            name: t.name,
            description: t.description,
            deprecated: t.deprecated,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypesOut {
    pub data: Vec<EventTypeOut>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTypeIn {
    /// Lower-case dot-separated segments, e.g. `booking.checked_in`.
    #[schema(value_type = super::doc::EventTypeName, example = "booking.checked_in")]
    pub name: EventType,
    #[serde(default)]
    #[schema(value_type = super::doc::Description)]
    pub description: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTypePatchIn {
    #[schema(value_type = Option<super::doc::Description>)]
    pub description: Option<String>,
    pub deprecated: Option<bool>,
}

/// The event type catalogue.
#[utoipa::path(get, path = "/v1/event-types", tag = "event-types",
    responses((status = 200, body = EventTypesOut), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    _principal: Principal,
) -> ApiResult<Json<EventTypesOut>> {
    let types = state.list_event_types().await?;
    Ok(Json(EventTypesOut {
        data: types.into_iter().map(Into::into).collect(),
    }))
}

/// Add an event type (admin only).
#[utoipa::path(post, path = "/v1/event-types", tag = "event-types", request_body = EventTypeIn,
    params(("Idempotency-Key" = Option<super::doc::IdempotencyKey>, Header, description = "Makes a retried create safe: a repeat with the same key gets the first response")),
    responses((status = 201, body = EventTypeOut), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiJson(input, raw): ApiJson<EventTypeIn>,
) -> ApiResult<Response> {
    idempotency::created(
        &state,
        &principal,
        &headers,
        "POST /v1/event-types",
        &raw,
        &[],
        async {
            state
                .create_event_type(&principal, &input.name, &input.description)
                .await
                .map(EventTypeOut::from)
        },
    )
    .await
}

/// Describe or deprecate an event type (admin only).
#[utoipa::path(patch, path = "/v1/event-types/{name}", tag = "event-types",
    request_body = EventTypePatchIn, params(("name" = String, Path)),
    responses((status = 200, body = EventTypeOut), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    ApiJson(input, _): ApiJson<EventTypePatchIn>,
) -> ApiResult<Json<EventTypeOut>> {
    let updated = state
        .update_event_type(&principal, &name, input.description, input.deprecated)
        .await?;
    Ok(Json(updated.into()))
}
