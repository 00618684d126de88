//! The console's sessions: a random token in a cookie, its hash here.
//!
//! A session names who signed in (the admin, or an account through one of
//! its keys) and ends when it expires, when it is signed out, when its key
//! is revoked (or deleted with its account), or, for the admin, when the
//! configured admin key changes.

use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use herald_core::{AccountId, ApiKeyId};
use rand::RngCore as _;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, Set};
use secrecy::{ExposeSecret as _, SecretString};

use super::entities::{api_key, console_session};
use super::{Store, StoreResult, hash_key, now};
use crate::principal::Principal;

/// A session as the console sees it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The hash of the cookie's token.
    pub id: String,
    pub principal: Principal,
    /// Every state-changing form carries it.
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// How a session was opened.
#[derive(Debug, Clone)]
pub enum Opener<'a> {
    /// With the admin key, identified by its hash.
    Admin { key_hash: &'a str },
    /// With one of an account's keys.
    Account {
        account: &'a AccountId,
        key: &'a ApiKeyId,
    },
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Store {
    /// Opens a session for `ttl`; returns its token (for the cookie, never
    /// stored) and the session.
    pub async fn open_session(
        &self,
        opener: Opener<'_>,
        ttl: Duration,
    ) -> StoreResult<(SecretString, Session)> {
        let token = random_token();
        let id = hash_key(&token);
        let at = now();
        let expires_at =
            at + chrono::Duration::from_std(ttl).context("session lifetime out of range")?;
        let (principal, account_id, api_key_id, admin_key_hash) = match opener {
            Opener::Admin { key_hash } => (Principal::Admin, None, None, Some(key_hash.to_owned())),
            Opener::Account { account, key } => (
                Principal::Account(account.clone()),
                Some(account.to_string()),
                Some(key.to_string()),
                None,
            ),
        };
        let csrf_token = random_token();
        console_session::ActiveModel {
            id: Set(id.clone()),
            account_id: Set(account_id),
            api_key_id: Set(api_key_id),
            admin_key_hash: Set(admin_key_hash),
            csrf_token: Set(csrf_token.clone()),
            flash: Set(None),
            created_at: Set(at),
            expires_at: Set(expires_at),
        }
        .insert(&self.db)
        .await?;
        Ok((
            SecretString::from(token),
            Session {
                id,
                principal,
                csrf_token,
                expires_at,
            },
        ))
    }

    /// The live session whose cookie token is `token`, if any. `admin_key_hash`
    /// is the hash of the admin key configured now.
    pub async fn session(
        &self,
        token: &SecretString,
        admin_key_hash: &str,
    ) -> StoreResult<Option<Session>> {
        self.session_by_id(&hash_key(token.expose_secret()), admin_key_hash)
            .await
    }

    /// The session `id` if it is still live, for long requests that check
    /// again as they go.
    pub async fn session_by_id(
        &self,
        id: &str,
        admin_key_hash: &str,
    ) -> StoreResult<Option<Session>> {
        let Some(row) = console_session::Entity::find_by_id(id)
            .filter(console_session::Column::ExpiresAt.gt(now()))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let principal = match (&row.account_id, &row.api_key_id, &row.admin_key_hash) {
            (None, None, Some(hash)) if hash == admin_key_hash => Principal::Admin,
            (Some(account), Some(key), None) => {
                let live = api_key::Entity::find_by_id(key.as_str())
                    .filter(api_key::Column::AccountId.eq(account.as_str()))
                    .filter(api_key::Column::RevokedAt.is_null())
                    .one(&self.db)
                    .await?
                    .is_some();
                if !live {
                    return Ok(None);
                }
                Principal::Account(
                    AccountId::parse(account).context("stored account id is invalid")?,
                )
            }
            _ => return Ok(None),
        };
        Ok(Some(Session {
            id: row.id,
            principal,
            csrf_token: row.csrf_token,
            expires_at: row.expires_at,
        }))
    }

    pub async fn close_session(&self, id: &str) -> StoreResult<()> {
        console_session::Entity::delete_by_id(id)
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Leaves a one-time message for the session's next page.
    pub async fn set_flash(&self, id: &str, flash: &str) -> StoreResult<()> {
        console_session::Entity::update_many()
            .col_expr(console_session::Column::Flash, Expr::value(flash))
            .filter(console_session::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Takes the session's one-time message, if any: a second call gets none.
    pub async fn take_flash(&self, id: &str) -> StoreResult<Option<String>> {
        let Some(flash) = console_session::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .and_then(|row| row.flash)
        else {
            return Ok(None);
        };
        // Only the reader that clears it shows it, should two pages race.
        let cleared = console_session::Entity::update_many()
            .col_expr(
                console_session::Column::Flash,
                Expr::value(Option::<String>::None),
            )
            .filter(console_session::Column::Id.eq(id))
            .filter(console_session::Column::Flash.eq(flash.as_str()))
            .exec(&self.db)
            .await?;
        Ok((cleared.rows_affected == 1).then_some(flash))
    }

    /// Forgets sessions that have expired.
    pub async fn purge_sessions(&self) -> StoreResult<u64> {
        let purged = console_session::Entity::delete_many()
            .filter(console_session::Column::ExpiresAt.lte(now()))
            .exec(&self.db)
            .await?;
        Ok(purged.rows_affected)
    }
}
