//! The running worker: connects, provisions the topology, loads the subscription index, then runs
//! the router, the sender and the delay lines until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use herald_bus::{LaneLimits, Topology, WebhookBucket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::breaker::Breakers;
use crate::config::WorkerConfig;
use crate::consume::{Pull, pull_loop, take_permits};
use crate::counters::{CounterSnapshot, Counters};
use crate::delay::DelayLine;
use crate::health::Health;
use crate::http::DeliveryClient;
use crate::index::SharedIndex;
use crate::lanes::{LANE_IDLE, LaneOpener, Lanes};
use crate::limits::WebhookLimits;
use crate::metrics::{LiveState, Metrics, StateCollector};
use crate::outcomes::Outcomes;
use crate::router::{Router, TaskBytes};
use crate::sender::{SETTLE_PATIENCE, Sender};
use crate::shutdown::{CrashGuard, Stopping, drain};
use crate::watch;

/// Name the worker's connection shows in the server's connection list.
const CLIENT_NAME: &str = "herald-worker";

/// How long loading the whole bucket may take at start-up (or after a broken watch).
const INDEX_LOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the fetch loops get to hand back what their last pull request brings.
const LOOPS_STOP_LIMIT: Duration = Duration::from_secs(3);

/// How long the final flush of acks and NAKs may take.
const FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// A worker running in this process.
///
/// Dropping it aborts everything at once, as a crash would: nothing is acknowledged or handed
/// back, and NATS redelivers the messages in flight after their ack wait. Call
/// [`stop`](Worker::stop) and [`wait`](Worker::wait) for a graceful shutdown.
#[derive(Debug)]
pub struct Worker {
    stop: CancellationToken,
    supervisor: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Cancelled once the worker has stopped, whatever stopped it.
    done: CancellationToken,
    health: Health,
    counters: Arc<Counters>,
    index: SharedIndex,
    sender: Arc<Sender>,
    metrics: Arc<Metrics>,
}

/// The breakers and lanes, as `/metrics` reads them.
#[derive(Debug)]
struct Live {
    breakers: Arc<Breakers>,
    limits: Arc<WebhookLimits>,
}

impl LiveState for Live {
    fn open_breakers(&self) -> usize {
        self.breakers.open_count()
    }

    fn open_lanes(&self) -> usize {
        self.limits.open_lanes()
    }
}

impl Worker {
    /// Starts a worker; returns once the subscription index is loaded and consumption has
    /// begun. Cancelling `shutdown` stops it gracefully.
    pub async fn start(
        config: WorkerConfig,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Worker> {
        config.validate()?;
        let tiers = config.retry_tiers()?;
        let client = herald_bus::connect(&config.nats_url, CLIENT_NAME).await?;
        let js = herald_bus::jetstream(client.clone());

        let options = config.provision_options(tiers.clone());
        Topology::provision(&js, &options)
            .await
            .context("cannot provision Herald's NATS topology")?;
        // Lines of an earlier schedule still hold tasks; they are read until empty (and then
        // stay idle, which costs one short pull a second).
        let retired = Topology::retired_tiers(&js, &tiers)
            .await
            .context("cannot list the delay lines")?;
        if !retired.is_empty() {
            tracing::info!(
                tiers = ?retired.iter().map(|tier| tier.label().to_owned()).collect::<Vec<_>>(),
                "reading delay lines of an earlier retry schedule until they are empty"
            );
        }
        let options = Arc::new(options);

        let bucket = WebhookBucket::open(&js)
            .await
            .context("cannot open the webhook bucket")?;
        let index = SharedIndex::new();
        if config.keyring.is_empty() {
            tracing::warn!(
                "NO ENCRYPTION KEY: this worker cannot open signing secrets the registry sealed, \
                 and a registry without one keeps them in the clear in the herald-webhooks \
                 bucket. Set HERALD_ENCRYPTION_KEY (the registry's keys) on every worker."
            );
        }
        let watch = watch::load(&bucket, &index, &config.keyring, INDEX_LOAD_TIMEOUT)
            .await
            .context("cannot load the webhook index")?;

        let counters = Arc::new(Counters::default());
        let stopping = Stopping::new();
        let tracker = TaskTracker::new();
        let delivery_client = DeliveryClient::trusting(
            config.address_policy.clone(),
            config.request_timeout,
            &config.user_agent,
            config.extra_roots.clone(),
        )?;
        let limits = WebhookLimits::new(config.per_webhook_in_flight);
        let (lane_opener, opened_lanes) = LaneOpener::new(limits.clone());
        let breakers = Arc::new(Breakers::new(config.breaker.clone()));
        let mut metrics = Metrics::new();
        metrics.collect_state(StateCollector {
            counters: counters.clone(),
            index: index.clone(),
            live: Arc::new(Live {
                breakers: breakers.clone(),
                limits: limits.clone(),
            }),
        });
        let metrics = Arc::new(metrics);
        let sender = Arc::new(Sender {
            js: js.clone(),
            index: index.clone(),
            client: delivery_client,
            breakers,
            limits,
            lanes: lane_opener.clone(),
            schedule: config.retry_schedule.clone(),
            tiers: tiers.clone(),
            defer_limit: config.retry_schedule.delays().iter().sum::<Duration>()
                + config.breaker.max_cool_down,
            ack_wait: config.sender_ack_wait,
            outbound_trace: config.outbound_trace,
            counters: counters.clone(),
            metrics: metrics.clone(),
            stopping: stopping.clone(),
            outcomes: Outcomes::start(js.clone(), SETTLE_PATIENCE, metrics.clone()),
        });
        let router = Arc::new(Router {
            js: js.clone(),
            index: index.clone(),
            lanes: lane_opener,
            ack_wait: config.router_ack_wait,
            counters: counters.clone(),
            stopping: stopping.clone(),
            positions: Default::default(),
            task_bytes: TaskBytes::new(config.router_task_bytes),
            max_payload: Default::default(),
        });

        // Each loop's task returns its name, so that one ending early can be named.
        let mut loops: JoinSet<String> = JoinSet::new();
        let watching = watch::follow(
            bucket,
            index.clone(),
            config.keyring.clone(),
            watch,
            stopping.fetch.clone(),
            INDEX_LOAD_TIMEOUT,
        );
        loops.spawn(named("bucket watch", watching));
        {
            let (metrics, js, stop) = (metrics.clone(), js.clone(), stopping.fetch.clone());
            let router = router.clone();
            loops.spawn(named("stream metrics", async move {
                metrics
                    .poll_streams(js, stop, |status| router.positions.observe(status))
                    .await;
            }));
        }
        {
            let js = js.clone();
            let router = router.clone();
            let permits = Arc::new(Semaphore::new(config.router_concurrency));
            let batch = config.fetch_batch;
            loops.spawn(named(
                "router",
                pull_loop(
                    Pull {
                        name: "router".to_owned(),
                        open: {
                            let (options, router) = (options.clone(), router.clone());
                            move || {
                                let (js, options) = (js.clone(), options.clone());
                                let resume_at = router.positions.resume_at();
                                async move { Topology::open_router(&js, &options, resume_at).await }
                            }
                        },
                        acquire: move || take_permits(permits.clone(), batch),
                    },
                    stopping.clone(),
                    tracker.clone(),
                    counters.clone(),
                    move |message, permit| router.clone().handle(message, permit),
                    || false,
                ),
            ));
        }
        // Requests in flight: the sender's consumer and the lanes draw on the same permits,
        // and the lanes on at most half of them.
        let permits = Arc::new(Semaphore::new(config.concurrency));
        {
            let js = js.clone();
            let sender = sender.clone();
            let permits = permits.clone();
            let batch = config.fetch_batch;
            loops.spawn(named(
                "sender",
                pull_loop(
                    Pull {
                        name: "sender".to_owned(),
                        open: {
                            let options = options.clone();
                            move || {
                                let (js, options) = (js.clone(), options.clone());
                                async move { Topology::open_sender(&js, &options).await }
                            }
                        },
                        acquire: move || take_permits(permits.clone(), batch),
                    },
                    stopping.clone(),
                    tracker.clone(),
                    counters.clone(),
                    move |message, permit| sender.clone().handle(message, permit),
                    || false,
                ),
            ));
        }
        let lanes = Arc::new(Lanes {
            js: js.clone(),
            sender: sender.clone(),
            limits: LaneLimits {
                ack_wait: config.sender_ack_wait,
                in_flight: i64::try_from(config.per_webhook_in_flight).unwrap_or(i64::MAX),
                idle: LANE_IDLE,
            },
            share: Arc::new(Semaphore::new((config.concurrency / 2).max(1))),
            permits,
            tracker: tracker.clone(),
            stopping: stopping.clone(),
            counters: counters.clone(),
        });
        loops.spawn(named("lanes", lanes.run(opened_lanes)));
        for tier in tiers.iter().chain(&retired) {
            let line = Arc::new(DelayLine {
                js: js.clone(),
                tier: tier.clone(),
                tiers: tiers.clone(),
                ack_wait: config.delay_ack_wait,
                counters: counters.clone(),
                stopping: stopping.clone(),
            });
            let (js, options, tier) = (js.clone(), options.clone(), tier.clone());
            // One head at a time: the consumer hands out one message across all replicas.
            let permits = Arc::new(Semaphore::new(1));
            let name = format!("delay line {tier}");
            loops.spawn(named(
                name.clone(),
                pull_loop(
                    Pull {
                        name,
                        open: move || {
                            let (js, options, tier) = (js.clone(), options.clone(), tier.clone());
                            async move { Topology::open_retry(&js, &options, &tier).await }
                        },
                        acquire: move || take_permits(permits.clone(), 1),
                    },
                    stopping.clone(),
                    tracker.clone(),
                    counters.clone(),
                    move |message, permit| line.clone().handle(message, permit),
                    || false,
                ),
            ));
        }
        let stop = shutdown.child_token();
        let health = Health::default();
        let done = CancellationToken::new();
        let supervisor = tokio::spawn({
            let supervised = supervise(
                stop.clone(),
                loops,
                tracker,
                stopping,
                config.shutdown_deadline,
                Some(client),
                health.clone(),
            );
            let done = done.clone();
            async move {
                let result = supervised.await;
                done.cancel();
                result
            }
        });
        tracing::info!(
            webhooks = index.len(),
            tiers = ?tiers.iter().map(|tier| tier.label().to_owned()).collect::<Vec<_>>(),
            "herald-worker started"
        );
        Ok(Worker {
            stop,
            supervisor: Some(supervisor),
            done,
            health,
            counters,
            index,
            sender,
            metrics,
        })
    }

    /// What the worker has done so far.
    pub fn counters(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }

    /// The live counters, which outlive the worker (read them after [`wait`](Worker::wait)).
    pub fn shared_counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// The subscription index, as loaded from the bucket.
    pub fn index(&self) -> &SharedIndex {
        &self.index
    }

    /// Webhooks whose circuit breaker is open or half-open.
    pub fn open_breakers(&self) -> usize {
        self.sender.breakers.open_count()
    }

    /// Lanes of busy webhooks this worker reads.
    pub fn open_lanes(&self) -> usize {
        self.sender.limits.open_lanes()
    }

    /// Every metric in the Prometheus text format, for `/metrics`.
    pub fn metrics_text(&self) -> String {
        self.metrics.encode()
    }

    /// Running, stopping, or failed (a loop that must run ended): what `/readyz` answers.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// What keeps a running worker from delivering right now, if anything: NATS not
    /// connected, or the webhook index not following the bucket (loading, or reloading after
    /// its watch broke). `/readyz` answers 503 with it.
    pub fn waiting_for(&self) -> Option<String> {
        let connection = self.sender.js.client().connection_state();
        if connection != async_nats::connection::State::Connected {
            return Some(format!("NATS is not connected ({connection})"));
        }
        if !self.index.is_current() {
            return Some("the webhook index is loading".to_owned());
        }
        None
    }

    /// Returns once the worker has stopped: after [`stop`](Worker::stop), or by itself when it
    /// failed. [`wait`](Worker::wait) then says how it ended.
    pub async fn stopped(&self) {
        self.done.cancelled().await;
    }

    /// Starts a graceful shutdown; [`wait`](Worker::wait) for it to finish.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits until the worker has stopped (after [`stop`](Worker::stop) or the `shutdown` token
    /// given to [`start`](Worker::start)); an error when it stopped because it failed.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        match self.supervisor.take() {
            Some(supervisor) => supervisor.await.context("the worker's supervisor failed")?,
            None => Ok(()),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.abort();
        }
    }
}

/// `work`, returning `name` when it ends.
async fn named(name: impl Into<String>, work: impl Future<Output = ()>) -> String {
    work.await;
    name.into()
}

/// Runs until `stop`, then shuts down gracefully: the loops stop fetching (handing back what
/// arrives meanwhile), handlers get until the deadline, and the rest hand their messages back.
/// A loop that ends before `stop` fails the worker: it shuts down the same way, and the result
/// is an error naming the loop. Aborting this task (dropping the [`Worker`]) aborts everything
/// it owns.
async fn supervise(
    stop: CancellationToken,
    mut loops: JoinSet<String>,
    tracker: TaskTracker,
    stopping: Stopping,
    deadline: Duration,
    client: Option<async_nats::Client>,
    health: Health,
) -> anyhow::Result<()> {
    // Handlers run outside the JoinSet; if this task is aborted (the Worker dropped), the guard
    // abandons them too, which is what a crash means for a worker inside a process.
    let crash = CrashGuard::new(&stopping);
    let failure = tokio::select! {
        () = stop.cancelled() => None,
        Some(ended) = loops.join_next() => {
            let reason = match ended {
                Ok(name) => format!("the {name} loop ended"),
                Err(err) => format!("a loop failed: {err}"),
            };
            tracing::error!(%reason, "herald-worker cannot go on; stopping");
            health.failed(reason.clone());
            Some(reason)
        }
    };
    health.stopping();
    tracing::info!("herald-worker stopping");
    stopping.fetch.cancel();
    let deadline = Instant::now() + deadline;
    // The deadline runs from now for handlers, also while the loops are still handing back
    // what their last pull request brings.
    let cut_off = {
        let hard = stopping.hard.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            hard.cancel();
        })
    };
    let loops_done = async { while loops.join_next().await.is_some() {} };
    if tokio::time::timeout(LOOPS_STOP_LIMIT, loops_done)
        .await
        .is_err()
    {
        tracing::warn!("worker loops did not stop in time; aborting them");
        loops.abort_all();
    }
    drain(&tracker, &stopping, deadline).await;
    cut_off.abort();
    // Acks and NAKs are queued on the connection; make sure they reach the server before the
    // connection is dropped with the worker.
    if let Some(client) = client
        && tokio::time::timeout(FLUSH_LIMIT, client.flush())
            .await
            .is_err()
    {
        tracing::warn!(
            "could not flush the NATS connection; unsettled messages are redelivered after their ack wait"
        );
    }
    crash.disarm();
    match failure {
        None => {
            tracing::info!("herald-worker stopped");
            Ok(())
        }
        Some(reason) => Err(anyhow::anyhow!("herald-worker failed: {reason}")),
    }
}

/// Runs a worker until `shutdown` is cancelled, then stops it gracefully.
pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    Worker::start(config, shutdown).await?.wait().await
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::health::HealthState;

    #[tokio::test]
    async fn a_loop_that_ends_fails_the_worker() {
        let mut loops = JoinSet::new();
        let stopping = Stopping::new();
        let fetch = stopping.fetch.clone();
        loops.spawn(named("sender", async move { fetch.cancelled().await }));
        loops.spawn(named("router", async {}));
        let health = Health::default();
        let result = supervise(
            CancellationToken::new(),
            loops,
            TaskTracker::new(),
            stopping.clone(),
            Duration::from_secs(1),
            None,
            health.clone(),
        )
        .await;
        let err = result.err().map(|err| err.to_string());
        assert_eq!(
            err.as_deref(),
            Some("herald-worker failed: the router loop ended")
        );
        assert_eq!(
            health.state(),
            HealthState::Failed("the router loop ended".to_owned())
        );
        assert!(!health.state().is_ready());
        // The others were told to stop.
        assert!(stopping.fetch.is_cancelled());
    }

    #[tokio::test]
    async fn a_panicking_loop_fails_the_worker_too() {
        let mut loops = JoinSet::new();
        loops.spawn(named("lanes", async { panic!("a bug") }));
        let health = Health::default();
        let result = supervise(
            CancellationToken::new(),
            loops,
            TaskTracker::new(),
            Stopping::new(),
            Duration::from_secs(1),
            None,
            health.clone(),
        )
        .await;
        assert!(result.is_err());
        assert!(
            matches!(health.state(), HealthState::Failed(reason) if reason.contains("panicked"))
        );
    }

    #[tokio::test]
    async fn a_requested_stop_is_not_a_failure() {
        let mut loops = JoinSet::new();
        let stopping = Stopping::new();
        let fetch = stopping.fetch.clone();
        loops.spawn(named("sender", async move { fetch.cancelled().await }));
        let stop = CancellationToken::new();
        stop.cancel();
        let health = Health::default();
        let result = supervise(
            stop,
            loops,
            TaskTracker::new(),
            stopping,
            Duration::from_secs(1),
            None,
            health.clone(),
        )
        .await;
        assert!(result.is_ok());
        assert_eq!(health.state(), HealthState::Stopping);
    }
}
