//! `Idempotency-Key` on creates: a repeat of the same request returns the
//! first response; the same key with a different request is refused.

use std::future::Future;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::principal::Principal;
use crate::state::AppState;
use crate::store::Begin;

pub const HEADER: &str = "idempotency-key";
const REPLAYED: &str = "idempotent-replayed";

fn key_of(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    // As the API document states it: visible ASCII, spaces and tabs (what an
    // HTTP field value may hold), at least one visible character.
    let visible = |b: &u8| (0x21..=0x7e).contains(b);
    let text = value
        .to_str()
        .ok()
        .filter(|t| (1..=255).contains(&t.len()))
        .filter(|t| t.bytes().all(|b| b == b'\t' || b == b' ' || visible(&b)))
        .filter(|t| t.bytes().any(|b| visible(&b)))
        .ok_or_else(|| {
            ApiError::field(
                "header:idempotency-key",
                "must be 1–255 visible ASCII characters",
            )
        })?;
    Ok(Some(text.to_owned()))
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Runs `create` at most once per (caller, key); answers 201 with its JSON.
///
/// The fields named in `shown_once` (secrets and keys) are never stored: a
/// replayed response carries them as null, and the first response is the
/// only place they appear.
pub async fn created<T, E, F>(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    route: &str,
    body: &[u8],
    shown_once: &[&str],
    create: F,
) -> ApiResult<Response>
where
    T: Serialize,
    E: Into<ApiError>,
    F: Future<Output = Result<T, E>>,
{
    let Some(key) = key_of(headers)? else {
        let value = create.await.map_err(Into::into)?;
        return Ok((StatusCode::CREATED, axum::Json(value)).into_response());
    };
    let scope = principal.scope_name();
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update([0]);
    hasher.update(body);
    let fingerprint = hex::encode(hasher.finalize());
    let ttl = state.config.idempotency_ttl;
    match state
        .store
        .begin_idempotent(&scope, &key, &fingerprint, ttl)
        .await?
    {
        Begin::Fresh => {}
        Begin::Replay(record) => {
            let status = StatusCode::from_u16(record.status).unwrap_or(StatusCode::OK);
            let mut response = json_response(status, record.body);
            response
                .headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
            return Ok(response);
        }
        Begin::InProgress => {
            return Err(ApiError::Conflict(
                "a request with this Idempotency-Key is still being handled; retry shortly".into(),
            ));
        }
        Begin::Mismatch => {
            return Err(ApiError::field(
                "header:idempotency-key",
                "was already used for a different request",
            ));
        }
    }
    match create.await {
        Ok(value) => {
            let serialise = |e: serde_json::Error| {
                ApiError::Internal(anyhow::Error::new(e).context("serialising"))
            };
            let mut kept = serde_json::to_value(&value).map_err(serialise)?;
            for field in shown_once {
                if let Some(slot) = kept.get_mut(*field) {
                    *slot = serde_json::Value::Null;
                }
            }
            let stored = serde_json::to_string(&kept).map_err(serialise)?;
            let body = serde_json::to_string(&value).map_err(serialise)?;
            state
                .store
                .finish_idempotent(&scope, &key, StatusCode::CREATED.as_u16(), &stored)
                .await?;
            Ok(json_response(StatusCode::CREATED, body))
        }
        Err(error) => {
            // A failed request is not remembered: the client may fix and retry.
            if let Err(e) = state.store.abandon_idempotent(&scope, &key).await {
                tracing::warn!(error = %e, "could not release an idempotency key");
            }
            Err(error.into())
        }
    }
}
