//! The worker's Prometheus metrics, through `prometheus-client`.
//!
//! Three kinds: what the sender observes as it goes (attempts by outcome and status class,
//! latency and duration histograms, attempts per delivery, requests in flight); the worker's
//! counters and live state, read at each scrape; and what the streams and consumers hold, read
//! from NATS by [`Metrics::poll_streams`] every few seconds. No label names a webhook or an
//! account: every label has a handful of values.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio_util::sync::CancellationToken;

use crate::attempt::{Attempted, Verdict};
use crate::counters::Counters;
use crate::index::SharedIndex;

/// How often the streams and consumers are read for their gauges.
pub const STREAM_POLL: Duration = Duration::from_secs(5);

type Labels = Vec<(&'static str, String)>;

/// The metrics a worker records and serves.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    attempts: Family<Labels, Counter>,
    delivery_latency: Histogram,
    attempt_duration: Histogram,
    attempts_per_delivery: Histogram,
    outcomes_per_publish: Histogram,
    in_flight: Gauge,
    stream_messages: Family<Labels, Gauge>,
    stream_oldest: Family<Labels, Gauge>,
    consumer_pending: Family<Labels, Gauge>,
    consumer_ack_pending: Family<Labels, Gauge>,
    consumer_redelivered: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("herald_worker");
        let attempts = Family::<Labels, Counter>::default();
        registry.register(
            "attempts",
            "Delivery attempts by outcome and the endpoint's status class (none: no answer)",
            attempts.clone(),
        );
        // 5 ms to about 20 min: from a loopback receiver to a delivery after many retries.
        let delivery_latency = Histogram::new(exponential_buckets(0.005, 2.5, 14));
        registry.register_with_unit(
            "delivery_latency",
            "From the event's timestamp to the 2xx answer that delivered it",
            Unit::Seconds,
            delivery_latency.clone(),
        );
        let attempt_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register_with_unit(
            "attempt_duration",
            "From sending a request to its answer, or to its failure",
            Unit::Seconds,
            attempt_duration.clone(),
        );
        let attempts_per_delivery = Histogram::new([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0]);
        registry.register(
            "attempts_per_delivery",
            "Attempts a delivery took, counted when it is delivered or exhausted",
            attempts_per_delivery.clone(),
        );
        let outcomes_per_publish =
            Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]);
        registry.register(
            "outcomes_per_publish",
            "Attempts' outcomes stored by one publish to HERALD_OUTCOMES (those that settle \
             together go out as one message)",
            outcomes_per_publish.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Delivery requests sent and not yet answered",
            in_flight.clone(),
        );
        let stream_messages = Family::<Labels, Gauge>::default();
        registry.register(
            "stream_messages",
            "Messages held by each of Herald's streams (a delay line's depth)",
            stream_messages.clone(),
        );
        let stream_oldest = Family::<Labels, Gauge>::default();
        registry.register_with_unit(
            "stream_oldest_message_age",
            "Age of the oldest message each stream holds (0 when empty)",
            Unit::Seconds,
            stream_oldest.clone(),
        );
        let consumer_pending = Family::<Labels, Gauge>::default();
        registry.register(
            "consumer_pending",
            "Messages not yet handed to each consumer (lanes summed)",
            consumer_pending.clone(),
        );
        let consumer_ack_pending = Family::<Labels, Gauge>::default();
        registry.register(
            "consumer_ack_pending",
            "Messages handed out by each consumer and not yet acknowledged",
            consumer_ack_pending.clone(),
        );
        let consumer_redelivered = Family::<Labels, Gauge>::default();
        registry.register(
            "consumer_redelivered",
            "Messages each consumer handed out more than once, not yet acknowledged",
            consumer_redelivered.clone(),
        );
        Metrics {
            registry,
            attempts,
            delivery_latency,
            attempt_duration,
            attempts_per_delivery,
            outcomes_per_publish,
            in_flight,
            stream_messages,
            stream_oldest,
            consumer_pending,
            consumer_ack_pending,
            consumer_redelivered,
        }
    }

    /// `outcomes` were stored by one publish.
    pub(crate) fn outcomes_published(&self, outcomes: usize) {
        self.outcomes_per_publish.observe(outcomes as f64);
    }

    /// Reads the worker's counters and live state at every scrape.
    pub(crate) fn collect_state(&mut self, state: StateCollector) {
        self.registry.register_collector(Box::new(state));
    }

    /// A request is about to be sent; the guard counts it in flight until dropped.
    pub(crate) fn request_started(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// One attempt, once `verdict` decided what follows. `age` is the event's age at the
    /// answer and `attempt` the attempt's number.
    pub(crate) fn attempt(
        &self,
        attempted: &Attempted,
        verdict: Verdict,
        attempt: u32,
        age: Duration,
    ) {
        let class = match &attempted.result {
            Ok(response) => format!("{}xx", response.status / 100),
            Err(_) => "none".to_owned(),
        };
        let outcome = match verdict {
            Verdict::Delivered => "delivered",
            Verdict::Retry(_) => "retrying",
            Verdict::Exhausted { .. } => "exhausted",
        };
        self.attempts
            .get_or_create(&vec![
                ("outcome", outcome.to_owned()),
                ("status_class", class),
            ])
            .inc();
        self.attempt_duration
            .observe(attempted.latency.as_secs_f64());
        if verdict == Verdict::Delivered {
            self.delivery_latency.observe(age.as_secs_f64());
        }
        if !matches!(verdict, Verdict::Retry(_)) {
            self.attempts_per_delivery
                .observe(f64::from(attempt.max(1)));
        }
    }

    /// Reads the streams and consumers every [`STREAM_POLL`] until `stop`, for their gauges,
    /// and hands each reading to `observe` too. A failed read leaves the last values and is
    /// tried again at the next tick.
    pub(crate) async fn poll_streams(
        &self,
        js: jetstream::Context,
        stop: CancellationToken,
        observe: impl Fn(&herald_bus::Status),
    ) {
        let mut ticker = tokio::time::interval(STREAM_POLL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match herald_bus::status(&js).await {
                Ok(status) => {
                    self.set_streams(&status);
                    observe(&status);
                }
                Err(err) => tracing::debug!(%err, "cannot read stream status for metrics"),
            }
        }
    }

    fn set_streams(&self, status: &herald_bus::Status) {
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        for stream in &status.streams {
            let labels = vec![("stream", stream.name.clone())];
            self.stream_messages
                .get_or_create(&labels)
                .set(gauge(stream.messages));
            self.stream_oldest
                .get_or_create(&labels)
                .set(gauge(stream.oldest_age_seconds.unwrap_or(0)));
            // Herald's own consumers only: the bucket's watchers are ephemeral, with random
            // names that would make a new series every restart.
            for consumer in stream
                .consumers
                .iter()
                .filter(|c| c.name.starts_with("herald-"))
            {
                let labels = vec![
                    ("stream", stream.name.clone()),
                    ("consumer", consumer.name.clone()),
                ];
                self.consumer_pending
                    .get_or_create(&labels)
                    .set(gauge(consumer.pending));
                self.consumer_ack_pending
                    .get_or_create(&labels)
                    .set(gauge(consumer.ack_pending));
                self.consumer_redelivered
                    .get_or_create(&labels)
                    .set(gauge(consumer.redelivered));
            }
        }
    }

    /// The Prometheus text exposition (OpenMetrics) of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Counts one request in flight until dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What the sender knows of its webhooks right now.
pub(crate) trait LiveState: std::fmt::Debug + Send + Sync + 'static {
    fn open_breakers(&self) -> usize;
    fn open_lanes(&self) -> usize;
}

/// The worker's counters and live state, read at each scrape.
#[derive(Debug)]
pub(crate) struct StateCollector {
    pub counters: Arc<Counters>,
    pub index: SharedIndex,
    pub live: Arc<dyn LiveState>,
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (name, value, help) in self.counters.snapshot().named() {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let mut letters = encoder.encode_descriptor(
            "dead_letters",
            "Messages dead-lettered, by reason",
            None,
            MetricType::Counter,
        )?;
        for (reason, value) in self.counters.dead_by_reason() {
            let labels = [("reason", reason.label())];
            ConstCounter::new(value).encode(letters.encode_family(&labels)?)?;
        }
        let gauges: [(&str, &str, i64); 4] = [
            (
                "webhooks",
                "Webhooks in the subscription index",
                i64::try_from(self.index.len()).unwrap_or(i64::MAX),
            ),
            (
                "index_last_change_age_seconds",
                "Seconds since the index last took a change from the webhook bucket",
                i64::try_from(self.index.since_last_change().as_secs()).unwrap_or(i64::MAX),
            ),
            (
                "open_breakers",
                "Webhooks whose circuit breaker is open or half-open",
                i64::try_from(self.live.open_breakers()).unwrap_or(i64::MAX),
            ),
            (
                "open_lanes",
                "Busy webhooks whose lane this worker reads",
                i64::try_from(self.live.open_lanes()).unwrap_or(i64::MAX),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Live;

    impl LiveState for Live {
        fn open_breakers(&self) -> usize {
            1
        }
        fn open_lanes(&self) -> usize {
            2
        }
    }

    fn answered(status: u16, latency_ms: u64) -> Attempted {
        Attempted {
            at: chrono::Utc::now(),
            latency: Duration::from_millis(latency_ms),
            result: Ok(crate::http::Response {
                status,
                retry_after: None,
                body: String::new(),
            }),
            request_headers: Default::default(),
        }
    }

    #[test]
    fn serves_counters_histograms_state_and_streams_without_unbounded_labels() {
        let counters = Arc::new(Counters::default());
        counters.delivered(7);
        counters.dead_letter(crate::counters::DeadReason::Undecodable);
        let mut metrics = Metrics::new();
        metrics.collect_state(StateCollector {
            counters,
            index: SharedIndex::new(),
            live: Arc::new(Live),
        });
        metrics.attempt(
            &answered(200, 40),
            Verdict::Delivered,
            2,
            Duration::from_secs(3),
        );
        metrics.attempt(
            &answered(503, 10),
            Verdict::Retry(Duration::from_secs(5)),
            1,
            Duration::from_secs(1),
        );
        let in_flight = metrics.request_started();
        metrics.set_streams(&herald_bus::Status {
            streams: vec![herald_bus::StreamStatus {
                name: "HERALD_DELIVERIES".into(),
                role: "deliveries",
                messages: 12,
                bytes: 3000,
                oldest_age_seconds: Some(4),
                replicas: 3,
                leader: None,
                consumers: vec![
                    herald_bus::ConsumerStatus {
                        name: "herald-sender".into(),
                        pending: 10,
                        ack_pending: 2,
                        redelivered: 0,
                        ack_floor: 0,
                        consumers: 1,
                    },
                    // A bucket watcher's random name.
                    herald_bus::ConsumerStatus {
                        name: "07izipqh".into(),
                        pending: 0,
                        ack_pending: 0,
                        redelivered: 0,
                        ack_floor: 0,
                        consumers: 1,
                    },
                ],
            }],
        });
        let text = metrics.encode();
        for line in [
            "herald_worker_delivered_total 7",
            "herald_worker_dead_total 1",
            r#"herald_worker_dead_letters_total{reason="undecodable"} 1"#,
            r#"herald_worker_dead_letters_total{reason="too_large"} 0"#,
            "herald_worker_webhooks 0",
            "herald_worker_open_breakers 1",
            "herald_worker_open_lanes 2",
            "herald_worker_requests_in_flight 1",
            r#"herald_worker_attempts_total{outcome="delivered",status_class="2xx"} 1"#,
            r#"herald_worker_attempts_total{outcome="retrying",status_class="5xx"} 1"#,
            "herald_worker_delivery_latency_seconds_count 1",
            "herald_worker_attempt_duration_seconds_count 2",
            "herald_worker_attempts_per_delivery_count 1",
            r#"herald_worker_stream_messages{stream="HERALD_DELIVERIES"} 12"#,
            r#"herald_worker_consumer_pending{stream="HERALD_DELIVERIES",consumer="herald-sender"} 10"#,
        ] {
            assert!(text.contains(line), "{line} is missing from:\n{text}");
        }
        drop(in_flight);
        assert!(
            metrics
                .encode()
                .contains("herald_worker_requests_in_flight 0")
        );
        assert!(!text.contains("wh_") && !text.contains("acct_") && !text.contains("07izipqh"));
    }
}
