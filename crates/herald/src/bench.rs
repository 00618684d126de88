//! `herald bench`: end-to-end delivery throughput and latency on this
//! machine, against a bare HTTP POST loop to the same receiver, in one run;
//! `--scenario isolation` measures instead what misbehaving endpoints cost
//! healthy ones ([`isolation`]), `--scenario tenants` what 100,000 webhooks
//! cost a worker ([`tenants`]).
//!
//! Herald's path is the real one: protobuf events published to a
//! file-backed EVENTS stream, the router's fan-out through
//! HERALD_DELIVERIES, signing, and an HTTP POST to a local receiver. The
//! registry is not on that path (workers read the KV bucket), so specs are
//! written to the bucket directly.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};
use futures::StreamExt as _;
use herald_core::{
    AccountId, Event, EventData, EventId, EventType, SigningSecret, WebhookId, WebhookUrl,
};
use herald_proto::webhooks::v1::{SigningKey, WebhookSpec};
use herald_worker::http::DeliveryClient;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

mod isolation;
mod minimal;
mod registry;
mod scaleout;
mod tenants;
mod tls;

/// Publishes `events` 256 at a time, as a busy platform would; a failed publish is logged
/// (the run then misses that delivery and says so when it waits for them).
async fn publish_concurrently(publisher: &herald_bus::Publisher, events: Vec<Event>) {
    futures::stream::iter(events)
        .for_each_concurrent(256, |event| async move {
            if let Err(error) = publisher.publish(&event).await {
                tracing::warn!(%error, "publish failed");
            }
        })
        .await;
}

/// Publishes `count` events made by `make` (given each one's number) at `rate` per second,
/// each publish waited for without holding up the next.
async fn publish_paced(
    publisher: &herald_bus::Publisher,
    rate: f64,
    count: u64,
    mut make: impl FnMut(u64) -> anyhow::Result<Event>,
) -> anyhow::Result<()> {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pending = futures::stream::FuturesUnordered::new();
    for n in 0..count {
        ticker.tick().await;
        let event = make(n)?;
        let publisher = publisher.clone();
        pending.push(async move { publisher.publish(&event).await });
        while let Some(Some(result)) = futures::FutureExt::now_or_never(pending.next()) {
            result.context("publish failed")?;
        }
    }
    while let Some(result) = pending.next().await {
        result.context("publish failed")?;
    }
    Ok(())
}

/// What `herald bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Deliveries/s and latency against a bare POST loop.
    Throughput,
    /// Healthy webhooks' throughput and p99 alone, then beside endpoints that time out,
    /// answer 500 or answer slowly with a backlog, and a healthy one with a backlog.
    #[value(alias = "fairness")]
    Isolation,
    /// Index load time, memory and match cost with 100,000 webhooks against 100.
    Tenants,
    /// Whether the delivery log keeps up with the deliveries (SQLite, and PostgreSQL with
    /// `--postgres`), and API read latency while it is written.
    Registry,
    /// One worker process, then two sharing the consumers: both rates, nothing lost.
    ScaleOut,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::Throughput)]
    pub scenario: Scenario,
    /// Events (= deliveries) per throughput run.
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,
    /// Rounds of the bare loop, the minimal pipeline and Herald, one after the other; the
    /// report gives each round and the medians.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Requests the bare POST loop keeps in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Events of the latency run, published at half the measured rate.
    #[arg(long, default_value_t = 5_000)]
    pub latency_events: u64,
    /// Webhooks (one per account) the events are spread over.
    #[arg(long, default_value_t = 64)]
    pub webhooks: usize,
    /// Webhooks of one account that every event of the fan-out phase matches (0: no fan-out
    /// phase); that phase delivers as many as the throughput run (`--events`).
    #[arg(long, default_value_t = 1000)]
    pub fan_out: usize,
    /// Print the report as JSON (for comparing runs) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Serve the throughput scenario's receiver over HTTPS, with a certificate issued by an
    /// authority of the run's own that every client of the run trusts.
    #[arg(long)]
    pub tls: bool,
    #[command(flatten)]
    pub isolation: isolation::IsolationArgs,
    #[command(flatten)]
    pub tenants: tenants::TenantArgs,
    #[command(flatten)]
    pub registry: registry::RegistryArgs,
    #[command(flatten)]
    pub scale_out: scaleout::ScaleOutArgs,
}

/// Counts deliveries and records, per event, the publish-to-receipt delay. Signed requests
/// (Herald's and the minimal pipeline's) are verified with the run's secret as a receiver
/// would, and counted once per `webhook-id`: what was not delivered, not signed right, or
/// delivered twice is reported.
#[derive(Default)]
struct Sink {
    received: AtomicU64,
    /// The count [`Sink::wait_for`] waits for (0: nobody waits); only receipts that reach it
    /// wake the waiter. Woken on every receipt instead, the waiting thread would cost Herald's
    /// runs a wake-up and a context switch per delivery that the minimal pipelines (which wait
    /// on their own tasks) do not pay.
    goal: AtomicU64,
    notify: Notify,
    latencies: std::sync::Mutex<Vec<Duration>>,
    epoch: std::sync::OnceLock<Instant>,
    secret: std::sync::OnceLock<SigningSecret>,
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
    duplicates: AtomicU64,
    invalid: AtomicU64,
}

async fn receive(
    State(sink): State<Arc<Sink>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> StatusCode {
    if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
        sink.check(id, &headers, &body);
    }
    // The body carries the send time as micros since the run's epoch.
    if let (Some(epoch), Ok(value)) = (
        sink.epoch.get(),
        serde_json::from_slice::<serde_json::Value>(&body),
    ) && let Some(sent) = value["data"]["sent_us"].as_u64()
    {
        let now = epoch.elapsed();
        if let Ok(mut latencies) = sink.latencies.lock() {
            latencies.push(now.saturating_sub(Duration::from_micros(sent)));
        }
    }
    let received = sink.received.fetch_add(1, Ordering::SeqCst) + 1;
    let goal = sink.goal.load(Ordering::SeqCst);
    if goal != 0 && received >= goal {
        sink.notify.notify_waiters();
    }
    StatusCode::NO_CONTENT
}

impl Sink {
    async fn wait_for(&self, count: u64, deadline: Duration) -> anyhow::Result<()> {
        let until = tokio::time::Instant::now() + deadline;
        // The goal is set before the count is read, and a receipt counts before it reads the
        // goal (both sequentially consistent): either this sees the receipt that reached
        // `count`, or that receipt sees the goal and wakes this.
        self.goal.store(count, Ordering::SeqCst);
        let waited = loop {
            let notified = self.notify.notified();
            if self.received.load(Ordering::SeqCst) >= count {
                break Ok(());
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                break Err(anyhow::anyhow!(
                    "only {} of {count} deliveries arrived within {deadline:?}",
                    self.received.load(Ordering::SeqCst)
                ));
            }
        };
        self.goal.store(0, Ordering::SeqCst);
        waited
    }

    fn reset(&self) {
        self.received.store(0, Ordering::Relaxed);
        self.duplicates.store(0, Ordering::Relaxed);
        self.invalid.store(0, Ordering::Relaxed);
        if let Ok(mut latencies) = self.latencies.lock() {
            latencies.clear();
        }
        if let Ok(mut seen) = self.seen.lock() {
            seen.clear();
        }
    }

    /// Verifies a signed request and notes its `webhook-id`.
    fn check(&self, id: &str, headers: &axum::http::HeaderMap, body: &[u8]) {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let verified = self.secret.get().is_some_and(|secret| {
            herald_core::verify(
                std::slice::from_ref(secret),
                id,
                header("webhook-timestamp").unwrap_or_default(),
                header("webhook-signature").unwrap_or_default(),
                body,
                chrono::Utc::now().timestamp(),
                herald_core::DEFAULT_TOLERANCE,
            )
            .is_ok()
        });
        if !verified {
            self.invalid.fetch_add(1, Ordering::Relaxed);
        }
        let first = self
            .seen
            .lock()
            .map(|mut seen| seen.insert(id.to_owned()))
            .unwrap_or(true);
        if !first {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What a run of `expected` deliveries left at the receiver.
    fn tally(&self, expected: u64) -> Tally {
        let unique = self.seen.lock().map(|seen| seen.len() as u64).unwrap_or(0);
        Tally {
            unique,
            lost: expected.saturating_sub(unique),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            invalid: self.invalid.load(Ordering::Relaxed),
        }
    }
}

/// One round of the throughput comparison, in deliveries (or requests) per second, and the
/// CPU each phase took per delivery.
#[derive(Debug, Clone, Copy)]
struct Round {
    bare: f64,
    minimal: f64,
    /// The minimal pipeline with the design's second stored hop.
    two_hop: f64,
    herald: f64,
    bare_cpu: CpuPerDelivery,
    minimal_cpu: CpuPerDelivery,
    two_hop_cpu: CpuPerDelivery,
    herald_cpu: CpuPerDelivery,
}

/// CPU time (user and system, all threads) per delivery, in microseconds: this process (the
/// publisher, the receiver and the pipeline measured) and the run's nats-server.
#[derive(Debug, Clone, Copy, Default)]
struct CpuPerDelivery {
    process_us: f64,
    nats_us: f64,
}

impl CpuPerDelivery {
    fn json(self) -> serde_json::Value {
        serde_json::json!({ "process_us": self.process_us, "nats_server_us": self.nats_us })
    }

    fn cell(self) -> String {
        format!("{:.0}+{:.0}", self.process_us, self.nats_us)
    }
}

/// Reads the CPU time this process and the run's nats-server have used, from `/proc` (Linux);
/// where it cannot, every figure is 0.
#[derive(Debug, Clone, Copy)]
struct CpuMeter {
    nats: Option<u32>,
}

impl CpuMeter {
    /// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on every Linux port in use).
    const TICKS_PER_S: f64 = 100.0;

    /// Seconds of CPU a `/proc/<pid>/stat` line reports for the whole process: user and
    /// system time, fields 14 and 15, counted after the command name, which may hold spaces
    /// and parentheses but ends at the last `)`.
    fn parse(stat: &str) -> Option<f64> {
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = |n: usize| fields.get(n)?.parse::<f64>().ok();
        Some((ticks(11)? + ticks(12)?) / Self::TICKS_PER_S)
    }

    fn seconds(pid: &str) -> f64 {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .as_deref()
            .and_then(Self::parse)
            .unwrap_or(0.0)
    }

    fn read(self) -> (f64, f64) {
        let nats = self.nats.map_or(0.0, |pid| Self::seconds(&pid.to_string()));
        (Self::seconds("self"), nats)
    }

    /// Starts measuring a phase.
    fn start(self) -> CpuPhase {
        CpuPhase {
            meter: self,
            at: self.read(),
        }
    }
}

/// The CPU counters at the start of a phase.
struct CpuPhase {
    meter: CpuMeter,
    at: (f64, f64),
}

impl CpuPhase {
    /// CPU per delivery since the phase started, for `deliveries`.
    fn per(&self, deliveries: u64) -> CpuPerDelivery {
        let (process, nats) = self.meter.read();
        let per = |used: f64| used * 1e6 / deliveries.max(1) as f64;
        CpuPerDelivery {
            process_us: per(process - self.at.0),
            nats_us: per(nats - self.at.1),
        }
    }
}

/// The rounds as a table, a line each.
fn round_table(rounds: &[Round], concurrency: usize) -> String {
    let mut table = format!(
        "{:<7}{:>16}{:>12}{:>12}{:>10}{:>13}{:>16}{:>16}   CPU µs per delivery, process+nats-server: bare, minimal, two-hop, herald\n",
        "round",
        format!("bare ({concurrency})/s"),
        "minimal/s",
        "two-hop/s",
        "herald/s",
        "herald/bare",
        "herald/minimal",
        "herald/two-hop"
    );
    for (n, r) in rounds.iter().enumerate() {
        table += &format!(
            "{:<7}{:>16.0}{:>12.0}{:>12.0}{:>10.0}{:>13.2}{:>16.2}{:>16.2}   {}, {}, {}, {}\n",
            n + 1,
            r.bare,
            r.minimal,
            r.two_hop,
            r.herald,
            r.herald / r.bare,
            r.herald / r.minimal,
            r.herald / r.two_hop,
            r.bare_cpu.cell(),
            r.minimal_cpu.cell(),
            r.two_hop_cpu.cell(),
            r.herald_cpu.cell(),
        );
    }
    table
}

/// The middle value (the mean of the two middle ones for an even count); 0 for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Deliveries received once each, missing, received again, and not verifying.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    unique: u64,
    lost: u64,
    duplicates: u64,
    invalid: u64,
}

impl std::ops::Add for Tally {
    type Output = Tally;

    /// Two runs' tallies together.
    fn add(self, other: Tally) -> Tally {
        Tally {
            unique: self.unique + other.unique,
            lost: self.lost + other.lost,
            duplicates: self.duplicates + other.duplicates,
            invalid: self.invalid + other.invalid,
        }
    }
}

impl Tally {
    fn json(self) -> serde_json::Value {
        serde_json::json!({
            "received": self.unique,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "invalid_signatures": self.invalid,
        })
    }

    fn line(self) -> String {
        format!(
            "{} received, {} lost, {} duplicates, {} invalid signatures",
            self.unique, self.lost, self.duplicates, self.invalid
        )
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A bench event for `account`, its data stamped with the send time.
fn event(account: &AccountId, event_type: &EventType, epoch: Instant) -> anyhow::Result<Event> {
    Ok(Event {
        id: EventId::generate(),
        event_type: event_type.clone(),
        account: account.clone(),
        timestamp: chrono::Utc::now(),
        data: EventData::parse(&body(epoch))?,
    })
}

fn body(epoch: Instant) -> String {
    format!(
        r#"{{"booking_id":"bk_00001","guest":"Ada Lovelace","nights":3,"total":{{"amount":36000,"currency":"EUR"}},"sent_us":{}}}"#,
        epoch.elapsed().as_micros()
    )
}

pub async fn run(args: BenchArgs) -> anyhow::Result<String> {
    if args.tls && args.scenario != Scenario::Throughput {
        anyhow::bail!("--tls applies to the throughput scenario only");
    }
    match args.scenario {
        Scenario::Throughput => throughput(args).await,
        Scenario::Isolation => isolation::run(&args.isolation, args.json).await,
        Scenario::Tenants => tenants::run(&args.tenants, args.json).await,
        Scenario::Registry => registry::run(&args.registry, args.webhooks, args.json).await,
        Scenario::ScaleOut => scaleout::run(&args.scale_out, args.webhooks, args.json).await,
    }
}

/// A nats-server of the run's own, on a free port with its store in a temporary folder,
/// stopped (and the folder removed) when dropped.
struct BenchNats {
    url: String,
    server: Option<crate::dev::LocalNats>,
    _data: tempfile::TempDir,
}

impl BenchNats {
    /// The server's process id when this run started it (not when it reused a running one).
    fn pid(&self) -> Option<u32> {
        self.server.as_ref().and_then(crate::dev::LocalNats::pid)
    }

    async fn start() -> anyhow::Result<BenchNats> {
        let data = tempfile::tempdir().context("cannot create a temporary folder")?;
        let port = free_port()?;
        let url = format!("nats://127.0.0.1:{port}");
        let server = crate::dev::ensure_nats(&url, data.path()).await?;
        Ok(BenchNats {
            url,
            server,
            _data: data,
        })
    }
}

async fn throughput(args: BenchArgs) -> anyhow::Result<String> {
    let tls = args.tls.then(tls::Tls::generate).transpose()?;
    let roots: Vec<_> = tls.iter().map(|tls| tls.root.clone()).collect();
    let stage = Stage::start_with(tls).await?;
    let (nats_url, stop, sink, receiver, secret, epoch) = (
        &stage.nats.url,
        &stage.stop,
        &stage.sink,
        &stage.receiver,
        &stage.secret,
        stage.epoch,
    );

    // Herald: one worker in this process, webhooks of their own accounts, file-backed streams.
    // It starts first and idles through the baselines (a pull request a second).
    let mut config = herald_worker::WorkerConfig::for_local(nats_url);
    config.address_policy.allow = vec!["127.0.0.0/8".parse().context("loopback CIDR")?];
    config.extra_roots.clone_from(&roots);
    // The baselines send with the worker's own delivery client and settings, so that the
    // ratios compare pipelines, not HTTP clients.
    let http = DeliveryClient::trusting(
        config.address_policy.clone(),
        config.request_timeout,
        &config.user_agent,
        roots,
    )?;
    let receiver_url = WebhookUrl::parse(receiver)?;
    let worker = herald_worker::Worker::start(config, stop.clone()).await?;
    let client = herald_bus::connect(nats_url, "herald-bench").await?;
    let js = async_nats::jetstream::new(client);
    let bucket = herald_bus::WebhookBucket::open(&js).await?;
    let spec = |account: &AccountId| webhook_spec(account, receiver, secret);
    let mut accounts = Vec::with_capacity(args.webhooks);
    for _ in 0..args.webhooks.max(1) {
        let account = AccountId::new();
        bucket.put(&spec(&account)).await?;
        accounts.push(account);
    }
    wait_for_index(&worker, accounts.len()).await?;
    let publisher = herald_bus::Publisher::new(js);
    let event_type = EventType::parse("booking.created")?;
    let sequence = AtomicU64::new(0);
    let make = |epoch: Instant| -> anyhow::Result<Event> {
        let n = sequence.fetch_add(1, Ordering::Relaxed) as usize;
        event(&accounts[n % accounts.len()], &event_type, epoch)
    };

    // The three pipelines one after the other, `rounds` times: the machine's speed drifts
    // between phases (other tenants of the host), so each round's ratios compare phases
    // seconds apart, and the report gives their medians.
    let meter = CpuMeter {
        nats: stage.nats.pid(),
    };
    let mut rounds = Vec::with_capacity(args.rounds);
    let mut minimal_tally = Tally::default();
    let mut two_hop_tally = Tally::default();
    let mut herald_tally = Tally::default();
    for round in 0..args.rounds.max(1) {
        // Baseline: the same receiver, a bare POST loop with `concurrency` in flight
        // (unsigned: the receiver checks only requests that carry a `webhook-id`).
        let started = Instant::now();
        let cpu = meter.start();
        futures::stream::iter(0..args.events)
            .for_each_concurrent(args.concurrency, |_| {
                let mut headers = HeaderMap::with_capacity(2);
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                headers.insert(USER_AGENT, http.user_agent().clone());
                let body = format!(
                    r#"{{"id":"evt_x","type":"booking.created","data":{}}}"#,
                    body(epoch)
                );
                let (http, receiver_url) = (&http, &receiver_url);
                async move {
                    let attempt = http.post(receiver_url, &headers, body.into()).await;
                    if let Err(error) = attempt.result {
                        tracing::warn!(%error, "baseline request failed");
                    }
                }
            })
            .await;
        sink.wait_for(args.events, Duration::from_secs(120)).await?;
        let bare = args.events as f64 / started.elapsed().as_secs_f64();
        let bare_cpu = cpu.per(args.events);
        sink.reset();

        // The minimal durable pipelines, one hop and two, signed with the run's secret like
        // Herald's deliveries.
        let floor = async |hops| {
            let account = AccountId::new();
            let bodies = (0..args.events)
                .map(|n| {
                    format!(
                        r#"{{"id":"evt_minimal_{round}_{n}","type":"booking.created","timestamp":"{}","account":"{account}","data":{}}}"#,
                        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        body(epoch)
                    )
                })
                .collect();
            let cpu = meter.start();
            let rate = minimal::run(
                nats_url,
                &http,
                &receiver_url,
                secret,
                bodies,
                args.concurrency,
                hops,
            )
            .await?;
            let cpu = cpu.per(args.events);
            let tally = sink.tally(args.events);
            sink.reset();
            anyhow::Ok((rate, cpu, tally))
        };
        let (minimal, minimal_cpu, tally) = floor(minimal::Hops::One).await?;
        minimal_tally = minimal_tally + tally;
        let two_hops = minimal::Hops::Two {
            webhooks: args.webhooks,
        };
        let (two_hop, two_hop_cpu, tally) = floor(two_hops).await?;
        two_hop_tally = two_hop_tally + tally;

        // Made before the clock starts, as the minimal pipelines' bodies are.
        let events = (0..args.events)
            .map(|_| make(epoch))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let started = Instant::now();
        let cpu = meter.start();
        publish_concurrently(&publisher, events).await;
        sink.wait_for(args.events, Duration::from_secs(300)).await?;
        let herald = args.events as f64 / started.elapsed().as_secs_f64();
        let herald_cpu = cpu.per(args.events);
        herald_tally = herald_tally + sink.tally(args.events);
        sink.reset();
        rounds.push(Round {
            bare,
            minimal,
            two_hop,
            herald,
            bare_cpu,
            minimal_cpu,
            two_hop_cpu,
            herald_cpu,
        });
    }
    let median_of = |figure: fn(&Round) -> f64| median(rounds.iter().map(figure).collect());
    let (baseline, minimal, two_hop, herald) = (
        median_of(|r| r.bare),
        median_of(|r| r.minimal),
        median_of(|r| r.two_hop),
        median_of(|r| r.herald),
    );
    let (vs_bare, vs_minimal, vs_two_hop) = (
        median_of(|r| r.herald / r.bare),
        median_of(|r| r.herald / r.minimal),
        median_of(|r| r.herald / r.two_hop),
    );
    // The design's floor against the bounds: what Herald would make if its own work cost
    // nothing beyond the two stored hops.
    let (floor_vs_bare, floor_vs_minimal) = (
        median_of(|r| r.two_hop / r.bare),
        median_of(|r| r.two_hop / r.minimal),
    );

    // Latency at half the rate Herald just sustained.
    let rate = (herald / 2.0).max(1.0);
    publish_paced(&publisher, rate, args.latency_events, |_| make(epoch)).await?;
    sink.wait_for(args.latency_events, Duration::from_secs(120))
        .await?;
    let latency_tally = sink.tally(args.latency_events);
    let mut latencies = sink.latencies.lock().map(|l| l.clone()).unwrap_or_default();
    latencies.sort();
    sink.reset();

    // Fan-out: one account whose `fan_out` webhooks every event matches, as many deliveries
    // as the throughput run.
    let fan_out = if args.fan_out > 0 {
        let account = AccountId::new();
        for _ in 0..args.fan_out {
            bucket.put(&spec(&account)).await?;
        }
        wait_for_index(&worker, accounts.len() + args.fan_out).await?;
        let deliveries = (args.events / args.fan_out as u64).max(1) * args.fan_out as u64;
        let events = (0..deliveries / args.fan_out as u64)
            .map(|_| event(&account, &event_type, epoch))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let started = Instant::now();
        publish_concurrently(&publisher, events).await;
        sink.wait_for(deliveries, Duration::from_secs(300)).await?;
        let rate = deliveries as f64 / started.elapsed().as_secs_f64();
        Some((rate, sink.tally(deliveries)))
    } else {
        None
    };
    let counters = worker.counters();
    stop.cancel();
    worker.wait().await?;

    let ms = |p: f64| percentile(&latencies, p).as_secs_f64() * 1e3;
    let max = latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3;
    if args.json {
        return Ok(serde_json::json!({
            "scenario": "throughput",
            "tls": args.tls,
            "events": args.events,
            "webhooks": accounts.len(),
            "bare_post_per_s": baseline,
            "minimal_pipeline_per_s": minimal,
            "two_hop_pipeline_per_s": two_hop,
            "herald_per_s": herald,
            "herald_vs_bare_post": vs_bare,
            "herald_vs_minimal_pipeline": vs_minimal,
            "herald_vs_two_hop_pipeline": vs_two_hop,
            "two_hop_vs_bare_post": floor_vs_bare,
            "two_hop_vs_minimal_pipeline": floor_vs_minimal,
            "rounds": rounds.iter().map(|r| serde_json::json!({
                "bare_post_per_s": r.bare,
                "minimal_pipeline_per_s": r.minimal,
                "two_hop_pipeline_per_s": r.two_hop,
                "herald_per_s": r.herald,
                "herald_vs_bare_post": r.herald / r.bare,
                "herald_vs_minimal_pipeline": r.herald / r.minimal,
                "herald_vs_two_hop_pipeline": r.herald / r.two_hop,
                "two_hop_vs_bare_post": r.two_hop / r.bare,
                "two_hop_vs_minimal_pipeline": r.two_hop / r.minimal,
                "cpu_per_delivery": {
                    "bare_post": r.bare_cpu.json(),
                    "minimal_pipeline": r.minimal_cpu.json(),
                    "two_hop_pipeline": r.two_hop_cpu.json(),
                    "herald": r.herald_cpu.json(),
                },
            })).collect::<Vec<_>>(),
            "latency": {
                "rate_per_s": rate,
                "events": args.latency_events,
                "p50_ms": ms(0.50), "p90_ms": ms(0.90), "p99_ms": ms(0.99), "max_ms": max,
            },
            "fan_out": fan_out.map(|(rate, tally)| serde_json::json!({
                "webhooks": args.fan_out,
                "deliveries_per_s": rate,
                "vs_steady": rate / herald,
                "correctness": tally.json(),
            })),
            "correctness": {
                "minimal_pipeline": minimal_tally.json(),
                "two_hop_pipeline": two_hop_tally.json(),
                "herald": herald_tally.json(),
                "herald_latency_run": latency_tally.json(),
            },
        })
        .to_string());
    }
    Ok(format!(
        "herald bench: {events} deliveries over {webhooks} webhooks, file-backed JetStream, receiver on loopback{over}, {rounds} rounds\n\
         {table}\
         {bare_label:<32}{baseline:>9.0} requests/s (median)\n\
         {minimal_label:<32}{minimal:>9.0} deliveries/s (median; {minimal_tally})\n\
         {two_hop_label:<32}{two_hop:>9.0} deliveries/s (median; {two_hop_tally})\n\
         {herald_label:<32}{herald:>9.0} deliveries/s (median; {herald_tally})\n\
         herald / bare POST loop: {vs_bare:.2}    herald / minimal pipeline: {vs_minimal:.2}    herald / two-hop pipeline: {vs_two_hop:.2}    (medians of the rounds' ratios)\n\
         the design's floor, two-hop / bare POST loop: {floor_vs_bare:.2}    two-hop / minimal pipeline: {floor_vs_minimal:.2}    (Herald's ceiling under two stored hops)\n\
         latency at {rate:.0}/s (half of that), {n} events: p50 {p50:.1} ms, p90 {p90:.1} ms, p99 {p99:.1} ms, max {max:.1} ms ({latency_tally})\n\
         {fan_out}\n\
         worker counters: delivered {delivered}, failed {failed}, dead {dead}, laned {laned}, lanes {lanes}, nacked {nacked}",
        events = args.events,
        webhooks = accounts.len(),
        over = if args.tls { " over HTTPS" } else { "" },
        bare_label = format!("bare POST loop ({} in flight):", args.concurrency),
        minimal_label = "minimal durable pipeline:",
        two_hop_label = "two-hop durable pipeline:",
        herald_label = "herald end to end:",
        minimal_tally = minimal_tally.line(),
        two_hop_tally = two_hop_tally.line(),
        herald_tally = herald_tally.line(),
        latency_tally = latency_tally.line(),
        rounds = rounds.len(),
        table = round_table(&rounds, args.concurrency),
        n = args.latency_events,
        p50 = ms(0.50),
        p90 = ms(0.90),
        p99 = ms(0.99),
        fan_out = fan_out.map_or_else(
            || "fan-out: not run (--fan-out 0)".to_owned(),
            |(rate, tally)| format!(
                "fan-out, each event to {} webhooks of one account: {rate:.0} deliveries/s, {:.2}× the steady run ({})",
                args.fan_out,
                rate / herald,
                tally.line()
            )
        ),
        delivered = counters.delivered,
        failed = counters.failed,
        dead = counters.dead,
        laned = counters.laned,
        lanes = counters.lanes_opened,
        nacked = counters.nacked,
    ))
}

/// What a scenario delivers into: its own nats-server, a verifying receiver and the secret
/// its webhooks sign with. Everything stops when dropped.
struct Stage {
    nats: BenchNats,
    stop: CancellationToken,
    _stop_on_drop: tokio_util::sync::DropGuard,
    sink: Arc<Sink>,
    receiver: String,
    secret: SigningSecret,
    epoch: Instant,
}

impl Stage {
    async fn start() -> anyhow::Result<Stage> {
        Self::start_with(None).await
    }

    /// A stage whose receiver serves HTTPS with `tls`, when given.
    async fn start_with(tls: Option<tls::Tls>) -> anyhow::Result<Stage> {
        let nats = BenchNats::start().await?;
        let stop = CancellationToken::new();
        let sink = Arc::new(Sink::default());
        let receiver = match tls {
            None => serve_sink(sink.clone(), stop.clone()).await?,
            Some(tls) => serve_sink_over_tls(sink.clone(), stop.clone(), tls).await?,
        };
        let secret = SigningSecret::generate();
        let epoch = Instant::now();
        let _ = sink.epoch.set(epoch);
        let _ = sink.secret.set(secret.clone());
        Ok(Stage {
            nats,
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
            sink,
            receiver,
            secret,
            epoch,
        })
    }
}

/// Serves `sink` on a loopback port until `stop`; its URL.
async fn serve_sink(sink: Arc<Sink>, stop: CancellationToken) -> anyhow::Result<String> {
    Ok(format!("{}/hook", serve(sink_app(sink), stop).await?))
}

/// Serves `sink` over HTTPS with `tls` on a loopback port until `stop`; its URL.
async fn serve_sink_over_tls(
    sink: Arc<Sink>,
    stop: CancellationToken,
    tls: tls::Tls,
) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(tls.listener(listener), sink_app(sink))
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    Ok(url)
}

/// The receiver: `/hook` counts into `sink`.
fn sink_app(sink: Arc<Sink>) -> axum::Router {
    axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(sink)
}

/// Serves `app` on a loopback port until `stop`; its base URL.
async fn serve(app: axum::Router, stop: CancellationToken) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    Ok(base)
}

/// A `herald` command of this binary, run as a process of its own (as the services run in
/// production), stopped when dropped.
struct Herald {
    child: tokio::process::Child,
    name: String,
}

impl Herald {
    fn start(args: &[&str], env: &[(&str, String)]) -> anyhow::Result<Herald> {
        let name = format!("herald {}", args.join(" "));
        let child = tokio::process::Command::new(
            std::env::current_exe().context("cannot find the herald binary")?,
        )
        .args(args)
        .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
        Ok(Herald { child, name })
    }

    /// Waits until `url` (its /readyz) answers 2xx.
    async fn ready(&mut self, http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
        let waiting = Instant::now();
        loop {
            let answer = http.get(url).send().await;
            if answer.is_ok_and(|response| response.status().is_success()) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("{} exited: {status}", self.name);
            }
            anyhow::ensure!(
                waiting.elapsed() < Duration::from_secs(30),
                "{} is not ready after 30 s",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks the process to stop (SIGTERM) and waits for it, killing it after a while.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// A bench webhook of `account`: every event, to `url`, signed with `secret`.
fn webhook_spec(account: &AccountId, url: &str, secret: &SigningSecret) -> WebhookSpec {
    WebhookSpec {
        id: WebhookId::new().to_string(),
        account_id: account.to_string(),
        name: "bench".into(),
        enabled: true,
        event_patterns: vec![],
        url: url.to_owned(),
        signing_keys: vec![SigningKey {
            secret: secret.expose_whsec(),
            expires_at: None,
        }],
        version: 1,
        updated_at: None,
    }
}

/// A free port on loopback.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until `worker`'s index holds `webhooks` webhooks.
async fn wait_for_index(worker: &herald_worker::Worker, webhooks: usize) -> anyhow::Result<()> {
    let waiting = Instant::now();
    while worker.index().len() < webhooks {
        anyhow::ensure!(
            waiting.elapsed() < Duration::from_secs(30),
            "the worker holds {} of {webhooks} webhooks after 30 s",
            worker.index().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_value_or_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn cpu_time_is_read_after_the_last_parenthesis_of_the_command_name() {
        // pid, (comm), state, ppid … utime (14) = 250 ticks, stime (15) = 50 ticks.
        let stat = "4242 (tokio (rt) worker) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 50 0 0 20 0 8 0 100 0 0";
        assert_eq!(CpuMeter::parse(stat), Some(3.0));
        assert_eq!(CpuMeter::parse("4242 (cut short) S 1"), None);
        assert_eq!(CpuMeter::parse("no command name"), None);
    }

    async fn receipt(sink: &Arc<Sink>) {
        receive(
            State(Arc::clone(sink)),
            axum::http::HeaderMap::new(),
            Bytes::new(),
        )
        .await;
    }

    #[tokio::test]
    async fn the_https_receiver_takes_requests_from_clients_that_trust_the_runs_authority() {
        let tls = tls::Tls::generate().unwrap();
        let root = tls.root.clone();
        let sink = Arc::new(Sink::default());
        let stop = CancellationToken::new();
        let _stop = stop.clone().drop_guard();
        let url = serve_sink_over_tls(sink.clone(), stop, tls).await.unwrap();
        let url = WebhookUrl::parse(&url).unwrap();
        let loopback =
            || herald_core::AddressPolicy::allowing(vec!["127.0.0.0/8".parse().unwrap()]);

        let trusting =
            DeliveryClient::trusting(loopback(), Duration::from_secs(5), "t", vec![root]).unwrap();
        let sent = trusting
            .post(&url, &HeaderMap::new(), Bytes::from_static(b"{}"))
            .await;
        assert_eq!(sent.result.map(|response| response.status), Ok(204));

        // The platform's authorities alone do not vouch for the run's certificate.
        let stranger = DeliveryClient::new(loopback(), Duration::from_secs(5), "t").unwrap();
        let refused = stranger
            .post(&url, &HeaderMap::new(), Bytes::from_static(b"{}"))
            .await;
        assert!(refused.result.is_err(), "{refused:?}");
        assert_eq!(sink.received.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn only_the_receipt_that_reaches_the_goal_wakes_the_waiter() {
        use futures::FutureExt as _;

        let sink = Arc::new(Sink::default());
        sink.goal.store(3, Ordering::SeqCst);
        let woken = sink.notify.notified();
        tokio::pin!(woken);
        for _ in 0..2 {
            receipt(&sink).await;
        }
        assert!(
            woken.as_mut().now_or_never().is_none(),
            "receipts short of the goal wake nobody"
        );
        receipt(&sink).await;
        assert!(
            woken.now_or_never().is_some(),
            "the third receipt wakes the waiter"
        );
    }

    #[tokio::test]
    async fn the_wait_ends_with_the_receipt_that_reaches_its_count() {
        let sink = Arc::new(Sink::default());
        receipt(&sink).await;
        let receipts = tokio::spawn({
            let sink = Arc::clone(&sink);
            async move {
                for _ in 0..2 {
                    receipt(&sink).await;
                }
            }
        });
        sink.wait_for(3, Duration::from_secs(10)).await.unwrap();
        receipts.await.unwrap();
        assert_eq!(sink.received.load(Ordering::SeqCst), 3);
        assert_eq!(sink.goal.load(Ordering::SeqCst), 0, "nobody waits any more");
    }

    #[tokio::test]
    async fn a_wait_that_runs_out_says_how_many_arrived() {
        let sink = Arc::new(Sink::default());
        receipt(&sink).await;
        let err = sink
            .wait_for(2, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("only 1 of 2 deliveries arrived"),
            "{err}"
        );
        assert_eq!(sink.goal.load(Ordering::SeqCst), 0, "nobody waits any more");
    }
}
