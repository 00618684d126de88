//! The delivery log: what was sent where, every attempt and its outcome.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Context as _;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use herald_core::{AccountId, DeliveryId, WebhookId};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait as _, Condition, ConnectionTrait, EntityTrait as _, PaginatorTrait as _,
    QueryFilter as _, QueryOrder as _, QuerySelect as _, Set,
};

use super::entities::{attempt, delivery, webhook};
use super::{AccountScope, Page, Store, StoreError, StoreResult, now};

/// Where a delivery stands, from its latest attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Handed to the workers, no attempt reported yet.
    Pending,
    Delivered,
    /// The last attempt failed and another is scheduled.
    Failed,
    /// No further attempt will be made.
    Exhausted,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Exhausted => "exhausted",
        }
    }

    fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(match text {
            "pending" => Self::Pending,
            "delivered" => Self::Delivered,
            "failed" => Self::Failed,
            "exhausted" => Self::Exhausted,
            other => anyhow::bail!("unknown delivery state {other:?}"),
        })
    }
}

/// Why a webhook was disabled when its endpoint answered 410 Gone.
const DISABLED_BY_410: &str = "the endpoint answered 410 Gone";

/// One attempt's outcome as the workers report it.
#[derive(Debug, Clone)]
pub struct OutcomeRecord {
    pub delivery_id: DeliveryId,
    pub webhook_id: WebhookId,
    pub account: AccountId,
    pub event_id: String,
    pub event_type: String,
    pub event_timestamp: DateTime<Utc>,
    pub payload: String,
    /// The worker did not send the event's data (the event was too large to deliver).
    pub payload_omitted: bool,
    pub attempt: u32,
    pub state: DeliveryState,
    pub trigger: String,
    pub http_status: u16,
    pub latency_ms: u32,
    pub error: String,
    pub response_body: String,
    pub attempted_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The request's headers as sent, by name.
    pub request_headers: BTreeMap<String, String>,
    /// The endpoint answered 410 Gone: the webhook is disabled, in the transaction that
    /// records the outcome, when the outcome is new.
    pub disable_webhook: bool,
}

/// A delivery about to be handed to the workers by the registry itself
/// (test events, redeliveries, replays).
#[derive(Debug, Clone)]
pub struct PendingDelivery {
    pub delivery_id: DeliveryId,
    pub webhook_id: WebhookId,
    pub event_id: String,
    pub event_type: String,
    pub event_timestamp: DateTime<Utc>,
    pub payload: String,
    pub payload_omitted: bool,
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: DeliveryId,
    pub account: AccountId,
    pub webhook_id: WebhookId,
    pub event_id: String,
    pub event_type: String,
    pub event_timestamp: DateTime<Utc>,
    pub payload: String,
    /// The event's data was not kept (it was too large to deliver): `payload` is `{}` and the
    /// delivery cannot be sent again.
    pub payload_omitted: bool,
    pub state: DeliveryState,
    pub attempts: u32,
    pub last_attempt: u32,
    pub last_http_status: u16,
    /// How long the latest attempt waited for its answer.
    pub last_latency_ms: u32,
    pub last_error: String,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub attempt: u32,
    pub state: DeliveryState,
    pub trigger: String,
    pub http_status: u16,
    pub latency_ms: u32,
    pub error: String,
    pub response_body: String,
    pub attempted_at: DateTime<Utc>,
    /// The request's headers as sent; empty when the worker did not report
    /// them.
    pub request_headers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Clone)]
pub struct DeliveryFilter {
    pub webhook: Option<WebhookId>,
    pub state: Option<DeliveryState>,
    pub event_type: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryStats {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
    pub exhausted: u64,
}

/// What one batch of outcomes changed.
#[derive(Debug, Default)]
pub struct IngestReport {
    pub recorded: usize,
    pub duplicates: usize,
    /// Indexes of the outcomes recorded for the first time.
    pub new: Vec<usize>,
    /// Webhooks this call disabled because their endpoint answered 410 Gone.
    pub disabled: Vec<(AccountId, WebhookId)>,
}

/// Rows per multi-row INSERT: far below SQLite's and PostgreSQL's limits on
/// bound parameters at 16 columns.
const ROWS_PER_STATEMENT: usize = 256;

/// One statement that advances every delivery of `updates` (id, new
/// attempts, the latest of them) by its new attempts: the count grows, and the
/// latest attempt's result is taken where it is not older than the one the
/// row holds (outcomes may arrive out of order). SET expressions read the row
/// as it was, so the guard sees the old last attempt in every column. The
/// same SQL runs on SQLite (3.33 and later) and PostgreSQL; sea-query has no
/// UPDATE … FROM, hence the text.
fn advance_deliveries(
    backend: sea_orm::DbBackend,
    updates: &[(&str, (i32, &OutcomeRecord))],
    at: DateTime<Utc>,
) -> sea_orm::Statement {
    const COLUMNS: usize = 8;
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(updates.len() * COLUMNS + 1);
    let mut rows = Vec::with_capacity(updates.len());
    let next = |values: &mut Vec<sea_orm::Value>, value: sea_orm::Value| {
        values.push(value);
        match backend {
            sea_orm::DbBackend::Postgres => format!("${}", values.len()),
            _ => "?".to_owned(),
        }
    };
    for (id, (count, latest)) in updates {
        let row = [
            sea_orm::Value::from((*id).to_owned()),
            sea_orm::Value::from(*count),
            sea_orm::Value::from(int(latest.attempt)),
            sea_orm::Value::from(latest.state.as_str().to_owned()),
            sea_orm::Value::from(i32::from(latest.http_status)),
            sea_orm::Value::from(int(latest.latency_ms)),
            sea_orm::Value::from(latest.error.clone()),
            sea_orm::Value::from(latest.next_attempt_at),
        ]
        .into_iter()
        .map(|value| next(&mut values, value))
        .collect::<Vec<_>>();
        rows.push(format!("({})", row.join(", ")));
    }
    let updated_at = next(&mut values, sea_orm::Value::from(at));
    // The ids again, as a list: with only the join, PostgreSQL hashes the
    // whole table rather than looking each row up by its key.
    let ids = updates
        .iter()
        .map(|(id, _)| next(&mut values, sea_orm::Value::from((*id).to_owned())))
        .collect::<Vec<_>>()
        .join(", ");
    let newer = "deliveries.last_attempt <= v.attempt";
    let sql = format!(
        "WITH v(id, n, attempt, status, http_status, latency_ms, error, next_attempt_at) AS \
         (VALUES {rows}) \
         UPDATE deliveries SET \
         attempts = deliveries.attempts + v.n, \
         updated_at = {updated_at}, \
         status = CASE WHEN {newer} THEN v.status ELSE deliveries.status END, \
         last_http_status = CASE WHEN {newer} THEN v.http_status ELSE deliveries.last_http_status END, \
         last_latency_ms = CASE WHEN {newer} THEN v.latency_ms ELSE deliveries.last_latency_ms END, \
         last_error = CASE WHEN {newer} THEN v.error ELSE deliveries.last_error END, \
         next_attempt_at = CASE WHEN {newer} THEN v.next_attempt_at ELSE deliveries.next_attempt_at END, \
         last_attempt = CASE WHEN {newer} THEN v.attempt ELSE deliveries.last_attempt END \
         FROM v WHERE deliveries.id = v.id AND deliveries.id IN ({ids})",
        rows = rows.join(", "),
    );
    sea_orm::Statement::from_sql_and_values(backend, sql, values)
}

/// A delivery already logged is left as it is.
fn delivery_exists() -> OnConflict {
    OnConflict::column(delivery::Column::Id)
        .do_nothing()
        .to_owned()
}

/// The delivery row of `pending`, before any attempt.
fn delivery_row(
    account: &AccountId,
    pending: PendingDelivery,
    at: DateTime<Utc>,
) -> delivery::ActiveModel {
    delivery::ActiveModel {
        id: Set(pending.delivery_id.to_string()),
        account_id: Set(account.to_string()),
        webhook_id: Set(pending.webhook_id.to_string()),
        event_id: Set(pending.event_id),
        event_type: Set(pending.event_type),
        event_timestamp: Set(pending.event_timestamp),
        payload: Set(pending.payload),
        payload_omitted: Set(pending.payload_omitted),
        status: Set(DeliveryState::Pending.as_str().to_owned()),
        attempts: Set(0),
        last_attempt: Set(0),
        last_http_status: Set(0),
        last_latency_ms: Set(0),
        last_error: Set(String::new()),
        next_attempt_at: Set(None),
        created_at: Set(at),
        updated_at: Set(at),
    }
}

/// The delivery an outcome belongs to.
fn pending_of(outcome: &OutcomeRecord) -> PendingDelivery {
    PendingDelivery {
        delivery_id: outcome.delivery_id.clone(),
        webhook_id: outcome.webhook_id.clone(),
        event_id: outcome.event_id.clone(),
        event_type: outcome.event_type.clone(),
        event_timestamp: outcome.event_timestamp,
        payload: outcome.payload.clone(),
        payload_omitted: outcome.payload_omitted,
    }
}

/// The attempt row of an outcome.
fn attempt_row(outcome: &OutcomeRecord) -> StoreResult<attempt::ActiveModel> {
    Ok(attempt::ActiveModel {
        delivery_id: Set(outcome.delivery_id.to_string()),
        attempt: Set(int(outcome.attempt)),
        status: Set(outcome.state.as_str().to_owned()),
        trigger: Set(outcome.trigger.clone()),
        http_status: Set(i32::from(outcome.http_status)),
        latency_ms: Set(int(outcome.latency_ms)),
        error: Set(outcome.error.clone()),
        response_body: Set(outcome.response_body.clone()),
        attempted_at: Set(outcome.attempted_at),
        webhook_id: Set(outcome.webhook_id.to_string()),
        request_headers: Set(serde_json::to_string(&outcome.request_headers)
            .context("serialising request headers")?),
    })
}

fn int(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn uint(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

impl TryFrom<delivery::Model> for Delivery {
    type Error = StoreError;

    fn try_from(row: delivery::Model) -> StoreResult<Self> {
        Ok(Self {
            id: DeliveryId::parse(&row.id).context("stored delivery id is invalid")?,
            account: AccountId::parse(&row.account_id).context("stored account id is invalid")?,
            webhook_id: WebhookId::parse(&row.webhook_id)
                .context("stored webhook id is invalid")?,
            event_id: row.event_id,
            event_type: row.event_type,
            event_timestamp: row.event_timestamp,
            payload: row.payload,
            payload_omitted: row.payload_omitted,
            state: DeliveryState::parse(&row.status)?,
            attempts: uint(row.attempts),
            last_attempt: uint(row.last_attempt),
            last_http_status: u16::try_from(row.last_http_status).unwrap_or(0),
            last_latency_ms: uint(row.last_latency_ms),
            last_error: row.last_error,
            next_attempt_at: row.next_attempt_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

impl TryFrom<attempt::Model> for Attempt {
    type Error = StoreError;

    fn try_from(row: attempt::Model) -> StoreResult<Self> {
        Ok(Self {
            attempt: uint(row.attempt),
            state: DeliveryState::parse(&row.status)?,
            trigger: row.trigger,
            http_status: u16::try_from(row.http_status).unwrap_or(0),
            latency_ms: uint(row.latency_ms),
            error: row.error,
            response_body: row.response_body,
            attempted_at: row.attempted_at,
            // Written by this store from a map; anything else reads as none.
            request_headers: serde_json::from_str(&row.request_headers).unwrap_or_default(),
        })
    }
}

/// Cursor of the newest-first delivery list: (created_at, id) of the last row.
fn encode_cursor(row: &Delivery) -> String {
    let text = format!("{}|{}", row.created_at.timestamp_micros(), row.id);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, String)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (micros, id) = text.split_once('|')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        id.to_owned(),
    ))
}

impl Store {
    /// Records a batch of outcomes in one transaction. An outcome already
    /// recorded (same delivery and attempt) is counted as a duplicate and
    /// changes nothing, so redelivered outcome messages are harmless.
    pub async fn ingest_outcomes(&self, outcomes: &[OutcomeRecord]) -> StoreResult<IngestReport> {
        let txn = self.write().await?;
        let report = self.record_outcomes(&txn, outcomes).await?;
        txn.commit().await?;
        Ok(report)
    }

    /// Records outcomes in a few set-wise statements: every delivery's row
    /// (inserted unless it exists), every attempt (inserted unless it exists,
    /// the database saying which were new), then one statement advancing each
    /// delivery by its new attempts ([`advance_deliveries`]). Every column it
    /// sets is guarded by the attempt number, and only
    /// attempts this call inserted count, so concurrent ingesters (several
    /// registry replicas) neither count an attempt twice nor move a delivery
    /// back.
    async fn record_outcomes(
        &self,
        conn: &impl ConnectionTrait,
        outcomes: &[OutcomeRecord],
    ) -> StoreResult<IngestReport> {
        let at = now();
        let mut seen = HashSet::new();
        let deliveries: Vec<&OutcomeRecord> = outcomes
            .iter()
            .filter(|outcome| seen.insert(outcome.delivery_id.as_str()))
            .collect();
        for chunk in deliveries.chunks(ROWS_PER_STATEMENT) {
            delivery::Entity::insert_many(
                chunk
                    .iter()
                    .map(|outcome| delivery_row(&outcome.account, pending_of(outcome), at)),
            )
            .on_conflict(delivery_exists())
            .exec_without_returning(conn)
            .await?;
        }

        // The first of each (delivery, attempt): a message redelivered within
        // one batch is a duplicate like any other.
        let mut firsts: HashMap<(&str, u32), usize> = HashMap::new();
        for (index, outcome) in outcomes.iter().enumerate() {
            firsts
                .entry((outcome.delivery_id.as_str(), outcome.attempt))
                .or_insert(index);
        }
        let mut candidates: Vec<usize> = firsts.into_values().collect();
        candidates.sort_unstable();
        let mut inserted: HashSet<(String, i32)> = HashSet::new();
        for chunk in candidates.chunks(ROWS_PER_STATEMENT) {
            let rows = chunk
                .iter()
                .map(|&index| attempt_row(&outcomes[index]))
                .collect::<StoreResult<Vec<_>>>()?;
            let keys = attempt::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::columns([attempt::Column::DeliveryId, attempt::Column::Attempt])
                        .do_nothing()
                        .to_owned(),
                )
                .exec_with_returning_keys(conn)
                .await;
            match keys {
                Ok(keys) => inserted.extend(keys),
                Err(sea_orm::DbErr::RecordNotInserted) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let new: Vec<usize> = candidates
            .into_iter()
            .filter(|&index| {
                let outcome = &outcomes[index];
                inserted.contains(&(outcome.delivery_id.to_string(), int(outcome.attempt)))
            })
            .collect();

        // Per delivery: how many attempts are new, and the latest of them.
        let mut updates: BTreeMap<&str, (i32, &OutcomeRecord)> = BTreeMap::new();
        for &index in &new {
            let outcome = &outcomes[index];
            let entry = updates
                .entry(outcome.delivery_id.as_str())
                .or_insert((0, outcome));
            entry.0 += 1;
            if outcome.attempt > entry.1.attempt {
                entry.1 = outcome;
            }
        }
        let updates: Vec<(&str, (i32, &OutcomeRecord))> = updates.into_iter().collect();
        for chunk in updates.chunks(ROWS_PER_STATEMENT) {
            conn.execute_raw(advance_deliveries(conn.get_database_backend(), chunk, at))
                .await?;
        }
        // A 410 disables its webhook with the outcome, or not at all: a redelivered outcome is
        // no longer new, so a disable left for later would never happen. Only a new one: an
        // old 410 must not turn off a webhook enabled again since.
        let mut disabled = Vec::new();
        for &index in &new {
            let outcome = &outcomes[index];
            if outcome.disable_webhook
                && self
                    .disable_webhook_in(
                        conn,
                        &outcome.account,
                        &outcome.webhook_id,
                        DISABLED_BY_410,
                    )
                    .await?
            {
                disabled.push((outcome.account.clone(), outcome.webhook_id.clone()));
            }
        }
        Ok(IngestReport {
            recorded: new.len(),
            duplicates: outcomes.len() - new.len(),
            new,
            disabled,
        })
    }

    async fn insert_delivery(
        &self,
        conn: &impl ConnectionTrait,
        account: &AccountId,
        pending: &PendingDelivery,
    ) -> StoreResult<()> {
        delivery::Entity::insert(delivery_row(account, pending.clone(), now()))
            .on_conflict(delivery_exists())
            .exec_without_returning(conn)
            .await?;
        Ok(())
    }

    /// Records a delivery the registry is about to hand to the workers, so
    /// the log shows it before the first attempt.
    pub async fn record_pending(
        &self,
        scope: &AccountScope,
        pending: &PendingDelivery,
    ) -> StoreResult<()> {
        self.insert_delivery(&self.db, scope.account(), pending)
            .await
    }

    pub async fn list_deliveries(
        &self,
        scope: &AccountScope,
        filter: &DeliveryFilter,
        cursor: Option<&str>,
        limit: u64,
    ) -> StoreResult<Page<Delivery>> {
        let mut query = delivery::Entity::find()
            .filter(delivery::Column::AccountId.eq(scope.account().as_str()))
            .order_by_desc(delivery::Column::CreatedAt)
            .order_by_desc(delivery::Column::Id);
        if let Some(webhook) = &filter.webhook {
            query = query.filter(delivery::Column::WebhookId.eq(webhook.as_str()));
        }
        if let Some(state) = filter.state {
            query = query.filter(delivery::Column::Status.eq(state.as_str()));
        }
        if let Some(event_type) = &filter.event_type {
            query = query.filter(delivery::Column::EventType.eq(event_type.as_str()));
        }
        if let Some(since) = filter.since {
            query = query.filter(delivery::Column::CreatedAt.gte(since));
        }
        if let Some(until) = filter.until {
            query = query.filter(delivery::Column::CreatedAt.lt(until));
        }
        if let Some((at, id)) = cursor.and_then(decode_cursor) {
            query = query.filter(
                Condition::any()
                    .add(delivery::Column::CreatedAt.lt(at))
                    .add(
                        Condition::all()
                            .add(delivery::Column::CreatedAt.eq(at))
                            .add(delivery::Column::Id.lt(id)),
                    ),
            );
        }
        let mut rows = query
            .limit(limit + 1)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Delivery::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        let more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = if more {
            rows.last().map(encode_cursor)
        } else {
            None
        };
        Ok(Page {
            items: rows,
            next_cursor,
        })
    }

    pub async fn get_delivery(
        &self,
        scope: &AccountScope,
        id: &DeliveryId,
    ) -> StoreResult<(Delivery, Vec<Attempt>)> {
        let row = delivery::Entity::find_by_id(id.as_str())
            .filter(delivery::Column::AccountId.eq(scope.account().as_str()))
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound("delivery"))?;
        let attempts = attempt::Entity::find()
            .filter(attempt::Column::DeliveryId.eq(id.as_str()))
            .order_by_asc(attempt::Column::Attempt)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Attempt::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((row.try_into()?, attempts))
    }

    /// Exhausted deliveries of a webhook created in [since, until), oldest
    /// first, at most `limit`, after `after` (the created time and id of the
    /// last one of the previous page), so that a replay reads them in pages.
    pub async fn exhausted_since(
        &self,
        scope: &AccountScope,
        webhook: &WebhookId,
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
        after: Option<(DateTime<Utc>, &DeliveryId)>,
        limit: u64,
    ) -> StoreResult<Vec<Delivery>> {
        let mut query = delivery::Entity::find()
            .filter(delivery::Column::AccountId.eq(scope.account().as_str()))
            .filter(delivery::Column::WebhookId.eq(webhook.as_str()))
            .filter(delivery::Column::Status.eq(DeliveryState::Exhausted.as_str()))
            // One whose event's data was not kept cannot be sent again.
            .filter(delivery::Column::PayloadOmitted.eq(false))
            .filter(delivery::Column::CreatedAt.gte(since))
            .order_by_asc(delivery::Column::CreatedAt)
            .order_by_asc(delivery::Column::Id);
        if let Some(until) = until {
            query = query.filter(delivery::Column::CreatedAt.lt(until));
        }
        if let Some((at, id)) = after {
            query = query.filter(
                Condition::any()
                    .add(delivery::Column::CreatedAt.gt(at))
                    .add(
                        Condition::all()
                            .add(delivery::Column::CreatedAt.eq(at))
                            .add(delivery::Column::Id.gt(id.as_str())),
                    ),
            );
        }
        query
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Delivery::try_from)
            .collect()
    }

    /// Marks a delivery as about to be handed over again as `attempt`
    /// (redelivery or replay). Done before the hand-over, and only while no
    /// later attempt is recorded, so a fast outcome is never overwritten.
    pub async fn mark_requeued(&self, id: &DeliveryId, attempt: u32) -> StoreResult<()> {
        delivery::Entity::update_many()
            .col_expr(
                delivery::Column::Status,
                Expr::value(DeliveryState::Pending.as_str()),
            )
            .col_expr(delivery::Column::UpdatedAt, Expr::value(now()))
            .filter(delivery::Column::Id.eq(id.as_str()))
            .filter(delivery::Column::LastAttempt.lt(int(attempt)))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Undoes [`mark_requeued`](Self::mark_requeued) when the hand-over
    /// failed: the delivery goes back to `previous`, unless an attempt was
    /// recorded since.
    pub async fn unmark_requeued(
        &self,
        id: &DeliveryId,
        attempt: u32,
        previous: DeliveryState,
    ) -> StoreResult<()> {
        delivery::Entity::update_many()
            .col_expr(delivery::Column::Status, Expr::value(previous.as_str()))
            .col_expr(delivery::Column::UpdatedAt, Expr::value(now()))
            .filter(delivery::Column::Id.eq(id.as_str()))
            .filter(delivery::Column::Status.eq(DeliveryState::Pending.as_str()))
            .filter(delivery::Column::LastAttempt.lt(int(attempt)))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Forgets a delivery recorded as pending whose hand-over failed.
    pub async fn forget_pending(&self, id: &DeliveryId) -> StoreResult<()> {
        delivery::Entity::delete_many()
            .filter(delivery::Column::Id.eq(id.as_str()))
            .filter(delivery::Column::Attempts.eq(0))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    pub async fn delivery_stats(
        &self,
        scope: &AccountScope,
        webhook: &WebhookId,
    ) -> StoreResult<DeliveryStats> {
        let mut stats = DeliveryStats::default();
        for (state, slot) in [
            (DeliveryState::Pending, &mut stats.pending),
            (DeliveryState::Delivered, &mut stats.delivered),
            (DeliveryState::Failed, &mut stats.failed),
            (DeliveryState::Exhausted, &mut stats.exhausted),
        ] {
            *slot = delivery::Entity::find()
                .filter(delivery::Column::AccountId.eq(scope.account().as_str()))
                .filter(delivery::Column::WebhookId.eq(webhook.as_str()))
                .filter(delivery::Column::Status.eq(state.as_str()))
                .count(&self.db)
                .await?;
        }
        Ok(stats)
    }

    /// The deliveries among `ids` that belong to the scope's account.
    pub async fn deliveries_by_ids(
        &self,
        scope: &AccountScope,
        ids: &[DeliveryId],
    ) -> StoreResult<Vec<Delivery>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        delivery::Entity::find()
            .filter(delivery::Column::AccountId.eq(scope.account().as_str()))
            .filter(delivery::Column::Id.is_in(ids.iter().map(DeliveryId::as_str)))
            .all(&self.db)
            .await?
            .into_iter()
            .map(Delivery::try_from)
            .collect()
    }

    /// Per webhook of the account, its deliveries created since `since` by
    /// where they stand now.
    pub async fn recent_stats(
        &self,
        scope: &AccountScope,
        since: DateTime<Utc>,
    ) -> StoreResult<HashMap<WebhookId, DeliveryStats>> {
        let rows: Vec<(String, String, i64)> = delivery::Entity::find()
            .select_only()
            .column(delivery::Column::WebhookId)
            .column(delivery::Column::Status)
            .column_as(delivery::Column::Id.count(), "count")
            .filter(delivery::Column::AccountId.eq(scope.account().as_str()))
            .filter(delivery::Column::CreatedAt.gte(since))
            .group_by(delivery::Column::WebhookId)
            .group_by(delivery::Column::Status)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut stats: HashMap<WebhookId, DeliveryStats> = HashMap::new();
        for (webhook, status, count) in rows {
            let webhook = WebhookId::parse(&webhook).context("stored webhook id is invalid")?;
            let entry = stats.entry(webhook).or_default();
            let count = u64::try_from(count).unwrap_or(0);
            match DeliveryState::parse(&status)? {
                DeliveryState::Pending => entry.pending += count,
                DeliveryState::Delivered => entry.delivered += count,
                DeliveryState::Failed => entry.failed += count,
                DeliveryState::Exhausted => entry.exhausted += count,
            }
        }
        Ok(stats)
    }

    /// A webhook's attempts in [from, to): (delivered, failed). The caller
    /// has checked that the webhook is in its scope.
    pub async fn attempt_counts(
        &self,
        webhook: &WebhookId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<(u64, u64)> {
        let rows: Vec<(String, i64)> = attempt::Entity::find()
            .select_only()
            .column(attempt::Column::Status)
            .column_as(attempt::Column::Attempt.count(), "count")
            .filter(attempt::Column::WebhookId.eq(webhook.as_str()))
            .filter(attempt::Column::AttemptedAt.gte(from))
            .filter(attempt::Column::AttemptedAt.lt(to))
            .group_by(attempt::Column::Status)
            .into_tuple()
            .all(&self.db)
            .await?;
        let (mut delivered, mut failed) = (0, 0);
        for (status, count) in rows {
            let count = u64::try_from(count).unwrap_or(0);
            if status == DeliveryState::Delivered.as_str() {
                delivered += count;
            } else {
                failed += count;
            }
        }
        Ok((delivered, failed))
    }

    /// Disables webhook `id` of `account` within `conn`'s transaction; false when it is
    /// missing or already disabled.
    async fn disable_webhook_in(
        &self,
        conn: &impl ConnectionTrait,
        account: &AccountId,
        id: &WebhookId,
        reason: &str,
    ) -> StoreResult<bool> {
        let Some(row) = webhook::Entity::find_by_id(id.as_str())
            .filter(webhook::Column::AccountId.eq(account.as_str()))
            .lock_exclusive()
            .one(conn)
            .await?
        else {
            return Ok(false);
        };
        if !row.enabled {
            return Ok(false);
        }
        let mut active: webhook::ActiveModel = row.clone().into();
        active.enabled = Set(false);
        active.disabled_reason = Set(Some(reason.to_owned()));
        self.bump(conn, &row, active).await?;
        Ok(true)
    }
}
