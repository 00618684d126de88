//! Create forms that create once: each showing of a create form carries a name of its own (the
//! hidden field `submission`), and a post is remembered under it like an API request under its
//! `Idempotency-Key`. The same form posted twice (a double click, a browser that sends it again,
//! a retry after an answer that got lost) creates one thing, and the second post is answered
//! with what the first made.

use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use super::errors::{UiError, UiResult};
use super::session::{Flash, Viewer};
use crate::state::AppState;
use crate::store::{Begin, Store};

/// How long a repeated post waits for the first to finish before saying it is still running.
const BUSY_PATIENCE: Duration = Duration::from_secs(5);
/// How often it looks meanwhile.
const BUSY_POLL: Duration = Duration::from_millis(50);
/// Longest name a form may carry; ours are 43 characters.
const MAX_LEN: usize = 128;

/// A fresh name for one showing of a create form.
pub fn fresh() -> String {
    super::session::random_token()
}

/// What a post of a create form found.
#[derive(Debug)]
pub enum Submission {
    /// Not posted before: create with [`Claim::run`].
    Fresh(Claim),
    /// Posted before, and the first post made something: answer as it did.
    Repeated,
}

/// The right to create for one showing of a form. Dropped without [`finish`](Self::finish)
/// or [`abandon`](Self::abandon) (the post was cancelled before its work began, as a browser
/// cancels the first of two clicks by closing its connection; see [`run`](Self::run)), it lets
/// go of the name, so that the repeat is handled rather than kept waiting for an answer that
/// never comes.
#[derive(Debug)]
pub struct Claim {
    store: Store,
    /// The scope and key it is remembered under; none for a post that cannot be recognised
    /// again (no name, or a form changed since its first post).
    key: Option<(String, String)>,
}

impl Submission {
    /// Looks up the post of `form` (the kind of thing it creates) named `name`, whose fields read
    /// `content`. A post whose fields differ from the first one's under that name is a new
    /// request (the form was changed and sent again), and so is one without a name.
    pub async fn begin(
        state: &AppState,
        viewer: &Viewer,
        form: &str,
        name: &str,
        content: &str,
    ) -> UiResult<Submission> {
        let name = name.trim();
        let unnamed = || {
            Submission::Fresh(Claim {
                store: state.store.clone(),
                key: None,
            })
        };
        if name.is_empty() || name.len() > MAX_LEN {
            return Ok(unnamed());
        }
        let scope = viewer.principal().scope_name();
        // Apart from the keys API callers choose: theirs never start with `console:`.
        let key = format!("console:{form}:{name}");
        let fingerprint = hex::encode(Sha256::digest(content.as_bytes()));
        let ttl = state.config.idempotency_ttl;
        let deadline = Instant::now() + BUSY_PATIENCE;
        loop {
            let begun = state
                .store
                .begin_idempotent(&scope, &key, &fingerprint, ttl)
                .await
                .map_err(|e| UiError::Internal(e.into()))?;
            match begun {
                Begin::Fresh => {
                    return Ok(Submission::Fresh(Claim {
                        store: state.store.clone(),
                        key: Some((scope, key)),
                    }));
                }
                Begin::Replay(_) => return Ok(Submission::Repeated),
                Begin::Mismatch => return Ok(unnamed()),
                // The first post is still being handled: its answer is the one the browser
                // dropped for this one, so this one waits to give the same.
                Begin::InProgress if Instant::now() < deadline => {
                    tokio::time::sleep(BUSY_POLL).await;
                }
                Begin::InProgress => {
                    return Err(UiError::Conflict(
                        "This form was sent twice and the first is still being handled. \
                         Open the list in a moment to see what it made."
                            .to_owned(),
                    ));
                }
            }
        }
    }
}

impl Claim {
    /// Runs the form's work: `create`, then, if it made something, leaves the flash `made` says
    /// (if any) for the next page and records the claim with the id it gives (not a secret: it is
    /// stored); if it made nothing, lets go of the name. All of it runs to the end even if the
    /// post is cancelled halfway (a browser drops the first of two clicks), so the repeat finds
    /// what the first made, recorded, and a flash set before the record is there for it.
    pub async fn run<T, E>(
        self,
        viewer: Viewer,
        create: impl Future<Output = Result<T, E>> + Send + 'static,
        made: impl FnOnce(&T) -> (String, Option<Flash>) + Send + 'static,
    ) -> UiResult<Result<T, E>>
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        tokio::spawn(async move {
            let created = create.await;
            match &created {
                Ok(value) => {
                    let (id, flash) = made(value);
                    if let Some(flash) = flash {
                        viewer.flash(&flash).await;
                    }
                    self.finish(&id).await;
                }
                Err(_) => self.abandon().await,
            }
            created
        })
        .await
        .map_err(|e| UiError::Internal(anyhow::Error::new(e).context("a create form's work")))
    }

    /// Records that the post made `made` (its id; not a secret, since it is stored).
    async fn finish(mut self, made: &str) {
        let Some((scope, key)) = self.key.take() else {
            return;
        };
        if let Err(error) = self.store.finish_idempotent(&scope, &key, 200, made).await {
            // The thing is made; a repeat of this form would make another, as without a name.
            tracing::warn!(
                error = format!("{:#}", anyhow::Error::from(error)),
                "cannot remember a console form's post"
            );
        }
    }

    /// Forgets the post: it made nothing, and the form may be corrected and sent again.
    async fn abandon(mut self) {
        if let Some((scope, key)) = self.key.take() {
            release(&self.store, &scope, &key).await;
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let Some((scope, key)) = self.key.take() else {
            return;
        };
        // Dropped in a request handler, so on the runtime.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = self.store.clone();
            runtime.spawn(async move { release(&store, &scope, &key).await });
        }
    }
}

async fn release(store: &Store, scope: &str, key: &str) {
    if let Err(error) = store.abandon_idempotent(scope, key).await {
        tracing::warn!(
            error = format!("{:#}", anyhow::Error::from(error)),
            "cannot release a console form's name"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use herald_core::Keyring;

    use super::*;

    const TTL: Duration = Duration::from_secs(3600);

    async fn begin(store: &Store) -> Begin {
        store
            .begin_idempotent("admin", "console:webhook:x", "same form", TTL)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_claim_dropped_halfway_lets_go_of_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url, Keyring::default()).await.unwrap();
        assert!(matches!(begin(&store).await, Begin::Fresh));
        let claim = Claim {
            store: store.clone(),
            key: Some(("admin".to_owned(), "console:webhook:x".to_owned())),
        };
        // Held, a repeat of the form waits for it.
        assert!(matches!(begin(&store).await, Begin::InProgress));
        // A post cancelled halfway drops its claim unfinished.
        drop(claim);
        herald_testkit::wait_until(Duration::from_secs(10), || async {
            matches!(begin(&store).await, Begin::Fresh)
        })
        .await
        .expect("the name is let go of, so the repeat is handled");
    }
}
