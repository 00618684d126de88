//! The registry's side of delivery: ingesting the workers' outcomes into
//! the log, and handing tasks to the workers for test events, redeliveries
//! and replays.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use futures::StreamExt as _;
use herald_bus::names::OUTCOME_BATCH_SUBJECT;
use herald_core::{AccountId, DeliveryId, Event, EventData, EventId, EventType, WebhookId};
use herald_proto::deliveries::v1::{DeliveryOutcome, DeliveryStatus, DeliveryTask, Trigger};
use sea_orm::{DbErr, RuntimeErr};
use tokio_util::sync::CancellationToken;

use crate::live::LogNotices;
use crate::principal::Principal;
use crate::projection::Projector;
use crate::store::{DeliveryState, OutcomeRecord, Store, StoreError};

/// Outcome messages fetched at once; each holds one outcome or a worker's
/// batch of them.
const INGEST_BATCH: usize = 256;
/// Outcomes written per database transaction.
const RECORDS_PER_TRANSACTION: usize = 1024;

/// A worker's batch read as `DeliveryOutcomes` on the wire, each outcome left
/// as its bytes: one that does not decode is set aside alone.
#[derive(Clone, PartialEq, prost::Message)]
struct RawOutcomes {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    outcomes: Vec<bytes::Bytes>,
}

/// Converts a worker's outcome into a log record; an error says why it is
/// not usable.
pub fn outcome_record(outcome: &DeliveryOutcome) -> anyhow::Result<OutcomeRecord> {
    let event = outcome
        .event
        .as_ref()
        .context("outcome without its event")?;
    let state = match DeliveryStatus::try_from(outcome.status) {
        Ok(DeliveryStatus::Delivered) => DeliveryState::Delivered,
        Ok(DeliveryStatus::Failed) => DeliveryState::Failed,
        Ok(DeliveryStatus::Exhausted) => DeliveryState::Exhausted,
        _ => anyhow::bail!("outcome with unknown status {}", outcome.status),
    };
    // Only an event too large to deliver comes without its data (every other carries at
    // least `{}`): its delivery is logged, and marked so that it is never sent again empty.
    let payload_omitted = event.data.is_empty();
    let payload = if payload_omitted {
        "{}".to_owned()
    } else {
        String::from_utf8(event.data.clone()).context("event data is not UTF-8")?
    };
    Ok(OutcomeRecord {
        delivery_id: DeliveryId::parse(&outcome.delivery_id).context("bad delivery id")?,
        webhook_id: WebhookId::parse(&outcome.webhook_id).context("bad webhook id")?,
        account: AccountId::parse(&event.account_id).context("bad account id")?,
        event_id: event.id.clone(),
        event_type: event.r#type.clone(),
        event_timestamp: event
            .occurred_at
            .as_ref()
            .and_then(herald_proto::datetime)
            .unwrap_or_else(chrono::Utc::now),
        payload,
        payload_omitted,
        attempt: outcome.attempt,
        state,
        trigger: trigger_name(outcome.trigger).to_owned(),
        http_status: u16::try_from(outcome.http_status).unwrap_or(0),
        latency_ms: outcome.latency_ms,
        error: without_nul(&outcome.error),
        response_body: without_nul(&outcome.response_body),
        attempted_at: outcome
            .attempted_at
            .as_ref()
            .and_then(herald_proto::datetime)
            .unwrap_or_else(chrono::Utc::now),
        next_attempt_at: outcome
            .next_attempt_at
            .as_ref()
            .and_then(herald_proto::datetime),
        request_headers: outcome
            .request_headers
            .iter()
            .map(|(name, value)| (without_nul(name), without_nul(value)))
            .collect(),
        disable_webhook: outcome.disable_webhook,
    })
}

/// PostgreSQL's text refuses NUL, and an endpoint may answer with one.
fn without_nul(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

pub fn trigger_name(trigger: i32) -> &'static str {
    match Trigger::try_from(trigger) {
        Ok(Trigger::Event) => "event",
        Ok(Trigger::Redelivery) => "redelivery",
        Ok(Trigger::Replay) => "replay",
        Ok(Trigger::Test) => "test",
        _ => "unknown",
    }
}

/// Consumes HERALD_OUTCOMES into the delivery log until cancelled. A batch
/// is acked only once written; when the database is down the batch is NAKed
/// and comes back, so the log catches up when it returns.
pub async fn run_ingest(
    js: jetstream::Context,
    store: Store,
    projector: Projector,
    notices: LogNotices,
    metrics: std::sync::Arc<crate::metrics::RegistryMetrics>,
    shutdown: CancellationToken,
) {
    loop {
        let consumer = tokio::select! {
            () = shutdown.cancelled() => return,
            consumer = herald_bus::Topology::outcomes_consumer(&js) => consumer,
        };
        let consumer = match consumer {
            Ok(consumer) => consumer,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "outcome consumer unavailable; retrying"
                );
                if pause(&shutdown, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        if let Err(error) = ingest_from(
            &js, &consumer, &store, &projector, &notices, &metrics, &shutdown,
        )
        .await
        {
            tracing::warn!(
                error = format!("{error:#}"),
                "outcome ingest interrupted; resuming"
            );
            if pause(&shutdown, Duration::from_secs(1)).await {
                return;
            }
        } else {
            return;
        }
    }
}

/// Sleeps unless cancelled first; true when cancelled.
async fn pause(shutdown: &CancellationToken, duration: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(duration) => false,
    }
}

async fn ingest_from(
    js: &jetstream::Context,
    consumer: &jetstream::consumer::PullConsumer,
    store: &Store,
    projector: &Projector,
    notices: &LogNotices,
    metrics: &crate::metrics::RegistryMetrics,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let batch = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            batch = consumer
                .fetch()
                .max_messages(INGEST_BATCH)
                .expires(Duration::from_secs(1))
                .messages() => batch.context("cannot fetch outcomes")?,
        };
        let collect = batch
            .filter_map(|m| async move {
                m.map_err(|e| tracing::warn!(error = %e, "outcome message error"))
                    .ok()
            })
            .collect::<Vec<jetstream::Message>>();
        // A batch can stall while NATS is away; shutdown must not wait on it
        // (unacked messages are simply redelivered).
        let messages = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            messages = collect => messages,
        };
        if messages.is_empty() {
            continue;
        }
        if let Some(outcomes) = record_batch(js, store, projector, notices, &messages).await {
            metrics.ingested(&stream_lags(&messages, &outcomes));
            for message in &messages {
                if let Err(error) = message.ack().await {
                    tracing::warn!(%error, "cannot ack an outcome; it will be redelivered");
                }
            }
        } else {
            for message in &messages {
                let nak = jetstream::AckKind::Nak(Some(Duration::from_secs(1)));
                if let Err(error) = message.ack_with(nak).await {
                    tracing::warn!(%error, "cannot NAK an outcome; it will be redelivered");
                }
            }
        }
    }
}

/// How long each outcome waited in its stream before it was written; a
/// message holds `outcomes[i]` of them.
fn stream_lags(messages: &[jetstream::Message], outcomes: &[usize]) -> Vec<Duration> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    messages
        .iter()
        .zip(outcomes)
        .filter_map(|(message, &outcomes)| Some((message.info().ok()?, outcomes)))
        .flat_map(|(info, outcomes)| {
            let stored = u64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(0);
            std::iter::repeat_n(now.saturating_sub(Duration::from_nanos(stored)), outcomes)
        })
        .collect()
}

/// Records one batch of outcome messages and says how many outcomes each
/// held; `None` when the database is away and the whole batch must come back
/// later.
async fn record_batch(
    js: &jetstream::Context,
    store: &Store,
    projector: &Projector,
    notices: &LogNotices,
    messages: &[jetstream::Message],
) -> Option<Vec<usize>> {
    let mut records = Vec::with_capacity(messages.len());
    let mut sources = Vec::with_capacity(messages.len());
    let mut counts = Vec::with_capacity(messages.len());
    for message in messages {
        // A malformed outcome will never become well-formed; holding it
        // would block the log, so it is set aside with its reason. In a
        // batch, only that outcome is.
        let outcomes = match decode_outcomes(message) {
            Ok(outcomes) => outcomes,
            Err(error) => {
                counts.push(1);
                dead_letter(js, &Source::whole(message), &format!("{error:#}")).await;
                continue;
            }
        };
        counts.push(outcomes.len());
        for (index, (raw, outcome)) in outcomes.into_iter().enumerate() {
            let source = match raw {
                Some(raw) => Source::one_of(message, index, raw),
                None => Source::whole(message),
            };
            match outcome.and_then(|o| outcome_record(&o)) {
                Ok(record) => {
                    records.push(record);
                    sources.push(source);
                }
                Err(error) => dead_letter(js, &source, &format!("{error:#}")).await,
            }
        }
    }
    // A worker's batches can make a fetch thousands of outcomes: they are
    // written some at a time, and the messages acked once all are.
    let mut disabled = Vec::new();
    for start in (0..records.len()).step_by(RECORDS_PER_TRANSACTION) {
        let end = (start + RECORDS_PER_TRANSACTION).min(records.len());
        disabled.extend(record_chunk(js, store, &records[start..end], &sources[start..end]).await?);
    }
    notices
        .announce_all(
            records
                .iter()
                .map(|r| (&r.account, &r.webhook_id, &r.delivery_id)),
        )
        .await;
    // Disabled with their outcomes; the bucket follows (the reconciler heals a projection
    // that fails here).
    for (account, webhook) in disabled {
        tracing::info!(%webhook, "webhook disabled: its endpoint answered 410 Gone");
        match store.authorize(&Principal::Admin, &account).await {
            Ok(scope) => projector.project(store, &scope, &webhook).await,
            Err(error) => tracing::warn!(
                %webhook,
                error = format!("{:#}", anyhow::Error::from(error)),
                "cannot project a webhook disabled after 410 Gone; the reconciler will"
            ),
        }
    }
    Some(counts)
}

/// Writes `records` in one transaction and says which webhooks it disabled (their endpoints
/// answered 410 Gone); `None` when the database is away and they must come back later.
async fn record_chunk(
    js: &jetstream::Context,
    store: &Store,
    records: &[OutcomeRecord],
    sources: &[Source<'_>],
) -> Option<Vec<(AccountId, WebhookId)>> {
    match store.ingest_outcomes(records).await {
        Ok(report) => {
            tracing::debug!(
                recorded = report.recorded,
                duplicates = report.duplicates,
                "outcomes recorded"
            );
            Some(report.disabled)
        }
        Err(error) => {
            let error = anyhow::Error::from(error);
            if store.ping().await.is_err() {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot record outcomes; they will be redelivered"
                );
                return None;
            }
            // The database answers, so one outcome may have spoilt the batch:
            // record the rest one by one and set aside only an outcome the
            // database refuses for what it is. A temporary error (a lock, a
            // lost connection) says nothing about the outcome: the batch
            // comes back, and what was recorded meanwhile is a duplicate then.
            let mut disabled = Vec::new();
            for (index, record) in records.iter().enumerate() {
                match store.ingest_outcomes(std::slice::from_ref(record)).await {
                    Ok(report) => disabled.extend(report.disabled),
                    Err(error) if is_temporary(&error) => {
                        tracing::warn!(
                            error = format!("{:#}", anyhow::Error::from(error)),
                            "cannot record outcomes for now; they will be redelivered"
                        );
                        return None;
                    }
                    Err(error) => {
                        let reason = format!("{:#}", anyhow::Error::from(error));
                        dead_letter(js, &sources[index], &reason).await;
                    }
                }
            }
            Some(disabled)
        }
    }
}

/// Whether a database error is about the moment rather than the data: the
/// database busy or locked (SQLite), a serialization failure, deadlock or
/// lock timeout, a connection lost or a pool exhausted. Such an error must
/// never get a good outcome dead-lettered.
pub fn is_temporary(error: &StoreError) -> bool {
    use sea_orm::sqlx;
    let StoreError::Other(error) = error else {
        return false;
    };
    let Some(db) = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<DbErr>())
    else {
        return false;
    };
    let runtime = match db {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => return true,
        DbErr::Exec(runtime) | DbErr::Query(runtime) => runtime,
        _ => return false,
    };
    let RuntimeErr::SqlxError(sqlx_error) = runtime else {
        return false;
    };
    match sqlx_error.as_ref() {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            // SQLite: BUSY, LOCKED and their extended codes. PostgreSQL:
            // connection exceptions (08…), serialization failure, deadlock,
            // lock not available, too many connections, shutting down.
            matches!(
                code.as_ref(),
                "5" | "6"
                    | "261"
                    | "262"
                    | "517"
                    | "40001"
                    | "40P01"
                    | "55P03"
                    | "53300"
                    | "57P01"
                    | "57P02"
                    | "57P03"
            ) || code.starts_with("08")
        }),
        _ => false,
    }
}

/// A message's outcomes: one, or a worker's batch (`DeliveryOutcomes` on
/// [`OUTCOME_BATCH_SUBJECT`]), each with its own bytes when it came in a
/// batch, and decoded or not.
type Decoded = Vec<(Option<bytes::Bytes>, anyhow::Result<DeliveryOutcome>)>;

fn decode_outcomes(message: &jetstream::Message) -> anyhow::Result<Decoded> {
    if message.subject.as_str() == OUTCOME_BATCH_SUBJECT {
        let batch = <RawOutcomes as prost::Message>::decode(message.payload.clone())
            .context("undecodable batch of outcomes")?;
        Ok(batch
            .outcomes
            .into_iter()
            .map(|raw| {
                let outcome = herald_proto::decode::<DeliveryOutcome>(raw.as_ref())
                    .context("undecodable outcome");
                (Some(raw), outcome)
            })
            .collect())
    } else {
        let outcome = herald_proto::decode::<DeliveryOutcome>(message.payload.as_ref())
            .context("undecodable outcome")?;
        Ok(vec![(None, Ok(outcome))])
    }
}

/// What a record was read from, as it is set aside if it is unusable: its
/// message, or for one outcome of a batch, that outcome's bytes alone.
struct Source<'a> {
    message: &'a jetstream::Message,
    batched: Option<(usize, bytes::Bytes)>,
}

impl<'a> Source<'a> {
    fn whole(message: &'a jetstream::Message) -> Self {
        Source {
            message,
            batched: None,
        }
    }

    fn one_of(message: &'a jetstream::Message, index: usize, raw: bytes::Bytes) -> Self {
        Source {
            message,
            batched: Some((index, raw)),
        }
    }
}

async fn dead_letter(js: &jetstream::Context, source: &Source<'_>, reason: &str) {
    use herald_bus::headers::name;
    use herald_bus::names::header;
    let message = source.message;
    tracing::error!(reason, subject = %message.subject, "setting an unusable outcome aside in HERALD_DEAD");
    let (headers, payload) = match &source.batched {
        // One outcome of a batch: its own id (the batch's, or the batch's
        // place in its stream, and its index) so that another bad outcome of
        // the same batch is not taken for a duplicate of it.
        Some((index, raw)) => {
            let mut headers = message.headers.clone().unwrap_or_default();
            let batch = headers
                .get(name(header::MSG_ID))
                .map(|id| id.as_str().to_owned())
                .or_else(|| {
                    let info = message.info().ok()?;
                    Some(format!("{}:{}", info.stream, info.stream_sequence))
                })
                .unwrap_or_default();
            headers.insert(name(header::MSG_ID), format!("{batch}/{index}").as_str());
            headers.insert(name(header::DEAD_BATCH_INDEX), index.to_string().as_str());
            (Some(headers), raw.clone())
        }
        None => (message.headers.clone(), message.payload.clone()),
    };
    let stored = herald_bus::dead_letter(
        js,
        herald_bus::DeadSource::Outcomes,
        reason,
        message.subject.as_str(),
        headers.as_ref(),
        payload,
    )
    .await;
    if let Err(error) = stored {
        tracing::error!(%error, "cannot dead-letter an outcome; dropping it");
    }
}

/// Builds the task that sends `event` to `webhook` once more.
pub fn task(
    delivery: &DeliveryId,
    webhook: &WebhookId,
    event: &Event,
    attempt: u32,
    trigger: Trigger,
) -> DeliveryTask {
    DeliveryTask {
        delivery_id: delivery.to_string(),
        webhook_id: webhook.to_string(),
        event: Some(herald_proto::encode_event(event)),
        attempt,
        not_before: None,
        trigger: trigger.into(),
    }
}

/// Hands a task to the workers. Its message id (the delivery id and the
/// attempt) makes a retried hand-off harmless.
pub async fn hand_over(js: &jetstream::Context, task: &DeliveryTask) -> anyhow::Result<()> {
    use herald_bus::names::{DELIVERIES_STREAM, delivery_msg_id, delivery_subject};
    let webhook = WebhookId::parse(&task.webhook_id).context("task for a bad webhook id")?;
    let message = herald_bus::Outgoing::protobuf(
        delivery_subject(&webhook),
        &delivery_msg_id(&task.delivery_id, task.attempt),
        herald_proto::encode(task).into(),
    )
    .in_stream(DELIVERIES_STREAM);
    herald_bus::publish(js, &message, herald_bus::Persistence::BRIEF)
        .await
        .context("the workers' stream did not store the task")?;
    Ok(())
}

/// The event of a logged delivery, rebuilt for a redelivery.
pub fn event_of(delivery: &crate::store::Delivery) -> anyhow::Result<Event> {
    Ok(Event {
        id: EventId::parse(&delivery.event_id).context("stored event id is invalid")?,
        event_type: EventType::parse(&delivery.event_type)
            .context("stored event type is invalid")?,
        account: delivery.account.clone(),
        timestamp: delivery.event_timestamp,
        data: EventData::parse(&delivery.payload).context("stored payload is invalid")?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use sea_orm::{ConnectionTrait as _, Database, TransactionTrait as _};

    use super::*;

    #[tokio::test]
    async fn a_locked_database_is_temporary_and_a_bad_value_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let holder = Database::connect(&url).await.unwrap();
        holder
            .execute_unprepared("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .await
            .unwrap();
        let other = Database::connect(&url).await.unwrap();
        // Another writer holds the database: a write waits for its busy timeout, then fails.
        let txn = holder.begin().await.unwrap();
        txn.execute_unprepared("INSERT INTO t (id) VALUES (1)")
            .await
            .unwrap();
        let locked = other
            .execute_unprepared("INSERT INTO t (id) VALUES (2)")
            .await
            .unwrap_err();
        assert!(is_temporary(&StoreError::from(locked)));
        txn.commit().await.unwrap();

        let gone = DbErr::Conn(RuntimeErr::Internal("connection reset".into()));
        assert!(is_temporary(&StoreError::from(gone)));

        let bad = other
            .execute_unprepared("INSERT INTO t (id) VALUES ('not a number')")
            .await
            .unwrap_err();
        assert!(!is_temporary(&StoreError::from(bad)));
        assert!(!is_temporary(&StoreError::NotFound("delivery")));
    }
}
