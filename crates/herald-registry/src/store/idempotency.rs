//! `Idempotency-Key` bookkeeping: the first response to a key is kept and
//! returned for every repeat of the same request.

use std::time::Duration;

use anyhow::Context as _;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, Set};
use secrecy::{ExposeSecret as _, SecretString};

use super::entities::idempotency_key;
use super::{Store, StoreError, StoreResult, now};

#[derive(Debug)]
pub struct IdempotencyRecord {
    pub status: u16,
    pub body: String,
}

#[derive(Debug)]
pub enum Begin {
    /// First use of the key: handle the request, then `finish`.
    Fresh,
    /// Seen before with the same request: answer this.
    Replay(IdempotencyRecord),
    /// The first request with this key is still being handled.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

impl Store {
    pub async fn begin_idempotent(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        ttl: Duration,
    ) -> StoreResult<Begin> {
        let insert = idempotency_key::ActiveModel {
            scope: Set(scope.to_owned()),
            key: Set(key.to_owned()),
            fingerprint: Set(fingerprint.to_owned()),
            status: Set(0),
            body: Set(None),
            created_at: Set(now()),
        }
        .insert(&self.db)
        .await;
        match insert.map_err(StoreError::from) {
            Ok(_) => return Ok(Begin::Fresh),
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        let Some(row) = idempotency_key::Entity::find_by_id((scope.to_owned(), key.to_owned()))
            .one(&self.db)
            .await?
        else {
            // Abandoned between our insert and read: treat it as in flight,
            // the client retries.
            return Ok(Begin::InProgress);
        };
        let expired = now() - row.created_at
            > chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        if expired {
            idempotency_key::Entity::delete_by_id((scope.to_owned(), key.to_owned()))
                .exec(&self.db)
                .await?;
            return Box::pin(self.begin_idempotent(scope, key, fingerprint, ttl)).await;
        }
        if row.fingerprint != fingerprint {
            return Ok(Begin::Mismatch);
        }
        match (row.status, row.body) {
            (0, _) | (_, None) => Ok(Begin::InProgress),
            (status, Some(body)) => {
                let body = self
                    .keyring
                    .open(&body, &response_context(scope, key))
                    .context("cannot open a stored response")?;
                Ok(Begin::Replay(IdempotencyRecord {
                    status: u16::try_from(status).unwrap_or(500),
                    body: body.expose_secret().to_owned(),
                }))
            }
        }
    }

    pub async fn finish_idempotent(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> StoreResult<()> {
        let sealed = self.keyring.seal(
            &SecretString::from(body.to_owned()),
            &response_context(scope, key),
        );
        idempotency_key::Entity::update_many()
            .col_expr(
                idempotency_key::Column::Status,
                Expr::value(i32::from(status)),
            )
            .col_expr(idempotency_key::Column::Body, Expr::value(Some(sealed)))
            .filter(idempotency_key::Column::Scope.eq(scope))
            .filter(idempotency_key::Column::Key.eq(key))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Forgets a key whose request failed, so that the client may retry it.
    pub async fn abandon_idempotent(&self, scope: &str, key: &str) -> StoreResult<()> {
        idempotency_key::Entity::delete_by_id((scope.to_owned(), key.to_owned()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    pub async fn purge_idempotency_keys(&self, ttl: Duration) -> StoreResult<u64> {
        let cutoff = now() - chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let result = idempotency_key::Entity::delete_many()
            .filter(idempotency_key::Column::CreatedAt.lt(cutoff))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected)
    }
}

/// What a stored response is bound to: its scope and key, so that it replays for no other.
fn response_context(scope: &str, key: &str) -> Vec<u8> {
    [scope.as_bytes(), b"\0", key.as_bytes()].concat()
}
