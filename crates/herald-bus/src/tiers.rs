//! Retry delay-line tiers: one stream per wait time, named after it (`HERALD_RETRY_5M` holds
//! tasks that wait five minutes), so that each stream's FIFO order is its due order.

use std::fmt;
use std::time::Duration;

use herald_core::RetrySchedule;

use crate::names::{RETRY_CONSUMER_PREFIX, RETRY_STREAM_PREFIX, RETRY_SUBJECT_PREFIX};

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;

/// The production tiers, matching the default retry schedule's distinct delays.
const DEFAULT_DELAYS: [Duration; 6] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * MINUTE),
    Duration::from_secs(30 * MINUTE),
    Duration::from_secs(2 * HOUR),
    Duration::from_secs(5 * HOUR),
    Duration::from_secs(10 * HOUR),
];

/// Why a set of delays cannot be made into tiers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TierError {
    #[error("at least one retry tier is needed")]
    Empty,
    #[error("a retry tier must wait a whole number of milliseconds greater than zero, not {0:?}")]
    InvalidDelay(Duration),
}

/// One delay line: its wait and the stream, subject and consumer named after it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RetryTier {
    delay: Duration,
    label: String,
}

impl RetryTier {
    /// A tier waiting `delay`, which must be a whole, positive number of milliseconds so that
    /// two different tiers never share a name.
    pub fn new(delay: Duration) -> Result<RetryTier, TierError> {
        if delay.is_zero() || !delay.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(TierError::InvalidDelay(delay));
        }
        Ok(RetryTier {
            delay,
            label: label(delay),
        })
    }

    /// The production tier for a wait of `delay`: the longest of 5 s, 5 min, 30 min, 2 h, 5 h and
    /// 10 h that is not longer than `delay`, or 5 s for shorter delays. See
    /// [`RetryTiers::for_delay`].
    pub fn for_delay(delay: Duration) -> RetryTier {
        RetryTiers::default().for_delay(delay).clone()
    }

    /// How long tasks in this tier wait.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The delay in its largest exact unit, lower-case: `5s`, `30m`, `10h`, `1500ms`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// `HERALD_RETRY_<LABEL>`, e.g. `HERALD_RETRY_5S`.
    pub fn stream_name(&self) -> String {
        format!("{RETRY_STREAM_PREFIX}{}", self.label.to_ascii_uppercase())
    }

    /// `herald.retry.<label>`, e.g. `herald.retry.5s`.
    pub fn subject(&self) -> String {
        format!("{RETRY_SUBJECT_PREFIX}{}", self.label)
    }

    /// `herald-retry-<label>`, e.g. `herald-retry-5s`.
    pub fn consumer_name(&self) -> String {
        format!("{RETRY_CONSUMER_PREFIX}{}", self.label)
    }
}

impl fmt::Display for RetryTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

fn label(delay: Duration) -> String {
    let millis = delay.as_millis();
    let secs = delay.as_secs();
    if delay.subsec_millis() != 0 {
        format!("{millis}ms")
    } else if secs.is_multiple_of(HOUR) {
        format!("{}h", secs / HOUR)
    } else if secs.is_multiple_of(MINUTE) {
        format!("{}m", secs / MINUTE)
    } else {
        format!("{secs}s")
    }
}

/// The set of delay lines a deployment runs, shortest first. Tests use short ones (e.g. 1 s and
/// 2 s) so that retries happen within a test's time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryTiers {
    /// Sorted by delay, without duplicates, never empty.
    tiers: Vec<RetryTier>,
}

impl RetryTiers {
    /// Tiers for the given delays, in any order; duplicates are merged.
    pub fn new(delays: Vec<Duration>) -> Result<RetryTiers, TierError> {
        let mut tiers = delays
            .into_iter()
            .map(RetryTier::new)
            .collect::<Result<Vec<_>, _>>()?;
        tiers.sort();
        tiers.dedup();
        if tiers.is_empty() {
            return Err(TierError::Empty);
        }
        Ok(RetryTiers { tiers })
    }

    /// One tier per distinct delay of `schedule`, so every scheduled wait has an exact line.
    pub fn from_schedule(schedule: &RetrySchedule) -> Result<RetryTiers, TierError> {
        RetryTiers::new(schedule.delays().to_vec())
    }

    /// The tier for a wait of `delay`: the longest tier not longer than `delay`, or the shortest
    /// tier when `delay` is shorter than all of them.
    ///
    /// Rounding down means a task never waits in a line longer than it should; a task whose
    /// wait falls between tiers leaves its line early and is held until its `not_before`.
    pub fn for_delay(&self, delay: Duration) -> &RetryTier {
        let fitting = self.tiers.partition_point(|tier| tier.delay <= delay);
        // `tiers` is never empty, and `fitting - 1` is in range whenever `fitting > 0`.
        &self.tiers[fitting.saturating_sub(1)]
    }

    /// The tier whose subject is `subject`.
    pub fn by_subject(&self, subject: &str) -> Option<&RetryTier> {
        self.tiers.iter().find(|tier| tier.subject() == subject)
    }

    /// The tiers, shortest first.
    pub fn tiers(&self) -> &[RetryTier] {
        &self.tiers
    }

    pub fn iter(&self) -> std::slice::Iter<'_, RetryTier> {
        self.tiers.iter()
    }
}

impl Default for RetryTiers {
    /// 5 s, 5 min, 30 min, 2 h, 5 h and 10 h.
    fn default() -> Self {
        RetryTiers {
            tiers: DEFAULT_DELAYS
                .iter()
                .map(|&delay| RetryTier {
                    delay,
                    label: label(delay),
                })
                .collect(),
        }
    }
}

impl<'a> IntoIterator for &'a RetryTiers {
    type Item = &'a RetryTier;
    type IntoIter = std::slice::Iter<'a, RetryTier>;

    fn into_iter(self) -> Self::IntoIter {
        self.tiers.iter()
    }
}

#[cfg(test)]
mod tests {
    // Test inputs are literals known to be valid.
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn default_tiers_are_named_after_their_delay() {
        let names: Vec<_> = RetryTiers::default()
            .iter()
            .map(|tier| (tier.stream_name(), tier.subject(), tier.consumer_name()))
            .collect();
        let expected = [
            ("HERALD_RETRY_5S", "herald.retry.5s", "herald-retry-5s"),
            ("HERALD_RETRY_5M", "herald.retry.5m", "herald-retry-5m"),
            ("HERALD_RETRY_30M", "herald.retry.30m", "herald-retry-30m"),
            ("HERALD_RETRY_2H", "herald.retry.2h", "herald-retry-2h"),
            ("HERALD_RETRY_5H", "herald.retry.5h", "herald-retry-5h"),
            ("HERALD_RETRY_10H", "herald.retry.10h", "herald-retry-10h"),
        ]
        .map(|(s, j, c)| (s.to_owned(), j.to_owned(), c.to_owned()));
        assert_eq!(names, expected);
    }

    #[test]
    fn for_delay_picks_the_longest_tier_not_longer_than_the_delay() {
        let check = |delay: Duration, expected: &str| {
            assert_eq!(
                RetryTier::for_delay(delay).stream_name(),
                expected,
                "{delay:?}"
            );
        };
        check(Duration::ZERO, "HERALD_RETRY_5S");
        check(Duration::from_millis(1), "HERALD_RETRY_5S");
        check(secs(4), "HERALD_RETRY_5S");
        check(secs(5), "HERALD_RETRY_5S");
        check(secs(6), "HERALD_RETRY_5S");
        check(
            secs(5 * MINUTE) - Duration::from_millis(1),
            "HERALD_RETRY_5S",
        );
        check(secs(5 * MINUTE), "HERALD_RETRY_5M");
        check(secs(29 * MINUTE), "HERALD_RETRY_5M");
        check(secs(30 * MINUTE), "HERALD_RETRY_30M");
        check(secs(2 * HOUR), "HERALD_RETRY_2H");
        check(secs(4 * HOUR), "HERALD_RETRY_2H");
        check(secs(5 * HOUR), "HERALD_RETRY_5H");
        check(secs(10 * HOUR), "HERALD_RETRY_10H");
        check(secs(48 * HOUR), "HERALD_RETRY_10H");
        check(Duration::MAX, "HERALD_RETRY_10H");
    }

    #[test]
    fn custom_tiers_are_sorted_deduplicated_and_named() {
        let tiers = RetryTiers::new(vec![
            secs(2),
            Duration::from_millis(1500),
            secs(2),
            secs(90),
            secs(120),
        ])
        .unwrap();
        let labels: Vec<_> = tiers.iter().map(RetryTier::label).collect();
        assert_eq!(labels, ["1500ms", "2s", "90s", "2m"]);
        assert_eq!(tiers.tiers()[0].stream_name(), "HERALD_RETRY_1500MS");
        assert_eq!(tiers.tiers()[1].stream_name(), "HERALD_RETRY_2S");
        assert_eq!(tiers.for_delay(secs(1)).label(), "1500ms");
        assert_eq!(tiers.for_delay(secs(3)).label(), "2s");
        assert_eq!(tiers.for_delay(secs(100)).label(), "90s");
        assert_eq!(
            tiers.by_subject("herald.retry.90s").map(RetryTier::delay),
            Some(secs(90))
        );
        assert_eq!(tiers.by_subject("herald.retry.7s"), None);
    }

    #[test]
    fn invalid_tiers_are_rejected() {
        assert_eq!(RetryTiers::new(vec![]), Err(TierError::Empty));
        assert_eq!(
            RetryTiers::new(vec![Duration::ZERO]),
            Err(TierError::InvalidDelay(Duration::ZERO))
        );
        assert_eq!(
            RetryTier::new(Duration::from_micros(1500)),
            Err(TierError::InvalidDelay(Duration::from_micros(1500)))
        );
    }

    #[test]
    fn the_default_schedule_has_exactly_the_default_tiers() {
        let tiers = RetryTiers::from_schedule(&RetrySchedule::default()).unwrap();
        assert_eq!(tiers, RetryTiers::default());
    }
}
