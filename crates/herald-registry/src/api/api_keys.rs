//! `/v1/accounts/{account_id}/api-keys`: account-scoped keys (admin only).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{delete, get};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use herald_core::{AccountId, ApiKeyId};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::ApiJson;
use super::{Revealed, idempotency, path_id};
use crate::error::{ApiResult, Problem};
use crate::principal::Principal;
use crate::service::ServiceError;
use crate::state::AppState;
use crate::store::ApiKey;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/accounts/{account_id}/api-keys", get(list).post(create))
        .route("/accounts/{account_id}/api-keys/{key_id}", delete(revoke))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyOut {
    #[schema(example = "key_01JDQ3W3Y0ZK4V5R8N2M6P7QXA")]
    pub id: String,
    pub account_id: String,
    pub name: String,
    /// The key's first characters, to tell keys apart.
    #[schema(example = "hrld_Xk3f9a")]
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKey> for ApiKeyOut {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id.to_string(),
            account_id: k.account.to_string(),
            name: k.name,
            prefix: k.prefix,
            created_at: k.created_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// A key just created; `key` is shown this once and never stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyCreated {
    #[serde(flatten)]
    pub api_key: ApiKeyOut,
    /// Send as `Authorization: Bearer <key>`. Null in a response replayed
    /// for an `Idempotency-Key`: only a hash is kept, so a lost key is
    /// replaced by creating another.
    #[schema(value_type = Option<String>)]
    pub key: Revealed,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeysOut {
    pub data: Vec<ApiKeyOut>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyIn {
    #[schema(value_type = super::doc::Name, example = "booking platform integration")]
    pub name: String,
}

fn account_id(text: &str) -> ApiResult<AccountId> {
    path_id(text, "account", AccountId::parse)
}

/// Create an API key for an account (admin only).
#[utoipa::path(post, path = "/v1/accounts/{account_id}/api-keys", tag = "api-keys",
    request_body = ApiKeyIn,
    params(("account_id" = String, Path),
        ("Idempotency-Key" = Option<super::doc::IdempotencyKey>, Header, description = "Makes a retried create safe: a repeat with the same key gets the first response")),
    responses((status = 201, body = ApiKeyCreated), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
    headers: HeaderMap,
    ApiJson(input, raw): ApiJson<ApiKeyIn>,
) -> ApiResult<Response> {
    let account = account_id(&account)?;
    let route = format!("POST /v1/accounts/{account}/api-keys");
    idempotency::created(
        &state,
        &principal,
        &headers,
        &route,
        &raw,
        &["key"],
        async {
            let created = state
                .create_api_key(&principal, &account, &input.name)
                .await?;
            Ok::<_, ServiceError>(ApiKeyCreated {
                api_key: created.key.into(),
                key: Revealed(created.secret.expose_secret().to_owned()),
            })
        },
    )
    .await
}

/// List an account's API keys (admin only).
#[utoipa::path(get, path = "/v1/accounts/{account_id}/api-keys", tag = "api-keys",
    params(("account_id" = String, Path)),
    responses((status = 200, body = ApiKeysOut), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
) -> ApiResult<Json<ApiKeysOut>> {
    let keys = state
        .list_api_keys(&principal, &account_id(&account)?)
        .await?;
    Ok(Json(ApiKeysOut {
        data: keys.into_iter().map(Into::into).collect(),
    }))
}

/// Revoke an API key (admin only). It stops working at once.
#[utoipa::path(delete, path = "/v1/accounts/{account_id}/api-keys/{key_id}", tag = "api-keys",
    params(("account_id" = String, Path), ("key_id" = String, Path)),
    responses((status = 200, body = ApiKeyOut), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    Path((account, key)): Path<(String, String)>,
) -> ApiResult<Json<ApiKeyOut>> {
    let account = account_id(&account)?;
    let key = path_id(&key, "API key", ApiKeyId::parse)?;
    Ok(Json(
        state
            .revoke_api_key(&principal, &account, &key)
            .await?
            .into(),
    ))
}
