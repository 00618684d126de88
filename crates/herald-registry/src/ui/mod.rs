//! The management console: server-rendered pages (askama) and plain forms
//! over the same service layer as the JSON API. Pages work with JavaScript
//! off; `console.js` only adds confirm dialogs, copy buttons, the live
//! delivery log and example payloads. Every asset is served from here, under
//! a strict Content-Security-Policy.

mod accounts;
mod api_keys;
mod catalogue;
mod chart;
mod deliveries;
mod errors;
mod forms;
mod session;
mod submission;
mod view;
mod webhooks;

use askama::Template;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::state::AppState;

pub use errors::UiError;
pub use session::Viewer;

/// Where the console lives.
pub const ROOT: &str = "/ui";

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

pub fn router(state: AppState) -> Router<AppState> {
    let pages = Router::new()
        .route("/", get(|| async { Redirect::to("/ui/accounts") }))
        .route("/assets/{name}", get(asset))
        .merge(session::router())
        .merge(accounts::router())
        .merge(webhooks::router())
        .merge(deliveries::router())
        .merge(api_keys::router())
        .merge(catalogue::router())
        .fallback(|| async { UiError::NotFound("page") })
        .method_not_allowed_fallback(|| async { UiError::MethodNotAllowed });
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/accounts") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/accounts") }))
        .nest(
            ROOT,
            pages
                .layer(axum::middleware::map_response(security_headers))
                .layer(axum::middleware::from_fn_with_state(
                    state,
                    errors::in_session,
                )),
        )
}

/// Headers on every console response: no framing, no sniffing, no caching
/// (pages may show secrets), and only the console's own scripts and styles.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The console's stylesheet and script, compiled in.
async fn asset(Path(name): Path<String>) -> Response {
    let (body, content_type) = match name.as_str() {
        "console.css" => (
            include_str!("../../assets/console.css"),
            "text/css; charset=utf-8",
        ),
        "console.js" => (
            include_str!("../../assets/console.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return UiError::NotFound("asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Revalidated each time: small, and always the running version.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Renders a page; a template that fails to render is a bug, logged and
/// answered with an opaque 500.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            UiError::Internal(anyhow::Error::new(error).context("rendering a page")).into_response()
        }
    }
}

/// A page: 200 and its HTML.
pub fn page(page: &impl Template) -> Response {
    render(StatusCode::OK, page)
}

/// After a successful form post: go to `to` with a GET.
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}
