//! `herald bench --scenario fairness`: what slow endpoints with a backlog cost healthy ones.
//!
//! Healthy webhooks get a steady load twice in one run: first alone, then right after a burst
//! of events for slow webhooks whose endpoints answer 200, but only after a while (so their
//! circuit breakers never open). The report compares the healthy webhooks' throughput and
//! p99 publish-to-receipt latency between the two phases; the target is at least 0.9 of the
//! throughput and a p99 within 2× of the all-healthy phase.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use futures::StreamExt as _;
use herald_core::{AccountId, EventType, SigningSecret};
use herald_proto::webhooks::v1::WebhookSpec;
use tokio_util::sync::CancellationToken;

use super::{event, percentile};

/// How long a phase waits for the healthy deliveries it published, after publishing the last.
const DRAIN: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct FairnessArgs {
    /// Healthy webhooks (one account each) sharing the steady load.
    #[arg(long, default_value_t = 8)]
    pub healthy_webhooks: usize,
    /// Healthy events per second, spread over the healthy webhooks.
    #[arg(long, default_value_t = 150)]
    pub rate: u64,
    /// How long each phase offers the healthy load.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    pub duration: Duration,
    /// Slow webhooks (one account each).
    #[arg(long, default_value_t = 2)]
    pub slow_webhooks: usize,
    /// How long the slow endpoints take to answer 200.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub slow_answer: Duration,
    /// Events published for the slow webhooks in one burst before the second phase.
    #[arg(long, default_value_t = 10_000)]
    pub backlog: u64,
}

/// What the receiver saw.
struct Receipts {
    epoch: Instant,
    slow_answer: Duration,
    /// Healthy deliveries: publish-to-receipt latency and arrival time.
    healthy: Mutex<Vec<(Duration, Instant)>>,
    slow: AtomicU64,
}

impl Receipts {
    fn healthy(&self) -> Vec<(Duration, Instant)> {
        self.healthy.lock().map(|h| h.clone()).unwrap_or_default()
    }

    fn reset(&self) {
        if let Ok(mut healthy) = self.healthy.lock() {
            healthy.clear();
        }
    }
}

async fn healthy(State(receipts): State<Arc<Receipts>>, body: Bytes) -> StatusCode {
    let now = Instant::now();
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body)
        && let Some(sent) = value["data"]["sent_us"].as_u64()
    {
        let latency = now
            .duration_since(receipts.epoch)
            .saturating_sub(Duration::from_micros(sent));
        if let Ok(mut healthy) = receipts.healthy.lock() {
            healthy.push((latency, now));
        }
    }
    StatusCode::NO_CONTENT
}

async fn slow(State(receipts): State<Arc<Receipts>>) -> StatusCode {
    tokio::time::sleep(receipts.slow_answer).await;
    receipts.slow.fetch_add(1, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

/// One phase's healthy deliveries.
struct Phase {
    offered: u64,
    received: usize,
    /// Deliveries per second from the first publish to the last receipt (or the deadline).
    throughput: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Phase {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "offered": self.offered,
            "received": self.received,
            "lost": (self.offered as usize).saturating_sub(self.received),
            "deliveries_per_s": self.throughput,
            "p50_ms": self.p50.as_secs_f64() * 1e3,
            "p99_ms": self.p99.as_secs_f64() * 1e3,
            "max_ms": self.max.as_secs_f64() * 1e3,
        })
    }

    fn line(&self, label: &str) -> String {
        format!(
            "{label:<26} {throughput:>9.1} {p50:>9.1} {p99:>9.1} {max:>9.1} {received:>6}/{offered}",
            throughput = self.throughput,
            p50 = self.p50.as_secs_f64() * 1e3,
            p99 = self.p99.as_secs_f64() * 1e3,
            max = self.max.as_secs_f64() * 1e3,
            received = self.received,
            offered = self.offered,
        )
    }
}

fn spec(account: &AccountId, url: &str) -> WebhookSpec {
    super::webhook_spec(account, url, &SigningSecret::generate())
}

/// Offers the healthy load for `args.duration`, then waits for it to arrive.
async fn phase(
    publisher: &herald_bus::Publisher,
    accounts: &[AccountId],
    args: &FairnessArgs,
    receipts: &Receipts,
) -> anyhow::Result<Phase> {
    receipts.reset();
    let event_type = EventType::parse("booking.created")?;
    let offered = (args.rate as f64 * args.duration.as_secs_f64()).round() as u64;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(1) as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pending = futures::stream::FuturesUnordered::new();
    let started = Instant::now();
    for n in 0..offered {
        ticker.tick().await;
        let account = &accounts[n as usize % accounts.len()];
        let event = event(account, &event_type, receipts.epoch)?;
        let publisher = publisher.clone();
        pending.push(async move { publisher.publish(&event).await });
        while let Some(Some(result)) = futures::FutureExt::now_or_never(pending.next()) {
            result.context("publish failed")?;
        }
    }
    while let Some(result) = pending.next().await {
        result.context("publish failed")?;
    }
    let deadline = Instant::now() + DRAIN;
    while receipts.healthy().len() < offered as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = receipts.healthy();
    let all_arrived = seen.len() >= offered as usize;
    let end = if all_arrived {
        seen.iter().map(|(_, at)| *at).max().unwrap_or(started)
    } else {
        deadline
    };
    let mut latencies: Vec<Duration> = seen.iter().map(|(latency, _)| *latency).collect();
    // What never arrived counts as having waited at least until the deadline.
    let missing = (offered as usize).saturating_sub(latencies.len());
    latencies.extend(std::iter::repeat_n(deadline - started, missing));
    latencies.sort();
    Ok(Phase {
        offered,
        received: seen.len(),
        throughput: seen.len() as f64 / end.duration_since(started).as_secs_f64().max(1e-3),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or_default(),
    })
}

pub async fn run(args: &FairnessArgs, json: bool) -> anyhow::Result<String> {
    anyhow::ensure!(
        args.healthy_webhooks > 0 && args.rate > 0,
        "the fairness scenario needs healthy webhooks and a rate"
    );
    let nats = super::BenchNats::start().await?;
    let nats_url = nats.url.clone();

    let epoch = Instant::now();
    let receipts = Arc::new(Receipts {
        epoch,
        slow_answer: args.slow_answer,
        healthy: Mutex::new(Vec::new()),
        slow: AtomicU64::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/healthy", axum::routing::post(healthy))
        .route("/slow", axum::routing::post(slow))
        .with_state(receipts.clone());
    let stop = CancellationToken::new();
    let serving = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(serving.cancelled_owned())
            .await;
    });

    let config = herald_worker::WorkerConfig::for_local(&nats_url);
    let (concurrency, cap) = (config.concurrency, config.per_webhook_in_flight);
    let worker = herald_worker::Worker::start(config, stop.clone()).await?;
    let client = herald_bus::connect(&nats_url, "herald-bench").await?;
    let js = async_nats::jetstream::new(client);
    let bucket = herald_bus::WebhookBucket::open(&js).await?;
    let healthy_accounts: Vec<AccountId> = (0..args.healthy_webhooks)
        .map(|_| AccountId::new())
        .collect();
    let slow_accounts: Vec<AccountId> = (0..args.slow_webhooks).map(|_| AccountId::new()).collect();
    for account in &healthy_accounts {
        bucket
            .put(&spec(account, &format!("{base}/healthy")))
            .await?;
    }
    for account in &slow_accounts {
        bucket.put(&spec(account, &format!("{base}/slow"))).await?;
    }
    let webhooks = healthy_accounts.len() + slow_accounts.len();
    let wait_index = Instant::now();
    while worker.index().len() < webhooks {
        anyhow::ensure!(
            wait_index.elapsed() < Duration::from_secs(10),
            "the worker never saw the webhooks"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let publisher = herald_bus::Publisher::new(js);

    let alone = phase(&publisher, &healthy_accounts, args, &receipts).await?;

    let mut slow_published = 0u64;
    let burst_started = Instant::now();
    if !slow_accounts.is_empty() {
        let event_type = EventType::parse("booking.created")?;
        let burst = (0..args.backlog)
            .map(|n| {
                event(
                    &slow_accounts[n as usize % slow_accounts.len()],
                    &event_type,
                    epoch,
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        super::publish_concurrently(&publisher, burst).await;
        slow_published = args.backlog;
    }
    let burst_published = burst_started.elapsed();
    // The second phase measures the healthy webhooks beside the backlog, once the burst is
    // routed into tasks: every event waits for the ones published before it to be routed,
    // which is the router's throughput, not fairness.
    let routed = alone.offered + slow_published;
    let routing_deadline = Instant::now() + DRAIN;
    while worker.counters().events_routed < routed {
        anyhow::ensure!(
            Instant::now() < routing_deadline,
            "the burst was not routed within {DRAIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let burst_routed = burst_started.elapsed();
    let slow_before = receipts.slow.load(Ordering::Relaxed);
    let beside_slow = phase(&publisher, &healthy_accounts, args, &receipts).await?;
    let slow_during = receipts.slow.load(Ordering::Relaxed) - slow_before;
    let counters = worker.counters();
    stop.cancel();
    worker.wait().await?;

    let throughput_ratio = beside_slow.throughput / alone.throughput.max(1e-9);
    let p99_ratio = beside_slow.p99.as_secs_f64() / alone.p99.as_secs_f64().max(1e-9);
    let verdict = if throughput_ratio >= 0.9 && p99_ratio <= 2.0 {
        "met"
    } else {
        "NOT met"
    };
    if json {
        return Ok(serde_json::json!({
            "scenario": "fairness",
            "healthy_alone": alone.json(),
            "healthy_beside_slow_backlog": beside_slow.json(),
            "throughput_ratio": throughput_ratio,
            "p99_ratio": p99_ratio,
            "target_met": verdict == "met",
            "slow_backlog": slow_published,
            "slow_delivered_during_second_phase": slow_during,
        })
        .to_string());
    }
    Ok(format!(
        "herald bench fairness: {healthy} healthy webhooks at {rate} events/s for {duration}; \
         {slow} slow webhooks answering after {answer} with a burst of {slow_published} events \
         (worker: {concurrency} requests in flight, {cap} per webhook)\n\
         the burst was published in {published:.1} s and routed in {routed:.1} s; the second \
         phase starts then\n\
         {header:<26} {h1:>9} {h2:>9} {h3:>9} {h4:>9} {h5:>6}\n\
         {alone}\n\
         {beside}\n\
         healthy throughput {throughput_ratio:.2}× and p99 {p99_ratio:.2}× of the all-healthy run \
         (target: ≥ 0.90× and ≤ 2×): {verdict}\n\
         slow deliveries during the second phase: {slow_during}; worker counters: delivered \
         {delivered}, moved to a lane {laned}, nacked {nacked}",
        healthy = args.healthy_webhooks,
        rate = args.rate,
        duration = humantime::format_duration(args.duration),
        slow = args.slow_webhooks,
        answer = humantime::format_duration(args.slow_answer),
        header = "healthy webhooks",
        h1 = "deliv/s",
        h2 = "p50 ms",
        h3 = "p99 ms",
        h4 = "max ms",
        h5 = "arrived",
        published = burst_published.as_secs_f64(),
        routed = burst_routed.as_secs_f64(),
        alone = alone.line("alone"),
        beside = beside_slow.line("beside the slow backlog"),
        delivered = counters.delivered,
        laned = counters.laned,
        nacked = counters.nacked,
    ))
}
