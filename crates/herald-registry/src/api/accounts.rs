//! `/v1/accounts`: the booking platform's customers (the UI's "entities").

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use herald_core::AccountId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiQuery};
use super::{ListResponse, PageParams, idempotency, limit, path_id};
use crate::error::{ApiResult, Problem};
use crate::principal::Principal;
use crate::state::AppState;
use crate::store::Account;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/accounts", get(list).post(create))
        .route(
            "/accounts/{account_id}",
            get(read).patch(rename).delete(remove),
        )
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountOut {
    #[schema(example = "acct_01JDQ3W3Y0ZK4V5R8N2M6P7QXA")]
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Account> for AccountOut {
    fn from(a: Account) -> Self {
        Self {
            id: a.id.to_string(),
            name: a.name,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountIn {
    /// Display name, 1–200 characters.
    #[schema(value_type = super::doc::AccountName, example = "Cool Account")]
    pub name: String,
}

fn account_id(text: &str) -> ApiResult<AccountId> {
    path_id(text, "account", AccountId::parse)
}

/// Create an account (admin only).
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", request_body = AccountIn,
    params(("Idempotency-Key" = Option<super::doc::IdempotencyKey>, Header, description = "Makes a retried create safe: a repeat with the same key gets the first response")),
    responses((status = 201, body = AccountOut), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiJson(input, raw): ApiJson<AccountIn>,
) -> ApiResult<Response> {
    idempotency::created(
        &state,
        &principal,
        &headers,
        "POST /v1/accounts",
        &raw,
        &[],
        async {
            state
                .create_account(&principal, &input.name)
                .await
                .map(AccountOut::from)
        },
    )
    .await
}

/// List accounts (admin only).
#[utoipa::path(get, path = "/v1/accounts", tag = "accounts", params(PageParams),
    responses((status = 200, body = ListResponse<AccountOut>), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<ListResponse<AccountOut>>> {
    let page = state
        .list_accounts(&principal, page.cursor.as_deref(), limit(page.limit)?)
        .await?;
    Ok(Json(ListResponse {
        data: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Get an account. An account key may read its own account.
#[utoipa::path(get, path = "/v1/accounts/{account_id}", tag = "accounts",
    params(("account_id" = String, Path)),
    responses((status = 200, body = AccountOut), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn read(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<AccountOut>> {
    Ok(Json(
        state
            .get_account(&principal, &account_id(&id)?)
            .await?
            .into(),
    ))
}

/// Rename an account (admin only).
#[utoipa::path(patch, path = "/v1/accounts/{account_id}", tag = "accounts", request_body = AccountIn,
    params(("account_id" = String, Path)),
    responses((status = 200, body = AccountOut), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn rename(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(input, _): ApiJson<AccountIn>,
) -> ApiResult<Json<AccountOut>> {
    Ok(Json(
        state
            .rename_account(&principal, &account_id(&id)?, &input.name)
            .await?
            .into(),
    ))
}

/// Delete an account with its webhooks and keys (admin only).
#[utoipa::path(delete, path = "/v1/accounts/{account_id}", tag = "accounts",
    params(("account_id" = String, Path)),
    responses((status = 204), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.delete_account(&principal, &account_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
