//! The worker's configuration: defaults overridden by `HERALD_*` environment variables, validated
//! once into a typed [`WorkerConfig`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Serialized};
use herald_bus::{ConsumerLimits, ProvisionOptions, RetryTiers};
use herald_core::{AddressPolicy, Keyring, RetrySchedule};
use ipnet::IpNet;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::breaker::BreakerConfig;
use crate::router::TASK_BYTES;

/// Requests in flight across all webhooks, by default.
pub const DEFAULT_CONCURRENCY: usize = 256;
/// Requests in flight to one webhook, by default.
pub const DEFAULT_PER_WEBHOOK_IN_FLIGHT: usize = 16;
/// The request timeout the design promises integrators, and its ceiling.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// Messages asked for per pull request.
pub const DEFAULT_FETCH_BATCH: usize = 128;
/// Events routed at once, by default. Each waits for its tasks' publish acknowledgements, so
/// with a backlog the router's rate is about this many events per round trip through a busy
/// nats-server: 64 routed 15k events/s on two cores, 256 about 17.6k (`herald bench`, paired).
pub const DEFAULT_ROUTER_CONCURRENCY: usize = 256;
/// Tasks of the shared sender consumer handed out and not yet acknowledged, across all
/// workers, by default: far above what the workers' permits hold, so it never limits a healthy
/// deployment.
pub const DEFAULT_SENDER_MAX_ACK_PENDING: usize = 10_000;
/// Bounds of `router_task_bytes`: at least a small task's worth, at most what one semaphore
/// request can ask for.
const MIN_TASK_BYTES: usize = 1024;
const MAX_TASK_BYTES: usize = u32::MAX as usize;

/// Pending events allowed for the router's consumer across all replicas: far above what the
/// replicas' permits can hold, so it never limits a healthy deployment.
const ROUTER_MAX_ACK_PENDING: i64 = 10_000;

/// Loopback networks, which local development delivers to; evaluated at compile time, so the
/// prefix lengths are checked there.
const LOOPBACK: [IpNet; 2] = [
    IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
    IpNet::new_assert(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
];

/// Time a task's message must stay unacknowledged after its request ends: publishing the
/// outcome and the retry.
const SENDER_ACK_MARGIN: Duration = Duration::from_secs(1);

/// The environment keys the worker reads, without the `HERALD_` prefix. Other `HERALD_*`
/// variables belong to the registry (the two can share an environment in `herald dev`) and are
/// ignored here.
const KEYS: [&str; 21] = [
    "nats_url",
    "encryption_key",
    "create_streams",
    "stream_replicas",
    "concurrency",
    "per_webhook_in_flight",
    "request_timeout",
    "retry_schedule",
    "address_allowlist",
    "breaker_failures",
    "breaker_cool_down",
    "breaker_max_cool_down",
    "shutdown_deadline",
    "fetch_batch",
    "router_concurrency",
    "router_task_bytes",
    "delay_ack_wait",
    "router_ack_wait",
    "sender_ack_wait",
    "sender_max_ack_pending",
    "outbound_trace",
];

/// What the W3C `traceparent` of a webhook request names. Either way its parent id is the
/// sender's span for that attempt, so an operator can find the attempt an integrator quotes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutboundTrace {
    /// Herald's own trace id per delivery (derived from the delivery id, so every attempt of
    /// one delivery shares it): the platform's internal trace ids stay inside.
    #[default]
    Delivery,
    /// The platform's trace passes through: the request continues the trace the event was
    /// published in. For receivers inside the same organisation.
    Platform,
}

/// Why the configuration is unusable. Every message names the environment variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration key {key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error("configuration: {0}")]
    Load(String),
}

impl ConfigError {
    fn invalid(key: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: env_name(key),
            reason: reason.into(),
        }
    }
}

fn env_name(key: &str) -> String {
    format!("HERALD_{}", key.to_ascii_uppercase())
}

/// As read, before validation: durations and lists are text so that validation can say which
/// key holds a bad one.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RawConfig {
    nats_url: String,
    encryption_key: Option<String>,
    create_streams: bool,
    stream_replicas: usize,
    concurrency: usize,
    per_webhook_in_flight: usize,
    request_timeout: String,
    retry_schedule: String,
    address_allowlist: String,
    breaker_failures: u32,
    breaker_cool_down: String,
    breaker_max_cool_down: String,
    shutdown_deadline: String,
    fetch_batch: usize,
    router_concurrency: usize,
    router_task_bytes: usize,
    delay_ack_wait: String,
    router_ack_wait: String,
    sender_ack_wait: String,
    sender_max_ack_pending: usize,
    outbound_trace: OutboundTrace,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".to_owned(),
            encryption_key: None,
            create_streams: false,
            stream_replicas: 1,
            concurrency: DEFAULT_CONCURRENCY,
            per_webhook_in_flight: DEFAULT_PER_WEBHOOK_IN_FLIGHT,
            request_timeout: "15s".to_owned(),
            retry_schedule: "5s,5m,30m,2h,5h,10h,10h".to_owned(),
            address_allowlist: String::new(),
            breaker_failures: 5,
            breaker_cool_down: "30s".to_owned(),
            breaker_max_cool_down: "10m".to_owned(),
            shutdown_deadline: "10s".to_owned(),
            fetch_batch: DEFAULT_FETCH_BATCH,
            router_concurrency: DEFAULT_ROUTER_CONCURRENCY,
            router_task_bytes: TASK_BYTES,
            delay_ack_wait: "30s".to_owned(),
            router_ack_wait: "30s".to_owned(),
            sender_ack_wait: "60s".to_owned(),
            sender_max_ack_pending: DEFAULT_SENDER_MAX_ACK_PENDING,
            outbound_trace: OutboundTrace::default(),
        }
    }
}

/// Validated configuration of the worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub nats_url: String,
    /// The registry's keys, which open the signing secrets sealed in the webhook bucket.
    pub keyring: Keyring,
    /// Create the streams and consumers Herald needs when missing (dev and tests); production
    /// provisions them once and the worker only checks that they exist.
    pub create_streams: bool,
    pub stream_replicas: usize,
    /// Requests in flight across all webhooks.
    pub concurrency: usize,
    /// Requests in flight to one webhook; more tasks for it wait in its lane.
    pub per_webhook_in_flight: usize,
    /// Time allowed for the whole request, response head included.
    pub request_timeout: Duration,
    /// Delays between attempts; the retry tiers (delay lines) are its distinct delays.
    pub retry_schedule: RetrySchedule,
    /// Which addresses deliveries may reach.
    pub address_policy: AddressPolicy,
    pub breaker: BreakerConfig,
    /// How long a shutdown waits for requests in flight before handing their tasks back.
    pub shutdown_deadline: Duration,
    /// Messages asked for per pull request.
    pub fetch_batch: usize,
    /// Events routed at once; each waits for its tasks' publish acknowledgements.
    pub router_concurrency: usize,
    /// Bytes of encoded delivery tasks the router holds at once, across its handlers: a
    /// fan-out larger than this is stored in parts (see [`TASK_BYTES`]).
    pub router_task_bytes: usize,
    /// Ack wait of the delay-line consumers, which send progress while holding a message.
    pub delay_ack_wait: Duration,
    /// Ack wait of the router's consumer: how soon an event whose router died is routed again.
    pub router_ack_wait: Duration,
    /// Ack wait of the sender's consumer: how soon a task whose sender died is sent again. It
    /// must leave room for the longest request and the publishes after it.
    pub sender_ack_wait: Duration,
    /// Tasks the shared sender consumer hands out and waits for acknowledgements of, across
    /// all workers together.
    pub sender_max_ack_pending: usize,
    /// What the `traceparent` of a webhook request names (`HERALD_OUTBOUND_TRACE`).
    pub outbound_trace: OutboundTrace,
    /// Sent as `user-agent`.
    pub user_agent: String,
    /// Certificate authorities trusted beside the platform's, for endpoints whose certificates
    /// they issued. Set in code (the bench trusts its own receiver this way); an operator adds
    /// a company's authority to the platform's store instead.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

/// `Herald/<version>`.
pub fn user_agent() -> String {
    format!("Herald/{}", env!("CARGO_PKG_VERSION"))
}

impl WorkerConfig {
    /// Reads the `HERALD_*` environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let figment = Figment::from(Serialized::defaults(RawConfig::default()))
            .merge(Env::prefixed("HERALD_").only(&KEYS));
        Self::from_figment(figment)
    }

    /// A configuration for tests and `herald dev`: streams are created, loopback is an allowed
    /// destination, and everything else is default.
    pub fn for_local(nats_url: &str) -> Self {
        Self {
            nats_url: nats_url.to_owned(),
            keyring: Keyring::default(),
            create_streams: true,
            stream_replicas: 1,
            concurrency: DEFAULT_CONCURRENCY,
            per_webhook_in_flight: DEFAULT_PER_WEBHOOK_IN_FLIGHT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry_schedule: RetrySchedule::default(),
            address_policy: AddressPolicy::allowing(LOOPBACK.to_vec()),
            breaker: BreakerConfig::default(),
            shutdown_deadline: DEFAULT_SHUTDOWN_DEADLINE,
            fetch_batch: DEFAULT_FETCH_BATCH,
            router_concurrency: DEFAULT_ROUTER_CONCURRENCY,
            router_task_bytes: TASK_BYTES,
            delay_ack_wait: Duration::from_secs(30),
            router_ack_wait: Duration::from_secs(30),
            sender_ack_wait: Duration::from_secs(60),
            sender_max_ack_pending: DEFAULT_SENDER_MAX_ACK_PENDING,
            outbound_trace: OutboundTrace::default(),
            user_agent: user_agent(),
            extra_roots: Vec::new(),
        }
    }

    /// Checks the invariants the worker relies on; [`from_env`](Self::from_env) already did.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.nats_url.trim().is_empty() {
            return Err(ConfigError::invalid("nats_url", "must not be empty"));
        }
        if !(1..=5).contains(&self.stream_replicas) {
            return Err(ConfigError::invalid(
                "stream_replicas",
                "must be between 1 and 5",
            ));
        }
        for (key, value) in [
            ("concurrency", self.concurrency),
            ("per_webhook_in_flight", self.per_webhook_in_flight),
            ("fetch_batch", self.fetch_batch),
            ("router_concurrency", self.router_concurrency),
            ("sender_max_ack_pending", self.sender_max_ack_pending),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if !(MIN_TASK_BYTES..=MAX_TASK_BYTES).contains(&self.router_task_bytes) {
            return Err(ConfigError::invalid(
                "router_task_bytes",
                format!("must be between {MIN_TASK_BYTES} and {MAX_TASK_BYTES}"),
            ));
        }
        if self.request_timeout.is_zero() || self.request_timeout > MAX_REQUEST_TIMEOUT {
            return Err(ConfigError::invalid(
                "request_timeout",
                format!(
                    "must be greater than zero and at most {}",
                    humantime::format_duration(MAX_REQUEST_TIMEOUT)
                ),
            ));
        }
        self.breaker.validate().map_err(|err| {
            let key = match err {
                crate::breaker::BreakerError::NoFailures => "breaker_failures",
                crate::breaker::BreakerError::ZeroCoolDown => "breaker_cool_down",
                crate::breaker::BreakerError::MaxBelowBase { .. } => "breaker_max_cool_down",
            };
            ConfigError::invalid(key, err.to_string())
        })?;
        for (key, value) in [
            ("delay_ack_wait", self.delay_ack_wait),
            ("router_ack_wait", self.router_ack_wait),
        ] {
            if value < Duration::from_secs(1) {
                return Err(ConfigError::invalid(key, "must be at least 1s"));
            }
        }
        if self.sender_ack_wait <= self.request_timeout + SENDER_ACK_MARGIN {
            return Err(ConfigError::invalid(
                "sender_ack_wait",
                format!(
                    "must be longer than the request timeout ({}) plus {}",
                    humantime::format_duration(self.request_timeout),
                    humantime::format_duration(SENDER_ACK_MARGIN)
                ),
            ));
        }
        self.retry_tiers()?;
        Ok(())
    }

    /// The streams and consumers this configuration needs, as `herald provision` and a
    /// starting worker create or update them.
    pub fn provision_options(&self, retry_tiers: RetryTiers) -> ProvisionOptions {
        ProvisionOptions {
            create_events_stream: self.create_streams,
            replicas: self.stream_replicas,
            retry_tiers,
            router: ConsumerLimits {
                ack_wait: self.router_ack_wait,
                max_ack_pending: ROUTER_MAX_ACK_PENDING,
                max_deliver: -1,
            },
            sender: ConsumerLimits {
                ack_wait: self.sender_ack_wait,
                max_ack_pending: i64::try_from(self.sender_max_ack_pending).unwrap_or(i64::MAX),
                max_deliver: -1,
            },
            // One message in flight per line across all replicas keeps the head in due order.
            retry: ConsumerLimits {
                ack_wait: self.delay_ack_wait,
                max_ack_pending: 1,
                max_deliver: -1,
            },
            ..ProvisionOptions::default()
        }
    }

    /// The delay lines: one per distinct delay of the retry schedule.
    pub fn retry_tiers(&self) -> Result<RetryTiers, ConfigError> {
        RetryTiers::from_schedule(&self.retry_schedule)
            .map_err(|err| ConfigError::invalid("retry_schedule", err.to_string()))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let raw: RawConfig = figment.extract().map_err(|err| {
            match err.path.first().filter(|key| !key.is_empty()) {
                Some(key) => ConfigError::invalid(key, err.kind.to_string()),
                None => ConfigError::Load(err.to_string()),
            }
        })?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let delays = raw
            .retry_schedule
            .split(',')
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .map(|text| parse_duration("retry_schedule", text))
            .collect::<Result<Vec<_>, _>>()?;
        let retry_schedule = RetrySchedule::new(delays)
            .map_err(|err| ConfigError::invalid("retry_schedule", err.to_string()))?;
        let allow = raw
            .address_allowlist
            .split(',')
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .map(|text| {
                text.parse::<IpNet>().map_err(|_| {
                    ConfigError::invalid(
                        "address_allowlist",
                        format!("{text:?} is not a network such as 10.0.0.0/8"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let request_timeout = parse_duration("request_timeout", &raw.request_timeout)?;
        let keyring = match raw.encryption_key {
            None => Keyring::default(),
            Some(text) => Keyring::parse(&secrecy::SecretString::from(text))
                .map_err(|err| ConfigError::invalid("encryption_key", err.to_string()))?,
        };
        let config = Self {
            nats_url: raw.nats_url,
            keyring,
            create_streams: raw.create_streams,
            stream_replicas: raw.stream_replicas,
            concurrency: raw.concurrency,
            per_webhook_in_flight: raw.per_webhook_in_flight,
            request_timeout,
            retry_schedule,
            address_policy: AddressPolicy::allowing(allow),
            breaker: BreakerConfig {
                failures_to_open: raw.breaker_failures,
                cool_down: parse_duration("breaker_cool_down", &raw.breaker_cool_down)?,
                max_cool_down: parse_duration("breaker_max_cool_down", &raw.breaker_max_cool_down)?,
                probe_timeout: request_timeout * 2,
            },
            shutdown_deadline: parse_duration("shutdown_deadline", &raw.shutdown_deadline)?,
            fetch_batch: raw.fetch_batch,
            router_concurrency: raw.router_concurrency,
            router_task_bytes: raw.router_task_bytes,
            delay_ack_wait: parse_duration("delay_ack_wait", &raw.delay_ack_wait)?,
            router_ack_wait: parse_duration("router_ack_wait", &raw.router_ack_wait)?,
            sender_ack_wait: parse_duration("sender_ack_wait", &raw.sender_ack_wait)?,
            sender_max_ack_pending: raw.sender_max_ack_pending,
            outbound_trace: raw.outbound_trace,
            user_agent: user_agent(),
            extra_roots: Vec::new(),
        };
        config.validate()?;
        Ok(config)
    }
}

fn parse_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    let duration = humantime::parse_duration(text.trim()).map_err(|err| {
        ConfigError::invalid(
            key,
            format!("{text:?} is not a duration such as 5s ({err})"),
        )
    })?;
    if duration.is_zero() {
        return Err(ConfigError::invalid(key, "must be greater than zero"));
    }
    Ok(duration)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<WorkerConfig, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
        for (key, value) in pairs {
            // Parsed as the environment provider parses variables, so "8" is a number.
            let value: figment::value::Value = value.parse().unwrap();
            figment = figment.merge((*key, value));
        }
        WorkerConfig::from_figment(figment)
    }

    fn error_of(pairs: &[(&str, &str)]) -> String {
        match load(pairs) {
            Ok(_) => panic!("expected {pairs:?} to be rejected"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn defaults_match_the_design() {
        let config = load(&[]).unwrap();
        assert_eq!(config.concurrency, 256);
        assert_eq!(config.router_concurrency, 256);
        assert_eq!(config.router_task_bytes, 64 * 1024 * 1024);
        assert_eq!(config.per_webhook_in_flight, 16);
        assert_eq!(config.request_timeout, Duration::from_secs(15));
        assert_eq!(config.retry_schedule, RetrySchedule::default());
        assert_eq!(config.breaker.failures_to_open, 5);
        assert_eq!(config.breaker.cool_down, Duration::from_secs(30));
        assert_eq!(config.breaker.max_cool_down, Duration::from_secs(600));
        assert_eq!(config.shutdown_deadline, Duration::from_secs(10));
        assert!(config.address_policy.allow.is_empty());
        assert!(!config.create_streams);
        assert!(config.user_agent.starts_with("Herald/"));
    }

    #[test]
    fn values_are_typed() {
        let config = load(&[
            ("retry_schedule", "100ms, 200ms"),
            ("address_allowlist", "127.0.0.0/8, ::1/128"),
            ("request_timeout", "2s"),
            ("concurrency", "8"),
            (
                "encryption_key",
                "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=, AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=",
            ),
        ])
        .unwrap();
        assert_eq!(config.keyring.key_ids().count(), 2);
        assert_eq!(
            config.retry_schedule.delays(),
            [Duration::from_millis(100), Duration::from_millis(200)]
        );
        assert_eq!(config.address_policy.allow.len(), 2);
        assert_eq!(config.request_timeout, Duration::from_secs(2));
        assert_eq!(config.breaker.probe_timeout, Duration::from_secs(4));
        assert_eq!(config.concurrency, 8);
    }

    #[test]
    fn bad_values_name_their_key() {
        let errors: Vec<String> = [
            ("request_timeout", "31s"),
            ("request_timeout", "soon"),
            ("retry_schedule", ""),
            ("retry_schedule", "5s,8d"),
            ("address_allowlist", "127.0.0.1/8,banana"),
            ("concurrency", "0"),
            ("concurrency", "lots"),
            ("breaker_max_cool_down", "1s"),
            ("stream_replicas", "7"),
            ("retry_schedule", "5s,1500us"),
            ("sender_ack_wait", "10s"),
            ("encryption_key", "c2hvcnQ="),
        ]
        .iter()
        .map(|pair| error_of(&[*pair]))
        .collect();
        expect_test::expect![[r#"
            configuration key HERALD_REQUEST_TIMEOUT: must be greater than zero and at most 30s
            configuration key HERALD_REQUEST_TIMEOUT: "soon" is not a duration such as 5s (expected number at 0)
            configuration key HERALD_RETRY_SCHEDULE: retry schedule must hold at least one delay
            configuration key HERALD_RETRY_SCHEDULE: retry delay 1 is 691200s, longer than the maximum of 7 days
            configuration key HERALD_ADDRESS_ALLOWLIST: "banana" is not a network such as 10.0.0.0/8
            configuration key HERALD_CONCURRENCY: must be at least 1
            configuration key HERALD_CONCURRENCY: invalid type: found string "lots", expected usize
            configuration key HERALD_BREAKER_MAX_COOL_DOWN: maximum cool-down 1s is shorter than the cool-down 30s
            configuration key HERALD_STREAM_REPLICAS: must be between 1 and 5
            configuration key HERALD_RETRY_SCHEDULE: a retry tier must wait a whole number of milliseconds greater than zero, not 1.5ms
            configuration key HERALD_SENDER_ACK_WAIT: must be longer than the request timeout (15s) plus 1s
            configuration key HERALD_ENCRYPTION_KEY: key 1 is not 32 bytes in standard base64 (make one with: openssl rand -base64 32)"#]]
        .assert_eq(&errors.join("\n"));
    }

    #[test]
    fn local_config_allows_loopback() {
        let config = WorkerConfig::for_local("nats://127.0.0.1:4222");
        config.validate().unwrap();
        assert!(
            config
                .address_policy
                .check("127.0.0.1".parse().unwrap())
                .is_ok()
        );
        assert!(
            config
                .address_policy
                .check("10.0.0.1".parse().unwrap())
                .is_err()
        );
    }
}
