//! The `herald-webhooks` KV bucket: the registry projects each webhook into it as a protobuf
//! `WebhookSpec` under its id, and workers load it whole and then follow its changes.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::{Stream, StreamExt as _, TryStreamExt as _, stream::BoxStream};
use herald_proto::webhooks::v1::WebhookSpec;

use crate::names::WEBHOOKS_BUCKET;
use crate::topology::{TopologyError, create_bucket_if_missing};

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

/// A spec as the bucket holds it, with the revision it was written at.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub spec: WebhookSpec,
    pub revision: u64,
}

/// What the bucket holds for one webhook id, and the revision a conditional write must name.
#[derive(Debug, Clone, PartialEq)]
pub enum Current {
    /// Never written (revision 0).
    Absent,
    /// Removed at this revision.
    Deleted(u64),
    Spec(Held),
}

impl Current {
    /// The revision a write must expect to replace this.
    pub fn revision(&self) -> u64 {
        match self {
            Current::Absent => 0,
            Current::Deleted(revision) => *revision,
            Current::Spec(held) => held.revision,
        }
    }

    pub fn spec(&self) -> Option<&WebhookSpec> {
        match self {
            Current::Spec(held) => Some(&held.spec),
            Current::Absent | Current::Deleted(_) => None,
        }
    }
}

/// What a conditional write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Stored at this revision.
    Stored(u64),
    /// The key was written (or removed) since the expected revision: nothing was written; read
    /// it again and decide again.
    Changed,
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
        create_bucket_if_missing(js, 1).await?;
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

    /// What the bucket holds for webhook `id`, with the revision to name in a conditional write.
    pub async fn current(&self, id: &str) -> Result<Current, KvError> {
        let entry = self.store.entry(id).await.map_err(|err| KvError::Read {
            id: id.to_owned(),
            source: err.into(),
        })?;
        let Some(entry) = entry else {
            return Ok(Current::Absent);
        };
        match entry.operation {
            kv::Operation::Delete | kv::Operation::Purge => Ok(Current::Deleted(entry.revision)),
            kv::Operation::Put => herald_proto::decode::<WebhookSpec>(&entry.value)
                .map(|spec| {
                    Current::Spec(Held {
                        spec,
                        revision: entry.revision,
                    })
                })
                .map_err(|source| KvError::Malformed {
                    id: id.to_owned(),
                    source,
                }),
        }
    }

    /// Stores `spec` only if its key is still at revision `expected` (0: never written), so
    /// that of two writers racing, the one that read an older state cannot overwrite the
    /// other: it gets [`Written::Changed`], reads again and decides again.
    pub async fn put_if(&self, spec: &WebhookSpec, expected: u64) -> Result<Written, KvError> {
        let value = Bytes::from(herald_proto::encode(spec));
        let failed = |err: async_nats::Error| KvError::Write {
            id: spec.id.clone(),
            source: err,
        };
        if expected == 0 {
            return match self.store.create(&spec.id, value).await {
                Ok(revision) => Ok(Written::Stored(revision)),
                Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => {
                    Ok(Written::Changed)
                }
                Err(err) => Err(failed(err.into())),
            };
        }
        match self.store.update(&spec.id, value, expected).await {
            Ok(revision) => Ok(Written::Stored(revision)),
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Ok(Written::Changed)
            }
            Err(err) => Err(failed(err.into())),
        }
    }

    /// Removes webhook `id` only if it is still at revision `expected`.
    pub async fn delete_if(&self, id: &str, expected: u64) -> Result<Written, KvError> {
        match self.store.purge_expect_revision(id, Some(expected)).await {
            Ok(()) => Ok(Written::Stored(expected)),
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Ok(Written::Changed)
            }
            Err(err) => Err(KvError::Write {
                id: id.to_owned(),
                source: err.into(),
            }),
        }
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
    /// Every spec in the bucket with its revision, read in one pass (no request per key), keyed
    /// by webhook id. Malformed values are skipped, as in
    /// [`snapshot_then_watch`](Self::snapshot_then_watch).
    pub async fn snapshot(&self) -> Result<std::collections::HashMap<String, Held>, KvError> {
        use futures::StreamExt as _;
        let mut specs = std::collections::HashMap::new();
        let mut watch = self.snapshot_then_watch().await?;
        while let Some(change) = watch.next().await {
            match change? {
                (SpecChange::Put(spec), revision) => {
                    specs.insert(spec.id.clone(), Held { spec, revision });
                }
                (SpecChange::Deleted(id), _) => {
                    specs.remove(&id);
                }
                (SpecChange::CaughtUp, _) => break,
            }
        }
        Ok(specs)
    }
}

/// The stream returned by [`WebhookBucket::snapshot_then_watch`].
pub struct SpecWatch {
    inner: BoxStream<'static, Result<(SpecChange, u64), KvError>>,
}

impl std::fmt::Debug for SpecWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpecWatch").finish_non_exhaustive()
    }
}

impl Stream for SpecWatch {
    /// A change and the bucket revision it was written at (0 for [`SpecChange::CaughtUp`]).
    type Item = Result<(SpecChange, u64), KvError>;

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
    async fn next(mut self) -> Option<(Result<(SpecChange, u64), KvError>, WatchState)> {
        loop {
            if self.pending_caught_up {
                self.pending_caught_up = false;
                return Some((Ok((SpecChange::CaughtUp, 0)), self));
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
            let revision = entry.revision;
            if let Some(change) = change(entry) {
                return Some((Ok((change, revision)), self));
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
