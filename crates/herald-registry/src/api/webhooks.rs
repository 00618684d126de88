//! `/v1/accounts/{account_id}/webhooks`: an account's webhooks and secrets.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use herald_core::{AccountId, EventPattern, EventType, SigningSecret, WebhookId, WebhookUrl};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiQuery};
use super::{ListResponse, Revealed, idempotency, limit, path_id};
use crate::error::{ApiError, ApiResult, Problem};
use crate::principal::Principal;
use crate::service::{ServiceError, WebhookChange, WebhookInput};
use crate::state::AppState;
use crate::store::{SecretRecord, Webhook, WebhookFilter};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/accounts/{account_id}/webhooks", get(list).post(create))
        .route(
            "/accounts/{account_id}/webhooks/{webhook_id}",
            get(read).patch(update).delete(remove),
        )
        .route(
            "/accounts/{account_id}/webhooks/{webhook_id}/secret",
            get(reveal_secret),
        )
        .route(
            "/accounts/{account_id}/webhooks/{webhook_id}/secret/rotate",
            post(rotate_secret),
        )
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookOut {
    #[schema(example = "wh_01JDQ3W3Y0ZK4V5R8N2M6P7QXA")]
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub description: Option<String>,
    pub enabled: bool,
    /// Event type patterns; empty means every event type.
    #[schema(example = json!(["booking.created", "payment.*"]))]
    pub events: Vec<String>,
    #[schema(example = "https://example.com/hooks/herald")]
    pub url: String,
    /// Optimistic-locking version; send it back (or `If-Match`) on update.
    pub version: u64,
    /// Why Herald disabled this webhook, e.g. the endpoint answered 410 Gone.
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Webhook> for WebhookOut {
    fn from(w: Webhook) -> Self {
        Self {
            id: w.id.to_string(),
            account_id: w.account.to_string(),
            name: w.name,
            description: w.description,
            enabled: w.enabled,
            events: w
                .events
                .patterns()
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            url: w.url.to_string(),
            version: w.version,
            disabled_reason: w.disabled_reason,
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// A webhook just created, with its signing secret: shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookCreated {
    #[serde(flatten)]
    pub webhook: WebhookOut,
    /// `whsec_…`: verify signatures with it. Retrieve it again with
    /// `GET …/secret`. Null in a response replayed for an `Idempotency-Key`.
    #[schema(value_type = Option<String>)]
    pub secret: Revealed,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookIn {
    /// 1–100 characters.
    #[schema(value_type = super::doc::Name, example = "Bookings to CRM")]
    pub name: String,
    /// Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Event types from the catalogue, or a trailing wildcard such as
    /// `booking.*`; empty or absent means every event type.
    #[serde(default)]
    #[schema(value_type = Vec<super::doc::EventPatternText>, example = json!(["booking.created", "booking.cancelled"]))]
    pub events: Vec<EventPattern>,
    /// Absolute http(s) URL; private and loopback addresses are refused.
    #[schema(value_type = super::doc::Url)]
    pub url: WebhookUrl,
    #[schema(value_type = Option<super::doc::Description>)]
    pub description: Option<String>,
    /// Bring your own `whsec_…` secret; one is generated when absent.
    #[schema(value_type = Option<super::doc::Secret>)]
    pub secret: Option<SecretIn>,
}

/// A `whsec_…` secret in a request body.
#[derive(Debug)]
pub struct SecretIn(pub SigningSecret);

impl<'de> Deserialize<'de> for SecretIn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = secrecy::SecretString::deserialize(deserializer)?;
        SigningSecret::parse(secrecy::ExposeSecret::expose_secret(&text))
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

fn yes() -> bool {
    true
}

/// Distinguishes an absent field from an explicit null.
fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatchIn {
    #[schema(value_type = Option<super::doc::Name>)]
    pub name: Option<String>,
    pub enabled: Option<bool>,
    #[schema(value_type = Option<Vec<super::doc::EventPatternText>>)]
    pub events: Option<Vec<EventPattern>>,
    #[schema(value_type = Option<super::doc::Url>)]
    pub url: Option<WebhookUrl>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<super::doc::Description>)]
    pub description: Option<Option<String>>,
    /// The version this change is based on; a stale one gets 409.
    /// `If-Match: "<version>"` works too (412 when stale).
    #[serde(default, deserialize_with = "super::extract::whole_number")]
    #[schema(minimum = 0)]
    pub version: Option<u64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WebhookListParams {
    /// Items per page, 1–250 (default 50).
    #[param(value_type = Option<super::doc::Limit>)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only enabled (true) or disabled (false) webhooks.
    pub enabled: Option<bool>,
    /// Only webhooks that would receive this event type.
    #[param(value_type = Option<super::doc::EventTypeName>)]
    pub event: Option<EventType>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretOut {
    /// `whsec_…`
    #[schema(value_type = String)]
    pub secret: Revealed,
    pub created_at: DateTime<Utc>,
    /// Absent for the current secret; set on one still signing during a
    /// rotation's grace period.
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<SecretRecord> for SecretOut {
    fn from(s: SecretRecord) -> Self {
        Self {
            secret: Revealed(s.secret.expose_whsec()),
            created_at: s.created_at,
            expires_at: s.expires_at,
        }
    }
}

/// The secrets that sign deliveries now, current first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretsOut {
    pub data: Vec<SecretOut>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateIn {
    /// The new `whsec_…` secret; generated when absent.
    #[schema(value_type = Option<super::doc::Secret>)]
    pub secret: Option<SecretIn>,
    /// How long the old secret keeps signing beside the new one
    /// (default 86400 = 24 h, at most 7 days; 0 retires it at once).
    #[serde(default, deserialize_with = "super::extract::whole_number")]
    #[schema(minimum = 0, maximum = 604800)]
    pub grace_period_seconds: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedOut {
    /// The new current secret, shown this once.
    #[schema(value_type = String)]
    pub secret: Revealed,
    pub webhook: WebhookOut,
}

fn ids(account: &str, webhook: &str) -> ApiResult<(AccountId, WebhookId)> {
    let account = path_id(account, "account", AccountId::parse)?;
    let webhook = path_id(webhook, "webhook", WebhookId::parse)?;
    Ok((account, webhook))
}

fn with_etag(webhook: Webhook) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", webhook.version));
    let mut response = Json(WebhookOut::from(webhook)).into_response();
    if let Ok(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// The version named by `If-Match` (`"3"`, `W/"3"` or `3`).
fn if_match(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        // Versions fit in 18 digits, as the document says.
        .filter(|v| (1..=18).contains(&v.len()))
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::field("header:if-match", "expected the webhook's ETag, e.g. \"3\"")
        })
}

/// Create a webhook. The response carries its signing secret, once.
#[utoipa::path(post, path = "/v1/accounts/{account_id}/webhooks", tag = "webhooks",
    request_body = WebhookIn,
    params(("account_id" = String, Path),
        ("Idempotency-Key" = Option<super::doc::IdempotencyKey>, Header, description = "Makes a retried create safe: a repeat with the same key gets the first response")),
    responses((status = 201, body = WebhookCreated), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
    headers: HeaderMap,
    ApiJson(input, raw): ApiJson<WebhookIn>,
) -> ApiResult<Response> {
    let account = path_id(&account, "account", AccountId::parse)?;
    let route = format!("POST /v1/accounts/{account}/webhooks");
    idempotency::created(
        &state,
        &principal,
        &headers,
        &route,
        &raw,
        &["secret"],
        async {
            let input = WebhookInput {
                name: input.name,
                description: input.description,
                enabled: input.enabled,
                events: input.events,
                url: input.url,
                secret: input.secret.map(|s| s.0),
            };
            let (webhook, secret) = state.create_webhook(&principal, &account, input).await?;
            Ok::<_, ServiceError>(WebhookCreated {
                webhook: webhook.into(),
                secret: Revealed(secret.expose_whsec()),
            })
        },
    )
    .await
}

/// List an account's webhooks.
#[utoipa::path(get, path = "/v1/accounts/{account_id}/webhooks", tag = "webhooks",
    params(("account_id" = String, Path), WebhookListParams),
    responses((status = 200, body = ListResponse<WebhookOut>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
    ApiQuery(params): ApiQuery<WebhookListParams>,
) -> ApiResult<Json<ListResponse<WebhookOut>>> {
    let account = path_id(&account, "account", AccountId::parse)?;
    let filter = WebhookFilter {
        enabled: params.enabled,
        event: params.event,
    };
    let limit = limit(params.limit)?;
    let page = state
        .list_webhooks(
            &principal,
            &account,
            &filter,
            params.cursor.as_deref(),
            limit,
        )
        .await?;
    Ok(Json(ListResponse {
        data: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Get a webhook; the `ETag` header carries its version.
#[utoipa::path(get, path = "/v1/accounts/{account_id}/webhooks/{webhook_id}", tag = "webhooks",
    params(("account_id" = String, Path), ("webhook_id" = String, Path)),
    responses((status = 200, body = WebhookOut), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn read(
    State(state): State<AppState>,
    principal: Principal,
    Path((account, webhook)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (account, webhook) = ids(&account, &webhook)?;
    Ok(with_etag(
        state.get_webhook(&principal, &account, &webhook).await?,
    ))
}

/// Change some of a webhook's fields: enable or disable, rename, events, URL,
/// description.
#[utoipa::path(patch, path = "/v1/accounts/{account_id}/webhooks/{webhook_id}", tag = "webhooks",
    request_body = WebhookPatchIn,
    params(("account_id" = String, Path), ("webhook_id" = String, Path),
        ("If-Match" = Option<super::doc::IfMatch>, Header, description = "The ETag the change is based on")),
    responses((status = 200, body = WebhookOut), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path((account, webhook)): Path<(String, String)>,
    headers: HeaderMap,
    ApiJson(patch, _): ApiJson<WebhookPatchIn>,
) -> ApiResult<Response> {
    let (account, webhook) = ids(&account, &webhook)?;
    let header_version = if_match(&headers)?;
    let expected = header_version.or(patch.version);
    let change = WebhookChange {
        name: patch.name,
        description: patch.description,
        enabled: patch.enabled,
        events: patch.events,
        url: patch.url,
    };
    match state
        .update_webhook(&principal, &account, &webhook, expected, change)
        .await
    {
        Ok(webhook) => Ok(with_etag(webhook)),
        // If-Match has its own status for a failed precondition.
        Err(stale @ ServiceError::Stale { .. }) if header_version.is_some() => {
            Err(ApiError::PreconditionFailed(stale.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Delete a webhook. Nothing more is delivered to it.
#[utoipa::path(delete, path = "/v1/accounts/{account_id}/webhooks/{webhook_id}", tag = "webhooks",
    params(("account_id" = String, Path), ("webhook_id" = String, Path)),
    responses((status = 204), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    Path((account, webhook)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let (account, webhook) = ids(&account, &webhook)?;
    state.delete_webhook(&principal, &account, &webhook).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Reveal the webhook's signing secrets: the current one and any still in a
/// rotation's grace period.
#[utoipa::path(get, path = "/v1/accounts/{account_id}/webhooks/{webhook_id}/secret", tag = "webhooks",
    params(("account_id" = String, Path), ("webhook_id" = String, Path)),
    responses((status = 200, body = SecretsOut), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn reveal_secret(
    State(state): State<AppState>,
    principal: Principal,
    Path((account, webhook)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (account, webhook) = ids(&account, &webhook)?;
    let secrets = state
        .webhook_secrets(&principal, &account, &webhook)
        .await?;
    let mut response = Json(SecretsOut {
        data: secrets.into_iter().map(Into::into).collect(),
    })
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Rotate the signing secret. The old secret keeps signing beside the new
/// one for the grace period, so receivers can switch without downtime.
#[utoipa::path(post, path = "/v1/accounts/{account_id}/webhooks/{webhook_id}/secret/rotate", tag = "webhooks",
    request_body = RotateIn,
    params(("account_id" = String, Path), ("webhook_id" = String, Path)),
    responses((status = 200, body = RotatedOut), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    principal: Principal,
    Path((account, webhook)): Path<(String, String)>,
    ApiJson(input, _): ApiJson<RotateIn>,
) -> ApiResult<Response> {
    let (account, webhook) = ids(&account, &webhook)?;
    let grace = input
        .grace_period_seconds
        .map(std::time::Duration::from_secs);
    let (webhook, secret) = state
        .rotate_secret(
            &principal,
            &account,
            &webhook,
            input.secret.map(|s| s.0),
            grace,
        )
        .await?;
    let mut response = Json(RotatedOut {
        secret: Revealed(secret.expose_whsec()),
        webhook: webhook.into(),
    })
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
