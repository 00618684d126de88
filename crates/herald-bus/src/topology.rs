//! Provisioning Herald's streams, durable consumers and KV bucket, idempotently: every process
//! provisions at start-up, several may race, and a changed setting is applied to what exists
//! rather than silently ignored.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use async_nats::jetstream::consumer::{
    self, AckPolicy, DeliverPolicy, IntoConsumerConfig as _, PullConsumer, ReplayPolicy, pull,
};
use async_nats::jetstream::context::{
    ConsumerInfoErrorKind, CreateStreamErrorKind, GetStreamErrorKind,
};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType, Stream};
use async_nats::jetstream::{self, ErrorCode};

use futures::TryStreamExt as _;
use herald_core::WebhookId;

use crate::names::{
    DEAD_STREAM, DEAD_SUBJECTS, DELIVERIES_STREAM, DELIVERIES_SUBJECTS, EVENTS_STREAM,
    EVENTS_SUBJECTS, LANES_STREAM, LANES_SUBJECTS, OUTCOMES_CONSUMER, OUTCOMES_STREAM,
    OUTCOMES_SUBJECTS, ROUTER_CONSUMER, SENDER_CONSUMER, WEBHOOKS_BUCKET, WEBHOOKS_BUCKET_STREAM,
    WEBHOOKS_BUCKET_SUBJECTS, lane_consumer, lane_subject, lane_webhook,
};
use crate::tiers::{RetryTier, RetryTiers};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// What went wrong while provisioning or looking up the topology.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(
        "stream {EVENTS_STREAM} does not exist: the booking platform creates it (subjects \
         `{EVENTS_SUBJECTS}`, with a duplicate window) before Herald starts; in development, \
         let Herald create it"
    )]
    MissingEventsStream,
    #[error(
        "stream {stream} has {field} {actual} but Herald needs {expected}, and NATS cannot change \
         it in place: delete the stream (losing its messages) or move them to a new one"
    )]
    IncompatibleStream {
        stream: String,
        field: &'static str,
        actual: String,
        expected: String,
    },
    #[error("cannot {action} stream {stream}: {source}")]
    Stream {
        stream: String,
        action: &'static str,
        #[source]
        source: async_nats::Error,
    },
    #[error("cannot {action} consumer {consumer} on stream {stream}: {source}")]
    Consumer {
        stream: String,
        consumer: String,
        action: &'static str,
        #[source]
        source: async_nats::Error,
    },
}

impl TopologyError {
    fn stream(stream: &str, action: &'static str, source: impl Into<async_nats::Error>) -> Self {
        TopologyError::Stream {
            stream: stream.to_owned(),
            action,
            source: source.into(),
        }
    }

    fn consumer(
        stream: &str,
        consumer: &str,
        action: &'static str,
        source: impl Into<async_nats::Error>,
    ) -> Self {
        TopologyError::Consumer {
            stream: stream.to_owned(),
            consumer: consumer.to_owned(),
            action,
            source: source.into(),
        }
    }
}

/// What provisioning did to one stream or consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    Created,
    /// It existed with different settings, which were changed.
    Updated,
    Unchanged,
}

/// Settings of one durable pull consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerLimits {
    /// How long a delivered message may go unacknowledged before it is redelivered. Long work
    /// extends it with in-progress acks.
    pub ack_wait: Duration,
    /// Messages delivered and not yet acknowledged, across all replicas together.
    pub max_ack_pending: i64,
    /// Deliveries of one message before the server gives up on it; -1 for no limit, which is
    /// the default because Herald dead-letters poison messages itself, with a reason.
    pub max_deliver: i64,
}

impl ConsumerLimits {
    const fn new(ack_wait: Duration, max_ack_pending: i64) -> Self {
        ConsumerLimits {
            ack_wait,
            max_ack_pending,
            max_deliver: -1,
        }
    }
}

/// Settings of a busy webhook's lane consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneLimits {
    /// How long a task handed out may go unacknowledged; as the sender's.
    pub ack_wait: Duration,
    /// Tasks of the webhook in flight at once, across all replicas: its cap.
    pub in_flight: i64,
    /// How long the consumer outlives its last pull request before the server removes it.
    pub idle: Duration,
}

/// How to provision the topology.
#[derive(Debug, Clone)]
pub struct ProvisionOptions {
    /// Create (and own) the `EVENTS` stream. In production the booking platform owns it and
    /// Herald only checks that it exists; development and tests let Herald create it.
    pub create_events_stream: bool,
    /// Replicas of every stream; 3 in a production cluster.
    pub replicas: usize,
    /// How long a `Nats-Msg-Id` is remembered for de-duplication.
    pub duplicate_window: Duration,
    /// The retry delay lines.
    pub retry_tiers: RetryTiers,
    /// How long events are kept, when Herald creates `EVENTS`.
    pub events_max_age: Duration,
    /// How long an outcome waits for the registry before it is discarded.
    pub outcomes_max_age: Duration,
    /// How many bytes of outcomes wait for the registry at most. When the registry is away so
    /// long that they fill it, the oldest outcomes are discarded (and missing from the delivery
    /// log) rather than new ones refused: refusing them would stall deliveries, and repeat
    /// every request whose outcome could not be stored.
    pub outcomes_max_bytes: i64,
    /// How long dead-lettered messages are kept for inspection.
    pub dead_max_age: Duration,
    /// Where the router starts when its consumer is first created. Ignored afterwards: NATS
    /// cannot move an existing consumer.
    pub router_deliver_policy: DeliverPolicy,
    pub router: ConsumerLimits,
    /// The sender's ack wait must exceed the longest webhook timeout (30 s).
    pub sender: ConsumerLimits,
    pub outcomes: ConsumerLimits,
    pub retry: ConsumerLimits,
}

impl Default for ProvisionOptions {
    /// Production settings on a single server: `EVENTS` must already exist.
    fn default() -> Self {
        ProvisionOptions {
            create_events_stream: false,
            replicas: 1,
            duplicate_window: Duration::from_secs(2 * 60),
            retry_tiers: RetryTiers::default(),
            events_max_age: 7 * DAY,
            outcomes_max_age: 7 * DAY,
            outcomes_max_bytes: 1 << 30,
            dead_max_age: 30 * DAY,
            router_deliver_policy: DeliverPolicy::All,
            router: ConsumerLimits::new(Duration::from_secs(30), 10_000),
            sender: ConsumerLimits::new(Duration::from_secs(60), 10_000),
            outcomes: ConsumerLimits::new(Duration::from_secs(30), 10_000),
            retry: ConsumerLimits::new(Duration::from_secs(30), 10_000),
        }
    }
}

impl ProvisionOptions {
    /// Development and test settings: like the default, but Herald creates `EVENTS`.
    pub fn development() -> Self {
        ProvisionOptions {
            create_events_stream: true,
            ..ProvisionOptions::default()
        }
    }
}

/// What one provisioning run did, by stream or `stream/consumer` name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProvisionReport {
    pub items: Vec<(String, Ensured)>,
}

impl ProvisionReport {
    /// Whether anything was created or updated.
    pub fn changed(&self) -> bool {
        self.items.iter().any(|(_, e)| *e != Ensured::Unchanged)
    }

    /// What happened to `name` (a stream, or `stream/consumer`).
    pub fn get(&self, name: &str) -> Option<Ensured> {
        self.items.iter().find(|(n, _)| n == name).map(|(_, e)| *e)
    }
}

/// Herald's streams, consumers and bucket.
#[derive(Debug, Clone, Copy)]
pub struct Topology;

impl Topology {
    /// Creates whatever is missing and updates whatever differs from `opts`.
    pub async fn provision(
        js: &jetstream::Context,
        opts: &ProvisionOptions,
    ) -> Result<ProvisionReport, TopologyError> {
        let mut report = ProvisionReport::default();

        let events = if opts.create_events_stream {
            let (events, ensured) = ensure_stream(js, events_stream(opts)).await?;
            report.items.push((EVENTS_STREAM.to_owned(), ensured));
            events
        } else {
            existing_events_stream(js).await?
        };
        report_consumer(&mut report, &events, router_consumer(opts)).await?;

        let (deliveries, ensured) = ensure_stream(js, deliveries_stream(opts)).await?;
        report.items.push((DELIVERIES_STREAM.to_owned(), ensured));
        report_consumer(&mut report, &deliveries, sender_consumer(opts)).await?;

        for tier in &opts.retry_tiers {
            let (line, ensured) = ensure_stream(js, retry_stream(opts, tier)).await?;
            report.items.push((tier.stream_name(), ensured));
            report_consumer(&mut report, &line, retry_consumer(opts, tier)).await?;
        }

        let (_, ensured) = ensure_stream(js, lanes_stream(opts)).await?;
        report.items.push((LANES_STREAM.to_owned(), ensured));

        let (outcomes, ensured) = ensure_stream(js, outcomes_stream(opts)).await?;
        report.items.push((OUTCOMES_STREAM.to_owned(), ensured));
        report_consumer(&mut report, &outcomes, outcomes_consumer(opts)).await?;

        let (_, ensured) = ensure_stream(js, dead_stream(opts)).await?;
        report.items.push((DEAD_STREAM.to_owned(), ensured));

        let made = create_bucket_if_missing(js, opts.replicas).await?;
        let (_, ensured) = ensure_stream(js, webhooks_bucket_stream(opts.replicas)).await?;
        let ensured = if made == BucketMade::Existing {
            ensured
        } else {
            Ensured::Created
        };
        report
            .items
            .push((WEBHOOKS_BUCKET_STREAM.to_owned(), ensured));

        for (name, ensured) in &report.items {
            match ensured {
                Ensured::Unchanged => tracing::debug!(%name, "NATS topology unchanged"),
                Ensured::Created | Ensured::Updated => {
                    tracing::info!(%name, ?ensured, "NATS topology provisioned")
                }
            }
        }
        Ok(report)
    }

    /// Provisions what the registry uses: the deliveries stream (it hands
    /// tasks to the workers), the outcomes stream and its consumer, the dead
    /// letters and the webhooks bucket. It leaves EVENTS, the router, sender
    /// and retry consumers to the workers, whose settings (e.g. one message in
    /// flight per delay line) must not be reset by a registry start.
    pub async fn provision_registry(
        js: &jetstream::Context,
        opts: &ProvisionOptions,
    ) -> Result<ProvisionReport, TopologyError> {
        let mut report = ProvisionReport::default();
        let (_, ensured) = ensure_stream(js, deliveries_stream(opts)).await?;
        report.items.push((DELIVERIES_STREAM.to_owned(), ensured));
        let (outcomes, ensured) = ensure_stream(js, outcomes_stream(opts)).await?;
        report.items.push((OUTCOMES_STREAM.to_owned(), ensured));
        report_consumer(&mut report, &outcomes, outcomes_consumer(opts)).await?;
        let (_, ensured) = ensure_stream(js, dead_stream(opts)).await?;
        report.items.push((DEAD_STREAM.to_owned(), ensured));
        let made = create_bucket_if_missing(js, opts.replicas).await?;
        let (_, ensured) = ensure_stream(js, webhooks_bucket_stream(opts.replicas)).await?;
        let ensured = if made == BucketMade::Existing {
            ensured
        } else {
            Ensured::Created
        };
        report
            .items
            .push((WEBHOOKS_BUCKET_STREAM.to_owned(), ensured));
        Ok(report)
    }

    /// The router's durable consumer of `EVENTS`.
    pub async fn router_consumer(js: &jetstream::Context) -> Result<PullConsumer, TopologyError> {
        get_consumer(js, EVENTS_STREAM, ROUTER_CONSUMER).await
    }

    /// The sender's durable consumer of `HERALD_DELIVERIES`.
    pub async fn sender_consumer(js: &jetstream::Context) -> Result<PullConsumer, TopologyError> {
        get_consumer(js, DELIVERIES_STREAM, SENDER_CONSUMER).await
    }

    /// The registry's durable consumer of `HERALD_OUTCOMES`.
    pub async fn outcomes_consumer(js: &jetstream::Context) -> Result<PullConsumer, TopologyError> {
        get_consumer(js, OUTCOMES_STREAM, OUTCOMES_CONSUMER).await
    }

    /// The durable consumer of one retry delay line.
    pub async fn retry_consumer(
        js: &jetstream::Context,
        tier: &RetryTier,
    ) -> Result<PullConsumer, TopologyError> {
        get_consumer(js, &tier.stream_name(), &tier.consumer_name()).await
    }

    /// The router's consumer, made to exist as `opts` says first. A consumer deleted from under
    /// a running worker is created again starting at stream sequence `resume_at` when given
    /// (the first event this worker has not finished routing): starting at the beginning would
    /// route again every event the stream keeps, beyond what de-duplication remembers.
    pub async fn open_router(
        js: &jetstream::Context,
        opts: &ProvisionOptions,
        resume_at: Option<u64>,
    ) -> Result<PullConsumer, TopologyError> {
        let mut config = router_consumer(opts);
        if let Some(start_sequence) = resume_at {
            config.deliver_policy = DeliverPolicy::ByStartSequence { start_sequence };
        }
        ensure_and_open(js, EVENTS_STREAM, config).await
    }

    /// The sender's consumer, made to exist as `opts` says first.
    pub async fn open_sender(
        js: &jetstream::Context,
        opts: &ProvisionOptions,
    ) -> Result<PullConsumer, TopologyError> {
        ensure_and_open(js, DELIVERIES_STREAM, sender_consumer(opts)).await
    }

    /// A delay line's consumer, made to exist as `opts` says first.
    pub async fn open_retry(
        js: &jetstream::Context,
        opts: &ProvisionOptions,
        tier: &RetryTier,
    ) -> Result<PullConsumer, TopologyError> {
        ensure_and_open(js, &tier.stream_name(), retry_consumer(opts, tier)).await
    }

    /// Delay lines that exist but are not among `current`: those of an earlier retry schedule,
    /// whose tasks must still be moved on.
    pub async fn retired_tiers(
        js: &jetstream::Context,
        current: &RetryTiers,
    ) -> Result<Vec<RetryTier>, TopologyError> {
        let names: Vec<String> = js
            .stream_names()
            .try_collect()
            .await
            .map_err(|err| TopologyError::stream("(all)", "list", err))?;
        let mut retired: Vec<RetryTier> = names
            .iter()
            .filter_map(|name| RetryTier::from_stream_name(name))
            .filter(|tier| {
                current
                    .iter()
                    .all(|kept| kept.stream_name() != tier.stream_name())
            })
            .collect();
        retired.sort();
        Ok(retired)
    }

    /// The consumer of `webhook`'s lane, created (or set to `limits`) on the way. Lanes come
    /// and go with backlogs: the server removes an idle lane's consumer by itself.
    pub async fn lane_consumer(
        js: &jetstream::Context,
        webhook: &WebhookId,
        limits: LaneLimits,
    ) -> Result<PullConsumer, TopologyError> {
        let stream = js
            .get_stream_no_info(LANES_STREAM)
            .await
            .map_err(|err| TopologyError::stream(LANES_STREAM, "open", err))?;
        let config = lane_consumer_config(webhook, limits);
        stream.create_consumer(config).await.map_err(|err| {
            TopologyError::consumer(LANES_STREAM, &lane_consumer(webhook), "create", err)
        })
    }

    /// The webhooks whose lanes hold tasks, in one request (paged by the server for many).
    pub async fn busy_lanes(js: &jetstream::Context) -> Result<Vec<WebhookId>, TopologyError> {
        let stream = js
            .get_stream_no_info(LANES_STREAM)
            .await
            .map_err(|err| TopologyError::stream(LANES_STREAM, "open", err))?;
        let subjects: Vec<(String, usize)> = stream
            .info_with_subjects(LANES_SUBJECTS)
            .await
            .map_err(|err| TopologyError::stream(LANES_STREAM, "list the subjects of", err))?
            .try_collect()
            .await
            .map_err(|err| TopologyError::stream(LANES_STREAM, "list the subjects of", err))?;
        Ok(subjects
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .filter_map(|(subject, _)| lane_webhook(&subject))
            .collect())
    }
}

async fn report_consumer(
    report: &mut ProvisionReport,
    stream: &Stream,
    config: pull::Config,
) -> Result<(), TopologyError> {
    let name = format!(
        "{}/{}",
        stream.cached_info().config.name,
        config.durable_name.as_deref().unwrap_or_default()
    );
    let ensured = ensure_consumer(stream, config).await?;
    report.items.push((name, ensured));
    Ok(())
}

async fn ensure_and_open(
    js: &jetstream::Context,
    stream: &str,
    config: pull::Config,
) -> Result<PullConsumer, TopologyError> {
    let consumer = config.durable_name.clone().unwrap_or_default();
    let handle = js
        .get_stream(stream)
        .await
        .map_err(|err| TopologyError::stream(stream, "open", err))?;
    if ensure_consumer(&handle, config).await? == Ensured::Created {
        tracing::warn!(%stream, %consumer, "consumer was missing; created it again");
    }
    handle
        .get_consumer(&consumer)
        .await
        .map_err(|err| TopologyError::consumer(stream, &consumer, "open", err))
}

async fn get_consumer(
    js: &jetstream::Context,
    stream: &str,
    consumer: &str,
) -> Result<PullConsumer, TopologyError> {
    let handle = js
        .get_stream_no_info(stream)
        .await
        .map_err(|err| TopologyError::stream(stream, "open", err))?;
    handle
        .get_consumer(consumer)
        .await
        .map_err(|err| TopologyError::consumer(stream, consumer, "open", err))
}

async fn existing_events_stream(js: &jetstream::Context) -> Result<Stream, TopologyError> {
    match js.get_stream(EVENTS_STREAM).await {
        Ok(stream) => {
            let config = &stream.cached_info().config;
            if !config
                .subjects
                .iter()
                .any(|s| s == EVENTS_SUBJECTS || s == ">")
            {
                tracing::warn!(
                    subjects = ?config.subjects,
                    "stream {EVENTS_STREAM} does not capture `{EVENTS_SUBJECTS}`; the router \
                     only sees the events it does capture"
                );
            }
            if config.duplicate_window.is_zero() {
                tracing::warn!(
                    "stream {EVENTS_STREAM} has no duplicate window; re-published events are \
                     delivered again"
                );
            }
            Ok(stream)
        }
        Err(err) if is_stream_not_found(&err) => Err(TopologyError::MissingEventsStream),
        Err(err) => Err(TopologyError::stream(EVENTS_STREAM, "look up", err)),
    }
}

/// Makes stream `desired.name` exist with `desired`'s settings.
///
/// Settings NATS can change in place are updated; a different storage type or retention policy
/// is an error, because applying it means deleting the stream and its messages, which is an
/// operator's decision.
pub async fn ensure_stream(
    js: &jetstream::Context,
    desired: stream::Config,
) -> Result<(Stream, Ensured), TopologyError> {
    let name = desired.name.clone();
    let existing = match js.get_stream(&name).await {
        Ok(stream) => stream,
        Err(err) if is_stream_not_found(&err) => match js.create_stream(desired.clone()).await {
            Ok(stream) => return Ok((stream, Ensured::Created)),
            // Another process created it between our look-up and our create; reconcile with
            // what it made.
            Err(err) if is_stream_exists(&err) => match js.get_stream(&name).await {
                Ok(stream) => stream,
                // No stream of that name: the subjects belong to another stream.
                Err(_) => return Err(TopologyError::stream(&name, "create", err)),
            },
            Err(err) => return Err(TopologyError::stream(&name, "create", err)),
        },
        Err(err) => return Err(TopologyError::stream(&name, "look up", err)),
    };

    let actual = &existing.cached_info().config;
    if actual.storage != desired.storage {
        return Err(incompatible(
            &name,
            "storage",
            actual.storage,
            desired.storage,
        ));
    }
    if actual.retention != desired.retention {
        return Err(incompatible(
            &name,
            "retention",
            actual.retention,
            desired.retention,
        ));
    }
    let differences = stream_differences(actual, &desired);
    if differences.is_empty() {
        return Ok((existing, Ensured::Unchanged));
    }
    tracing::info!(stream = %name, ?differences, "updating stream settings");
    js.update_stream(&desired)
        .await
        .map_err(|err| TopologyError::stream(&name, "update", err))?;
    let updated = js
        .get_stream(&name)
        .await
        .map_err(|err| TopologyError::stream(&name, "look up", err))?;
    Ok((updated, Ensured::Updated))
}

/// How the webhook bucket came to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketMade {
    /// It existed already.
    Existing,
    /// Created as a bucket (`create_key_value`), as current servers allow.
    KeyValue,
    /// Created as its backing stream, spelled out: nats-server 2.9 refuses `create_key_value`
    /// from this client.
    Stream,
}

/// Creates the webhook bucket with `replicas` if it does not exist: as a key-value bucket where
/// the server accepts that, else (nats-server 2.9) as the stream a bucket is made of.
pub async fn create_bucket_if_missing(
    js: &jetstream::Context,
    replicas_wanted: usize,
) -> Result<BucketMade, TopologyError> {
    match js.get_stream(WEBHOOKS_BUCKET_STREAM).await {
        Ok(_) => return Ok(BucketMade::Existing),
        Err(err) if is_stream_not_found(&err) => {}
        Err(err) => {
            return Err(TopologyError::stream(
                WEBHOOKS_BUCKET_STREAM,
                "look up",
                err,
            ));
        }
    }
    let desired = webhooks_bucket_stream(replicas_wanted);
    let bucket = jetstream::kv::Config {
        bucket: WEBHOOKS_BUCKET.to_owned(),
        description: desired.description.clone().unwrap_or_default(),
        history: 1,
        storage: desired.storage,
        num_replicas: desired.num_replicas,
        ..Default::default()
    };
    match js.create_key_value(bucket).await {
        Ok(_) => return Ok(BucketMade::KeyValue),
        Err(err) => tracing::debug!(
            %err,
            "the server refused create_key_value; creating the bucket's stream directly"
        ),
    }
    match js.create_stream(desired).await {
        Ok(_) => Ok(BucketMade::Stream),
        // Made meanwhile, by this very create_key_value or another process.
        Err(err) if is_stream_exists(&err) => Ok(BucketMade::Existing),
        Err(err) => Err(TopologyError::stream(WEBHOOKS_BUCKET_STREAM, "create", err)),
    }
}

/// Makes durable consumer `desired.durable_name` exist on `stream` with `desired`'s settings.
///
/// `get_or_create_consumer` would keep an existing consumer's old settings without a word, so
/// the settings are compared and updated when they differ. The start position
/// (`deliver_policy`) only applies at creation: NATS cannot move an existing consumer.
pub async fn ensure_consumer(
    stream: &Stream,
    desired: pull::Config,
) -> Result<Ensured, TopologyError> {
    let stream_name = stream.cached_info().config.name.clone();
    let name = desired.durable_name.clone().unwrap_or_default();
    match stream.consumer_info(&name).await {
        Ok(info) => {
            let differences =
                consumer_differences(&info.config, &desired.clone().into_consumer_config());
            if differences.is_empty() {
                return Ok(Ensured::Unchanged);
            }
            tracing::info!(stream = %stream_name, consumer = %name, ?differences, "updating consumer settings");
            // Its start position stays as it is: NATS refuses an update that names another
            // ("deliver policy can not be updated"), and a consumer made again from where a
            // worker had got to has one of its own.
            let update = pull::Config {
                deliver_policy: info.config.deliver_policy,
                ..desired
            };
            stream
                .update_consumer(update)
                .await
                .map_err(|err| TopologyError::consumer(&stream_name, &name, "update", err))?;
            Ok(Ensured::Updated)
        }
        Err(err) if matches!(err.kind(), ConsumerInfoErrorKind::NotFound) => {
            // Creating a durable consumer that a racing process has just created with the same
            // settings succeeds, so a race needs no special handling here.
            stream
                .create_consumer(desired)
                .await
                .map_err(|err| TopologyError::consumer(&stream_name, &name, "create", err))?;
            Ok(Ensured::Created)
        }
        Err(err) => Err(TopologyError::consumer(&stream_name, &name, "look up", err)),
    }
}

fn incompatible(
    stream: &str,
    field: &'static str,
    actual: impl fmt::Debug,
    expected: impl fmt::Debug,
) -> TopologyError {
    TopologyError::IncompatibleStream {
        stream: stream.to_owned(),
        field,
        actual: format!("{actual:?}"),
        expected: format!("{expected:?}"),
    }
}

fn is_stream_not_found(err: &jetstream::context::GetStreamError) -> bool {
    matches!(err.kind(), GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// Whether a create failed because a racing process created the stream first. nats-server
/// 2.9 may say so as "subjects overlap" (the new stream's subjects are the racer's) rather than
/// "name in use"; the caller looks the stream up by name either way, and a true overlap with
/// another stream then fails that look-up.
fn is_stream_exists(err: &jetstream::context::CreateStreamError) -> bool {
    matches!(
        err.kind(),
        CreateStreamErrorKind::JetStream(js)
            if js.error_code() == ErrorCode::STREAM_NAME_EXIST
                || js.error_code() == ErrorCode::STREAM_SUBJECT_OVERLAP
    )
}

/// The server reports "no limit" as -1 whatever was sent (0 or -1).
fn limit(value: i64) -> i64 {
    if value <= 0 { -1 } else { value }
}

/// The server stores 0 replicas as 1.
fn replicas(value: usize) -> usize {
    value.max(1)
}

/// The settings Herald manages that differ, as `(field, actual, desired)`.
fn stream_differences(
    actual: &stream::Config,
    desired: &stream::Config,
) -> Vec<(&'static str, String, String)> {
    let mut differences = Vec::new();
    let mut check = |field: &'static str, a: String, d: String| {
        if a != d {
            differences.push((field, a, d));
        }
    };
    let subjects =
        |config: &stream::Config| format!("{:?}", config.subjects.iter().collect::<BTreeSet<_>>());
    check("subjects", subjects(actual), subjects(desired));
    check(
        "max_age",
        format!("{:?}", actual.max_age),
        format!("{:?}", desired.max_age),
    );
    check(
        "max_bytes",
        limit(actual.max_bytes).to_string(),
        limit(desired.max_bytes).to_string(),
    );
    check(
        "duplicate_window",
        format!("{:?}", actual.duplicate_window),
        format!("{:?}", desired.duplicate_window),
    );
    check(
        "num_replicas",
        replicas(actual.num_replicas).to_string(),
        replicas(desired.num_replicas).to_string(),
    );
    check(
        "discard",
        format!("{:?}", actual.discard),
        format!("{:?}", desired.discard),
    );
    check(
        "max_messages_per_subject",
        limit(actual.max_messages_per_subject).to_string(),
        limit(desired.max_messages_per_subject).to_string(),
    );
    check(
        "allow_rollup",
        actual.allow_rollup.to_string(),
        desired.allow_rollup.to_string(),
    );
    check(
        "deny_delete",
        actual.deny_delete.to_string(),
        desired.deny_delete.to_string(),
    );
    check(
        "allow_direct",
        actual.allow_direct.to_string(),
        desired.allow_direct.to_string(),
    );
    check(
        "description",
        format!("{:?}", actual.description),
        format!("{:?}", desired.description),
    );
    differences
}

/// The consumer settings Herald manages that differ, as `(field, actual, desired)`.
fn consumer_differences(
    actual: &consumer::Config,
    desired: &consumer::Config,
) -> Vec<(&'static str, String, String)> {
    let mut differences = Vec::new();
    let mut check = |field: &'static str, a: String, d: String| {
        if a != d {
            differences.push((field, a, d));
        }
    };
    check(
        "filter_subject",
        actual.filter_subject.clone(),
        desired.filter_subject.clone(),
    );
    check(
        "ack_policy",
        format!("{:?}", actual.ack_policy),
        format!("{:?}", desired.ack_policy),
    );
    check(
        "ack_wait",
        format!("{:?}", actual.ack_wait),
        format!("{:?}", desired.ack_wait),
    );
    check(
        "max_ack_pending",
        limit(actual.max_ack_pending).to_string(),
        limit(desired.max_ack_pending).to_string(),
    );
    check(
        "max_deliver",
        limit(actual.max_deliver).to_string(),
        limit(desired.max_deliver).to_string(),
    );
    check(
        "description",
        format!("{:?}", actual.description),
        format!("{:?}", desired.description),
    );
    differences
}

fn base_stream(
    opts: &ProvisionOptions,
    name: String,
    subjects: Vec<String>,
    description: &str,
) -> stream::Config {
    stream::Config {
        name,
        description: Some(description.to_owned()),
        subjects,
        storage: StorageType::File,
        num_replicas: replicas(opts.replicas),
        duplicate_window: opts.duplicate_window,
        discard: DiscardPolicy::Old,
        ..Default::default()
    }
}

/// `EVENTS`, when Herald owns it.
pub fn events_stream(opts: &ProvisionOptions) -> stream::Config {
    stream::Config {
        retention: RetentionPolicy::Limits,
        max_age: opts.events_max_age,
        ..base_stream(
            opts,
            EVENTS_STREAM.to_owned(),
            vec![EVENTS_SUBJECTS.to_owned()],
            "Domain events published by the booking platform",
        )
    }
}

/// Work queues: a task is removed once acknowledged, so the streams hold only work in progress
/// and their size is the backlog.
fn deliveries_stream(opts: &ProvisionOptions) -> stream::Config {
    stream::Config {
        retention: RetentionPolicy::WorkQueue,
        ..base_stream(
            opts,
            DELIVERIES_STREAM.to_owned(),
            vec![DELIVERIES_SUBJECTS.to_owned()],
            "Herald delivery tasks waiting to be sent",
        )
    }
}

fn retry_stream(opts: &ProvisionOptions, tier: &RetryTier) -> stream::Config {
    stream::Config {
        retention: RetentionPolicy::WorkQueue,
        ..base_stream(
            opts,
            tier.stream_name(),
            vec![tier.subject()],
            &format!(
                "Herald delivery tasks waiting {} to be retried",
                tier.label()
            ),
        )
    }
}

/// Busy webhooks' lanes: a work queue too, where each task is removed once sent.
fn lanes_stream(opts: &ProvisionOptions) -> stream::Config {
    stream::Config {
        retention: RetentionPolicy::WorkQueue,
        ..base_stream(
            opts,
            LANES_STREAM.to_owned(),
            vec![LANES_SUBJECTS.to_owned()],
            "Herald delivery tasks of busy webhooks, waiting for their webhook's capacity",
        )
    }
}

fn outcomes_stream(opts: &ProvisionOptions) -> stream::Config {
    stream::Config {
        retention: RetentionPolicy::WorkQueue,
        max_age: opts.outcomes_max_age,
        max_bytes: opts.outcomes_max_bytes,
        // Stated, though it is the base's too: the oldest go, new outcomes are always stored.
        discard: DiscardPolicy::Old,
        ..base_stream(
            opts,
            OUTCOMES_STREAM.to_owned(),
            vec![OUTCOMES_SUBJECTS.to_owned()],
            "Herald delivery attempt outcomes for the delivery log",
        )
    }
}

fn dead_stream(opts: &ProvisionOptions) -> stream::Config {
    stream::Config {
        retention: RetentionPolicy::Limits,
        max_age: opts.dead_max_age,
        ..base_stream(
            opts,
            DEAD_STREAM.to_owned(),
            vec![DEAD_SUBJECTS.to_owned()],
            "Messages Herald could not process, with the reason in a header",
        )
    }
}

/// The KV bucket's backing stream, spelled out because `create_key_value` cannot talk to
/// nats-server 2.9 (async-nats expects account limits that 2.9 does not report). These are the
/// settings `create_key_value` would use for a bucket with a history of one.
pub fn webhooks_bucket_stream(replicas_wanted: usize) -> stream::Config {
    stream::Config {
        name: WEBHOOKS_BUCKET_STREAM.to_owned(),
        description: Some("Herald webhook specs by webhook id".to_owned()),
        subjects: vec![WEBHOOKS_BUCKET_SUBJECTS.to_owned()],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: DiscardPolicy::New,
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        num_replicas: replicas(replicas_wanted),
        // The server's default, stated so that comparing with what exists is exact.
        duplicate_window: Duration::from_secs(2 * 60),
        ..Default::default()
    }
}

fn base_consumer(
    name: &str,
    filter_subject: String,
    limits: ConsumerLimits,
    description: &str,
) -> pull::Config {
    pull::Config {
        durable_name: Some(name.to_owned()),
        description: Some(description.to_owned()),
        // One subject filter per consumer: nats-server 2.9 has no `filter_subjects`.
        filter_subject,
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        replay_policy: ReplayPolicy::Instant,
        ack_wait: limits.ack_wait,
        max_ack_pending: limits.max_ack_pending,
        max_deliver: limits.max_deliver,
        ..Default::default()
    }
}

/// The router's consumer of `EVENTS`.
pub fn router_consumer(opts: &ProvisionOptions) -> pull::Config {
    pull::Config {
        deliver_policy: opts.router_deliver_policy,
        ..base_consumer(
            ROUTER_CONSUMER,
            EVENTS_SUBJECTS.to_owned(),
            opts.router,
            "Herald router: fans events out to matching webhooks",
        )
    }
}

/// The sender's consumer of `HERALD_DELIVERIES`.
pub fn sender_consumer(opts: &ProvisionOptions) -> pull::Config {
    base_consumer(
        SENDER_CONSUMER,
        DELIVERIES_SUBJECTS.to_owned(),
        opts.sender,
        "Herald sender: signs and POSTs deliveries",
    )
}

/// The registry's consumer of `HERALD_OUTCOMES`.
pub fn outcomes_consumer(opts: &ProvisionOptions) -> pull::Config {
    base_consumer(
        OUTCOMES_CONSUMER,
        OUTCOMES_SUBJECTS.to_owned(),
        opts.outcomes,
        "Herald registry: writes outcomes to the delivery log",
    )
}

/// The consumer of one retry delay line.
pub fn retry_consumer(opts: &ProvisionOptions, tier: &RetryTier) -> pull::Config {
    base_consumer(
        &tier.consumer_name(),
        tier.subject(),
        opts.retry,
        &format!("Herald delay line: moves tasks back after {}", tier.label()),
    )
}

/// The consumer of one busy webhook's lane: it hands out at most the webhook's cap at a time,
/// across all replicas, and the server removes it once nobody has pulled for `limits.idle`.
pub fn lane_consumer_config(webhook: &WebhookId, limits: LaneLimits) -> pull::Config {
    pull::Config {
        inactive_threshold: limits.idle,
        ..base_consumer(
            &lane_consumer(webhook),
            lane_subject(webhook),
            ConsumerLimits::new(limits.ack_wait, limits.in_flight),
            "Herald lane: a busy webhook's tasks, its cap at a time",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_retry_tier_gets_its_own_stream_and_consumer() {
        let opts = ProvisionOptions::development();
        let tier = RetryTier::for_delay(Duration::from_secs(300));
        let stream = retry_stream(&opts, &tier);
        assert_eq!(stream.name, "HERALD_RETRY_5M");
        assert_eq!(stream.subjects, ["herald.retry.5m"]);
        assert_eq!(stream.retention, RetentionPolicy::WorkQueue);
        let consumer = retry_consumer(&opts, &tier);
        assert_eq!(consumer.durable_name.as_deref(), Some("herald-retry-5m"));
        assert_eq!(consumer.filter_subject, "herald.retry.5m");
    }

    #[test]
    fn outcomes_wait_for_the_registry_within_explicit_limits() {
        let outcomes = outcomes_stream(&ProvisionOptions::default());
        assert_eq!(outcomes.max_age, 7 * DAY);
        assert_eq!(outcomes.max_bytes, 1 << 30);
        assert_eq!(outcomes.discard, DiscardPolicy::Old);
        assert_eq!(outcomes.retention, RetentionPolicy::WorkQueue);
    }

    #[test]
    fn unlimited_is_the_same_however_it_is_spelled() {
        let desired = sender_consumer(&ProvisionOptions::default()).into_consumer_config();
        let mut actual = desired.clone();
        actual.max_deliver = 0;
        assert!(consumer_differences(&actual, &desired).is_empty());
        actual.ack_wait = Duration::from_secs(1);
        assert_eq!(
            consumer_differences(&actual, &desired),
            [("ack_wait", "1s".to_owned(), "60s".to_owned())]
        );
    }

    #[test]
    fn subject_order_does_not_matter() {
        let mut desired = dead_stream(&ProvisionOptions::default());
        desired.subjects = vec!["a".into(), "b".into()];
        let mut actual = desired.clone();
        actual.subjects = vec!["b".into(), "a".into()];
        actual.num_replicas = 0;
        actual.max_messages_per_subject = 0;
        desired.max_messages_per_subject = -1;
        assert!(stream_differences(&actual, &desired).is_empty());
    }
}
