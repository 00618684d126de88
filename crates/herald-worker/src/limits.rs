//! The per-webhook cap on requests in flight, and which webhooks have their lane open here.
//!
//! A task from the shared consumer is sent only if its webhook has a free slot and no lane open
//! in this worker; otherwise it moves to the webhook's lane (see `lanes`), where it waits in the
//! stream at no cost. A lane's reader takes slots before it pulls, so a lane never brings in
//! more tasks than can be sent at once.
//!
//! Only webhooks with requests in flight or an open lane have an entry, so a hundred thousand
//! quiet webhooks cost nothing here, and a deleted webhook's entry goes with its last request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use herald_core::WebhookId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Every webhook's slots and lane state.
#[derive(Debug)]
pub struct WebhookLimits {
    cap: usize,
    webhooks: Mutex<HashMap<WebhookId, Entry>>,
}

#[derive(Debug)]
struct Entry {
    slots: Arc<Semaphore>,
    lane: Lane,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Closed,
    /// A reader runs. `poked`: a task was moved into the lane since the reader's last pull
    /// began, so an empty pull does not prove the lane empty.
    Open {
        poked: bool,
    },
}

/// One request's place in its webhook's cap; given back on drop.
#[derive(Debug)]
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    limits: Arc<WebhookLimits>,
    webhook: WebhookId,
}

impl WebhookLimits {
    /// At most `cap` requests in flight per webhook (at least one).
    pub fn new(cap: usize) -> Arc<WebhookLimits> {
        Arc::new(WebhookLimits {
            cap: cap.max(1),
            webhooks: Mutex::new(HashMap::new()),
        })
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<WebhookId, Entry>> {
        // Every update is a single insert, remove or field assignment, so a poisoned map is
        // still consistent.
        self.webhooks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn entry<'a>(
        &self,
        webhooks: &'a mut HashMap<WebhookId, Entry>,
        webhook: &WebhookId,
    ) -> &'a mut Entry {
        webhooks.entry(webhook.clone()).or_insert_with(|| Entry {
            slots: Arc::new(Semaphore::new(self.cap)),
            lane: Lane::Closed,
        })
    }

    /// A slot for a task of the shared consumer: none while the webhook is at its cap or its
    /// lane is open (tasks queued there go first).
    pub fn try_send(self: &Arc<Self>, webhook: &WebhookId) -> Option<Slot> {
        let mut webhooks = self.lock();
        let entry = self.entry(&mut webhooks, webhook);
        let permit = match entry.lane {
            Lane::Open { .. } => None,
            Lane::Closed => entry.slots.clone().try_acquire_owned().ok(),
        };
        let slot = permit.map(|permit| self.slot(webhook, permit));
        if slot.is_none() {
            self.prune(&mut webhooks, webhook);
        }
        slot
    }

    /// Waits for one slot of `webhook`, then takes as many more as are free, up to `max`.
    pub async fn slots(self: &Arc<Self>, webhook: &WebhookId, max: usize) -> Vec<Slot> {
        let slots = {
            let mut webhooks = self.lock();
            self.entry(&mut webhooks, webhook).slots.clone()
        };
        // The semaphore is never closed.
        let Ok(first) = slots.clone().acquire_owned().await else {
            return Vec::new();
        };
        let mut taken = vec![self.slot(webhook, first)];
        while taken.len() < max {
            match slots.clone().try_acquire_owned() {
                Ok(permit) => taken.push(self.slot(webhook, permit)),
                Err(_) => break,
            }
        }
        taken
    }

    fn slot(self: &Arc<Self>, webhook: &WebhookId, permit: OwnedSemaphorePermit) -> Slot {
        Slot {
            permit: Some(permit),
            limits: self.clone(),
            webhook: webhook.clone(),
        }
    }

    /// Marks `webhook`'s lane open. Returns true when it was closed, so the caller must start
    /// its reader; when it is open already, its reader is told that a task arrived.
    pub fn open_lane(&self, webhook: &WebhookId) -> bool {
        let mut webhooks = self.lock();
        let entry = self.entry(&mut webhooks, webhook);
        match entry.lane {
            Lane::Closed => {
                entry.lane = Lane::Open { poked: false };
                true
            }
            Lane::Open { .. } => {
                entry.lane = Lane::Open { poked: true };
                false
            }
        }
    }

    /// The lane's reader is about to pull.
    pub fn lane_pull_started(&self, webhook: &WebhookId) {
        if let Some(entry) = self.lock().get_mut(webhook)
            && matches!(entry.lane, Lane::Open { .. })
        {
            entry.lane = Lane::Open { poked: false };
        }
    }

    /// The lane's reader found its lane empty. Returns true when the lane is closed now, and
    /// false when a task was moved in since the pull began, so the reader must pull again.
    pub fn close_lane_if_idle(&self, webhook: &WebhookId) -> bool {
        let mut webhooks = self.lock();
        let Some(entry) = webhooks.get_mut(webhook) else {
            return true;
        };
        if entry.lane == (Lane::Open { poked: true }) {
            entry.lane = Lane::Open { poked: false };
            return false;
        }
        entry.lane = Lane::Closed;
        self.prune(&mut webhooks, webhook);
        true
    }

    /// Whether `webhook`'s lane is open here.
    pub fn lane_open(&self, webhook: &WebhookId) -> bool {
        self.lock()
            .get(webhook)
            .is_some_and(|entry| matches!(entry.lane, Lane::Open { .. }))
    }

    /// Lanes read by this worker.
    pub fn open_lanes(&self) -> usize {
        self.lock()
            .values()
            .filter(|entry| matches!(entry.lane, Lane::Open { .. }))
            .count()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Drops `webhook`'s entry when nothing holds or waits for a slot and its lane is closed.
    fn prune(&self, webhooks: &mut HashMap<WebhookId, Entry>, webhook: &WebhookId) {
        if let Some(entry) = webhooks.get(webhook)
            && entry.lane == Lane::Closed
            && entry.slots.available_permits() == self.cap
            && Arc::strong_count(&entry.slots) == 1
        {
            webhooks.remove(webhook);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The permit goes back first, so that the entry looks idle to `prune`.
        drop(self.permit.take());
        let mut webhooks = self.limits.lock();
        self.limits.prune(&mut webhooks, &self.webhook);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use super::*;

    fn webhook(n: u8) -> WebhookId {
        WebhookId::parse(&format!("wh_01BX5ZZKBKACTAV9WEVGEMMV{n:02}")).unwrap()
    }

    #[test]
    fn slots_are_capped_per_webhook_and_given_back_on_drop() {
        let limits = WebhookLimits::new(2);
        let (a, b) = (webhook(1), webhook(2));
        let first = limits.try_send(&a).unwrap();
        let second = limits.try_send(&a).unwrap();
        assert!(limits.try_send(&a).is_none());
        // Another webhook is not affected.
        let other = limits.try_send(&b).unwrap();
        drop(first);
        assert!(limits.try_send(&a).is_some());
        drop((second, other));
        assert!(limits.is_empty());
    }

    #[test]
    fn an_open_lane_takes_every_task_until_it_closes() {
        let limits = WebhookLimits::new(2);
        let a = webhook(1);
        assert!(limits.open_lane(&a));
        // Tasks queued in the lane go first, even with slots free.
        assert!(limits.try_send(&a).is_none());
        assert!(!limits.open_lane(&a), "the reader already runs");
        assert!(limits.lane_open(&a));

        // A task moved in after the pull began keeps the reader going once.
        limits.lane_pull_started(&a);
        assert!(!limits.open_lane(&a));
        assert!(!limits.close_lane_if_idle(&a));
        limits.lane_pull_started(&a);
        assert!(limits.close_lane_if_idle(&a));
        assert!(!limits.lane_open(&a));
        assert!(limits.is_empty());
        assert!(limits.try_send(&a).is_some());
    }

    #[tokio::test]
    async fn a_lane_reader_waits_for_a_slot_and_takes_what_is_free() {
        let limits = WebhookLimits::new(3);
        let a = webhook(1);
        let held: Vec<Slot> = (0..3).map(|_| limits.try_send(&a).unwrap()).collect();
        let waiting = tokio::spawn({
            let limits = limits.clone();
            let a = a.clone();
            async move { limits.slots(&a, 3).await.len() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(held);
        assert_eq!(waiting.await.unwrap(), 3);
        assert!(limits.is_empty(), "slots given back prune the entry");
    }
}
