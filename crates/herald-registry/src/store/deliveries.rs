//! The delivery log: what was sent where, every attempt and its outcome.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context as _;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use herald_core::{AccountId, DeliveryId, WebhookId};
use sea_orm::sea_query::{Expr, ExprTrait as _, OnConflict};
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
        let mut report = IngestReport::default();
        let txn = self.write().await?;
        for (index, outcome) in outcomes.iter().enumerate() {
            if self.record_outcome(&txn, outcome).await? {
                report.recorded += 1;
                report.new.push(index);
            } else {
                report.duplicates += 1;
            }
        }
        txn.commit().await?;
        Ok(report)
    }

    /// Records one outcome; false when it was already recorded. Each update
    /// is one statement guarded by the attempt number, so concurrent
    /// ingesters (several registry replicas) cannot move a delivery back.
    async fn record_outcome(
        &self,
        conn: &impl ConnectionTrait,
        outcome: &OutcomeRecord,
    ) -> StoreResult<bool> {
        self.ensure_delivery(conn, outcome).await?;
        let inserted = attempt::Entity::insert(attempt::ActiveModel {
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
        .on_conflict(
            OnConflict::columns([attempt::Column::DeliveryId, attempt::Column::Attempt])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
        if inserted == 0 {
            return Ok(false);
        }
        delivery::Entity::update_many()
            .col_expr(
                delivery::Column::Attempts,
                Expr::col(delivery::Column::Attempts).add(1),
            )
            .col_expr(delivery::Column::UpdatedAt, Expr::value(now()))
            .filter(delivery::Column::Id.eq(outcome.delivery_id.as_str()))
            .exec(conn)
            .await?;
        // Outcomes may arrive out of order; the latest attempt decides.
        delivery::Entity::update_many()
            .col_expr(
                delivery::Column::Status,
                Expr::value(outcome.state.as_str()),
            )
            .col_expr(
                delivery::Column::LastAttempt,
                Expr::value(int(outcome.attempt)),
            )
            .col_expr(
                delivery::Column::LastHttpStatus,
                Expr::value(i32::from(outcome.http_status)),
            )
            .col_expr(
                delivery::Column::LastLatencyMs,
                Expr::value(int(outcome.latency_ms)),
            )
            .col_expr(
                delivery::Column::LastError,
                Expr::value(outcome.error.clone()),
            )
            .col_expr(
                delivery::Column::NextAttemptAt,
                Expr::value(outcome.next_attempt_at),
            )
            .filter(delivery::Column::Id.eq(outcome.delivery_id.as_str()))
            .filter(delivery::Column::LastAttempt.lte(int(outcome.attempt)))
            .exec(conn)
            .await?;
        Ok(true)
    }

    /// Records one outcome in its own transaction, for when a batch failed:
    /// true when it was newly recorded.
    pub async fn ingest_one(&self, outcome: &OutcomeRecord) -> StoreResult<bool> {
        let txn = self.write().await?;
        let recorded = self.record_outcome(&txn, outcome).await?;
        txn.commit().await?;
        Ok(recorded)
    }

    async fn ensure_delivery(
        &self,
        conn: &impl ConnectionTrait,
        outcome: &OutcomeRecord,
    ) -> StoreResult<()> {
        self.insert_delivery(
            conn,
            &outcome.account,
            &PendingDelivery {
                delivery_id: outcome.delivery_id.clone(),
                webhook_id: outcome.webhook_id.clone(),
                event_id: outcome.event_id.clone(),
                event_type: outcome.event_type.clone(),
                event_timestamp: outcome.event_timestamp,
                payload: outcome.payload.clone(),
            },
        )
        .await
    }

    async fn insert_delivery(
        &self,
        conn: &impl ConnectionTrait,
        account: &AccountId,
        pending: &PendingDelivery,
    ) -> StoreResult<()> {
        let at = now();
        delivery::Entity::insert(delivery::ActiveModel {
            id: Set(pending.delivery_id.to_string()),
            account_id: Set(account.to_string()),
            webhook_id: Set(pending.webhook_id.to_string()),
            event_id: Set(pending.event_id.clone()),
            event_type: Set(pending.event_type.clone()),
            event_timestamp: Set(pending.event_timestamp),
            payload: Set(pending.payload.clone()),
            status: Set(DeliveryState::Pending.as_str().to_owned()),
            attempts: Set(0),
            last_attempt: Set(0),
            last_http_status: Set(0),
            last_latency_ms: Set(0),
            last_error: Set(String::new()),
            next_attempt_at: Set(None),
            created_at: Set(at),
            updated_at: Set(at),
        })
        .on_conflict(
            OnConflict::column(delivery::Column::Id)
                .do_nothing()
                .to_owned(),
        )
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

    /// Disables a webhook on the workers' word (its endpoint answered 410
    /// Gone). Returns false when it was already disabled or is gone.
    pub async fn disable_webhook(
        &self,
        scope: &AccountScope,
        id: &WebhookId,
        reason: &str,
    ) -> StoreResult<bool> {
        let txn = self.write().await?;
        let Some(row) = webhook::Entity::find_by_id(id.as_str())
            .filter(webhook::Column::AccountId.eq(scope.account().as_str()))
            .lock_exclusive()
            .one(&txn)
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
        self.bump(&txn, &row, active).await?;
        txn.commit().await?;
        Ok(true)
    }
}
