//! Stores attempts' outcomes in HERALD_OUTCOMES, batching those that settle together.
//!
//! A publisher task takes the outcomes queued while earlier publishes were in flight (at most
//! [`IN_FLIGHT`] at once) and stores them with one publish: alone, an outcome goes out as a
//! `DeliveryOutcome` on its webhook's subject, de-duplicated by its own id, as before; several
//! go out as one `DeliveryOutcomes` on [`OUTCOME_BATCH_SUBJECT`], de-duplicated by a digest of
//! their ids (a re-publish of the same batch is dropped; a task redelivered after a crash
//! settles in another batch, and the registry's log keeps one row per attempt whatever arrives
//! twice). So a quiet worker adds no wait, and a busy one stores many outcomes per JetStream
//! round trip instead of one each. Every caller learns whether its outcome was stored before it
//! acks its task, within the patience it would have had publishing alone.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_bus::names::{OUTCOME_BATCH_SUBJECT, outcome_subject};
use herald_bus::{Outgoing, Persistence, PublishError};
use herald_core::WebhookId;
use sha2::Digest as _;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Most outcomes in one message.
const MAX_BATCH: usize = 256;
/// Most encoded bytes in one message, and at most half of what the server accepts (1 MiB by
/// default; an outcome carries its event). A larger outcome goes out alone.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Publishes waiting for their acknowledgement at once: outcomes settling meanwhile queue up
/// into the next batch, and one slow acknowledgement does not hold up every other outcome.
const IN_FLIGHT: usize = 2;
/// The least patience a publish gets, however long its outcomes waited in the queue.
const MIN_PATIENCE: Duration = Duration::from_secs(1);

/// One outcome waiting to be stored, and who waits for it.
struct Pending {
    /// The encoded `DeliveryOutcome`, made by the handler that settles its attempt.
    outcome: Bytes,
    webhook: WebhookId,
    id: String,
    queued: Instant,
    stored: oneshot::Sender<Result<(), PublishError>>,
}

impl Pending {
    /// The outcome alone, as it went out before batches.
    fn message(&self) -> Outgoing {
        Outgoing::protobuf(
            outcome_subject(&self.webhook),
            &self.id,
            self.outcome.clone(),
        )
    }

    /// The outcome's length as an entry of a `DeliveryOutcomes` message.
    fn entry_len(&self) -> usize {
        herald_proto::outcomes_entry_len(self.outcome.len())
    }
}

/// Hands outcomes to the publisher task; cheap to share. The task ends when every handle is
/// gone.
#[derive(Debug, Clone)]
pub struct Outcomes {
    queue: mpsc::UnboundedSender<Pending>,
    js: async_nats::jetstream::Context,
    patience: Duration,
}

impl Outcomes {
    /// Starts the publisher task; an outcome is stored within `patience` of its `store` or
    /// reported as not stored.
    pub fn start(
        js: async_nats::jetstream::Context,
        patience: Duration,
        metrics: Arc<Metrics>,
    ) -> Outcomes {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(publish_queued(js.clone(), pending, patience, metrics));
        Outcomes {
            queue,
            js,
            patience,
        }
    }

    /// Stores `outcome`, an encoded `DeliveryOutcome` (of `webhook`, de-duplicated by `id`);
    /// returns once it is stored or cannot be.
    pub async fn store(
        &self,
        outcome: Bytes,
        webhook: &WebhookId,
        id: String,
    ) -> Result<(), PublishError> {
        let (stored, answer) = oneshot::channel();
        let pending = Pending {
            outcome,
            webhook: webhook.clone(),
            id,
            queued: Instant::now(),
            stored,
        };
        if let Err(mpsc::error::SendError(pending)) = self.queue.send(pending) {
            // The publisher task is gone (it cannot end while this handle lives, short of a
            // bug): the outcome goes out alone, as it did before batches.
            let persistence = Persistence::patient(self.patience);
            return herald_bus::publish(&self.js, &pending.message(), persistence)
                .await
                .map(drop);
        }
        answer.await.map_err(|_| PublishError::NotAcknowledged {
            subject: OUTCOME_BATCH_SUBJECT.to_owned(),
            source: "the worker's outcome publisher stopped before answering".into(),
        })?
    }
}

async fn publish_queued(
    js: async_nats::jetstream::Context,
    mut queue: mpsc::UnboundedReceiver<Pending>,
    patience: Duration,
    metrics: Arc<Metrics>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let max_bytes = MAX_BATCH_BYTES.min(js.client().server_info().max_payload / 2);
    let mut next: Option<Pending> = None;
    loop {
        // A slot first: while both are taken, outcomes gather in the queue.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match next.take() {
            Some(first) => first,
            None => match queue.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        // The oldest outcome's remaining patience bounds the publish.
        let waited = first.queued.elapsed();
        let mut size = first.entry_len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let Ok(more) = queue.try_recv() else { break };
            size += more.entry_len();
            if size > max_bytes {
                next = Some(more);
                break;
            }
            batch.push(more);
        }
        let persistence = Persistence::patient(patience.saturating_sub(waited).max(MIN_PATIENCE));
        let js = js.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            publish_batch(&js, batch, persistence, &metrics).await;
            drop(slot);
        });
    }
}

/// Stores `batch` and tells each waiter how it went.
async fn publish_batch(
    js: &async_nats::jetstream::Context,
    mut batch: Vec<Pending>,
    persistence: Persistence,
    metrics: &Metrics,
) {
    if batch.len() == 1
        && let Some(one) = batch.pop()
    {
        let result = herald_bus::publish(js, &one.message(), persistence).await;
        if result.is_ok() {
            metrics.outcomes_published(1);
        }
        let _ = one.stored.send(result.map(drop));
        return;
    }
    let message = batch_message(&batch);
    match herald_bus::publish(js, &message, persistence).await {
        Ok(_) => {
            metrics.outcomes_published(batch.len());
            for pending in batch {
                let _ = pending.stored.send(Ok(()));
            }
        }
        // A server that accepts smaller messages than this batch: each goes out alone.
        Err(PublishError::TooLarge { .. }) => {
            let alone = batch
                .into_iter()
                .map(|pending| Box::pin(publish_batch(js, vec![pending], persistence, metrics)));
            futures::future::join_all(alone).await;
        }
        Err(error) => {
            let reason = error.to_string();
            for pending in batch {
                let _ = pending.stored.send(Err(PublishError::NotAcknowledged {
                    subject: OUTCOME_BATCH_SUBJECT.to_owned(),
                    source: reason.clone().into(),
                }));
            }
        }
    }
}

/// `batch` as one `DeliveryOutcomes` message, its id a digest of the outcomes' ids.
fn batch_message(batch: &[Pending]) -> Outgoing {
    let mut digest = sha2::Sha256::new();
    for pending in batch {
        digest.update(pending.id.as_bytes());
        digest.update(b"\n");
    }
    let id = format!("outcomes:{}", hex::encode(digest.finalize()));
    let payload = herald_proto::encode_outcomes(batch.iter().map(|p| &p.outcome[..]));
    Outgoing::protobuf(OUTCOME_BATCH_SUBJECT, &id, Bytes::from(payload))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use herald_proto::deliveries::v1::{DeliveryOutcome, DeliveryOutcomes};

    use super::*;

    fn pending(delivery: &str) -> Pending {
        Pending {
            outcome: Bytes::from(herald_proto::encode(&DeliveryOutcome {
                delivery_id: delivery.to_owned(),
                webhook_id: "wh_1".to_owned(),
                attempt: 1,
                ..DeliveryOutcome::default()
            })),
            webhook: WebhookId::new(),
            id: format!("{delivery}:1"),
            queued: Instant::now(),
            stored: oneshot::channel().0,
        }
    }

    /// On one thread, every `store` below queues its outcome before the publisher task runs:
    /// the five that settle together go out as one message, the one after alone.
    #[tokio::test]
    async fn outcomes_that_settle_together_are_stored_with_one_publish() {
        use herald_bus::{ProvisionOptions, Topology};

        let nats = herald_testkit::NatsServer::start().unwrap();
        let js = nats.jetstream().await.unwrap();
        Topology::provision(&js, &ProvisionOptions::development())
            .await
            .unwrap();
        let metrics = Arc::new(Metrics::new());
        let outcomes = Outcomes::start(js.clone(), Duration::from_secs(5), metrics.clone());
        let webhook = WebhookId::new();
        let together = (0..5).map(|n| {
            let p = pending(&format!("dl_{n}"));
            outcomes.store(p.outcome, &webhook, p.id)
        });
        for stored in futures::future::join_all(together).await {
            stored.unwrap();
        }
        let alone = pending("dl_alone");
        outcomes
            .store(alone.outcome, &webhook, alone.id)
            .await
            .unwrap();

        let consumer = Topology::outcomes_consumer(&js).await.unwrap();
        let messages = herald_testkit::fetch_ready(&consumer, 10).await.unwrap();
        let subjects: Vec<&str> = messages.iter().map(|m| m.subject.as_str()).collect();
        let webhook_subject = outcome_subject(&webhook);
        assert_eq!(subjects, [OUTCOME_BATCH_SUBJECT, webhook_subject.as_str()]);
        let batch = herald_proto::decode::<DeliveryOutcomes>(&messages[0].payload).unwrap();
        let ids: Vec<&str> = batch
            .outcomes
            .iter()
            .map(|o| o.delivery_id.as_str())
            .collect();
        assert_eq!(ids, ["dl_0", "dl_1", "dl_2", "dl_3", "dl_4"]);
        let single = herald_proto::decode::<DeliveryOutcome>(&messages[1].payload).unwrap();
        assert_eq!(single.delivery_id, "dl_alone");
        let exposed = metrics.encode();
        for line in [
            "herald_worker_outcomes_per_publish_sum 6.0",
            "herald_worker_outcomes_per_publish_count 2",
        ] {
            assert!(exposed.contains(line), "{line} in {exposed}");
        }
    }

    #[test]
    fn a_batch_is_one_delivery_outcomes_message_named_by_its_outcomes() {
        let batch = vec![pending("dl_a"), pending("dl_b")];
        let message = batch_message(&batch);
        assert_eq!(message.subject(), OUTCOME_BATCH_SUBJECT);
        let decoded = herald_proto::decode::<DeliveryOutcomes>(message.payload()).unwrap();
        let ids: Vec<&str> = decoded
            .outcomes
            .iter()
            .map(|o| o.delivery_id.as_str())
            .collect();
        assert_eq!(ids, ["dl_a", "dl_b"]);

        let again = batch_message(&[pending("dl_a"), pending("dl_b")]);
        let other = batch_message(&[pending("dl_a"), pending("dl_c")]);
        let id = |m: &Outgoing| {
            m.header(herald_bus::names::header::MSG_ID)
                .unwrap()
                .to_owned()
        };
        assert_eq!(id(&message), id(&again), "the same batch keeps its id");
        assert_ne!(
            id(&message),
            id(&other),
            "a batch sharing its first outcome with another is not taken for it"
        );
    }
}
