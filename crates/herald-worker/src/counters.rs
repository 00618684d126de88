//! What the worker has done so far, as plain counters: tests and the benchmark read them, and
//! `/metrics` serves them (see `metrics`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, updated by the router, the sender and the delay lines.
#[derive(Debug, Default)]
pub struct Counters {
    events_routed: AtomicU64,
    events_unmatched: AtomicU64,
    tasks_published: AtomicU64,
    tasks_duplicate: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    exhausted: AtomicU64,
    disabled: AtomicU64,
    refused: AtomicU64,
    dead: AtomicU64,
    dropped: AtomicU64,
    deferred: AtomicU64,
    laned: AtomicU64,
    lanes_opened: AtomicU64,
    retries_released: AtomicU64,
    requeued: AtomicU64,
    nacked: AtomicU64,
    unsettled: AtomicU64,
    too_large: AtomicU64,
    dead_by_reason: [AtomicU64; DeadReason::ALL.len()],
}

/// Why a message was dead-lettered: a bounded label for `herald_worker_dead_letters_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// An event or task that cannot be decoded.
    Undecodable,
    /// An event whose subject does not match its account and type.
    SubjectMismatch,
    /// A task whose webhook belongs to another account than its event.
    WrongAccount,
    /// An event too large to make delivery tasks of.
    TooLarge,
}

impl DeadReason {
    pub const ALL: [DeadReason; 4] = [
        DeadReason::Undecodable,
        DeadReason::SubjectMismatch,
        DeadReason::WrongAccount,
        DeadReason::TooLarge,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DeadReason::Undecodable => "undecodable",
            DeadReason::SubjectMismatch => "subject_mismatch",
            DeadReason::WrongAccount => "wrong_account",
            DeadReason::TooLarge => "too_large",
        }
    }
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Events whose tasks were all stored (and the event acknowledged).
    pub events_routed: u64,
    /// Events that matched no webhook.
    pub events_unmatched: u64,
    /// Tasks stored by the deliveries stream.
    pub tasks_published: u64,
    /// Tasks the deliveries stream dropped as duplicates of a fan-out already done.
    pub tasks_duplicate: u64,
    /// Attempts answered with 2xx.
    pub delivered: u64,
    /// Failed attempts that will be retried.
    pub failed: u64,
    /// Failed attempts after which no further attempt will be made (410 included).
    pub exhausted: u64,
    /// Attempts answered with 410 Gone, asking the registry to disable the webhook.
    pub disabled: u64,
    /// Attempts the address policy refused before connecting.
    pub refused: u64,
    /// Messages dead-lettered (by reason: [`Counters::dead_by_reason`]).
    pub dead: u64,
    /// Tasks dropped because their webhook is deleted or disabled.
    pub dropped: u64,
    /// Tasks put off by an open circuit breaker, without using an attempt.
    pub deferred: u64,
    /// Tasks put in their webhook's lane: moved there at its cap, or routed there while the lane
    /// was open.
    pub laned: u64,
    /// Lane readers started (by a move, or by the sweep for a lane with tasks).
    pub lanes_opened: u64,
    /// Tasks a delay line moved back to the deliveries stream.
    pub retries_released: u64,
    /// Tasks a delay line moved to the back of a line because they were not due yet.
    pub requeued: u64,
    /// Messages handed back for redelivery (publishing failed, or shutdown).
    pub nacked: u64,
    /// Attempts made whose outcome could not be stored even with patience: their task is
    /// handed back and the request repeated later.
    pub unsettled: u64,
    /// Events too large to make delivery tasks of: dead-lettered, and logged as exhausted.
    pub too_large: u64,
}

macro_rules! counter_methods {
    ($($name:ident),* $(,)?) => {
        impl Counters {
            $(
                pub(crate) fn $name(&self, n: u64) {
                    self.$name.fetch_add(n, Ordering::Relaxed);
                }
            )*

            pub fn snapshot(&self) -> CounterSnapshot {
                CounterSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

counter_methods!(
    events_routed,
    events_unmatched,
    tasks_published,
    tasks_duplicate,
    delivered,
    failed,
    exhausted,
    disabled,
    refused,
    dead,
    dropped,
    deferred,
    laned,
    lanes_opened,
    retries_released,
    requeued,
    nacked,
    unsettled,
    too_large,
);

impl Counters {
    /// Counts a dead letter, in all and by `reason`.
    pub(crate) fn dead_letter(&self, reason: DeadReason) {
        self.dead(1);
        self.dead_by_reason[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Dead letters so far by reason, in [`DeadReason::ALL`]'s order.
    pub fn dead_by_reason(&self) -> [(DeadReason, u64); DeadReason::ALL.len()] {
        DeadReason::ALL.map(|reason| {
            (
                reason,
                self.dead_by_reason[reason as usize].load(Ordering::Relaxed),
            )
        })
    }
}

impl CounterSnapshot {
    /// Every counter with its metric name (without the `herald_worker_` prefix and `_total`
    /// suffix) and help text.
    pub fn named(&self) -> [(&'static str, u64, &'static str); 19] {
        [
            (
                "events_routed",
                self.events_routed,
                "Events whose tasks were all stored",
            ),
            (
                "events_unmatched",
                self.events_unmatched,
                "Events that matched no webhook",
            ),
            (
                "tasks_published",
                self.tasks_published,
                "Delivery tasks stored",
            ),
            (
                "tasks_duplicate",
                self.tasks_duplicate,
                "Delivery tasks dropped as duplicates",
            ),
            ("delivered", self.delivered, "Attempts answered with 2xx"),
            (
                "failed",
                self.failed,
                "Failed attempts that will be retried",
            ),
            (
                "exhausted",
                self.exhausted,
                "Failed attempts with no further attempt",
            ),
            ("disabled", self.disabled, "Attempts answered with 410 Gone"),
            (
                "refused",
                self.refused,
                "Attempts refused by the address policy",
            ),
            ("dead", self.dead, "Messages dead-lettered"),
            (
                "dropped",
                self.dropped,
                "Tasks of deleted or disabled webhooks",
            ),
            (
                "deferred",
                self.deferred,
                "Tasks put off by an open circuit breaker",
            ),
            (
                "laned",
                self.laned,
                "Tasks put in their webhook's lane by the per-webhook cap",
            ),
            ("lanes_opened", self.lanes_opened, "Lane readers started"),
            (
                "retries_released",
                self.retries_released,
                "Tasks a delay line released",
            ),
            (
                "requeued",
                self.requeued,
                "Tasks a delay line moved to the back",
            ),
            ("nacked", self.nacked, "Messages handed back for redelivery"),
            (
                "unsettled",
                self.unsettled,
                "Attempts made whose outcome could not be stored",
            ),
            (
                "too_large",
                self.too_large,
                "Events too large to make delivery tasks of",
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reads_what_was_added() {
        let counters = Counters::default();
        counters.delivered(2);
        counters.delivered(1);
        counters.dead_letter(DeadReason::TooLarge);
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.delivered, 3);
        assert_eq!(snapshot.dead, 1);
        assert_eq!(
            counters.dead_by_reason()[DeadReason::TooLarge as usize],
            (DeadReason::TooLarge, 1)
        );
        assert_eq!(snapshot.failed, 0);
    }
}
