//! The minimal durable pipelines: only what at-least-once webhook delivery cannot avoid, written
//! with plain async-nats and Herald's delivery client. No routing, no per-webhook state, no
//! delivery log, no retry schedule: the floors Herald's figures are compared with.
//!
//! - [`Hops::One`]: each event is published with an acknowledgement to a file-backed stream,
//!   pulled by a durable consumer, signed, POSTed, and acknowledged once the receiver answered.
//! - [`Hops::Two`]: as Herald's design stores it, twice, on subjects laid out as the design lays
//!   them out (an account's events on a subject of its own, a webhook's tasks on one of theirs;
//!   nats-server keeps state per subject). Each event is pulled, copied as a task into a
//!   file-backed work queue (published with an acknowledgement) and only then acknowledged; the
//!   task is pulled, signed, POSTed, and acknowledged (so removed) once the receiver answered.
//!   What Herald adds beyond this floor (decoding, matching, per-webhook state, the delivery
//!   log, retries, trace context) is its own cost; what this floor adds to one hop is the
//!   design's.
//!
//! A step that fails (a publish not acknowledged, a copy not stored, a POST that errs or is not
//! answered 2xx) is tried again, so that a rare failure costs a figure a little rather than
//! stalling the run; each step ends once every one of its messages has succeeded, however many
//! times it pulled them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind, consumer::pull, stream};
use axum::body::Bytes;
use axum::http::header::USER_AGENT;
use futures::{StreamExt as _, TryStreamExt as _};
use herald_core::{SigningSecret, WebhookUrl};
use herald_worker::http::DeliveryClient;
use tokio_util::sync::CancellationToken;

const STREAM: &str = "BENCH_MINIMAL";
const SUBJECT: &str = "bench.minimal";
const EVENT_STREAM: &str = "BENCH_TWO_HOP_EVENTS";
const EVENT_SUBJECTS: &str = "bench.events.>";
const TASK_STREAM: &str = "BENCH_TWO_HOP_TASKS";
const TASK_SUBJECTS: &str = "bench.tasks.>";
/// Events being copied into tasks at once, as many as Herald's router handlers.
const ROUTERS: usize = 256;
/// How many times the pipelines' publisher tries to store an event before the run fails.
const PUBLISH_ATTEMPTS: u32 = 10;
/// The pause before the publisher's second try; each later one waits as much longer.
const PUBLISH_PAUSE: Duration = Duration::from_millis(50);

/// How many times an event is stored on its way to the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hops {
    /// Once, as the event, all on one subject.
    One,
    /// Twice: the event, then a task copied from it, over this many accounts with one webhook
    /// each.
    Two { webhooks: usize },
}

impl Hops {
    /// The stream events go to, and the subjects it takes.
    fn event_stream(self) -> (&'static str, &'static str) {
        match self {
            Hops::One => (STREAM, SUBJECT),
            Hops::Two { .. } => (EVENT_STREAM, EVENT_SUBJECTS),
        }
    }

    /// The subject of the `n`th event.
    fn event_subject(self, n: usize) -> String {
        match self {
            Hops::One => SUBJECT.to_owned(),
            Hops::Two { webhooks } => {
                format!("bench.events.acct{}.booking.created", n % webhooks.max(1))
            }
        }
    }
}

/// The subject of the task made from an event on `event_subject`: its account's webhook's.
fn task_subject(event_subject: &str) -> String {
    let account = event_subject.split('.').nth(2).unwrap_or_default();
    format!("bench.tasks.{account}")
}

/// Delivers `bodies` through the pipeline with `hops` to `receiver`, `concurrency` requests in
/// flight; returns the deliveries per second from the first publish to the last acknowledgement.
pub async fn run(
    nats_url: &str,
    http: &DeliveryClient,
    receiver: &WebhookUrl,
    secret: &SigningSecret,
    bodies: Vec<String>,
    concurrency: usize,
    hops: Hops,
) -> anyhow::Result<f64> {
    let client = async_nats::connect(nats_url)
        .await
        .context("the minimal pipeline cannot connect to NATS")?;
    let js = jetstream::new(client);
    let (event_stream, event_subjects) = hops.event_stream();
    let events = open(
        &js,
        event_stream,
        event_subjects,
        stream::RetentionPolicy::Limits,
    )
    .await?;
    let tasks = match hops {
        Hops::One => None,
        Hops::Two { .. } => Some(
            open(
                &js,
                TASK_STREAM,
                TASK_SUBJECTS,
                stream::RetentionPolicy::WorkQueue,
            )
            .await?,
        ),
    };
    // The clock starts once the streams exist, as for the one-hop pipeline.
    let total = bodies.len();
    let started = Instant::now();
    let (delivering, routing) = match tasks {
        None => (
            deliver(events, total, concurrency, http, receiver, secret),
            None,
        ),
        Some(tasks) => (
            deliver(tasks, total, concurrency, http, receiver, secret),
            Some(tokio::spawn(route(events, js.clone(), total))),
        ),
    };

    futures::stream::iter(bodies.into_iter().enumerate().map(anyhow::Ok))
        .try_for_each_concurrent(256, |(n, body)| {
            let js = &js;
            async move {
                let body = Bytes::from(body);
                // Published again until stored, within JetStream's duplicate window: its id
                // keeps a second copy out.
                let mut attempt = 1;
                loop {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Nats-Msg-Id", format!("{EVENT_ID_PREFIX}{n}").as_str());
                    let published = async {
                        js.publish_with_headers(hops.event_subject(n), headers, body.clone())
                            .await?
                            .await
                    }
                    .await;
                    match published {
                        Ok(_) => return anyhow::Ok(()),
                        Err(error) if attempt < PUBLISH_ATTEMPTS => {
                            tracing::warn!(%error, attempt, "minimal pipeline: publish failed");
                            tokio::time::sleep(PUBLISH_PAUSE * attempt).await;
                            attempt += 1;
                        }
                        Err(error) => anyhow::bail!(
                            "the minimal pipeline could not store event {n} in \
                             {PUBLISH_ATTEMPTS} attempts: {error}"
                        ),
                    }
                }
            }
        })
        .await?;
    let finished = async {
        if let Some(routing) = routing {
            routing.await??;
        }
        delivering.await?
    };
    tokio::time::timeout(Duration::from_secs(300), finished)
        .await
        .context("the minimal pipeline did not finish within 5 minutes")??;
    let rate = total as f64 / started.elapsed().as_secs_f64();
    let streams: &[&str] = match hops {
        Hops::One => &[event_stream],
        Hops::Two { .. } => &[event_stream, TASK_STREAM],
    };
    for name in streams {
        js.delete_stream(name)
            .await
            .with_context(|| format!("cannot delete the minimal pipeline's stream {name}"))?;
    }
    Ok(rate)
}

/// Creates the file-backed stream `name` over `subject` and a durable pull consumer on it.
async fn open(
    js: &jetstream::Context,
    name: &str,
    subject: &str,
    retention: stream::RetentionPolicy,
) -> anyhow::Result<jetstream::consumer::Consumer<pull::Config>> {
    let stream = js
        .create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![subject.to_owned()],
            storage: stream::StorageType::File,
            retention,
            ..Default::default()
        })
        .await
        .with_context(|| format!("cannot create the minimal pipeline's stream {name}"))?;
    stream
        .create_consumer(pull::Config {
            durable_name: Some(format!("bench-{}", name.to_lowercase())),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 10_000,
            ..Default::default()
        })
        .await
        .with_context(|| format!("cannot create the minimal pipeline's consumer on {name}"))
}

/// The message's `Nats-Msg-Id`, or "" when it has none.
fn msg_id(message: &jetstream::Message) -> &str {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map_or("", |v| v.as_str())
}

/// Copies `total` events of `events` into tasks, each stored before its event is acknowledged.
async fn route(
    events: jetstream::consumer::Consumer<pull::Config>,
    js: jetstream::Context,
    total: usize,
) -> anyhow::Result<()> {
    let done = Done::new(total);
    events
        .messages()
        .await?
        .take_until(done.all.clone().cancelled_owned())
        .for_each_concurrent(ROUTERS, |message| {
            let (js, done) = (&js, &done);
            async move {
                let Ok(message) = message else { return };
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("task_{}", msg_id(&message)).as_str());
                let stored = async {
                    js.publish_with_headers(
                        task_subject(&message.subject),
                        headers,
                        message.payload.clone(),
                    )
                    .await?
                    .await
                }
                .await;
                match stored {
                    Ok(_) => match message.ack().await {
                        Ok(()) => done.one(msg_id(&message)),
                        Err(error) => tracing::warn!(%error, "minimal pipeline: event ack failed"),
                    },
                    Err(error) => {
                        tracing::warn!(%error, "minimal pipeline: task publish failed");
                        hand_back(&message).await;
                    }
                }
            }
        })
        .await;
    done.finished("copying events into tasks")
}

/// Starts POSTing `total` messages of `consumer`, signed, each acknowledged once answered.
fn deliver(
    consumer: jetstream::consumer::Consumer<pull::Config>,
    total: usize,
    concurrency: usize,
    http: &DeliveryClient,
    receiver: &WebhookUrl,
    secret: &SigningSecret,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let http = http.clone();
    let receiver = receiver.clone();
    let secret = secret.clone();
    tokio::spawn(async move {
        let done = Done::new(total);
        let messages = consumer.messages().await?;
        messages
            .take_until(done.all.clone().cancelled_owned())
            .for_each_concurrent(concurrency, |message| {
                let (http, receiver, secret, done) = (&http, &receiver, &secret, &done);
                async move {
                    let Ok(message) = message else { return };
                    let id = msg_id(&message).to_owned();
                    let timestamp = chrono::Utc::now().timestamp();
                    let signature = secret.sign(&id, timestamp, &message.payload);
                    // Herald's headers, less its trace context.
                    let mut headers = herald_worker::webhook_headers(&id, timestamp, signature);
                    headers.insert(USER_AGENT, http.user_agent().clone());
                    let sent = http.post(receiver, &headers, message.payload.clone()).await;
                    match sent.result {
                        Ok(response) if (200..300).contains(&response.status) => {
                            match message.ack().await {
                                Ok(()) => done.one(&id),
                                Err(error) => {
                                    tracing::warn!(%error, "minimal pipeline: ack failed");
                                }
                            }
                        }
                        _ => {
                            tracing::warn!("minimal pipeline: a POST failed");
                            hand_back(&message).await;
                        }
                    }
                }
            })
            .await;
        done.finished("delivering")
    })
}

/// The `Nats-Msg-Id` of the pipelines' `n`th event; its task's is `task_` and this.
const EVENT_ID_PREFIX: &str = "msg_minimal_";

/// Which of a step's messages have succeeded, and the token that ends the step once all have.
/// A message counts once, however often it succeeds: one redelivered after its ack was lost,
/// or after its ack wait while the first copy was still being handled.
struct Done {
    succeeded: Vec<AtomicBool>,
    count: AtomicUsize,
    all: CancellationToken,
}

impl Done {
    fn new(total: usize) -> Self {
        let all = CancellationToken::new();
        if total == 0 {
            all.cancel();
        }
        Done {
            succeeded: (0..total).map(|_| AtomicBool::new(false)).collect(),
            count: AtomicUsize::new(0),
            all,
        }
    }

    /// Counts the message with id `id` (its event's number after the last `_`) as succeeded.
    fn one(&self, id: &str) {
        let first = id
            .rsplit('_')
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| self.succeeded.get(n))
            .is_some_and(|seen| !seen.swap(true, Ordering::Relaxed));
        if first && self.count.fetch_add(1, Ordering::Relaxed) + 1 == self.succeeded.len() {
            self.all.cancel();
        }
    }

    /// Whether the step ended with every message done, rather than with its pull stream.
    fn finished(&self, step: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.all.is_cancelled(),
            "the minimal pipeline's pull stream ended while {step}, after {} of {} messages",
            self.count.load(Ordering::Relaxed),
            self.succeeded.len()
        );
        Ok(())
    }
}

/// Hands a message back for redelivery at once.
async fn hand_back(message: &jetstream::Message) {
    if let Err(error) = message.ack_with(AckKind::Nak(None)).await {
        tracing::warn!(%error, "minimal pipeline: a message could not be handed back");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_ends_once_each_of_its_messages_succeeded() {
        let done = Done::new(3);
        done.one("msg_minimal_0");
        done.one("task_msg_minimal_2");
        // A message that succeeds twice counts once.
        done.one("msg_minimal_2");
        assert!(!done.all.is_cancelled(), "two of three");
        assert!(done.finished("delivering").is_err());
        done.one("msg_minimal_1");
        assert!(done.all.is_cancelled(), "three of three");
        assert!(done.finished("delivering").is_ok());
    }

    #[test]
    fn a_step_with_nothing_to_do_is_done_at_once() {
        assert!(Done::new(0).all.is_cancelled());
    }

    #[test]
    fn ids_that_name_no_message_of_the_step_count_for_nothing() {
        let done = Done::new(1);
        for id in ["", "msg_minimal_1", "msg_minimal_x"] {
            done.one(id);
        }
        assert!(!done.all.is_cancelled());
    }
}
