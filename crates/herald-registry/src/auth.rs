//! The API's authentication: a bearer API key names the [`Principal`].
//!
//! Authentication only says who the caller is; what they may touch is
//! decided by the store's [`AccountScope`](crate::store::AccountScope).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;

use crate::error::ApiError;
use crate::principal::Principal;
use crate::state::AppState;
use crate::store::KeyOwner;
use herald_core::ApiKeyId;

fn bearer(parts: &Parts) -> Option<SecretString> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| SecretString::from(token.trim().to_owned()))
}

/// Who holds `key`, if anyone: the admin (compared in constant time) or
/// the account of a live key, with that key's id.
pub async fn identify(
    state: &AppState,
    key: &SecretString,
) -> Result<Option<(Principal, Option<ApiKeyId>)>, crate::store::StoreError> {
    // Compare digests so that the comparison takes the same time whatever
    // the lengths.
    let given = crate::store::hash_key(key.expose_secret());
    if given
        .as_bytes()
        .ct_eq(state.admin_key_hash.as_bytes())
        .into()
    {
        return Ok(Some((Principal::Admin, None)));
    }
    Ok(state
        .store
        .owner_of_key(key)
        .await?
        .map(|KeyOwner { key, account }| (Principal::Account(account), Some(key))))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = bearer(parts).ok_or(ApiError::Unauthorized)?;
        match identify(state, &key).await? {
            Some((principal, _)) => Ok(principal),
            None => Err(ApiError::Unauthorized),
        }
    }
}
