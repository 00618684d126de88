//! Retry delay-line tiers: one stream per wait time, named after it (`HERALD_RETRY_5M` holds
//! tasks that wait five minutes), so that each stream's FIFO order is its due order.
//!
//! A wait is put in the longest line whose delay, less the schedule's jitter, it covers, so a
//! jittered scheduled delay always takes exactly one line. A line holds its head at most its
//! delay plus the jitter, so a wait between two lines takes a few hops; lines are added between
//! the schedule's delays wherever two are more than [`MAX_RATIO`] apart, which bounds those
//! hops to a handful (at most 9 for any wait up to the default schedule's longest).

use std::fmt;
use std::time::Duration;

use herald_core::RetrySchedule;

use crate::names::{RETRY_CONSUMER_PREFIX, RETRY_STREAM_PREFIX, RETRY_SUBJECT_PREFIX};

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;

/// The largest ratio between two neighbouring lines; lines are added between the schedule's
/// delays where they are further apart.
pub const MAX_RATIO: f64 = 3.0;

/// How much shorter than a line's delay a wait may be and still go in that line: the schedule's
/// jitter (±20 %), so every jittered scheduled delay has its own line.
const EARLY: f64 = 0.8;

/// How much longer than its delay a line may hold its head, as a factor: the jitter again, so
/// no task behind the head is later than its own delay plus the jitter.
pub const HOLD: f64 = 1.2;

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

    /// The production tier for a wait of `delay`. See [`RetryTiers::for_delay`].
    pub fn for_delay(delay: Duration) -> RetryTier {
        RetryTiers::default().for_delay(delay).clone()
    }

    /// The tier whose stream is `name` (`HERALD_RETRY_5M`), also one of an earlier schedule
    /// whose label this schedule would spell differently.
    pub fn from_stream_name(name: &str) -> Option<RetryTier> {
        let label = name.strip_prefix(RETRY_STREAM_PREFIX)?.to_ascii_lowercase();
        let (number, unit) = label.split_at(label.find(|c: char| !c.is_ascii_digit())?);
        let number: u64 = number.parse().ok()?;
        let delay = match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.checked_mul(MINUTE)?),
            "h" => Duration::from_secs(number.checked_mul(HOUR)?),
            _ => return None,
        };
        (!delay.is_zero()).then_some(RetryTier { delay, label })
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

    /// One tier per distinct delay of `schedule`, so every scheduled wait has an exact line,
    /// and tiers between delays more than [`MAX_RATIO`] apart.
    pub fn from_schedule(schedule: &RetrySchedule) -> Result<RetryTiers, TierError> {
        RetryTiers::new(ladder(schedule.delays()))
    }

    /// The tier for a wait of `delay`: the longest tier whose delay, less the jitter, `delay`
    /// covers, or the shortest tier when `delay` is shorter than that.
    ///
    /// A task never leaves a line before it is due (the line holds it); one whose wait is a
    /// little shorter than its line's delay may leave up to the jitter late, like everything
    /// in the line; one whose wait falls between lines leaves its line when that line's hold
    /// ends and goes on to the line that fits the rest of its wait.
    pub fn for_delay(&self, delay: Duration) -> &RetryTier {
        let fitting = self
            .tiers
            .partition_point(|tier| tier.delay.mul_f64(EARLY) <= delay);
        // `tiers` is never empty, and `fitting - 1` is in range whenever `fitting > 0`.
        &self.tiers[fitting.saturating_sub(1)]
    }

    /// How many lines a task waiting `delay` passes through, if each holds it as long as it
    /// may: the measure of [`for_delay`](Self::for_delay) and the ladder.
    pub fn hops(&self, delay: Duration) -> usize {
        let mut left = delay;
        let mut hops = 0;
        loop {
            hops += 1;
            let held = self.for_delay(left).delay.mul_f64(HOLD);
            if left <= held {
                return hops;
            }
            left -= held;
        }
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

/// `delays`, sorted, with delays added between neighbours more than [`MAX_RATIO`] apart, spaced
/// evenly on a log scale and rounded to a readable unit.
fn ladder(delays: &[Duration]) -> Vec<Duration> {
    let mut sorted: Vec<Duration> = delays.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut out = Vec::with_capacity(sorted.len() * 2);
    for pair in sorted.windows(2) {
        let (low, high) = (pair[0], pair[1]);
        out.push(low);
        let ratio = high.as_secs_f64() / low.as_secs_f64().max(1e-3);
        if ratio > MAX_RATIO {
            let steps = (ratio.ln() / MAX_RATIO.ln()).ceil();
            let step = ratio.powf(1.0 / steps);
            let mut at = low.as_secs_f64();
            for _ in 1..(steps as u32) {
                at *= step;
                out.push(readable(at));
            }
        }
    }
    out.extend(sorted.last().copied());
    out.sort();
    out.dedup();
    out.retain(|delay| !delay.is_zero());
    out
}

/// `secs` rounded to whole milliseconds under 10 s, seconds under 2 min, minutes under 2 h, and
/// hours beyond, so that added lines have names such as `14s`, `12m` or `1h`.
fn readable(secs: f64) -> Duration {
    let round = |unit: f64| Duration::from_secs_f64((secs / unit).round() * unit);
    if secs < 10.0 {
        Duration::from_millis((secs * 1000.0).round() as u64)
    } else if secs < 120.0 {
        round(1.0)
    } else if secs < 7200.0 {
        round(MINUTE as f64)
    } else {
        round(HOUR as f64)
    }
}

impl Default for RetryTiers {
    /// The lines of the default schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h) and those between.
    fn default() -> Self {
        match RetryTiers::from_schedule(&RetrySchedule::default()) {
            Ok(tiers) => tiers,
            // The default schedule's delays are whole seconds, so every tier is valid.
            Err(_) => RetryTiers {
                tiers: vec![RetryTier {
                    delay: Duration::from_secs(5),
                    label: label(Duration::from_secs(5)),
                }],
            },
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
            ("HERALD_RETRY_14S", "herald.retry.14s", "herald-retry-14s"),
            ("HERALD_RETRY_39S", "herald.retry.39s", "herald-retry-39s"),
            (
                "HERALD_RETRY_108S",
                "herald.retry.108s",
                "herald-retry-108s",
            ),
            ("HERALD_RETRY_5M", "herald.retry.5m", "herald-retry-5m"),
            ("HERALD_RETRY_12M", "herald.retry.12m", "herald-retry-12m"),
            ("HERALD_RETRY_30M", "herald.retry.30m", "herald-retry-30m"),
            ("HERALD_RETRY_1H", "herald.retry.1h", "herald-retry-1h"),
            ("HERALD_RETRY_2H", "herald.retry.2h", "herald-retry-2h"),
            ("HERALD_RETRY_5H", "herald.retry.5h", "herald-retry-5h"),
            ("HERALD_RETRY_10H", "herald.retry.10h", "herald-retry-10h"),
        ]
        .map(|(s, j, c)| (s.to_owned(), j.to_owned(), c.to_owned()));
        assert_eq!(names, expected);
    }

    #[test]
    fn a_wait_goes_to_the_longest_line_its_jitter_band_covers() {
        let check = |delay: Duration, expected: &str| {
            assert_eq!(
                RetryTier::for_delay(delay).stream_name(),
                expected,
                "{delay:?}"
            );
        };
        check(Duration::ZERO, "HERALD_RETRY_5S");
        check(secs(4), "HERALD_RETRY_5S");
        check(secs(6), "HERALD_RETRY_5S");
        // A five-minute retry jittered down by 20 % still has its own line.
        check(secs(4 * MINUTE), "HERALD_RETRY_5M");
        check(secs(5 * MINUTE), "HERALD_RETRY_5M");
        check(secs(6 * MINUTE), "HERALD_RETRY_5M");
        check(secs(24 * MINUTE), "HERALD_RETRY_30M");
        check(secs(48 * HOUR), "HERALD_RETRY_10H");
        check(Duration::MAX, "HERALD_RETRY_10H");
    }

    #[test]
    fn every_jittered_scheduled_delay_takes_one_line() {
        let schedule = RetrySchedule::default();
        let tiers = RetryTiers::from_schedule(&schedule).unwrap();
        for delay in schedule.delays() {
            for factor in [0.8, 0.9, 1.0, 1.1, 1.2] {
                let jittered = delay.mul_f64(factor);
                assert_eq!(tiers.hops(jittered), 1, "{jittered:?}");
            }
        }
    }

    #[test]
    fn any_wait_takes_a_handful_of_lines() {
        let tiers = RetryTiers::default();
        let longest = secs(12 * HOUR);
        let mut worst = (0, Duration::ZERO);
        let mut wait = Duration::from_millis(100);
        while wait <= longest {
            worst = worst.max((tiers.hops(wait), wait));
            wait = wait.mul_f64(1.003);
        }
        assert!(worst.0 <= 9, "{worst:?}");
        // Breaker rests (30 s to 10 min by default) and short Retry-After waits.
        let mut wait = secs(1);
        while wait <= secs(10 * MINUTE) {
            assert!(
                tiers.hops(wait) <= 6,
                "{wait:?} takes {} hops",
                tiers.hops(wait)
            );
            wait += Duration::from_millis(700);
        }
        // Before lines were added, a four-minute wait took 40 hops of the 5 s line.
        let sparse = RetryTiers::new(RetrySchedule::default().delays().to_vec()).unwrap();
        assert!(sparse.hops(secs(4 * MINUTE - 1)) > 30);
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
        // Within the 2 min line's jitter band.
        assert_eq!(tiers.for_delay(secs(100)).label(), "2m");
        assert_eq!(tiers.for_delay(secs(95)).label(), "90s");
        assert_eq!(
            tiers.by_subject("herald.retry.90s").map(RetryTier::delay),
            Some(secs(90))
        );
        assert_eq!(tiers.by_subject("herald.retry.7s"), None);
    }

    #[test]
    fn tiers_are_read_back_from_their_stream_names() {
        for tier in RetryTiers::default().iter() {
            assert_eq!(
                RetryTier::from_stream_name(&tier.stream_name()).as_ref(),
                Some(tier)
            );
        }
        let odd = RetryTier::from_stream_name("HERALD_RETRY_60S").unwrap();
        assert_eq!(odd.delay(), secs(60));
        assert_eq!(odd.consumer_name(), "herald-retry-60s");
        assert_eq!(
            RetryTier::from_stream_name("HERALD_RETRY_1500MS").map(|t| t.delay()),
            Some(Duration::from_millis(1500))
        );
        for bad in [
            "HERALD_RETRY_",
            "HERALD_RETRY_5",
            "HERALD_RETRY_0S",
            "HERALD_RETRY_5D",
            "EVENTS",
        ] {
            assert_eq!(RetryTier::from_stream_name(bad), None, "{bad}");
        }
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

    #[test]
    fn lines_are_added_only_where_delays_are_far_apart() {
        let delays = |tiers: RetryTiers| -> Vec<u128> {
            tiers.iter().map(|tier| tier.delay().as_millis()).collect()
        };
        let schedule = |ms: &[u64]| {
            RetrySchedule::new(ms.iter().map(|&n| Duration::from_millis(n)).collect()).unwrap()
        };
        let tiers = |ms: &[u64]| RetryTiers::from_schedule(&schedule(ms)).unwrap();
        assert_eq!(delays(tiers(&[100, 200])), [100, 200]);
        assert_eq!(delays(tiers(&[100, 3000])), [100, 234, 548, 1282, 3000]);
        assert_eq!(delays(tiers(&[5000])), [5000]);
    }
}
