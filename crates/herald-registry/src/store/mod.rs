//! Persistence: every database call of the registry lives here.
//!
//! Webhook operations take an [`AccountScope`], which only
//! [`Store::authorize`] can make: a handler cannot reach another account's
//! rows because it cannot name them without one.

mod accounts;
mod api_keys;
mod deliveries;
mod entities;
mod event_types;
mod idempotency;
pub mod migration;
mod sessions;
mod webhooks;

use anyhow::Context as _;
use base64::Engine as _;
use herald_core::AccountId;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbErr,
    SqlErr, SqliteTransactionMode, TransactionOptions, TransactionTrait as _,
};
use sea_orm_migration::MigratorTrait as _;

pub use accounts::Account;
pub use api_keys::{ApiKey, KEY_PREFIX, KeyOwner, NewApiKey, hash_key};
pub use deliveries::{
    Attempt, Delivery, DeliveryFilter, DeliveryState, DeliveryStats, IngestReport, OutcomeRecord,
    PendingDelivery,
};
pub use event_types::{EventTypeRecord, SEED_CATALOGUE};
pub use idempotency::{Begin, IdempotencyRecord};
pub use sessions::{Opener, Session};
pub use webhooks::{NewWebhook, SecretRecord, Webhook, WebhookFilter, WebhookPatch};

use crate::principal::Principal;
use herald_core::Keyring;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("version {expected} is stale (current {current})")]
    VersionMismatch { expected: u64, current: u64 },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<DbErr> for StoreError {
    /// The one place a unique-constraint violation becomes a conflict, and
    /// a foreign-key violation "not found": the row a write hangs on (an
    /// account, for webhooks and keys) was deleted while it ran.
    fn from(error: DbErr) -> Self {
        match error.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => {
                Self::Conflict("a resource with the same unique key already exists".into())
            }
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => Self::NotFound("account"),
            _ => Self::Other(anyhow::Error::new(error).context("database operation failed")),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Proof that the caller may act on one account's resources.
#[derive(Debug, Clone)]
pub struct AccountScope {
    account: AccountId,
}

impl AccountScope {
    pub fn account(&self) -> &AccountId {
        &self.account
    }
}

/// A page of a cursor-paginated list.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Opaque cursors: the id of the last item of the previous page. Ids are
/// ULID-based, so their order is creation order.
pub fn encode_cursor(last_id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last_id)
}

pub fn decode_cursor(cursor: &str) -> Option<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    keyring: Keyring,
}

impl Store {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str, keyring: Keyring) -> anyhow::Result<Self> {
        let db = open(url).await?;
        migration::Migrator::up(&db, None)
            .await
            .context("database migration failed")?;
        let store = Self { db, keyring };
        store.seed_event_types().await?;
        Ok(store)
    }

    /// Closes the database's connections once their work is done (a registry's shutdown):
    /// PostgreSQL's backends end cleanly and SQLite's connections are closed.
    pub async fn close(&self) {
        if let Err(error) = self.db.close_by_ref().await {
            tracing::warn!(error = %error, "closing the database failed");
        }
    }

    /// Brings the schema at `url` up to date (`herald migrate`, e.g. as a deployment's job
    /// before the registries roll); returns the names of the migrations it applied.
    pub async fn migrate(url: &str) -> anyhow::Result<Vec<String>> {
        let db = open(url).await?;
        let pending: Vec<String> = migration::Migrator::get_pending_migrations(&db)
            .await
            .context("cannot read the applied migrations")?
            .iter()
            .map(|migration| migration.name().to_owned())
            .collect();
        migration::Migrator::up(&db, None)
            .await
            .context("database migration failed")?;
        Self {
            db,
            keyring: Keyring::default(),
        }
        .seed_event_types()
        .await?;
        Ok(pending)
    }
}

/// Connects to the database at `url`, configured as Herald uses it.
async fn open(url: &str) -> anyhow::Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(url.to_owned());
    options.sqlx_logging(false);
    if url.starts_with("sqlite:") {
        // One writer at a time is SQLite's model; a small pool avoids
        // "database is locked" under concurrent requests.
        options.max_connections(4);
    }
    let db = Database::connect(options)
        .await
        .with_context(|| format!("cannot connect to the database at {}", redact(url)))?;
    if url.starts_with("sqlite:") {
        db.execute_unprepared("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000;")
            .await
            .context("cannot configure SQLite")?;
    }
    Ok(db)
}

impl Store {
    /// Begins a transaction that writes. On SQLite it takes the write lock
    /// at once (`BEGIN IMMEDIATE`): a transaction that reads before it
    /// writes then waits for another writer (the busy timeout) instead of
    /// failing with "database is locked" when it would upgrade its lock.
    /// PostgreSQL ignores the mode.
    async fn write(&self) -> Result<DatabaseTransaction, DbErr> {
        self.db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        self.db.ping().await.context("database ping failed")
    }

    /// The one way to obtain an [`AccountScope`]: the admin may act on any
    /// existing account, an account key only on its own. Any other account
    /// is "not found", whether it exists or not.
    pub async fn authorize(
        &self,
        principal: &Principal,
        account: &AccountId,
    ) -> StoreResult<AccountScope> {
        let allowed = match principal {
            Principal::Admin => true,
            Principal::Account(own) => own == account,
        };
        if !allowed || self.get_account(account).await?.is_none() {
            return Err(StoreError::NotFound("account"));
        }
        Ok(AccountScope {
            account: account.clone(),
        })
    }
}

/// Hides the password of a database URL for error messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Cuts `limit + 1` rows into a page and its next cursor.
fn page<R, T>(
    mut rows: Vec<R>,
    limit: u64,
    id_of: impl Fn(&R) -> String,
    convert: impl Fn(R) -> StoreResult<T>,
) -> StoreResult<Page<T>> {
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(|r| encode_cursor(&id_of(r)))
    } else {
        None
    };
    let items = rows.into_iter().map(convert).collect::<StoreResult<_>>()?;
    Ok(Page { items, next_cursor })
}

/// The current time to microseconds: what PostgreSQL keeps, and what the
/// delivery list's cursor holds, so that rows written together (one batch of
/// outcomes) compare equal to their cursor on SQLite too.
fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6)
}
