//! Bearer API keys: who is calling.
//!
//! Authentication only says who the caller is; what they may touch is
//! decided by the store's [`AccountScope`](crate::store::AccountScope).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use herald_core::AccountId;
use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The operator's key from configuration: every account.
    Admin,
    /// An account's key: that account only.
    Account(AccountId),
}

impl Principal {
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Self::Admin => Ok(()),
            Self::Account(_) => Err(ApiError::Forbidden),
        }
    }

    /// A stable name for the caller, used to keep idempotency keys apart.
    pub fn scope_name(&self) -> String {
        match self {
            Self::Admin => "admin".into(),
            Self::Account(id) => id.to_string(),
        }
    }
}

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

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = bearer(parts).ok_or(ApiError::Unauthorized)?;
        // Compare digests so that the comparison takes the same time
        // whatever the lengths.
        let given = crate::store::hash_key(key.expose_secret());
        if given
            .as_bytes()
            .ct_eq(state.admin_key_hash.as_bytes())
            .into()
        {
            return Ok(Self::Admin);
        }
        match state.store.account_for_key(&key).await {
            Ok(Some(account)) => Ok(Self::Account(account)),
            Ok(None) => Err(ApiError::Unauthorized),
            Err(StoreError::Other(e)) => Err(ApiError::Internal(e)),
            Err(e) => Err(e.into()),
        }
    }
}
