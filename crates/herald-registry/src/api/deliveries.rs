//! The delivery log: list and inspect deliveries, redeliver, replay, and
//! send test events.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use herald_core::{AccountId, DeliveryId, EventData, EventType, WebhookId};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiQuery};
use super::{ListResponse, limit, path_id};
use crate::error::{ApiResult, Problem};
use crate::principal::Principal;
use crate::state::AppState;
use crate::store::{Attempt, Delivery, DeliveryFilter, DeliveryState, DeliveryStats};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/accounts/{account_id}/deliveries", get(list))
        .route("/accounts/{account_id}/deliveries/{delivery_id}", get(read))
        .route(
            "/accounts/{account_id}/deliveries/{delivery_id}/redeliver",
            post(redeliver),
        )
        .route(
            "/accounts/{account_id}/webhooks/{webhook_id}/deliveries",
            get(list_for_webhook),
        )
        .route(
            "/accounts/{account_id}/webhooks/{webhook_id}/stats",
            get(stats),
        )
        .route(
            "/accounts/{account_id}/webhooks/{webhook_id}/replay",
            post(replay),
        )
        .route(
            "/accounts/{account_id}/webhooks/{webhook_id}/test",
            post(send_test),
        )
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryOut {
    /// Sent as `webhook-id`: the same on every attempt of this (event,
    /// webhook) pair. Dedupe on it.
    #[schema(example = "dlv_01JDQ3W3Y0ZK4V5R8N2M6P7QXA")]
    pub id: String,
    pub account_id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    pub event_timestamp: DateTime<Utc>,
    #[schema(value_type = super::doc::Status, example = "delivered")]
    pub status: DeliveryState,
    pub attempts: u32,
    /// HTTP status of the latest attempt; 0 when none was received.
    pub last_http_status: u16,
    pub last_error: String,
    /// When the next automatic attempt is due (status `failed`).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Delivery> for DeliveryOut {
    fn from(d: Delivery) -> Self {
        Self {
            id: d.id.to_string(),
            account_id: d.account.to_string(),
            webhook_id: d.webhook_id.to_string(),
            event_id: d.event_id,
            event_type: d.event_type,
            event_timestamp: d.event_timestamp,
            status: d.state,
            attempts: d.attempts,
            last_http_status: d.last_http_status,
            last_error: d.last_error,
            next_attempt_at: d.next_attempt_at,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptOut {
    pub attempt: u32,
    #[schema(value_type = super::doc::Status)]
    pub status: DeliveryState,
    /// `event`, `redelivery`, `replay` or `test`.
    pub trigger: String,
    pub http_status: u16,
    pub latency_ms: u32,
    pub error: String,
    /// The first bytes of the endpoint's answer.
    pub response_body: String,
    pub attempted_at: DateTime<Utc>,
    /// The request's headers as sent (`webhook-id`, `webhook-timestamp`,
    /// `webhook-signature`, …); empty when nothing was sent.
    #[schema(value_type = Object)]
    pub request_headers: std::collections::BTreeMap<String, String>,
}

impl From<Attempt> for AttemptOut {
    fn from(a: Attempt) -> Self {
        Self {
            attempt: a.attempt,
            status: a.state,
            trigger: a.trigger,
            http_status: a.http_status,
            latency_ms: a.latency_ms,
            error: a.error,
            response_body: a.response_body,
            attempted_at: a.attempted_at,
            request_headers: a.request_headers,
        }
    }
}

/// One delivery with its payload and every attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: DeliveryOut,
    /// The event's `data`.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// The event was too large to deliver and its data was not kept: `payload` is `{}` in its
    /// place, and the delivery cannot be redelivered or replayed.
    pub payload_omitted: bool,
    pub attempt_log: Vec<AttemptOut>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryListParams {
    /// Only deliveries to this webhook.
    pub webhook_id: Option<String>,
    /// Items per page, 1–250 (default 50). Newest first.
    #[param(value_type = Option<super::doc::Limit>)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    #[param(value_type = Option<super::doc::Status>)]
    pub status: Option<DeliveryState>,
    #[param(value_type = Option<super::doc::EventTypeName>)]
    pub event_type: Option<EventType>,
    /// Created at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Created before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
}

/// The filters of one webhook's deliveries: its path names the webhook.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WebhookDeliveryListParams {
    /// Items per page, 1–250 (default 50). Newest first.
    #[param(value_type = Option<super::doc::Limit>)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    #[param(value_type = Option<super::doc::Status>)]
    pub status: Option<DeliveryState>,
    #[param(value_type = Option<super::doc::EventTypeName>)]
    pub event_type: Option<EventType>,
    /// Created at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Created before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
}

impl From<DeliveryListParams> for WebhookDeliveryListParams {
    fn from(p: DeliveryListParams) -> Self {
        Self {
            limit: p.limit,
            cursor: p.cursor,
            status: p.status,
            event_type: p.event_type,
            since: p.since,
            until: p.until,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsOut {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
    pub exhausted: u64,
}

impl From<DeliveryStats> for StatsOut {
    fn from(s: DeliveryStats) -> Self {
        Self {
            pending: s.pending,
            delivered: s.delivered,
            failed: s.failed,
            exhausted: s.exhausted,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayIn {
    /// Replay exhausted deliveries created at or after this time.
    pub since: DateTime<Utc>,
    /// …and before this one (default: now).
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayOut {
    /// How many deliveries were handed to the workers again.
    pub replayed: usize,
}

/// A JSON object in a request body, kept verbatim.
#[derive(Debug)]
pub struct DataIn(pub EventData);

impl<'de> Deserialize<'de> for DataIn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        EventData::parse(raw.get())
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestIn {
    /// Default `herald.test`.
    #[schema(value_type = Option<super::doc::EventTypeName>, example = "booking.created")]
    pub event_type: Option<EventType>,
    /// The event's `data`; a short message by default.
    #[schema(value_type = Option<Object>)]
    pub data: Option<DataIn>,
}

fn account_id(text: &str) -> ApiResult<AccountId> {
    path_id(text, "account", AccountId::parse)
}

fn webhook_id(text: &str) -> ApiResult<WebhookId> {
    path_id(text, "webhook", WebhookId::parse)
}

fn delivery_id(text: &str) -> ApiResult<DeliveryId> {
    path_id(text, "delivery", DeliveryId::parse)
}

async fn list_page(
    state: &AppState,
    principal: &Principal,
    account: &AccountId,
    filter: DeliveryFilter,
    params: &WebhookDeliveryListParams,
) -> ApiResult<Json<ListResponse<DeliveryOut>>> {
    let limit = limit(params.limit)?;
    let page = state
        .list_deliveries(principal, account, &filter, params.cursor.as_deref(), limit)
        .await?;
    Ok(Json(ListResponse {
        data: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

fn filter_of(params: &WebhookDeliveryListParams, webhook: Option<WebhookId>) -> DeliveryFilter {
    DeliveryFilter {
        webhook,
        state: params.status,
        event_type: params.event_type.as_ref().map(ToString::to_string),
        since: params.since,
        until: params.until,
    }
}

/// List an account's deliveries, newest first.
#[utoipa::path(get, path = "/v1/accounts/{account_id}/deliveries", tag = "deliveries",
    params(("account_id" = String, Path), DeliveryListParams),
    responses((status = 200, body = ListResponse<DeliveryOut>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
    ApiQuery(params): ApiQuery<DeliveryListParams>,
) -> ApiResult<Json<ListResponse<DeliveryOut>>> {
    let account = account_id(&account)?;
    let webhook = params.webhook_id.as_deref().map(webhook_id).transpose()?;
    let params = WebhookDeliveryListParams::from(params);
    list_page(
        &state,
        &principal,
        &account,
        filter_of(&params, webhook),
        &params,
    )
    .await
}

/// List a webhook's deliveries, newest first.
#[utoipa::path(get, path = "/v1/accounts/{account_id}/webhooks/{webhook_id}/deliveries", tag = "deliveries",
    params(("account_id" = String, Path), ("webhook_id" = String, Path), WebhookDeliveryListParams),
    responses((status = 200, body = ListResponse<DeliveryOut>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_for_webhook(
    State(state): State<AppState>,
    principal: Principal,
    Path((account, webhook)): Path<(String, String)>,
    ApiQuery(params): ApiQuery<WebhookDeliveryListParams>,
) -> ApiResult<Json<ListResponse<DeliveryOut>>> {
    let account = account_id(&account)?;
    let webhook = webhook_id(&webhook)?;
    list_page(
        &state,
        &principal,
        &account,
        filter_of(&params, Some(webhook)),
        &params,
    )
    .await
}

/// One delivery with its payload and all its attempts.
#[utoipa::path(get, path = "/v1/accounts/{account_id}/deliveries/{delivery_id}", tag = "deliveries",
    params(("account_id" = String, Path), ("delivery_id" = String, Path)),
    responses((status = 200, body = DeliveryDetail), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn read(
    State(state): State<AppState>,
    principal: Principal,
    Path((account, delivery)): Path<(String, String)>,
) -> ApiResult<Json<DeliveryDetail>> {
    let (delivery, attempts) = state
        .get_delivery(&principal, &account_id(&account)?, &delivery_id(&delivery)?)
        .await?;
    let payload = serde_json::from_str(&delivery.payload).unwrap_or(serde_json::Value::Null);
    let payload_omitted = delivery.payload_omitted;
    Ok(Json(DeliveryDetail {
        delivery: delivery.into(),
        payload,
        payload_omitted,
        attempt_log: attempts.into_iter().map(Into::into).collect(),
    }))
}

/// Send a delivery again, with the same `webhook-id`.
#[utoipa::path(post, path = "/v1/accounts/{account_id}/deliveries/{delivery_id}/redeliver", tag = "deliveries",
    params(("account_id" = String, Path), ("delivery_id" = String, Path)),
    responses((status = 202, body = DeliveryOut), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn redeliver(
    State(state): State<AppState>,
    principal: Principal,
    Path((account, delivery)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<DeliveryOut>)> {
    let (delivery, _) = state
        .redeliver(&principal, &account_id(&account)?, &delivery_id(&delivery)?)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(delivery.into())))
}

/// Send every exhausted delivery of the webhook in a time range again.
#[utoipa::path(post, path = "/v1/accounts/{account_id}/webhooks/{webhook_id}/replay", tag = "deliveries",
    request_body = ReplayIn,
    params(("account_id" = String, Path), ("webhook_id" = String, Path)),
    responses((status = 202, body = ReplayOut), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn replay(
    State(state): State<AppState>,
    principal: Principal,
    Path((account, webhook)): Path<(String, String)>,
    ApiJson(input, _): ApiJson<ReplayIn>,
) -> ApiResult<(StatusCode, Json<ReplayOut>)> {
    let replayed = state
        .replay(
            &principal,
            &account_id(&account)?,
            &webhook_id(&webhook)?,
            input.since,
            input.until,
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(ReplayOut { replayed })))
}

/// Send a test event to the webhook, whatever events it subscribes to.
#[utoipa::path(post, path = "/v1/accounts/{account_id}/webhooks/{webhook_id}/test", tag = "deliveries",
    request_body = TestIn,
    params(("account_id" = String, Path), ("webhook_id" = String, Path)),
    responses((status = 202, body = DeliveryOut), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn send_test(
    State(state): State<AppState>,
    principal: Principal,
    Path((account, webhook)): Path<(String, String)>,
    ApiJson(input, _): ApiJson<TestIn>,
) -> ApiResult<(StatusCode, Json<DeliveryOut>)> {
    let delivery = state
        .send_test(
            &principal,
            &account_id(&account)?,
            &webhook_id(&webhook)?,
            input.event_type,
            input.data.map(|d| d.0),
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(delivery.into())))
}

/// Per-webhook delivery counts by status.
#[utoipa::path(get, path = "/v1/accounts/{account_id}/webhooks/{webhook_id}/stats", tag = "deliveries",
    params(("account_id" = String, Path), ("webhook_id" = String, Path)),
    responses((status = 200, body = StatsOut), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn stats(
    State(state): State<AppState>,
    principal: Principal,
    Path((account, webhook)): Path<(String, String)>,
) -> ApiResult<Json<StatsOut>> {
    Ok(Json(
        state
            .delivery_stats(&principal, &account_id(&account)?, &webhook_id(&webhook)?)
            .await?
            .into(),
    ))
}
