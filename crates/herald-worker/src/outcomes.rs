//! Stores attempts' outcomes in HERALD_OUTCOMES, batching those that settle together.
//!
//! One publisher task takes the outcomes queued while its previous publish was in flight and
//! stores them with one publish: alone, an outcome goes out as a `DeliveryOutcome` on its
//! webhook's subject, de-duplicated by its own id, as before; several go out as one
//! `DeliveryOutcomes` on [`OUTCOME_BATCH_SUBJECT`], de-duplicated by a digest of their ids (a
//! re-publish of the same batch is dropped; a task redelivered after a crash settles in another
//! batch, and the registry's log keeps one row per attempt whatever arrives twice). So a quiet
//! worker adds no wait, and a busy one stores many outcomes per JetStream round trip instead of
//! one each. Every caller learns whether its outcome was stored before it acks its task.

use std::sync::Arc;

use bytes::Bytes;
use herald_bus::names::{OUTCOME_BATCH_SUBJECT, outcome_subject};
use herald_bus::{Outgoing, Persistence, PublishError};
use herald_core::WebhookId;
use herald_proto::deliveries::v1::DeliveryOutcome;
use prost::Message as _;
use sha2::Digest as _;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// Most outcomes in one message.
const MAX_BATCH: usize = 256;
/// Most encoded bytes in one message: well under the 1 MiB NATS accepts by default (an outcome
/// carries its event). A larger outcome goes out alone.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// One outcome waiting to be stored, and who waits for it.
struct Pending {
    outcome: DeliveryOutcome,
    webhook: WebhookId,
    id: String,
    stored: oneshot::Sender<Result<(), PublishError>>,
}

/// Hands outcomes to the publisher task; cheap to share. The task ends when every handle is
/// gone.
#[derive(Debug, Clone)]
pub struct Outcomes {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Outcomes {
    /// Starts the publisher task; each publish keeps trying as `persistence` says.
    pub fn start(
        js: async_nats::jetstream::Context,
        persistence: Persistence,
        metrics: Arc<Metrics>,
    ) -> Outcomes {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(publish_queued(js, pending, persistence, metrics));
        Outcomes { queue }
    }

    /// Stores `outcome` (of `webhook`, de-duplicated by `id`); returns once it is stored or
    /// cannot be.
    pub async fn store(
        &self,
        outcome: DeliveryOutcome,
        webhook: &WebhookId,
        id: String,
    ) -> Result<(), PublishError> {
        let (stored, answer) = oneshot::channel();
        let pending = Pending {
            outcome,
            webhook: webhook.clone(),
            id,
            stored,
        };
        let gone = || PublishError::NotAcknowledged {
            subject: OUTCOME_BATCH_SUBJECT.to_owned(),
            source: "the worker's outcome publisher has stopped".into(),
        };
        self.queue.send(pending).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn publish_queued(
    js: async_nats::jetstream::Context,
    mut queue: mpsc::UnboundedReceiver<Pending>,
    persistence: Persistence,
    metrics: Arc<Metrics>,
) {
    let mut next: Option<Pending> = None;
    loop {
        let first = match next.take() {
            Some(first) => first,
            None => match queue.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut size = first.outcome.encoded_len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let Ok(more) = queue.try_recv() else { break };
            size += more.outcome.encoded_len();
            if size > MAX_BATCH_BYTES {
                next = Some(more);
                break;
            }
            batch.push(more);
        }
        metrics.outcomes_published(batch.len());
        publish_batch(&js, batch, persistence).await;
    }
}

/// Stores `batch` and tells each waiter how it went.
async fn publish_batch(
    js: &async_nats::jetstream::Context,
    mut batch: Vec<Pending>,
    persistence: Persistence,
) {
    if batch.len() == 1
        && let Some(one) = batch.pop()
    {
        let message = Outgoing::protobuf(
            outcome_subject(&one.webhook),
            &one.id,
            Bytes::from(herald_proto::encode(&one.outcome)),
        );
        let result = herald_bus::publish(js, &message, persistence).await;
        let _ = one.stored.send(result.map(drop));
        return;
    }
    let message = batch_message(&batch);
    match herald_bus::publish(js, &message, persistence).await {
        Ok(_) => {
            for pending in batch {
                let _ = pending.stored.send(Ok(()));
            }
        }
        // A server that accepts smaller messages than this batch: each goes out alone.
        Err(PublishError::TooLarge { .. }) => {
            for pending in batch {
                Box::pin(publish_batch(js, vec![pending], persistence)).await;
            }
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
    // `DeliveryOutcomes { outcomes }` field by field, without copying the outcomes into one.
    let size: usize = batch
        .iter()
        .map(|p| prost::encoding::message::encoded_len(1, &p.outcome))
        .sum();
    let mut payload = Vec::with_capacity(size);
    for pending in batch {
        prost::encoding::message::encode(1, &pending.outcome, &mut payload);
    }
    Outgoing::protobuf(OUTCOME_BATCH_SUBJECT, &id, Bytes::from(payload))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use herald_proto::deliveries::v1::DeliveryOutcomes;

    use super::*;

    fn pending(delivery: &str) -> Pending {
        Pending {
            outcome: DeliveryOutcome {
                delivery_id: delivery.to_owned(),
                webhook_id: "wh_1".to_owned(),
                attempt: 1,
                ..DeliveryOutcome::default()
            },
            webhook: WebhookId::new(),
            id: format!("{delivery}:1"),
            stored: oneshot::channel().0,
        }
    }

    /// On one thread, every `store` below queues its outcome before the publisher task runs:
    /// the five that settle together go out as one message, the one after alone.
    #[tokio::test]
    async fn outcomes_that_settle_together_are_stored_with_one_publish() {
        use futures::StreamExt as _;
        use herald_bus::{ProvisionOptions, Topology};

        let nats = herald_testkit::NatsServer::start().unwrap();
        let js = nats.jetstream().await.unwrap();
        Topology::provision(&js, &ProvisionOptions::development())
            .await
            .unwrap();
        let metrics = Arc::new(Metrics::new());
        let outcomes = Outcomes::start(js.clone(), Persistence::BRIEF, metrics.clone());
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
        let messages: Vec<_> = consumer
            .fetch()
            .max_messages(10)
            .messages()
            .await
            .unwrap()
            .map(Result::unwrap)
            .collect()
            .await;
        let subjects: Vec<&str> = messages.iter().map(|m| m.subject.as_str()).collect();
        let webhook_subject = outcome_subject(&webhook);
        assert_eq!(subjects, [OUTCOME_BATCH_SUBJECT, webhook_subject.as_str()]);
        let batch = DeliveryOutcomes::decode(messages[0].payload.clone()).unwrap();
        let ids: Vec<&str> = batch
            .outcomes
            .iter()
            .map(|o| o.delivery_id.as_str())
            .collect();
        assert_eq!(ids, ["dl_0", "dl_1", "dl_2", "dl_3", "dl_4"]);
        let single = DeliveryOutcome::decode(messages[1].payload.clone()).unwrap();
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
        let decoded = DeliveryOutcomes::decode(message.payload().clone()).unwrap();
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
