//! `herald bench --scenario registry`: whether the delivery log keeps up with the deliveries.
//!
//! A registry (on SQLite, then on PostgreSQL when `--postgres` names a server) and a worker
//! run against one nats-server; webhooks are created through the API, as integrators do, and
//! events are published at the steady scenario's pace. The report gives, per database, the
//! deliveries/s, how long after the last receipt the log held every delivery (the outcome
//! ingest lag), and the p50/p99/max of API reads (a delivery list and a webhook) made one
//! after the other while the log is being written.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use herald_core::{AccountId, EventType};
use sea_orm::ConnectionTrait as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Tally, event, percentile};
use crate::api::Api;

const ADMIN_KEY: &str = "herald-bench-admin-key";

/// How long the log may take to hold every delivery after the last receipt before the run
/// gives up.
const LOG_PATIENCE: Duration = Duration::from_secs(120);

#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// Events (= deliveries) per database.
    #[arg(long, default_value_t = 20_000)]
    pub registry_events: u64,
    /// A PostgreSQL server to measure on too (`postgres://user@host:port/db`); a fresh
    /// database is created there for the run and dropped after it.
    #[arg(long, env = "HERALD_BENCH_POSTGRES_URL")]
    pub postgres: Option<String>,
}

/// One database's figures.
struct Measured {
    database: &'static str,
    deliveries_per_s: f64,
    log_lag: Duration,
    api: Vec<Duration>,
    tally: Tally,
}

impl Measured {
    fn ms(&self, p: f64) -> f64 {
        percentile(&self.api, p).as_secs_f64() * 1e3
    }

    fn json(&self) -> Value {
        json!({
            "database": self.database,
            "deliveries_per_s": self.deliveries_per_s,
            "log_lag_s": self.log_lag.as_secs_f64(),
            "api_reads": self.api.len(),
            "api_p50_ms": self.ms(0.50),
            "api_p99_ms": self.ms(0.99),
            "api_max_ms": self.ms(1.0),
            "correctness": self.tally.json(),
        })
    }

    fn line(&self) -> String {
        format!(
            "{:<11}{:>9.0} deliveries/s   log complete {:>6.2} s after the last receipt   \
             API reads during ingest: {} (p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms)   ({})",
            self.database,
            self.deliveries_per_s,
            self.log_lag.as_secs_f64(),
            self.api.len(),
            self.ms(0.50),
            self.ms(0.99),
            self.ms(1.0),
            self.tally.line(),
        )
    }
}

pub async fn run(args: &RegistryArgs, webhooks: usize, json: bool) -> anyhow::Result<String> {
    let mut measured = Vec::new();
    let sqlite = tempfile::tempdir().context("cannot create a temporary folder")?;
    let url = format!(
        "sqlite://{}?mode=rwc",
        sqlite.path().join("herald.db").display()
    );
    measured.push(measure("SQLite", &url, args.registry_events, webhooks).await?);
    if let Some(server) = &args.postgres {
        let database = FreshPostgres::create(server).await?;
        let result = measure("PostgreSQL", &database.url, args.registry_events, webhooks).await;
        database.drop_it().await;
        measured.push(result?);
    }
    if json {
        return Ok(json!({
            "scenario": "registry",
            "events": args.registry_events,
            "webhooks": webhooks,
            "runs": measured.iter().map(Measured::json).collect::<Vec<_>>(),
        })
        .to_string());
    }
    let mut report = format!(
        "herald bench --scenario registry: {} deliveries over {webhooks} webhooks per database, \
         outcomes ingested into the delivery log as they come\n",
        args.registry_events
    );
    for run in &measured {
        report.push_str(&run.line());
        report.push('\n');
    }
    if args.postgres.is_none() {
        report
            .push_str("PostgreSQL: not measured (give --postgres or HERALD_BENCH_POSTGRES_URL)\n");
    }
    Ok(report)
}

/// A database created for the run on a PostgreSQL server.
struct FreshPostgres {
    server: String,
    name: String,
    url: String,
}

impl FreshPostgres {
    async fn create(server: &str) -> anyhow::Result<FreshPostgres> {
        let name = format!(
            "herald_bench_{}",
            AccountId::new().as_str()[5..].to_lowercase()
        );
        let admin = sea_orm::Database::connect(server)
            .await
            .with_context(|| format!("cannot connect to PostgreSQL at {server}"))?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .context("cannot create the bench database")?;
        let mut url = url::Url::parse(server).context("--postgres is not a URL")?;
        url.set_path(&name);
        Ok(FreshPostgres {
            server: server.to_owned(),
            url: url.to_string(),
            name,
        })
    }

    async fn drop_it(self) {
        let dropped = async {
            let admin = sea_orm::Database::connect(&self.server).await?;
            admin
                .execute_unprepared(&format!(
                    "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                    self.name
                ))
                .await
        }
        .await;
        if let Err(error) = dropped {
            tracing::warn!(%error, database = %self.name, "cannot drop the bench database");
        }
    }
}

/// Outcomes the registry has written to the log, from its metrics.
async fn outcomes_recorded(api: &Api) -> anyhow::Result<u64> {
    let text = api
        .http
        .get(format!("{}/metrics", api.base))
        .bearer_auth(&api.key)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    text.lines()
        .find_map(|line| line.strip_prefix("herald_registry_outcomes_recorded_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
        .context("the registry's metrics lack herald_registry_outcomes_recorded_total")
}

async fn measure(
    database: &'static str,
    database_url: &str,
    events: u64,
    webhooks: usize,
) -> anyhow::Result<Measured> {
    let stage = super::Stage::start().await?;
    let (nats, stop, sink, receiver, secret, epoch) = (
        &stage.nats,
        &stage.stop,
        &stage.sink,
        &stage.receiver,
        &stage.secret,
        stage.epoch,
    );

    let loopback = vec!["127.0.0.0/8".parse().context("loopback CIDR")?];
    let mut worker_config = herald_worker::WorkerConfig::for_local(&nats.url);
    worker_config.address_policy.allow.clone_from(&loopback);
    let worker = herald_worker::Worker::start(worker_config, stop.clone()).await?;
    // The registry in a process of its own, as it runs in production: in this one it would
    // share a runtime with the worker, the receiver and the publisher.
    let port = super::free_port()?;
    let api = Api::new(format!("http://127.0.0.1:{port}"), ADMIN_KEY);
    let mut registry = super::Herald::start(
        &["registry"],
        &[
            ("HERALD_LISTEN", format!("127.0.0.1:{port}")),
            ("HERALD_DATABASE_URL", database_url.to_owned()),
            ("HERALD_NATS_URL", nats.url.clone()),
            ("HERALD_ADMIN_API_KEY", ADMIN_KEY.to_owned()),
            ("HERALD_ADDRESS_ALLOWLIST", "127.0.0.0/8".to_owned()),
        ],
    )?;
    registry
        .ready(&api.http, &format!("{}/readyz", api.base))
        .await?;

    // One account per webhook, as in the steady scenario, made through the API.
    let mut targets = Vec::with_capacity(webhooks);
    for n in 0..webhooks.max(1) {
        let account = api
            .call(
                reqwest::Method::POST,
                "/v1/accounts",
                Some(json!({ "name": format!("Bench {n}") })),
            )
            .await?["id"]
            .as_str()
            .context("account without id")?
            .to_owned();
        let webhook = api
            .call(
                reqwest::Method::POST,
                &format!("/v1/accounts/{account}/webhooks"),
                Some(json!({ "name": "bench", "url": receiver, "secret": secret.expose_whsec() })),
            )
            .await?["id"]
            .as_str()
            .context("webhook without id")?
            .to_owned();
        targets.push((AccountId::parse(&account)?, webhook));
    }
    super::wait_for_index(&worker, targets.len()).await?;

    let client = herald_bus::connect(&nats.url, "herald-bench").await?;
    let publisher = herald_bus::Publisher::new(async_nats::jetstream::new(client));
    let event_type = EventType::parse("booking.created")?;
    let batch = (0..events)
        .map(|n| event(&targets[n as usize % targets.len()].0, &event_type, epoch))
        .collect::<anyhow::Result<Vec<_>>>()?;

    // Reads one after the other for as long as the log is being written.
    let ingesting = CancellationToken::new();
    let reads = tokio::spawn(read_while(api.clone(), targets.clone(), ingesting.clone()));

    let started = Instant::now();
    super::publish_concurrently(&publisher, batch).await;
    sink.wait_for(events, Duration::from_secs(300)).await?;
    let deliveries_per_s = events as f64 / started.elapsed().as_secs_f64();
    let received = Instant::now();
    loop {
        if outcomes_recorded(&api).await? >= events {
            break;
        }
        anyhow::ensure!(
            received.elapsed() < LOG_PATIENCE,
            "the delivery log holds {} of {events} outcomes {LOG_PATIENCE:?} after the last receipt",
            outcomes_recorded(&api).await?
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log_lag = received.elapsed();
    ingesting.cancel();
    let mut api_reads = reads.await.context("the API reader failed")??;
    api_reads.sort();
    let tally = sink.tally(events);

    stop.cancel();
    worker.wait().await?;
    registry.stop().await;
    Ok(Measured {
        database,
        deliveries_per_s,
        log_lag,
        api: api_reads,
        tally,
    })
}

/// Lists a webhook's recent deliveries and reads the webhook, in turn, until `until`; each
/// call's time.
async fn read_while(
    api: Api,
    targets: Vec<(AccountId, String)>,
    until: CancellationToken,
) -> anyhow::Result<Vec<Duration>> {
    let mut took = Vec::new();
    for n in 0usize.. {
        if until.is_cancelled() {
            break;
        }
        let (account, webhook) = &targets[n / 2 % targets.len()];
        let path = if n % 2 == 0 {
            format!("/v1/accounts/{account}/deliveries?limit=20")
        } else {
            format!("/v1/accounts/{account}/webhooks/{webhook}")
        };
        let started = Instant::now();
        api.call(reqwest::Method::GET, &path, None).await?;
        took.push(started.elapsed());
    }
    Ok(took)
}
