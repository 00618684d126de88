//! The `herald-webhooks` KV bucket: the registry projects each webhook into it as a protobuf
//! `WebhookSpec` under its id, and workers load it whole and then follow its changes.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::{Stream, StreamExt as _, TryStreamExt as _, stream::BoxStream};
use herald_proto::webhooks::v1::WebhookSpec;

use crate::names::WEBHOOKS_BUCKET;
use crate::topology::{TopologyError, create_stream_if_missing, webhooks_bucket_stream};

/// What went wrong with the bucket.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("cannot create the {WEBHOOKS_BUCKET} bucket: {0}")]
    Provision(#[from] TopologyError),
    #[error("cannot open the {WEBHOOKS_BUCKET} bucket: {0}")]
    Open(#[source] async_nats::Error),
    #[error("cannot write webhook {id:?} to the {WEBHOOKS_BUCKET} bucket: {source}")]
    Write {
        id: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("cannot read webhook {id:?} from the {WEBHOOKS_BUCKET} bucket: {source}")]
    Read {
        id: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("webhook {id:?} in the {WEBHOOKS_BUCKET} bucket is not a valid WebhookSpec: {source}")]
    Malformed {
        id: String,
        #[source]
        source: prost::DecodeError,
    },
    #[error("cannot list the {WEBHOOKS_BUCKET} bucket: {0}")]
    List(#[source] async_nats::Error),
    #[error("cannot watch the {WEBHOOKS_BUCKET} bucket: {0}")]
    Watch(#[source] async_nats::Error),
}

/// One change seen by [`WebhookBucket::snapshot_then_watch`].
#[derive(Debug, Clone, PartialEq)]
pub enum SpecChange {
    /// The webhook was created or changed.
    Put(WebhookSpec),
    /// The webhook with this id was removed.
    Deleted(String),
    /// Every webhook that existed when the watch started has been yielded; what follows is live.
    /// Yielded exactly once, also for an empty bucket.
    CaughtUp,
}

/// The webhook specs bucket.
#[derive(Debug, Clone)]
pub struct WebhookBucket {
    store: kv::Store,
}

impl WebhookBucket {
    /// Opens the bucket, creating it with one replica if it does not exist yet. (Provisioning
    /// with [`crate::Topology::provision`] creates it with the configured replicas.)
    pub async fn open(js: &jetstream::Context) -> Result<WebhookBucket, KvError> {
        // `create_key_value` cannot be used: it fails against nats-server 2.9, so the backing
        // stream is created directly.
        create_stream_if_missing(js, webhooks_bucket_stream(1)).await?;
        let store = js
            .get_key_value(WEBHOOKS_BUCKET)
            .await
            .map_err(|err| KvError::Open(err.into()))?;
        Ok(WebhookBucket { store })
    }

    /// Stores `spec` under its id, replacing any earlier spec, and returns the entry's revision.
    pub async fn put(&self, spec: &WebhookSpec) -> Result<u64, KvError> {
        let value = Bytes::from(herald_proto::encode(spec));
        self.store
            .put(&spec.id, value)
            .await
            .map_err(|err| KvError::Write {
                id: spec.id.clone(),
                source: err.into(),
            })
    }

    /// Removes webhook `id`. Watchers see [`SpecChange::Deleted`].
    ///
    /// A purge rather than a delete: it also drops the stored spec, whose signing secrets
    /// should not outlive the webhook. Removing an absent id succeeds.
    pub async fn delete(&self, id: &str) -> Result<(), KvError> {
        self.store.purge(id).await.map_err(|err| KvError::Write {
            id: id.to_owned(),
            source: err.into(),
        })
    }

    /// The spec of webhook `id`, if the bucket holds one.
    pub async fn get(&self, id: &str) -> Result<Option<WebhookSpec>, KvError> {
        let Some(value) = self.store.get(id).await.map_err(|err| KvError::Read {
            id: id.to_owned(),
            source: err.into(),
        })?
        else {
            return Ok(None);
        };
        herald_proto::decode::<WebhookSpec>(&value)
            .map(Some)
            .map_err(|source| KvError::Malformed {
                id: id.to_owned(),
                source,
            })
    }

    /// The ids of all webhooks in the bucket, sorted.
    pub async fn keys(&self) -> Result<Vec<String>, KvError> {
        let mut keys: Vec<String> = self
            .store
            .keys()
            .await
            .map_err(|err| KvError::List(err.into()))?
            .try_collect()
            .await
            .map_err(|err| KvError::List(err.into()))?;
        keys.sort();
        Ok(keys)
    }

    /// The whole bucket, then its changes as they happen.
    ///
    /// Yields a [`SpecChange::Put`] for every webhook in the bucket, then
    /// [`SpecChange::CaughtUp`], then every later put and delete. Deletions that happened before
    /// the watch may appear in the snapshot as [`SpecChange::Deleted`]. A value that is not a
    /// valid spec is logged and skipped. The stream ends only when the connection is closed.
    pub async fn snapshot_then_watch(&self) -> Result<SpecWatch, KvError> {
        // The watch comes first: anything written after it is delivered by it, so counting the
        // bucket afterwards cannot miss a write.
        let watch = self
            .store
            .watch_with_history(">")
            .await
            .map_err(|err| KvError::Watch(err.into()))?;
        // An empty bucket's watch yields nothing at all, not even its "current" marker, so an
        // empty bucket is caught up at once.
        let stored = self
            .store
            .stream
            .get_info()
            .await
            .map_err(|err| KvError::Watch(err.into()))?
            .state
            .messages;
        let state = WatchState {
            watch,
            caught_up: stored == 0,
            pending_caught_up: stored == 0,
        };
        Ok(SpecWatch {
            inner: futures::stream::unfold(state, WatchState::next).boxed(),
        })
    }
}

impl WebhookBucket {
    /// Every spec in the bucket, read in one pass (no request per key), keyed by webhook id.
    /// Malformed values are skipped, as in [`snapshot_then_watch`](Self::snapshot_then_watch).
    pub async fn snapshot(
        &self,
    ) -> Result<std::collections::HashMap<String, WebhookSpec>, KvError> {
        use futures::StreamExt as _;
        let mut specs = std::collections::HashMap::new();
        let mut watch = self.snapshot_then_watch().await?;
        while let Some(change) = watch.next().await {
            match change? {
                SpecChange::Put(spec) => {
                    specs.insert(spec.id.clone(), spec);
                }
                SpecChange::Deleted(id) => {
                    specs.remove(&id);
                }
                SpecChange::CaughtUp => break,
            }
        }
        Ok(specs)
    }
}

/// The stream returned by [`WebhookBucket::snapshot_then_watch`].
pub struct SpecWatch {
    inner: BoxStream<'static, Result<SpecChange, KvError>>,
}

impl std::fmt::Debug for SpecWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpecWatch").finish_non_exhaustive()
    }
}

impl Stream for SpecWatch {
    type Item = Result<SpecChange, KvError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

struct WatchState {
    watch: kv::Watch,
    /// Whether the snapshot has been fully yielded (or the marker is queued).
    caught_up: bool,
    /// [`SpecChange::CaughtUp`] is due before the next entry.
    pending_caught_up: bool,
}

impl WatchState {
    async fn next(mut self) -> Option<(Result<SpecChange, KvError>, WatchState)> {
        loop {
            if self.pending_caught_up {
                self.pending_caught_up = false;
                return Some((Ok(SpecChange::CaughtUp), self));
            }
            let entry = match self.watch.next().await? {
                Ok(entry) => entry,
                Err(err) => return Some((Err(KvError::Watch(err.into())), self)),
            };
            // `seen_current` marks the last entry of the snapshot (and every entry after it).
            if !self.caught_up && entry.seen_current {
                self.caught_up = true;
                self.pending_caught_up = true;
            }
            if let Some(change) = change(entry) {
                return Some((Ok(change), self));
            }
        }
    }
}

/// The change an entry stands for, or `None` (logged) for a value that is not a usable spec.
fn change(entry: kv::Entry) -> Option<SpecChange> {
    match entry.operation {
        kv::Operation::Delete | kv::Operation::Purge => Some(SpecChange::Deleted(entry.key)),
        kv::Operation::Put => match herald_proto::decode::<WebhookSpec>(&entry.value) {
            Ok(spec) if spec.id == entry.key => Some(SpecChange::Put(spec)),
            Ok(spec) => {
                tracing::warn!(
                    key = %entry.key,
                    spec_id = %spec.id,
                    revision = entry.revision,
                    "webhook spec stored under another webhook's id; skipped"
                );
                None
            }
            Err(err) => {
                tracing::warn!(
                    key = %entry.key,
                    revision = entry.revision,
                    %err,
                    "malformed webhook spec in the bucket; skipped"
                );
                None
            }
        },
    }
}
