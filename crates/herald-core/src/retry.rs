//! When to try a delivery again: the retry schedule, jitter, `Retry-After`, and what a response
//! status means for the delivery.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use rand::Rng;

/// Most retries a schedule may hold; more would keep a dead endpoint's deliveries for weeks.
pub const MAX_RETRIES: usize = 32;

/// Longest single delay a schedule may hold.
pub const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Fraction by which [`jittered`] moves a delay either way.
pub const JITTER: f64 = 0.2;

/// Why a list of delays is not a usable schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryError {
    #[error("retry schedule must hold at least one delay")]
    Empty,
    #[error("retry schedule may hold at most {MAX_RETRIES} delays, found {len}")]
    TooLong { len: usize },
    #[error("retry delay {index} is {delay:?}, longer than the maximum of 7 days")]
    DelayTooLong { index: usize, delay: Duration },
}

/// The delays between the attempts of one delivery.
///
/// The first attempt is always immediate; the schedule holds the waits before the second, third
/// and later attempts, so a schedule of n delays allows n + 1 attempts. This is the form Svix
/// configures its schedule in, and the form the delay-line tiers are named after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

impl Default for RetrySchedule {
    /// Immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h: 8 attempts over about 28 h,
    /// long enough to ride out a day-long outage of the receiver.
    fn default() -> Self {
        const MINUTE: u64 = 60;
        const HOUR: u64 = 60 * MINUTE;
        Self {
            delays: [
                5,
                5 * MINUTE,
                30 * MINUTE,
                2 * HOUR,
                5 * HOUR,
                10 * HOUR,
                10 * HOUR,
            ]
            .into_iter()
            .map(Duration::from_secs)
            .collect(),
        }
    }
}

impl RetrySchedule {
    /// A schedule with the given waits between attempts (not counting the immediate first one).
    pub fn new(delays: Vec<Duration>) -> Result<Self, RetryError> {
        if delays.is_empty() {
            return Err(RetryError::Empty);
        }
        if delays.len() > MAX_RETRIES {
            return Err(RetryError::TooLong { len: delays.len() });
        }
        if let Some((index, &delay)) = delays.iter().enumerate().find(|(_, d)| **d > MAX_DELAY) {
            return Err(RetryError::DelayTooLong { index, delay });
        }
        Ok(Self { delays })
    }

    /// The waits between attempts, in order.
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// How many attempts a delivery gets in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        // `new` caps the length far below u32::MAX.
        u32::try_from(self.delays.len() + 1).unwrap_or(u32::MAX)
    }

    /// The wait before the next attempt once attempt `attempt` (counted from 1) has failed, or
    /// `None` when that was the last. Attempt 0, "nothing tried yet", waits for nothing.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        match attempt {
            0 => Some(Duration::ZERO),
            n => self.delays.get(usize::try_from(n - 1).ok()?).copied(),
        }
    }

    /// The longest wait in the schedule.
    pub fn longest(&self) -> Duration {
        self.delays.iter().copied().max().unwrap_or(Duration::ZERO)
    }

    /// The wait to use when the endpoint sent `Retry-After: retry_after` on failed attempt
    /// `attempt`.
    ///
    /// The endpoint may slow Herald down but not speed it up: the result is never shorter than the
    /// scheduled delay (a `Retry-After: 0` from an overloaded endpoint must not turn the schedule
    /// into a tight loop) and never longer than the schedule's longest delay (an endpoint cannot
    /// park deliveries indefinitely). Whether another attempt happens at all is still
    /// [`delay_after`](Self::delay_after)'s call; after the last attempt this returns the longest
    /// delay.
    pub fn clamp_retry_after(&self, retry_after: Duration, attempt: u32) -> Duration {
        let longest = self.longest();
        let scheduled = self.delay_after(attempt).unwrap_or(longest).min(longest);
        retry_after.clamp(scheduled, longest)
    }
}

/// `delay` moved by a uniformly random amount of up to ±20%, so that deliveries that failed
/// together (an endpoint's outage) do not all come back in the same instant.
pub fn jittered(delay: Duration, rng: &mut impl Rng) -> Duration {
    let factor = rng.random_range((1.0 - JITTER)..=(1.0 + JITTER));
    // `mul_f64` panics on overflow; a delay near Duration::MAX is already "never".
    Duration::try_from_secs_f64(delay.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// Reads a `Retry-After` header: delay-seconds, or an HTTP-date (RFC 9110, including the two
/// obsolete date forms it still requires recipients to accept). A date in the past means "now".
pub fn parse_retry_after(header: &str, now: DateTime<Utc>) -> Option<Duration> {
    let header = header.trim();
    if !header.is_empty() && header.bytes().all(|b| b.is_ascii_digit()) {
        // An absurd number of seconds is still "a long time", not "no hint".
        return Some(Duration::from_secs(header.parse().unwrap_or(u64::MAX)));
    }
    let at = DateTime::parse_from_rfc2822(header)
        .map(|at| at.with_timezone(&Utc))
        .or_else(|_| {
            // RFC 850: `Sunday, 06-Nov-94 08:49:37 GMT`; asctime: `Sun Nov  6 08:49:37 1994`.
            NaiveDateTime::parse_from_str(header, "%A, %d-%b-%y %H:%M:%S GMT")
                .or_else(|_| NaiveDateTime::parse_from_str(header, "%a %b %e %H:%M:%S %Y"))
                .map(|naive| naive.and_utc())
        })
        .ok()?;
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// What a response status means for the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// 2xx: the receiver has it.
    Delivered,
    /// 410 Gone: the endpoint says it will never want these again; disable the webhook.
    Disable,
    /// 429 and 503: the endpoint asked for time; honour its `Retry-After`, within the schedule.
    RetryHonouringRetryAfter,
    /// Anything else, including 3xx (redirects are not followed: the registered URL is the one
    /// that was checked) and 4xx (often a deploy in progress or a bug the receiver will fix).
    Retry,
}

impl Disposition {
    pub fn is_delivered(self) -> bool {
        self == Disposition::Delivered
    }
}

pub fn classify(status: u16) -> Disposition {
    match status {
        200..=299 => Disposition::Delivered,
        410 => Disposition::Disable,
        429 | 503 => Disposition::RetryHonouringRetryAfter,
        _ => Disposition::Retry,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn default_schedule() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.max_attempts(), 8);
        let waits: Vec<Option<Duration>> = (0..=9).map(|a| schedule.delay_after(a)).collect();
        assert_eq!(
            waits,
            [
                Some(Duration::ZERO),
                Some(secs(5)),
                Some(secs(300)),
                Some(secs(1800)),
                Some(secs(7200)),
                Some(secs(18000)),
                Some(secs(36000)),
                Some(secs(36000)),
                None,
                None,
            ]
        );
        let total: Duration = schedule.delays().iter().sum();
        assert_eq!(total, secs(5 + 300 + 1800 + 7200 + 18000 + 36000 + 36000));
        assert_eq!(schedule.longest(), secs(36000));
        assert_eq!(schedule.delay_after(u32::MAX), None);
    }

    #[test]
    fn custom_schedules() {
        let schedule = RetrySchedule::new(vec![secs(1), secs(2)]).unwrap();
        assert_eq!(schedule.max_attempts(), 3);
        assert_eq!(schedule.delay_after(2), Some(secs(2)));
        assert_eq!(schedule.delay_after(3), None);
        assert_eq!(RetrySchedule::new(vec![]), Err(RetryError::Empty));
        assert_eq!(
            RetrySchedule::new(vec![secs(1); 33])
                .unwrap_err()
                .to_string(),
            "retry schedule may hold at most 32 delays, found 33"
        );
        assert_eq!(
            RetrySchedule::new(vec![secs(1), secs(8 * 24 * 3600)])
                .unwrap_err()
                .to_string(),
            "retry delay 1 is 691200s, longer than the maximum of 7 days"
        );
    }

    #[test]
    fn retry_after_is_clamped() {
        let schedule = RetrySchedule::default();
        let check = |retry_after: u64, attempt: u32, expect: u64| {
            assert_eq!(
                schedule.clamp_retry_after(secs(retry_after), attempt),
                secs(expect),
                "Retry-After {retry_after} after attempt {attempt}"
            );
        };
        check(0, 1, 5);
        check(120, 1, 120);
        check(120, 3, 1800);
        check(999_999, 2, 36000);
        check(999_999, 8, 36000);
        check(60, 8, 36000);
    }

    #[test]
    fn retry_after_header() {
        let now: DateTime<Utc> = "2015-10-21T07:28:00Z".parse().unwrap();
        let check = |header: &str, expect: Option<u64>| {
            assert_eq!(
                parse_retry_after(header, now),
                expect.map(secs),
                "{header:?}"
            );
        };
        check("120", Some(120));
        check(" 0 ", Some(0));
        check("99999999999999999999999", Some(u64::MAX));
        check("Wed, 21 Oct 2015 07:28:00 GMT", Some(0));
        check("Wed, 21 Oct 2015 07:29:30 GMT", Some(90));
        check("Wed, 21 Oct 2015 07:00:00 GMT", Some(0));
        check("Wednesday, 21-Oct-15 07:30:00 GMT", Some(120));
        check("Wed Oct 21 07:31:00 2015", Some(180));
        check("-5", None);
        check("1.5", None);
        check("", None);
        check("soon", None);
    }

    #[test]
    fn dispositions() {
        let check = |status: u16, expect: Disposition| {
            assert_eq!(classify(status), expect, "{status}");
        };
        check(200, Disposition::Delivered);
        check(204, Disposition::Delivered);
        check(299, Disposition::Delivered);
        check(100, Disposition::Retry);
        check(301, Disposition::Retry);
        check(308, Disposition::Retry);
        check(400, Disposition::Retry);
        check(404, Disposition::Retry);
        check(410, Disposition::Disable);
        check(429, Disposition::RetryHonouringRetryAfter);
        check(500, Disposition::Retry);
        check(502, Disposition::Retry);
        check(503, Disposition::RetryHonouringRetryAfter);
        assert!(classify(201).is_delivered());
        assert!(!classify(503).is_delivered());
    }

    #[test]
    fn jitter_spreads_around_the_delay() {
        let mut rng = StdRng::seed_from_u64(7);
        let samples: Vec<Duration> = (0..1000).map(|_| jittered(secs(100), &mut rng)).collect();
        assert!(samples.iter().all(|d| (secs(80)..=secs(120)).contains(d)));
        assert!(samples.iter().any(|d| *d < secs(85)));
        assert!(samples.iter().any(|d| *d > secs(115)));
        assert_eq!(jittered(Duration::ZERO, &mut rng), Duration::ZERO);
    }

    proptest! {
        #[test]
        fn jitter_stays_within_twenty_percent(ms in 0u64..100_000_000, seed: u64) {
            let delay = Duration::from_millis(ms);
            let got = jittered(delay, &mut StdRng::seed_from_u64(seed));
            prop_assert!(got >= delay.mul_f64(0.8) && got <= delay.mul_f64(1.2) + Duration::from_nanos(1));
        }

        #[test]
        fn clamp_stays_within_schedule(retry_after in 0u64..10_000_000, attempt in 0u32..12) {
            let schedule = RetrySchedule::default();
            let got = schedule.clamp_retry_after(secs(retry_after), attempt);
            prop_assert!(got <= schedule.longest());
            if let Some(scheduled) = schedule.delay_after(attempt) {
                prop_assert!(got >= scheduled);
            }
        }

        #[test]
        fn schedules_have_one_more_attempt_than_delays(
            delays in proptest::collection::vec(0..=MAX_DELAY.as_secs(), 1..=MAX_RETRIES),
        ) {
            let schedule = RetrySchedule::new(delays.iter().copied().map(secs).collect()).unwrap();
            let attempts = schedule.max_attempts();
            prop_assert_eq!(attempts as usize, delays.len() + 1);
            prop_assert!(schedule.delay_after(attempts - 1).is_some());
            prop_assert_eq!(schedule.delay_after(attempts), None);
        }

        #[test]
        fn delta_seconds_parse(n: u32) {
            prop_assert_eq!(parse_retry_after(&n.to_string(), Utc::now()), Some(secs(n.into())));
        }

        #[test]
        fn retry_after_parse_never_panics(text in "\\PC{0,40}") {
            let _ = parse_retry_after(&text, Utc::now());
        }

        #[test]
        fn every_2xx_is_delivered(status in 200u16..300) {
            prop_assert_eq!(classify(status), Disposition::Delivered);
        }
    }
}
