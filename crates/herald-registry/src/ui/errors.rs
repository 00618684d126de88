//! The console's reading of what went wrong: a page in words an admin
//! understands, with the same status the API would answer. Validation
//! errors are not here: forms show them beside their fields.

use askama::Template;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::session::session_of;
use super::view::Layout;
use crate::service::ServiceError;
use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("only the admin can do this")]
    Forbidden,
    /// A form post without its session's CSRF token.
    #[error("form without a valid CSRF token")]
    BadCsrf,
    #[error("{0}")]
    BadForm(String),
    #[error("the form is too large")]
    TooLarge,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// The session already follows as many live logs as it may.
    #[error("too many live delivery logs open")]
    TooManyLiveLogs,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<ServiceError> for UiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::NotFound(what) => Self::NotFound(what),
            ServiceError::Forbidden => Self::Forbidden,
            ServiceError::Conflict(message) => Self::Conflict(message),
            stale @ ServiceError::Stale { .. } => Self::Conflict(stale.to_string()),
            ServiceError::Unavailable(message) => Self::Unavailable(message),
            // Forms catch these first; one that gets here still deserves words.
            ServiceError::Invalid(errors) => Self::BadForm(
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            ServiceError::Internal(e) => Self::Internal(e),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    heading: String,
    message: String,
}

/// What an error page says, left on its response: a response is made without the request, so
/// [`in_session`] finds the viewer and shows the page again with the signed-in navigation.
#[derive(Debug, Clone)]
struct Said {
    heading: String,
    message: String,
}

/// Shows an error page to a signed-in viewer inside the console's navigation, as every other
/// page is, rather than as a dead end; signed out, the page stays as it was made.
pub async fn in_session(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let cookies: HeaderMap = request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .map(|value| (header::COOKIE, value.clone()))
        .collect();
    let response = next.run(request).await;
    let Some(said) = response.extensions().get::<Said>().cloned() else {
        return response;
    };
    // A session that cannot be read leaves the page signed out: it already says what failed.
    let Ok(Some(viewer)) = session_of(&cookies, &state).await else {
        return response;
    };
    let page = ErrorPage {
        layout: Layout::new(said.heading.clone(), &viewer),
        heading: said.heading,
        message: said.message,
    };
    match page.render() {
        Ok(html) => {
            let (mut parts, _) = response.into_parts();
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(html))
        }
        Err(error) => {
            tracing::error!(%error, "cannot render the error page");
            response
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, heading, message) = match &self {
            Self::NotFound(what) => (
                StatusCode::NOT_FOUND,
                "Not found".to_owned(),
                format!("This {what} does not exist, or it is not yours to see."),
            ),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                "Admins only".to_owned(),
                "Only the admin can do this. Sign in with the admin key to continue.".to_owned(),
            ),
            Self::BadCsrf => (
                StatusCode::FORBIDDEN,
                "This form has expired".to_owned(),
                "The form was not sent from this console, or your session changed since it \
                 was shown. Go back, reload the page and try again."
                    .to_owned(),
            ),
            Self::BadForm(message) => (
                StatusCode::BAD_REQUEST,
                "This form could not be read".to_owned(),
                message.clone(),
            ),
            Self::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "This form is too large".to_owned(),
                "What was typed is larger than the console accepts. Shorten it and try again."
                    .to_owned(),
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "Not here".to_owned(),
                "This address answers forms, not visits. Go back to the page you came from."
                    .to_owned(),
            ),
            Self::Conflict(message) => (
                StatusCode::CONFLICT,
                "That did not happen".to_owned(),
                message.clone(),
            ),
            Self::Unavailable(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again shortly".to_owned(),
                message.clone(),
            ),
            Self::TooManyLiveLogs => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many live logs".to_owned(),
                format!(
                    "This session already follows {} delivery logs live, in other tabs or \
                     windows. Close one of them, then reload this page.",
                    crate::live::LIVE_LOGS_PER_SESSION
                ),
            ),
            Self::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "console request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong".to_owned(),
                    "An unexpected error occurred; it has been logged.".to_owned(),
                )
            }
        };
        let said = Said {
            heading: heading.clone(),
            message: message.clone(),
        };
        let page = ErrorPage {
            layout: Layout::signed_out(heading.clone()),
            heading,
            message,
        };
        match page.render() {
            Ok(html) => {
                let mut response = (status, axum::response::Html(html)).into_response();
                response.extensions_mut().insert(said);
                response
            }
            Err(error) => {
                tracing::error!(%error, "cannot render the error page");
                (status, message_only(status)).into_response()
            }
        }
    }
}

fn message_only(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("error")
}

pub type UiResult<T> = Result<T, UiError>;
