//! The registry's operations, shared by both edges: the JSON API and the
//! console. Each validates (catalogue, SSRF policy, display names), checks
//! the caller's scope, calls the store, then projects. Errors are domain
//! errors ([`ServiceError`]); each edge maps them to what its users read
//! (problem+json for the API, a message beside the field for the console),
//! so no rule is written twice.

mod accounts;
mod api_keys;
mod catalogue;
mod deliveries;
mod webhooks;

use serde::Serialize;
use utoipa::ToSchema;

use crate::principal::Principal;
use crate::store::StoreError;

pub use deliveries::{HourlyHealth, MAX_REPLAY, WebhookHealth};
pub use webhooks::{DEFAULT_GRACE, MAX_GRACE, WebhookChange, WebhookInput, webhook_name};

/// One offending field of a request, named as the API names it: `name`,
/// `url`, `events[1]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// Path of the field in the request, e.g. `events[1]` or `url`;
    /// headers are named `header:<name>`, query parameters `query:<name>`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Why an operation did not happen, in the domain's terms.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The input breaks a rule; each error names its field.
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("this operation needs the admin key")]
    Forbidden,
    /// Missing, or belonging to another account: the two look the same.
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// An update based on an old version of the resource.
    #[error(
        "version {expected} is stale: the resource is at version {current}; \
         fetch it again and retry"
    )]
    Stale { expected: u64, current: u64 },
    /// A dependency (NATS) is away; the message is fit for users.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ServiceError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, message)])
    }
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::Conflict(what) => Self::Conflict(what),
            StoreError::VersionMismatch { expected, current } => Self::Stale { expected, current },
            StoreError::Other(e) => Self::Internal(e),
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// Checks free text (a description): at most `max` characters, and no
/// control characters but line breaks and tabs. PostgreSQL cannot store a
/// NUL, and no reader wants the others.
pub fn free_text(field: &str, text: &str, max: usize) -> ServiceResult<()> {
    if text.chars().count() > max {
        return Err(ServiceError::field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(ServiceError::field(
            field,
            "must not contain control characters other than line breaks and tabs",
        ));
    }
    Ok(())
}

fn require_admin(principal: &Principal) -> ServiceResult<()> {
    if principal.is_admin() {
        Ok(())
    } else {
        Err(ServiceError::Forbidden)
    }
}

/// Checks `name` as a display name: trimmed, 1–`max` characters, no
/// control characters.
pub fn display_name(field: &str, name: &str, max: usize) -> ServiceResult<String> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(ServiceError::field(field, "must not be empty"));
    }
    // Checked on the text as sent, as the API document states them: a tab
    // or a line break is refused even where trimming would drop it.
    if name.chars().any(char::is_control) {
        return Err(ServiceError::field(
            field,
            "must not contain control characters",
        ));
    }
    if name.chars().count() > max {
        return Err(ServiceError::field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(trimmed.to_owned())
}
