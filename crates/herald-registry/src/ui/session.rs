//! Signing in to the console with an API key, the session cookie, and the
//! CSRF token every state-changing form carries.
//!
//! The cookie holds a random token; the store keeps only its hash. It is
//! HttpOnly, SameSite=Lax, Secure when `HERALD_SECURE_COOKIES` is set, and
//! expires with the session. The sign-in form itself is protected by a
//! double-submit token in a short-lived cookie of its own. Secure cookies
//! take the `__Host-` prefix (see [`Cookies`]).

use askama::Template;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Router, body::Bytes};
use base64::Engine as _;
use cookie::{Cookie, SameSite};
use rand::RngCore as _;
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use super::UiError;
use super::forms::UiQuery;
use super::view::Layout;
use crate::principal::Principal;
use crate::state::AppState;
use crate::store::{Opener, Session};

/// The session cookie's name over plain HTTP.
const SESSION_COOKIE: &str = "herald_session";
const SIGN_IN_COOKIE: &str = "herald_sign_in";

/// The console's cookies, by name and path. Secure ones take the `__Host-` prefix: a browser
/// then accepts them only from this very host, over HTTPS, with `Path=/` and no `Domain`, so
/// a site on a sibling subdomain can plant neither a session nor a sign-in token of its
/// choosing (cookie tossing), and a cookie without the prefix is not read. Over plain HTTP
/// (development) the prefix is refused by browsers, and the cookies keep to the console's
/// paths.
#[derive(Debug, Clone, Copy)]
struct Cookies {
    secure: bool,
}

impl Cookies {
    fn of(state: &AppState) -> Self {
        Self {
            secure: state.config.secure_cookies,
        }
    }

    /// The session cookie's name and path.
    fn session(self) -> (&'static str, &'static str) {
        if self.secure {
            ("__Host-herald_session", "/")
        } else {
            (SESSION_COOKIE, "/ui")
        }
    }

    /// The sign-in form's double-submit cookie's name and path.
    fn sign_in(self) -> (&'static str, &'static str) {
        if self.secure {
            ("__Host-herald_sign_in", "/")
        } else {
            (SIGN_IN_COOKIE, "/ui/sign-in")
        }
    }
}
/// The form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sign-in", get(sign_in_form).post(sign_in))
        .route("/sign-out", post(sign_out))
}

/// A one-time message for the next page, kept in the session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Flash {
    Notice {
        text: String,
        error: bool,
    },
    /// Show the webhook's signing secrets on its next page: it was just
    /// created, its secret rotated, or its secrets revealed.
    Secrets {
        webhook: String,
        why: SecretsShown,
    },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SecretsShown {
    Created,
    Rotated,
    Revealed,
}

impl Flash {
    pub fn notice(text: impl Into<String>) -> Self {
        Self::Notice {
            text: text.into(),
            error: false,
        }
    }

    pub fn error(text: impl Into<String>) -> Self {
        Self::Notice {
            text: text.into(),
            error: true,
        }
    }
}

/// Whoever is signed in, on a page that needs someone to be.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub session: Session,
    /// "Admin", or the account's name.
    pub label: String,
    state: AppState,
}

impl Viewer {
    pub fn principal(&self) -> &Principal {
        &self.session.principal
    }

    pub fn is_admin(&self) -> bool {
        self.session.principal.is_admin()
    }

    pub fn csrf(&self) -> &str {
        &self.session.csrf_token
    }

    /// Leaves `flash` for the next page. A flash that cannot be stored is
    /// logged: the action it reports has already happened.
    pub async fn flash(&self, flash: &Flash) {
        let stored = match serde_json::to_string(flash) {
            Ok(text) => self.state.store.set_flash(&self.session.id, &text).await,
            Err(error) => Err(anyhow::Error::new(error).into()),
        };
        if let Err(error) = stored {
            tracing::warn!(
                error = format!("{:#}", anyhow::Error::from(error)),
                "cannot keep a console notice"
            );
        }
    }

    /// The flash left by the previous action, once.
    pub async fn take_flash(&self) -> Result<Option<Flash>, UiError> {
        let text = self
            .state
            .store
            .take_flash(&self.session.id)
            .await
            .map_err(|e| UiError::Internal(e.into()))?;
        // A flash this version cannot read is dropped, not an error page.
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }
}

/// Every value the request carries for the cookie `name`: a browser sends
/// several when cookies of the same name were set for different paths or
/// by a sibling host, and a planted one must not shadow the real one.
fn cookie_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|cookie| cookie.name() == name)
        .map(|cookie| cookie.value().to_owned())
        .collect()
}

/// The live session of a request, if it has one.
pub async fn session_of(headers: &HeaderMap, state: &AppState) -> Result<Option<Viewer>, UiError> {
    let mut found = None;
    // At most a few: each is a database read.
    let (name, _) = Cookies::of(state).session();
    for token in cookie_values(headers, name).into_iter().take(4) {
        found = state
            .store
            .session(&SecretString::from(token), &state.admin_key_hash)
            .await
            .map_err(|e| UiError::Internal(e.into()))?;
        if found.is_some() {
            break;
        }
    }
    let Some(session) = found else {
        return Ok(None);
    };
    let label = match &session.principal {
        Principal::Admin => "Admin".to_owned(),
        Principal::Account(id) => state
            .store
            .get_account(id)
            .await
            .map_err(|e| UiError::Internal(e.into()))?
            .map_or_else(|| id.to_string(), |account| account.name),
    };
    Ok(Some(Viewer {
        session,
        label,
        state: state.clone(),
    }))
}

/// Not signed in (or no longer): to the sign-in page, then back here.
#[derive(Debug)]
pub enum NeedsSession {
    SignIn(String),
    Failed(UiError),
}

impl IntoResponse for NeedsSession {
    fn into_response(self) -> Response {
        match self {
            Self::SignIn(next) => {
                let query =
                    serde_urlencoded::to_string([("next", next.as_str())]).unwrap_or_default();
                Redirect::to(&format!("/ui/sign-in?{query}")).into_response()
            }
            Self::Failed(error) => error.into_response(),
        }
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = NeedsSession;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, NeedsSession> {
        match session_of(&parts.headers, state).await {
            Ok(Some(viewer)) => Ok(viewer),
            Ok(None) => {
                // The URI as the browser sent it: inside the console's
                // nest, `parts.uri` has lost its /ui prefix.
                let uri = parts
                    .extensions
                    .get::<OriginalUri>()
                    .map_or(&parts.uri, |original| &original.0);
                let next = uri.path_and_query().map_or("/ui/accounts", |p| p.as_str());
                Err(NeedsSession::SignIn(local_target(next).to_owned()))
            }
            Err(error) => Err(NeedsSession::Failed(error)),
        }
    }
}

/// A form posted by the signed-in viewer with the session's CSRF token.
#[derive(Debug)]
pub struct Posted<T> {
    pub viewer: Viewer,
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<AppState> for Posted<T> {
    type Rejection = NeedsSession;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, NeedsSession> {
        let (mut parts, body) = request.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        let bytes = read_form(parts, body, state)
            .await
            .map_err(NeedsSession::Failed)?;
        let token = form_field(&bytes, CSRF_FIELD).unwrap_or_default();
        if !same(&token, viewer.csrf()) {
            return Err(NeedsSession::Failed(UiError::BadCsrf));
        }
        let form = parse_form(&bytes).map_err(NeedsSession::Failed)?;
        Ok(Self { viewer, form })
    }
}

async fn read_form(
    parts: Parts,
    body: axum::body::Body,
    state: &AppState,
) -> Result<Bytes, UiError> {
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(UiError::BadForm("expected a submitted form".into()));
    }
    let request = Request::from_parts(parts, body);
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                UiError::TooLarge
            } else {
                UiError::BadForm(rejection.body_text())
            }
        })
}

fn form_field(bytes: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(bytes)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, UiError> {
    serde_html_form::from_bytes(bytes).map_err(|e| UiError::BadForm(e.to_string()))
}

fn same(given: &str, expected: &str) -> bool {
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// `next` when it is a page of the console, else the accounts page: a
/// sign-in link must not send anyone elsewhere.
fn local_target(next: &str) -> &str {
    let console = next.starts_with("/ui/") && !next.starts_with("/ui/sign-");
    let plain = !next.contains("//") && !next.contains('\\') && !next.chars().any(char::is_control);
    if console && plain {
        next
    } else {
        "/ui/accounts"
    }
}

pub(super) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn set_cookie(response: &mut Response, cookie: &Cookie<'_>) {
    match HeaderValue::from_str(&cookie.to_string()) {
        Ok(value) => {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
        // Tokens are base64url: only a broken invariant gets here.
        Err(error) => tracing::error!(%error, "cannot set a console cookie"),
    }
}

fn cookie<'a>(name: &'a str, value: String, path: &'a str, state: &AppState) -> Cookie<'a> {
    Cookie::build((name, value))
        .path(path)
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.config.secure_cookies)
        .build()
}

/// Tells the browser to drop a cookie: with the attributes it was set with, or a browser
/// refuses the removal of a `__Host-` cookie.
fn removal<'a>(name: &'a str, path: &'a str, state: &AppState) -> Cookie<'a> {
    let mut gone = cookie(name, String::new(), path, state);
    gone.make_removal();
    gone
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    layout: Layout,
    csrf: String,
    next: String,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NextQuery {
    next: Option<String>,
}

fn sign_in_page(state: &AppState, next: &str, error: Option<String>) -> Response {
    let csrf = random_token();
    let status = if error.is_some() {
        axum::http::StatusCode::UNAUTHORIZED
    } else {
        axum::http::StatusCode::OK
    };
    let mut response = super::render(
        status,
        &SignInPage {
            layout: Layout::signed_out("Sign in"),
            csrf: csrf.clone(),
            next: local_target(next).to_owned(),
            error,
        },
    );
    let (name, path) = Cookies::of(state).sign_in();
    let mut pre = cookie(name, csrf, path, state);
    pre.set_max_age(cookie::time::Duration::hours(1));
    set_cookie(&mut response, &pre);
    response
}

async fn sign_in_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    UiQuery(query): UiQuery<NextQuery>,
) -> Result<Response, UiError> {
    let next = query.next.unwrap_or_default();
    if session_of(&headers, &state).await?.is_some() {
        return Ok(Redirect::to(local_target(&next)).into_response());
    }
    Ok(sign_in_page(&state, &next, None))
}

#[derive(Debug, Deserialize)]
struct SignInForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    csrf: String,
}

async fn sign_in(State(state): State<AppState>, request: Request) -> Result<Response, UiError> {
    let (parts, body) = request.into_parts();
    let cookies = Cookies::of(&state);
    let expected = cookie_values(&parts.headers, cookies.sign_in().0);
    let bytes = read_form(parts, body, &state).await?;
    let form: SignInForm = parse_form(&bytes)?;
    if !expected.iter().any(|cookie| same(&form.csrf, cookie)) {
        return Err(UiError::BadCsrf);
    }
    let key = SecretString::from(form.key.trim().to_owned());
    let identified = crate::auth::identify(&state, &key)
        .await
        .map_err(|e| UiError::Internal(e.into()))?;
    let opener = match &identified {
        Some((Principal::Admin, _)) => Opener::Admin {
            key_hash: &state.admin_key_hash,
        },
        Some((Principal::Account(account), Some(key))) => Opener::Account { account, key },
        _ => {
            return Ok(sign_in_page(
                &state,
                &form.next,
                Some("This key is not valid, or it has been revoked.".into()),
            ));
        }
    };
    let (token, session) = state
        .store
        .open_session(opener, state.config.session_ttl)
        .await
        .map_err(|e| UiError::Internal(e.into()))?;
    tracing::info!(admin = session.principal.is_admin(), "console sign-in");
    let mut response = Redirect::to(local_target(&form.next)).into_response();
    let (name, path) = cookies.session();
    let mut session_cookie = cookie(
        name,
        secrecy::ExposeSecret::expose_secret(&token).to_owned(),
        path,
        &state,
    );
    session_cookie.set_max_age(
        cookie::time::Duration::try_from(state.config.session_ttl)
            .unwrap_or(cookie::time::Duration::hours(12)),
    );
    set_cookie(&mut response, &session_cookie);
    let (name, path) = cookies.sign_in();
    set_cookie(&mut response, &removal(name, path, &state));
    Ok(response)
}

async fn sign_out(
    State(state): State<AppState>,
    posted: Posted<serde::de::IgnoredAny>,
) -> Result<Response, UiError> {
    state
        .store
        .close_session(&posted.viewer.session.id)
        .await
        .map_err(|e| UiError::Internal(e.into()))?;
    let mut response = Redirect::to("/ui/sign-in").into_response();
    let (name, path) = Cookies::of(&state).session();
    set_cookie(&mut response, &removal(name, path, &state));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_only_returns_to_console_pages() {
        for (next, expect) in [
            (
                "/ui/accounts/acct_1/webhooks",
                "/ui/accounts/acct_1/webhooks",
            ),
            ("/ui/event-types?x=1", "/ui/event-types?x=1"),
            ("https://evil.example/", "/ui/accounts"),
            ("//evil.example/ui/", "/ui/accounts"),
            ("/ui//evil.example", "/ui/accounts"),
            ("/ui/\\evil", "/ui/accounts"),
            ("/ui/\n/x", "/ui/accounts"),
            ("/ui/\u{1}", "/ui/accounts"),
            ("/ui/sign-in", "/ui/accounts"),
            ("/v1/accounts", "/ui/accounts"),
            ("", "/ui/accounts"),
        ] {
            assert_eq!(local_target(next), expect, "{next}");
        }
    }

    #[test]
    fn csrf_tokens_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("ab", "abc"));
        assert!(!same("", ""));
        assert!(!same("abd", "abc"));
    }
}
