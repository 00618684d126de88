//! The test harness: a private nats-server, a receiver, a webhook bucket and an in-process
//! worker per test, with short timings so that retries and redeliveries happen within seconds.

use std::sync::{Mutex, Once};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::StreamMessage};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use herald_bus::names::{DEAD_STREAM, header};
use herald_bus::{Publisher, Topology, WebhookBucket};
use herald_core::{AccountId, Event, EventData, EventId, EventType, RetrySchedule, WebhookId};
use herald_proto::deliveries::v1::{DeliveryOutcome, DeliveryOutcomes, DeliveryStatus};
use herald_proto::webhooks::v1::{SigningKey, WebhookSpec};
use herald_testkit::{NatsServer, Receiver, wait_for, wait_until};
use herald_worker::{BreakerConfig, Worker, WorkerConfig};
use prost::Message as _;
use tokio_util::sync::CancellationToken;

/// A Standard Webhooks test vector's secret.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Generous for a loaded 2-core machine; conditions are usually met in milliseconds.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .init();
    });
}

pub struct Harness {
    pub nats: NatsServer,
    pub receiver: Receiver,
    pub js: jetstream::Context,
    pub bucket: WebhookBucket,
    pub account: AccountId,
    outcomes: Mutex<Vec<DeliveryOutcome>>,
}

impl Harness {
    pub async fn start() -> Harness {
        init_tracing();
        let nats = NatsServer::start().expect("nats-server (see herald-testkit for setup)");
        let receiver = Receiver::start().await.expect("receiver");
        let js = nats.jetstream().await.expect("NATS client");
        let bucket = WebhookBucket::open(&js).await.expect("webhook bucket");
        Harness {
            nats,
            receiver,
            js,
            bucket,
            account: AccountId::new(),
            outcomes: Mutex::new(Vec::new()),
        }
    }

    /// Local defaults with timings shrunk for tests: retries after 100 ms and 200 ms (three
    /// attempts), 2 s requests, and ack waits of a few seconds so redeliveries are quick.
    pub fn config(&self) -> WorkerConfig {
        let mut config = WorkerConfig::for_local(&self.nats.url());
        config.request_timeout = Duration::from_secs(2);
        config.retry_schedule = RetrySchedule::new(vec![ms(100), ms(200)]).expect("schedule");
        config.breaker = BreakerConfig {
            failures_to_open: 5,
            cool_down: ms(500),
            max_cool_down: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(4),
        };
        config.shutdown_deadline = Duration::from_secs(3);
        config.router_ack_wait = Duration::from_secs(2);
        config.sender_ack_wait = Duration::from_secs(4);
        config.delay_ack_wait = Duration::from_secs(2);
        config
    }

    pub async fn worker(&self) -> Worker {
        self.worker_with(self.config()).await
    }

    pub async fn worker_with(&self, config: WorkerConfig) -> Worker {
        Worker::start(config, CancellationToken::new())
            .await
            .expect("worker starts")
    }

    /// An enabled webhook of the harness's account at `path` on the receiver.
    pub fn spec(&self, path: &str, patterns: &[&str]) -> WebhookSpec {
        self.spec_at(&self.receiver.url(path), patterns)
    }

    pub fn spec_at(&self, url: &str, patterns: &[&str]) -> WebhookSpec {
        WebhookSpec {
            id: WebhookId::new().to_string(),
            account_id: self.account.to_string(),
            name: format!("test hook {url}"),
            enabled: true,
            event_patterns: patterns.iter().map(|p| (*p).to_owned()).collect(),
            url: url.to_owned(),
            signing_keys: vec![SigningKey {
                secret: SECRET.to_owned(),
                expires_at: None,
            }],
            version: 1,
            updated_at: None,
        }
    }

    pub async fn put(&self, spec: &WebhookSpec) {
        self.bucket.put(spec).await.expect("put webhook spec");
    }

    /// Puts `specs` and waits until `worker` has indexed all of them as they are.
    pub async fn put_indexed(&self, worker: &Worker, specs: &[&WebhookSpec]) {
        for spec in specs {
            self.put(spec).await;
        }
        let index = worker.index().clone();
        let wanted: Vec<(String, u64)> = specs
            .iter()
            .map(|spec| (spec.id.clone(), spec.version))
            .collect();
        wait_until(WAIT, || {
            let index = index.clone();
            let wanted = wanted.clone();
            async move {
                wanted.iter().all(|(id, version)| {
                    WebhookId::parse(id)
                        .ok()
                        .and_then(|id| index.get(&id))
                        .is_some_and(|held| held.version == *version)
                })
            }
        })
        .await
        .expect("the worker indexes the webhooks");
    }

    pub fn event(&self, event_type: &str) -> Event {
        self.event_of(&self.account, event_type)
    }

    pub fn event_of(&self, account: &AccountId, event_type: &str) -> Event {
        Event {
            id: EventId::generate(),
            event_type: EventType::parse(event_type).expect("event type"),
            account: account.clone(),
            timestamp: now_millis(),
            data: EventData::parse(r#"{"booking_id":"bk_1","guests":2}"#).expect("data"),
        }
    }

    pub async fn publish(&self, event: &Event) {
        Publisher::new(self.js.clone())
            .publish(event)
            .await
            .expect("event published");
    }

    /// Publishes raw bytes on an event subject, as a misbehaving publisher might.
    pub async fn publish_raw(
        &self,
        subject: &str,
        content_type: Option<&str>,
        msg_id: &str,
        payload: impl Into<Bytes>,
    ) {
        let mut headers = HeaderMap::new();
        headers.insert(header::MSG_ID, msg_id);
        if let Some(content_type) = content_type {
            headers.insert(header::CONTENT_TYPE, content_type);
        }
        self.js
            .publish_with_headers(subject.to_owned(), headers, payload.into())
            .await
            .expect("publish")
            .await
            .expect("publish acknowledged");
    }

    /// Every outcome published so far, in arrival order. Outcomes are taken from the registry's
    /// consumer (no registry runs in these tests) and kept here.
    pub async fn outcomes(&self) -> Vec<DeliveryOutcome> {
        let consumer = Topology::outcomes_consumer(&self.js)
            .await
            .expect("outcomes consumer");
        let messages = herald_testkit::fetch_ready(&consumer, 1000)
            .await
            .expect("fetch outcomes");
        let mut fresh = Vec::new();
        for message in messages {
            // A busy worker stores outcomes that settle together as one message.
            if message.subject.as_str() == herald_bus::names::OUTCOME_BATCH_SUBJECT {
                let batch = DeliveryOutcomes::decode(message.payload.clone())
                    .expect("a batch of outcomes decodes");
                assert!(batch.outcomes.len() > 1, "a batch holds several outcomes");
                fresh.extend(batch.outcomes);
            } else {
                fresh.push(
                    DeliveryOutcome::decode(message.payload.clone()).expect("outcome decodes"),
                );
            }
            message.ack().await.expect("ack outcome");
        }
        let mut outcomes = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        outcomes.extend(fresh);
        outcomes.clone()
    }

    /// Waits until `done` holds for the outcomes so far, and returns them.
    pub async fn wait_outcomes(
        &self,
        done: impl Fn(&[DeliveryOutcome]) -> bool,
    ) -> Vec<DeliveryOutcome> {
        let result = wait_for(WAIT, || async {
            let outcomes = self.outcomes().await;
            done(&outcomes).then_some(outcomes)
        })
        .await;
        match result {
            Ok(outcomes) => outcomes,
            Err(err) => panic!("{err}; outcomes so far: {:#?}", self.outcomes().await),
        }
    }

    /// Every message in the dead-letter stream.
    pub async fn dead_letters(&self) -> Vec<StreamMessage> {
        let mut stream = self.js.get_stream(DEAD_STREAM).await.expect("dead stream");
        let last = stream
            .info()
            .await
            .expect("dead stream info")
            .state
            .last_sequence;
        let mut messages = Vec::new();
        for sequence in 1..=last {
            if let Ok(message) = stream.get_raw_message(sequence).await {
                messages.push(message);
            }
        }
        messages
    }
}

/// Now, to the millisecond, as the webhook body shows it.
pub fn now_millis() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// Outcomes of one delivery, by attempt.
pub fn of_delivery<'a>(
    outcomes: &'a [DeliveryOutcome],
    delivery_id: &str,
) -> Vec<&'a DeliveryOutcome> {
    let mut of: Vec<&DeliveryOutcome> = outcomes
        .iter()
        .filter(|outcome| outcome.delivery_id == delivery_id)
        .collect();
    of.sort_by_key(|outcome| outcome.attempt);
    of
}

pub fn status(outcome: &DeliveryOutcome) -> DeliveryStatus {
    outcome.status()
}

/// Waits until the worker's counters satisfy `done`.
pub async fn wait_counters(
    worker: &Worker,
    done: impl Fn(&herald_worker::CounterSnapshot) -> bool,
) {
    let result = wait_until(WAIT, || async { done(&worker.counters()) }).await;
    if let Err(err) = result {
        panic!("{err}; counters: {:#?}", worker.counters());
    }
}

/// Waits until every `webhook-id` in `expected` has reached `path`, and says which did not.
pub async fn wait_until_received(h: &Harness, path: &str, expected: &[String], timeout: Duration) {
    let seen = || {
        h.receiver
            .requests_to(path)
            .iter()
            .filter_map(|r| r.header("webhook-id").map(str::to_owned))
            .collect::<std::collections::HashSet<_>>()
    };
    if wait_until(timeout, || async {
        expected.iter().all(|id| seen().contains(id))
    })
    .await
    .is_err()
    {
        let seen = seen();
        let missing: Vec<_> = expected.iter().filter(|id| !seen.contains(*id)).collect();
        panic!(
            "{} of {} never arrived: {missing:?}",
            missing.len(),
            expected.len()
        );
    }
}
