//! Create forms that create once: each showing of a create form carries a name of its own (the
//! hidden field `submission`), and a post is remembered under it like an API request under its
//! `Idempotency-Key`. The same form posted twice (a double click, a browser that sends it again,
//! a retry after an answer that got lost) creates one thing, and the second post is answered
//! with what the first made.

use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use super::errors::{UiError, UiResult};
use super::session::Viewer;
use crate::state::AppState;
use crate::store::Begin;

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
    /// Not posted before: create, then [`Claim::finish`] with what was made, or
    /// [`Claim::abandon`] when nothing was.
    Fresh(Claim),
    /// Posted before, and the first post made something: answer as it did.
    Repeated,
}

/// The right to create for one showing of a form.
#[derive(Debug)]
pub struct Claim {
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
        if name.is_empty() || name.len() > MAX_LEN {
            return Ok(Submission::Fresh(Claim { key: None }));
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
                        key: Some((scope, key)),
                    }));
                }
                Begin::Replay(_) => return Ok(Submission::Repeated),
                Begin::Mismatch => return Ok(Submission::Fresh(Claim { key: None })),
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
    /// Records that the post made `made` (its id; not a secret, since it is stored).
    pub async fn finish(self, state: &AppState, made: &str) {
        let Some((scope, key)) = self.key else {
            return;
        };
        if let Err(error) = state.store.finish_idempotent(&scope, &key, 200, made).await {
            // The thing is made; a repeat of this form would make another, as without a name.
            tracing::warn!(
                error = format!("{:#}", anyhow::Error::from(error)),
                "cannot remember a console form's post"
            );
        }
    }

    /// Forgets the post: it made nothing, and the form may be corrected and sent again.
    pub async fn abandon(self, state: &AppState) {
        let Some((scope, key)) = self.key else {
            return;
        };
        if let Err(error) = state.store.abandon_idempotent(&scope, &key).await {
            tracing::warn!(
                error = format!("{:#}", anyhow::Error::from(error)),
                "cannot release a console form's name"
            );
        }
    }
}
