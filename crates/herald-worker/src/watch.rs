//! Keeps the subscription index equal to the `herald-webhooks` bucket: the whole bucket is loaded
//! before the worker consumes anything, then every change is applied as it happens.
//!
//! If the watch breaks (a NATS outage), the bucket is loaded again and webhooks that vanished
//! meanwhile are removed, so the index never keeps a webhook the registry deleted.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt as _;
use herald_bus::{KvError, SpecChange, SpecWatch, WebhookBucket};
use herald_core::{Keyring, WebhookId};
use herald_proto::webhooks::v1::WebhookSpec;
use tokio_util::sync::CancellationToken;

use crate::consume::Pauses;
use crate::index::{Put, SharedIndex, Subscription, SubscriptionIndex};

/// Why the index could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error("the webhook bucket watch ended before the snapshot was complete")]
    Ended,
    #[error("loading the webhook bucket took longer than {0:?}")]
    TimedOut(Duration),
}

/// Applies one put or delete, written at bucket revision `revision`, to the index, logging
/// specs that cannot be used.
fn apply(index: &SharedIndex, keyring: &Keyring, change: SpecChange, revision: u64) {
    match change {
        SpecChange::Put(spec) => put(index, keyring, &spec, revision),
        SpecChange::Deleted(key) => match WebhookId::parse(&key) {
            Ok(id) => {
                if index.write(|index| index.remove_at(&id, revision)) {
                    tracing::debug!(webhook = %id, "webhook removed from the index");
                }
            }
            Err(err) => tracing::warn!(%key, %err, "deleted key is not a webhook id; ignored"),
        },
        SpecChange::CaughtUp => {}
    }
}

fn put(index: &SharedIndex, keyring: &Keyring, spec: &WebhookSpec, revision: u64) {
    match Subscription::from_spec(&spec.id, spec, keyring) {
        Ok(subscription) => {
            if let Some(err) = &subscription.unopened {
                tracing::error!(
                    webhook = %subscription.id,
                    %err,
                    "signing secret does not open; deliveries to this webhook fail until it does"
                );
            }
            let id = subscription.id.clone();
            let version = subscription.version;
            match index.write(|index| index.put_at(subscription, revision)) {
                Put::Stale => tracing::debug!(webhook = %id, version, "older webhook spec ignored"),
                put => tracing::debug!(webhook = %id, version, ?put, "webhook indexed"),
            }
        }
        Err(err) => {
            // Delivering with a stale spec after the registry changed it would be worse than not
            // delivering: drop the webhook until a valid spec arrives.
            tracing::error!(%err, "unusable webhook spec; webhook left out of the index");
            if let Ok(id) = WebhookId::parse(&spec.id) {
                index.write(|index| index.remove_at(&id, revision));
            }
        }
    }
}

/// Loads the whole bucket into `index` and returns the watch, positioned at the live changes.
/// Webhooks held by the index but absent from the bucket are removed.
pub async fn load(
    bucket: &WebhookBucket,
    index: &SharedIndex,
    keyring: &Keyring,
    timeout: Duration,
) -> Result<SpecWatch, WatchError> {
    let load = async {
        let mut watch = bucket.snapshot_then_watch().await?;
        let mut seen = HashSet::new();
        // The snapshot re-establishes every revision (and the bucket's stream may have been
        // recreated, restarting them).
        index.write(SubscriptionIndex::forget_revisions);
        loop {
            match watch.next().await {
                None => return Err(WatchError::Ended),
                Some(Err(err)) => return Err(err.into()),
                Some(Ok((SpecChange::CaughtUp, _))) => break,
                Some(Ok((change, revision))) => {
                    if let SpecChange::Put(spec) = &change {
                        seen.insert(spec.id.clone());
                    }
                    apply(index, keyring, change, revision);
                }
            }
        }
        let vanished: Vec<WebhookId> = index.read(|index| {
            index
                .ids()
                .filter(|id| !seen.contains(id.as_str()))
                .cloned()
                .collect()
        });
        if !vanished.is_empty() {
            tracing::info!(
                count = vanished.len(),
                "webhooks deleted while the watch was down"
            );
            index.write(|index| {
                for id in &vanished {
                    index.remove(id);
                }
            });
        }
        tracing::info!(webhooks = index.len(), "webhook index loaded");
        index.set_current(true);
        Ok(watch)
    };
    tokio::time::timeout(timeout, load)
        .await
        .map_err(|_| WatchError::TimedOut(timeout))?
}

/// Applies live changes until `stop`, reloading the bucket whenever the watch breaks.
pub async fn follow(
    bucket: WebhookBucket,
    index: SharedIndex,
    keyring: Keyring,
    mut watch: SpecWatch,
    stop: CancellationToken,
    reload_timeout: Duration,
) {
    let mut backoff = Pauses::new();
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return,
            next = watch.next() => next,
        };
        match next {
            Some(Ok((change, revision))) => {
                backoff.reset();
                apply(&index, &keyring, change, revision);
                continue;
            }
            Some(Err(err)) => tracing::warn!(%err, "webhook bucket watch failed; reloading"),
            None => tracing::warn!("webhook bucket watch ended; reloading"),
        }
        // Changes may be missed until the bucket is read again: meanwhile nobody may take the
        // index's word that an event matches nothing or a webhook is gone.
        index.set_current(false);
        loop {
            if !backoff.pause(&stop).await {
                return;
            }
            let reloaded = tokio::select! {
                () = stop.cancelled() => return,
                reloaded = load(&bucket, &index, &keyring, reload_timeout) => reloaded,
            };
            match reloaded {
                Ok(reloaded) => {
                    watch = reloaded;
                    break;
                }
                Err(err) => tracing::warn!(%err, "cannot reload the webhook bucket; retrying"),
            }
        }
    }
}
