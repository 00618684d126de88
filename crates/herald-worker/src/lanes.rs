//! Lanes: where a busy webhook's tasks wait for its capacity, at no cost to anyone else.
//!
//! A task whose webhook is at its cap is not handed back to the shared consumer (where it would
//! hold a place in the pending set that every tenant shares, and come back again and again):
//! the sender moves it to the webhook's lane, a subject of its own in HERALD_LANES, and acks
//! it. Each busy lane is read through its own durable consumer, which hands out at most the
//! webhook's cap at a time across all replicas, so the rest of a backlog sits in the stream and
//! costs nothing while it waits. A lane's reader takes its webhook's slots (and its share of
//! this worker's permits) before it pulls, and stops once the lane is empty; the server removes
//! the consumer after it has been idle a while.
//!
//! Lanes are opened by the sender when it moves a task, and by a periodic sweep that finds
//! lanes holding tasks without a reader here (after a crash, or for another replica's lanes).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use herald_bus::{LaneLimits, Topology};
use herald_core::WebhookId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::task::TaskTracker;

use crate::consume::{Pull, pull_loop, take_permits};
use crate::counters::Counters;
use crate::limits::{Slot, WebhookLimits};
use crate::sender::Sender;
use crate::shutdown::Stopping;

/// How often the lanes stream is checked for lanes that hold tasks but have no reader here (and
/// the breakers of deleted webhooks are forgotten).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// How long one sweep may take.
const SWEEP_LIMIT: Duration = Duration::from_secs(5);

/// How long a lane's consumer outlives its last pull. Longer than any request (so a consumer
/// is never removed under a task in flight), short enough that lanes of past bursts go soon.
pub const LANE_IDLE: Duration = Duration::from_secs(120);

/// Tells the lanes that a task was stored in a webhook's lane, so that its reader starts or
/// pulls again. The sender and the router hold one each.
#[derive(Debug, Clone)]
pub struct LaneOpener {
    limits: Arc<WebhookLimits>,
    readers: mpsc::UnboundedSender<WebhookId>,
}

impl LaneOpener {
    /// An opener for `limits`, and the receiving end for [`Lanes::run`].
    pub fn new(limits: Arc<WebhookLimits>) -> (LaneOpener, mpsc::UnboundedReceiver<WebhookId>) {
        let (readers, opened) = mpsc::unbounded_channel();
        (LaneOpener { limits, readers }, opened)
    }

    /// Whether new tasks of `webhook` go straight to its lane: its reader runs here.
    pub fn is_open(&self, webhook: &WebhookId) -> bool {
        self.limits.lane_open(webhook)
    }

    /// A task of `webhook` was stored in its lane: its reader starts, or pulls again.
    pub fn stored(&self, webhook: &WebhookId) {
        if self.limits.open_lane(webhook) && self.readers.send(webhook.clone()).is_err() {
            // Only after shutdown; a later sweep (of this or another worker) reads the lane.
            tracing::debug!(%webhook, "lane not opened: the worker is stopping");
        }
    }
}

/// What one lane task holds while it is handled: its webhook's slot, its place in the lanes'
/// share of the worker, and a permit of the worker's concurrency.
#[derive(Debug)]
pub struct LanePass {
    pub slot: Slot,
    _share: OwnedSemaphorePermit,
    _permit: OwnedSemaphorePermit,
}

/// Shared state of the lane readers.
#[derive(Debug)]
pub struct Lanes {
    pub js: jetstream::Context,
    pub sender: Arc<Sender>,
    pub limits: LaneLimits,
    /// The lanes' share of the worker's requests in flight: half, so webhooks with a backlog
    /// can never take every permit from the others.
    pub share: Arc<Semaphore>,
    /// The worker's requests in flight, shared with the sender's consumer.
    pub permits: Arc<Semaphore>,
    pub tracker: TaskTracker,
    pub stopping: Stopping,
    pub counters: Arc<Counters>,
}

impl Lanes {
    /// Starts a reader for every lane the sender opens, and sweeps for lanes with tasks and no
    /// reader, until shutdown.
    pub async fn run(self: Arc<Self>, mut opened: mpsc::UnboundedReceiver<WebhookId>) {
        let stop = self.stopping.fetch.clone();
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                webhook = opened.recv() => match webhook {
                    Some(webhook) => self.start(webhook),
                    // The sender holds the other end for as long as the worker runs.
                    None => return,
                },
                _ = sweep.tick() => {
                    self.sweep().await;
                    self.sender.forget_deleted();
                }
            }
        }
    }

    async fn sweep(self: &Arc<Self>) {
        let busy = tokio::select! {
            () = self.stopping.fetch.cancelled() => return,
            busy = tokio::time::timeout(SWEEP_LIMIT, Topology::busy_lanes(&self.js)) => busy,
        };
        match busy {
            Ok(Ok(webhooks)) => {
                for webhook in webhooks {
                    if self.sender.limits.open_lane(&webhook) {
                        tracing::debug!(%webhook, "lane with tasks found; reading it");
                        self.start(webhook);
                    }
                }
            }
            Ok(Err(err)) => tracing::warn!(%err, "cannot list busy lanes; will try again"),
            Err(_) => tracing::warn!("listing busy lanes timed out; will try again"),
        }
    }

    fn start(self: &Arc<Self>, webhook: WebhookId) {
        let lanes = self.clone();
        let stopping = self.stopping.clone();
        self.tracker
            .spawn(async move { stopping.unless_crashed(lanes.read(webhook)).await });
    }

    /// Reads `webhook`'s lane until it is empty (or shutdown).
    async fn read(self: Arc<Self>, webhook: WebhookId) {
        tracing::debug!(%webhook, "lane opened");
        self.counters.lanes_opened(1);
        let lanes = &self;
        let webhook = &webhook;
        pull_loop(
            Pull {
                name: format!("lane {webhook}"),
                open: || Topology::lane_consumer(&lanes.js, webhook, lanes.limits),
                acquire: || lanes.acquire(webhook),
            },
            self.stopping.clone(),
            self.tracker.clone(),
            self.counters.clone(),
            |message, pass| self.sender.clone().handle_lane(message, pass),
            || self.sender.limits.close_lane_if_idle(webhook),
        )
        .await;
        tracing::debug!(%webhook, "lane closed");
    }

    /// Slots of the webhook first (a lane never pulls more than it can send), then the lanes'
    /// share, then the worker's permits: always in this order, so nobody waits in a circle.
    async fn acquire(&self, webhook: &WebhookId) -> Option<Vec<LanePass>> {
        let limits = &self.sender.limits;
        let mut slots = limits.slots(webhook, limits.cap()).await;
        let mut shares = take_permits(self.share.clone(), slots.len()).await?;
        let mut permits = take_permits(self.permits.clone(), shares.len()).await?;
        limits.lane_pull_started(webhook);
        let mut passes = Vec::with_capacity(permits.len());
        while let (Some(slot), Some(share), Some(permit)) =
            (slots.pop(), shares.pop(), permits.pop())
        {
            passes.push(LanePass {
                slot,
                _share: share,
                _permit: permit,
            });
        }
        Some(passes)
    }
}
