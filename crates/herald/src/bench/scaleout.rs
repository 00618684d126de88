//! `herald bench --scenario scale-out`: one worker process, then two sharing the durable
//! consumers, each phase delivering the same load to the same webhooks.
//!
//! On a two-core machine a second worker adds no CPU; the point is that sharing works: every
//! delivery arrives once, none is lost, and the pair is not slower than one by much. The report
//! gives both rates and their ratio.

use std::time::{Duration, Instant};

use herald_core::{AccountId, EventType};
use serde_json::json;

use super::{Herald, Tally, event, free_port};

#[derive(Debug, clap::Args)]
pub struct ScaleOutArgs {
    /// Events (= deliveries) per phase.
    #[arg(long, default_value_t = 20_000)]
    pub scale_events: u64,
}

pub async fn run(args: &ScaleOutArgs, webhooks: usize, json: bool) -> anyhow::Result<String> {
    let stage = super::Stage::start().await?;
    let (nats, sink, receiver, secret, epoch) = (
        &stage.nats,
        &stage.sink,
        &stage.receiver,
        &stage.secret,
        stage.epoch,
    );

    let client = herald_bus::connect(&nats.url, "herald-bench").await?;
    let js = async_nats::jetstream::new(client);
    let bucket = herald_bus::WebhookBucket::open(&js).await?;
    let mut accounts = Vec::with_capacity(webhooks);
    for _ in 0..webhooks.max(1) {
        let account = AccountId::new();
        bucket
            .put(&super::webhook_spec(&account, receiver, secret))
            .await?;
        accounts.push(account);
    }
    let publisher = herald_bus::Publisher::new(js);
    let event_type = EventType::parse("booking.created")?;
    let http = reqwest::Client::new();

    let mut phases = Vec::new();
    for workers in [1usize, 2] {
        let mut running = Vec::with_capacity(workers);
        for _ in 0..workers {
            let health = format!("127.0.0.1:{}", free_port()?);
            let mut worker = Herald::start(
                &["worker", "--metrics-listen", &health],
                &[
                    ("HERALD_NATS_URL", nats.url.clone()),
                    ("HERALD_ADDRESS_ALLOWLIST", "127.0.0.0/8".to_owned()),
                    // The bench's own nats-server has no streams yet.
                    ("HERALD_CREATE_STREAMS", "true".to_owned()),
                ],
            )?;
            worker
                .ready(&http, &format!("http://{health}/readyz"))
                .await?;
            running.push(worker);
        }
        let events = (0..args.scale_events)
            .map(|n| event(&accounts[n as usize % accounts.len()], &event_type, epoch))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let started = Instant::now();
        super::publish_concurrently(&publisher, events).await;
        sink.wait_for(args.scale_events, Duration::from_secs(300))
            .await?;
        let rate = args.scale_events as f64 / started.elapsed().as_secs_f64();
        // Whatever arrives late (a duplicate) is counted before the tally.
        for worker in running {
            worker.stop().await;
        }
        phases.push((workers, rate, sink.tally(args.scale_events)));
        sink.reset();
    }

    let [(_, one, one_tally), (_, two, two_tally)]: [(usize, f64, Tally); 2] = phases
        .try_into()
        .map_err(|_| anyhow::anyhow!("two phases"))?;
    if json {
        return Ok(json!({
            "scenario": "scale-out",
            "events_per_phase": args.scale_events,
            "webhooks": accounts.len(),
            "one_worker_per_s": one,
            "two_workers_per_s": two,
            "two_vs_one": two / one,
            "correctness": { "one_worker": one_tally.json(), "two_workers": two_tally.json() },
        })
        .to_string());
    }
    Ok(format!(
        "herald bench --scenario scale-out: {} deliveries per phase over {} webhooks, worker processes sharing the consumers\n\
         one worker:  {one:>7.0} deliveries/s  ({})\n\
         two workers: {two:>7.0} deliveries/s  ({})\n\
         two / one: {:.2}",
        args.scale_events,
        accounts.len(),
        one_tally.line(),
        two_tally.line(),
        two / one,
    ))
}
