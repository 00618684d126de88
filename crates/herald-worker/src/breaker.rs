//! Per-webhook circuit breakers: after consecutive failures an endpoint gets a rest, then a single
//! probe decides whether traffic resumes.
//!
//! A breaker protects two things: the endpoint, which should not be hammered while it is down,
//! and every other tenant, whose deliveries would otherwise queue behind requests that are bound
//! to time out. Deferring a task while the breaker is open is the sender's job; this module only
//! decides.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use herald_core::WebhookId;
use tokio::time::Instant;

/// How a breaker behaves. Defaults: open after 5 consecutive failures, rest 30 s, doubling after
/// each failed probe up to 10 min.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failed attempts that open the breaker.
    pub failures_to_open: u32,
    /// How long an opened breaker waits before letting a probe through.
    pub cool_down: Duration,
    /// Longest wait, reached by doubling after each failed probe.
    pub max_cool_down: Duration,
    /// How long a probe may stay unanswered before another one is let through; a probe lost to a
    /// crash or a shutdown must not keep the breaker half-open forever.
    pub probe_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures_to_open: 5,
            cool_down: Duration::from_secs(30),
            max_cool_down: Duration::from_secs(10 * 60),
            probe_timeout: Duration::from_secs(60),
        }
    }
}

/// Why a breaker configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BreakerError {
    #[error("failures to open must be at least 1")]
    NoFailures,
    #[error("cool-down must be greater than zero")]
    ZeroCoolDown,
    #[error("maximum cool-down {max:?} is shorter than the cool-down {base:?}")]
    MaxBelowBase { base: Duration, max: Duration },
}

impl BreakerConfig {
    pub fn validate(&self) -> Result<(), BreakerError> {
        if self.failures_to_open == 0 {
            return Err(BreakerError::NoFailures);
        }
        if self.cool_down.is_zero() {
            return Err(BreakerError::ZeroCoolDown);
        }
        if self.max_cool_down < self.cool_down {
            return Err(BreakerError::MaxBelowBase {
                base: self.cool_down,
                max: self.max_cool_down,
            });
        }
        Ok(())
    }
}

/// What the sender may do with a task for a webhook right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The breaker is closed: send.
    Send,
    /// The breaker is half-open and this request is its probe: send, and report the result.
    Probe,
    /// The breaker is open (or its probe is in flight): do not send; try again after this long.
    /// Zero means "as soon as the probe is answered", which the sender rounds up to its shortest
    /// delay line.
    Defer(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probe_started: Instant },
}

/// One webhook's breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Breaker {
    state: State,
    consecutive_failures: u32,
    /// The rest the breaker takes the next time it opens from half-open.
    cool_down: Duration,
}

impl Breaker {
    fn new(config: &BreakerConfig) -> Self {
        Self {
            state: State::Closed,
            consecutive_failures: 0,
            cool_down: config.cool_down,
        }
    }

    fn admit(&mut self, config: &BreakerConfig, now: Instant) -> Admission {
        match self.state {
            State::Closed => Admission::Send,
            State::Open { until } if now < until => Admission::Defer(until - now),
            State::HalfOpen { probe_started }
                if now.saturating_duration_since(probe_started) < config.probe_timeout =>
            {
                Admission::Defer(Duration::ZERO)
            }
            State::Open { .. } | State::HalfOpen { .. } => {
                self.state = State::HalfOpen { probe_started: now };
                Admission::Probe
            }
        }
    }

    /// The probe let through was not sent after all: let the next task probe at once.
    fn probe_abandoned(&mut self, now: Instant) {
        if matches!(self.state, State::HalfOpen { .. }) {
            self.state = State::Open { until: now };
        }
    }

    /// Returns true when this success closed an open or half-open breaker.
    fn succeeded(&mut self, config: &BreakerConfig) -> bool {
        let was_open = self.state != State::Closed;
        *self = Self::new(config);
        was_open
    }

    /// Returns true when this failure opened the breaker.
    fn failed(&mut self, config: &BreakerConfig, now: Instant) -> bool {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        match self.state {
            State::Closed if self.consecutive_failures >= config.failures_to_open => {
                self.state = State::Open {
                    until: now + self.cool_down,
                };
                true
            }
            State::Closed | State::Open { .. } => false,
            State::HalfOpen { .. } => {
                // The endpoint is still down: rest longer each time, so a dead endpoint costs
                // one request per max cool-down rather than one per base cool-down.
                self.cool_down = (self.cool_down * 2).min(config.max_cool_down);
                self.state = State::Open {
                    until: now + self.cool_down,
                };
                true
            }
        }
    }
}

/// Every webhook's breaker. Only webhooks with recent failures have an entry, so a hundred
/// thousand healthy webhooks cost nothing here.
#[derive(Debug)]
pub struct Breakers {
    config: BreakerConfig,
    breakers: Mutex<HashMap<WebhookId, Breaker>>,
}

impl Breakers {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            breakers: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<WebhookId, Breaker>> {
        // Every update replaces a breaker value whole, so a poisoned map is still consistent.
        self.breakers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn admit(&self, webhook: &WebhookId) -> Admission {
        self.admit_at(webhook, Instant::now())
    }

    fn admit_at(&self, webhook: &WebhookId, now: Instant) -> Admission {
        match self.lock().get_mut(webhook) {
            Some(breaker) => breaker.admit(&self.config, now),
            None => Admission::Send,
        }
    }

    /// Gives back a probe admitted by [`admit`](Self::admit) that was not sent.
    pub fn probe_abandoned(&self, webhook: &WebhookId) {
        if let Some(breaker) = self.lock().get_mut(webhook) {
            breaker.probe_abandoned(Instant::now());
        }
    }

    /// Records a delivered attempt. Returns true when it closed the breaker.
    pub fn succeeded(&self, webhook: &WebhookId) -> bool {
        let mut breakers = self.lock();
        let closed = breakers
            .get_mut(webhook)
            .is_some_and(|breaker| breaker.succeeded(&self.config));
        breakers.remove(webhook);
        closed
    }

    /// Records a failed attempt. Returns true when it opened the breaker.
    pub fn failed(&self, webhook: &WebhookId) -> bool {
        self.failed_at(webhook, Instant::now())
    }

    fn failed_at(&self, webhook: &WebhookId, now: Instant) -> bool {
        let mut breakers = self.lock();
        let breaker = breakers
            .entry(webhook.clone())
            .or_insert_with(|| Breaker::new(&self.config));
        breaker.failed(&self.config, now)
    }

    /// Forgets the breakers of webhooks for which `keep` says no (deleted webhooks), so the
    /// map holds only webhooks that exist.
    pub fn retain(&self, mut keep: impl FnMut(&WebhookId) -> bool) {
        self.lock().retain(|webhook, _| keep(webhook));
    }

    /// Webhooks whose breaker is open or half-open, for tests and diagnostics.
    pub fn open_count(&self) -> usize {
        self.lock()
            .values()
            .filter(|breaker| breaker.state != State::Closed)
            .count()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failures_to_open: 3,
            cool_down: Duration::from_secs(10),
            max_cool_down: Duration::from_secs(35),
            probe_timeout: Duration::from_secs(60),
        }
    }

    fn webhook() -> WebhookId {
        WebhookId::parse("wh_01BX5ZZKBKACTAV9WEVGEMMVRZ").unwrap()
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let breakers = Breakers::new(config());
        let id = webhook();
        let t0 = Instant::now();
        assert!(!breakers.failed_at(&id, t0));
        assert!(!breakers.failed_at(&id, t0));
        // A success in between resets the count.
        assert!(!breakers.succeeded(&id));
        assert!(!breakers.failed_at(&id, t0));
        assert!(!breakers.failed_at(&id, t0));
        assert_eq!(breakers.admit_at(&id, t0), Admission::Send);
        assert!(breakers.failed_at(&id, t0));
        assert_eq!(breakers.open_count(), 1);
        assert_eq!(
            breakers.admit_at(&id, t0 + Duration::from_secs(4)),
            Admission::Defer(Duration::from_secs(6))
        );
    }

    #[test]
    fn one_probe_after_the_cool_down() {
        let breakers = Breakers::new(config());
        let id = webhook();
        let t0 = Instant::now();
        for _ in 0..3 {
            breakers.failed_at(&id, t0);
        }
        let later = t0 + Duration::from_secs(10);
        assert_eq!(breakers.admit_at(&id, later), Admission::Probe);
        assert_eq!(
            breakers.admit_at(&id, later),
            Admission::Defer(Duration::ZERO)
        );
        assert!(breakers.succeeded(&id));
        assert_eq!(breakers.admit_at(&id, later), Admission::Send);
        assert_eq!(breakers.open_count(), 0);
    }

    #[test]
    fn failed_probes_double_the_cool_down_up_to_the_maximum() {
        let breakers = Breakers::new(config());
        let id = webhook();
        let mut now = Instant::now();
        for _ in 0..3 {
            breakers.failed_at(&id, now);
        }
        let mut rests = Vec::new();
        for _ in 0..4 {
            let Admission::Defer(rest) = breakers.admit_at(&id, now) else {
                panic!("expected the breaker to be open");
            };
            rests.push(rest.as_secs());
            now += rest;
            assert_eq!(breakers.admit_at(&id, now), Admission::Probe);
            assert!(breakers.failed_at(&id, now));
        }
        assert_eq!(rests, [10, 20, 35, 35]);
    }

    #[test]
    fn a_lost_probe_is_replaced_after_the_probe_timeout() {
        let breakers = Breakers::new(config());
        let id = webhook();
        let t0 = Instant::now();
        for _ in 0..3 {
            breakers.failed_at(&id, t0);
        }
        let probe_at = t0 + Duration::from_secs(10);
        assert_eq!(breakers.admit_at(&id, probe_at), Admission::Probe);
        assert_eq!(
            breakers.admit_at(&id, probe_at + Duration::from_secs(59)),
            Admission::Defer(Duration::ZERO)
        );
        assert_eq!(
            breakers.admit_at(&id, probe_at + Duration::from_secs(60)),
            Admission::Probe
        );
    }

    #[test]
    fn breakers_of_deleted_webhooks_can_be_forgotten() {
        let breakers = Breakers::new(config());
        let (kept, gone) = (
            webhook(),
            WebhookId::parse("wh_01BX5ZZKBKACTAV9WEVGEMMVS0").unwrap(),
        );
        for _ in 0..3 {
            breakers.failed(&kept);
            breakers.failed(&gone);
        }
        assert_eq!(breakers.open_count(), 2);
        breakers.retain(|id| *id == kept);
        assert_eq!(breakers.open_count(), 1);
        assert!(matches!(breakers.admit(&gone), Admission::Send));
    }

    #[test]
    fn config_validation() {
        assert_eq!(BreakerConfig::default().validate(), Ok(()));
        let check = |config: BreakerConfig, expect: &str| {
            assert_eq!(config.validate().unwrap_err().to_string(), expect);
        };
        check(
            BreakerConfig {
                failures_to_open: 0,
                ..config()
            },
            "failures to open must be at least 1",
        );
        check(
            BreakerConfig {
                cool_down: Duration::ZERO,
                ..config()
            },
            "cool-down must be greater than zero",
        );
        check(
            BreakerConfig {
                max_cool_down: Duration::from_secs(1),
                ..config()
            },
            "maximum cool-down 1s is shorter than the cool-down 10s",
        );
    }
}
