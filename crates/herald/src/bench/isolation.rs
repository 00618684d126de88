//! `herald bench --scenario isolation`: what misbehaving endpoints cost healthy ones.
//!
//! Healthy webhooks get a steady load twice in one run: first alone, then beside webhooks that
//! misbehave while getting their share of the same load: one in ten of all endpoints never
//! answers (each attempt ends at the worker's request timeout), one in ten answers 500, slow
//! ones answer 200 only after a while and have a burst of events queued, and one healthy
//! endpoint has a backlog ten times its in-flight cap. The report compares the healthy
//! webhooks' throughput and p99 publish-to-receipt latency between the two phases; the target
//! is at least 0.9 of the throughput and a p99 within 2× of the all-healthy phase.
//!
//! The healthy endpoints (the measured ones and the backlogged one) are verifying receivers:
//! every delivery's signature is checked, and lost and duplicate deliveries are counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use herald_core::{AccountId, EventType};
use tokio_util::sync::CancellationToken;

use super::{Sink, Stage, Tally, event, percentile};

/// How long a phase waits for the healthy deliveries it published, after publishing the last.
const DRAIN: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct IsolationArgs {
    /// Healthy webhooks (one account each) whose deliveries are measured.
    #[arg(long, default_value_t = 16)]
    pub healthy_webhooks: usize,
    /// Healthy events per second, spread over the healthy webhooks; the misbehaving ones get
    /// as many each as a healthy one.
    #[arg(long, default_value_t = 160)]
    pub rate: u64,
    /// How long each phase offers the load.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    pub duration: Duration,
    /// Webhooks whose endpoint never answers (one account each).
    #[arg(long, default_value_t = 2)]
    pub timing_out_webhooks: usize,
    /// Webhooks whose endpoint answers 500 (one account each).
    #[arg(long, default_value_t = 2)]
    pub failing_webhooks: usize,
    /// Slow webhooks (one account each), with a burst of events queued before the second
    /// phase.
    #[arg(long, default_value_t = 2)]
    pub slow_webhooks: usize,
    /// How long the slow endpoints take to answer 200.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub slow_answer: Duration,
    /// Events published for the slow webhooks in one burst before the second phase.
    #[arg(long, default_value_t = 10_000)]
    pub backlog: u64,
    /// The healthy backlogged webhook's burst, in multiples of the per-webhook in-flight cap
    /// (0: no backlogged webhook).
    #[arg(long, default_value_t = 10)]
    pub backlog_factor: usize,
}

/// What the misbehaving endpoints saw.
struct Misbehaving {
    slow_answer: Duration,
    stop: CancellationToken,
    timed_out: AtomicU64,
    failed: AtomicU64,
    slow: AtomicU64,
}

/// Never answers: the worker's request timeout ends each attempt.
async fn timing_out(State(seen): State<Arc<Misbehaving>>) -> StatusCode {
    seen.timed_out.fetch_add(1, Ordering::Relaxed);
    seen.stop.cancelled().await;
    StatusCode::SERVICE_UNAVAILABLE
}

async fn failing(State(seen): State<Arc<Misbehaving>>) -> StatusCode {
    seen.failed.fetch_add(1, Ordering::Relaxed);
    StatusCode::INTERNAL_SERVER_ERROR
}

async fn slow(State(seen): State<Arc<Misbehaving>>) -> StatusCode {
    tokio::time::sleep(seen.slow_answer).await;
    seen.slow.fetch_add(1, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

/// Serves the misbehaving endpoints on a loopback port until `seen.stop`; their base URL.
async fn serve_misbehaving(seen: Arc<Misbehaving>) -> anyhow::Result<String> {
    let stop = seen.stop.clone();
    let app = axum::Router::new()
        .route("/timeout", axum::routing::post(timing_out))
        .route("/error", axum::routing::post(failing))
        .route("/slow", axum::routing::post(slow))
        .with_state(seen);
    super::serve(app, stop).await
}

/// One phase's healthy deliveries.
struct Phase {
    /// Events published in all, the misbehaving webhooks' included.
    published: u64,
    /// Healthy deliveries published.
    offered: u64,
    tally: Tally,
    /// Deliveries per second from the first publish to the last receipt (or the deadline).
    throughput: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Phase {
    fn json(&self) -> serde_json::Value {
        let mut json = self.tally.json();
        json["offered"] = self.offered.into();
        json["published_in_all"] = self.published.into();
        json["deliveries_per_s"] = self.throughput.into();
        json["p50_ms"] = (self.p50.as_secs_f64() * 1e3).into();
        json["p99_ms"] = (self.p99.as_secs_f64() * 1e3).into();
        json["max_ms"] = (self.max.as_secs_f64() * 1e3).into();
        json
    }

    fn line(&self, label: &str) -> String {
        format!(
            "{label:<30} {throughput:>9.1} {p50:>9.1} {p99:>9.1} {max:>9.1} {received:>6}/{offered}",
            throughput = self.throughput,
            p50 = self.p50.as_secs_f64() * 1e3,
            p99 = self.p99.as_secs_f64() * 1e3,
            max = self.max.as_secs_f64() * 1e3,
            received = self.tally.unique,
            offered = self.offered,
        )
    }
}

/// Offers `args.rate` healthy events per second for `args.duration`, and as many per webhook
/// to `others`, then waits for the healthy deliveries to arrive at `sink`.
async fn phase(
    publisher: &herald_bus::Publisher,
    healthy: &[AccountId],
    others: &[AccountId],
    args: &IsolationArgs,
    sink: &Sink,
    epoch: Instant,
) -> anyhow::Result<Phase> {
    sink.reset();
    let event_type = EventType::parse("booking.created")?;
    let accounts: Vec<&AccountId> = healthy.iter().chain(others).collect();
    let healthy_offered = (args.rate as f64 * args.duration.as_secs_f64()).round() as u64;
    let published = healthy_offered * accounts.len() as u64 / healthy.len() as u64;
    let rate = args.rate as f64 * accounts.len() as f64 / healthy.len() as f64;
    // Every `accounts.len()` events, the first `healthy.len()` are the healthy webhooks'.
    let slot = |n: u64| n as usize % accounts.len();
    let offered = (0..published).filter(|&n| slot(n) < healthy.len()).count() as u64;
    let started = Instant::now();
    super::publish_paced(publisher, rate, published, |n| {
        event(accounts[slot(n)], &event_type, epoch)
    })
    .await?;
    // Requests, duplicates included; what matters is every delivery once (the tally).
    let _ = sink.wait_for(offered, DRAIN).await;
    let end = Instant::now();
    let tally = sink.tally(offered);
    let mut latencies = sink.latencies.lock().map(|l| l.clone()).unwrap_or_default();
    // What never arrived counts as having waited at least until the deadline.
    latencies.extend(std::iter::repeat_n(end - started, tally.lost as usize));
    latencies.sort();
    Ok(Phase {
        published,
        offered,
        tally,
        throughput: tally.unique as f64 / end.duration_since(started).as_secs_f64().max(1e-3),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or_default(),
    })
}

fn accounts(n: usize) -> Vec<AccountId> {
    (0..n).map(|_| AccountId::new()).collect()
}

pub async fn run(args: &IsolationArgs, json: bool) -> anyhow::Result<String> {
    anyhow::ensure!(
        args.healthy_webhooks > 0 && args.rate > 0 && !args.duration.is_zero(),
        "the isolation scenario needs healthy webhooks, a rate and a duration"
    );
    let stage = Stage::start().await?;
    let seen = Arc::new(Misbehaving {
        slow_answer: args.slow_answer,
        stop: stage.stop.clone(),
        timed_out: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        slow: AtomicU64::new(0),
    });
    let base = serve_misbehaving(seen.clone()).await?;
    // The backlogged webhook's own verifying receiver, so that its deliveries are checked
    // but not counted with the measured ones.
    let backlogged_sink = Arc::new(Sink::default());
    let _ = backlogged_sink.epoch.set(stage.epoch);
    let _ = backlogged_sink.secret.set(stage.secret.clone());
    let backlogged_url = super::serve_sink(backlogged_sink.clone(), stage.stop.clone()).await?;

    let config = herald_worker::WorkerConfig::for_local(&stage.nats.url);
    let (concurrency, cap, timeout) = (
        config.concurrency,
        config.per_webhook_in_flight,
        config.request_timeout,
    );
    let worker = herald_worker::Worker::start(config, stage.stop.clone()).await?;
    let client = herald_bus::connect(&stage.nats.url, "herald-bench").await?;
    let js = async_nats::jetstream::new(client);
    let bucket = herald_bus::WebhookBucket::open(&js).await?;
    let healthy = accounts(args.healthy_webhooks);
    let timing_out = accounts(args.timing_out_webhooks);
    let failing = accounts(args.failing_webhooks);
    let slow = accounts(args.slow_webhooks);
    let backlogged = accounts(usize::from(args.backlog_factor > 0));
    let mut webhooks = 0;
    for (group, url) in [
        (&healthy, stage.receiver.clone()),
        (&timing_out, format!("{base}/timeout")),
        (&failing, format!("{base}/error")),
        (&slow, format!("{base}/slow")),
        (&backlogged, backlogged_url),
    ] {
        for account in group {
            bucket
                .put(&super::webhook_spec(account, &url, &stage.secret))
                .await?;
            webhooks += 1;
        }
    }
    super::wait_for_index(&worker, webhooks).await?;
    let publisher = herald_bus::Publisher::new(js);

    let alone = phase(&publisher, &healthy, &[], args, &stage.sink, stage.epoch).await?;

    // The bursts: the slow webhooks' backlog and the backlogged healthy webhook's.
    let event_type = EventType::parse("booking.created")?;
    let slow_backlog = if slow.is_empty() { 0 } else { args.backlog };
    let healthy_backlog = (args.backlog_factor * cap * backlogged.len()) as u64;
    let mut burst = Vec::new();
    for n in 0..slow_backlog {
        burst.push(event(
            &slow[n as usize % slow.len()],
            &event_type,
            stage.epoch,
        )?);
    }
    for _ in 0..healthy_backlog {
        burst.push(event(&backlogged[0], &event_type, stage.epoch)?);
    }
    let burst_started = Instant::now();
    // The backlogged webhook's burst must all arrive too; how long it took is reported.
    let backlog_drain = {
        let sink = backlogged_sink.clone();
        tokio::spawn(async move {
            let arrived = sink.wait_for(healthy_backlog, 3 * DRAIN).await.is_ok();
            (arrived, burst_started.elapsed())
        })
    };
    super::publish_concurrently(&publisher, burst).await;
    let burst_published = burst_started.elapsed();
    // The second phase measures the healthy webhooks beside the backlogs once the burst is
    // routed into tasks: every event waits for the ones published before it to be routed,
    // which is the router's throughput, not isolation.
    let routed = alone.published + slow_backlog + healthy_backlog;
    let routing_deadline = Instant::now() + DRAIN;
    while worker.counters().events_routed < routed {
        anyhow::ensure!(
            Instant::now() < routing_deadline,
            "the burst was not routed within {DRAIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let burst_routed = burst_started.elapsed();
    let slow_before = seen.slow.load(Ordering::Relaxed);
    let misbehaving: Vec<AccountId> = [timing_out.as_slice(), &failing, &slow].concat();
    let beside = phase(
        &publisher,
        &healthy,
        &misbehaving,
        args,
        &stage.sink,
        stage.epoch,
    )
    .await?;
    let slow_during = seen.slow.load(Ordering::Relaxed) - slow_before;
    let (requests_arrived, backlog_drained) = backlog_drain.await?;
    let backlog_tally = backlogged_sink.tally(healthy_backlog);
    let backlog_arrived = requests_arrived && backlog_tally.lost == 0;
    let counters = worker.counters();
    stage.stop.cancel();
    worker.wait().await?;

    let throughput_ratio = beside.throughput / alone.throughput.max(1e-9);
    let p99_ratio = beside.p99.as_secs_f64() / alone.p99.as_secs_f64().max(1e-9);
    let verdict = if throughput_ratio >= 0.9 && p99_ratio <= 2.0 {
        "met"
    } else {
        "NOT met"
    };
    let timed_out = seen.timed_out.load(Ordering::Relaxed);
    let failed = seen.failed.load(Ordering::Relaxed);
    if json {
        return Ok(serde_json::json!({
            "scenario": "isolation",
            "healthy_alone": alone.json(),
            "healthy_beside_misbehaving": beside.json(),
            "throughput_ratio": throughput_ratio,
            "p99_ratio": p99_ratio,
            "target_met": verdict == "met",
            "misbehaving": {
                "timing_out_webhooks": args.timing_out_webhooks,
                "failing_webhooks": args.failing_webhooks,
                "slow_webhooks": args.slow_webhooks,
                "requests_timed_out": timed_out,
                "requests_answered_500": failed,
                "slow_backlog": slow_backlog,
                "slow_delivered_during_second_phase": slow_during,
            },
            "backlogged": {
                "backlog": healthy_backlog,
                "all_arrived": backlog_arrived,
                "drained_s": backlog_drained.as_secs_f64(),
                "correctness": backlog_tally.json(),
            },
            "worker": {
                "in_flight": concurrency,
                "per_webhook_in_flight": cap,
                "request_timeout_s": timeout.as_secs_f64(),
                "delivered": counters.delivered,
                "moved_to_a_lane": counters.laned,
                "nacked": counters.nacked,
            },
        })
        .to_string());
    }
    Ok(format!(
        "herald bench isolation: {healthy} healthy webhooks at {rate} events/s for {duration}; \
         beside them, each with a healthy one's share of the load, {timing_out} never \
         answering (the worker gives up after {timeout}), {failing} answering 500 and {slow} \
         answering after {answer} with a burst of {slow_backlog} events; one healthy webhook \
         with a burst of {healthy_backlog} ({factor}× its in-flight cap)\n\
         worker: {concurrency} requests in flight, {cap} per webhook; the bursts were \
         published in {published:.1} s and routed in {routed:.1} s; the second phase starts \
         then\n\
         {header:<30} {h1:>9} {h2:>9} {h3:>9} {h4:>9} {h5:>6}\n\
         {alone}\n\
         {beside}\n\
         healthy throughput {throughput_ratio:.2}× and p99 {p99_ratio:.2}× of the all-healthy run \
         (target: ≥ 0.90× and ≤ 2×): {verdict}\n\
         healthy deliveries: alone {alone_tally}; beside the misbehaving {beside_tally}\n\
         backlogged webhook: {backlog_tally}; {drain}\n\
         misbehaving endpoints during the run: {timed_out} requests left unanswered, {failed} \
         answered 500, {slow_during} slow deliveries in the second phase; worker counters: \
         delivered {delivered}, moved to a lane {laned}, nacked {nacked}",
        healthy = args.healthy_webhooks,
        rate = args.rate,
        duration = humantime::format_duration(args.duration),
        timing_out = args.timing_out_webhooks,
        timeout = humantime::format_duration(timeout),
        failing = args.failing_webhooks,
        slow = args.slow_webhooks,
        answer = humantime::format_duration(args.slow_answer),
        factor = args.backlog_factor,
        header = "healthy webhooks",
        h1 = "deliv/s",
        h2 = "p50 ms",
        h3 = "p99 ms",
        h4 = "max ms",
        h5 = "arrived",
        published = burst_published.as_secs_f64(),
        routed = burst_routed.as_secs_f64(),
        alone_tally = alone.tally.line(),
        beside_tally = beside.tally.line(),
        alone = alone.line("alone"),
        beside = beside.line("beside the misbehaving"),
        drain = if backlog_arrived {
            format!(
                "drained {:.2} s after its burst",
                backlog_drained.as_secs_f64()
            )
        } else {
            format!(
                "not drained {:.0} s after its burst",
                backlog_drained.as_secs_f64()
            )
        },
        backlog_tally = backlog_tally.line(),
        delivered = counters.delivered,
        laned = counters.laned,
        nacked = counters.nacked,
    ))
}
