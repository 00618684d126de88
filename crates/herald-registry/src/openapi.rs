//! The OpenAPI document, generated from the handlers' annotations. A copy is
//! checked in at `openapi.json` (repository root) and a test keeps it fresh.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;

#[derive(OpenApi)]
#[openapi(
    info(title = "Herald registry API", description = "Webhook definitions of the booking platform's accounts. Authenticate with `Authorization: Bearer <key>`: the admin key from configuration, or an account's API key, which sees only that account. Errors are RFC 9457 problem+json."),
    paths(
        api::accounts::create, api::accounts::list, api::accounts::read,
        api::accounts::rename, api::accounts::remove,
        api::webhooks::create, api::webhooks::list, api::webhooks::read,
        api::webhooks::update, api::webhooks::remove,
        api::webhooks::reveal_secret, api::webhooks::rotate_secret,
        api::event_types::list, api::event_types::create, api::event_types::update,
        api::api_keys::create, api::api_keys::list, api::api_keys::revoke,
        api::deliveries::list, api::deliveries::list_for_webhook, api::deliveries::read,
        api::deliveries::redeliver, api::deliveries::replay, api::deliveries::send_test,
        api::deliveries::stats,
        api::health::healthz, api::health::readyz,
    ),
    // Named only by parameters, which utoipa does not collect by itself.
    components(schemas(api::doc::Limit, api::doc::IdempotencyKey, api::doc::IfMatch)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The document as checked into the repository.
pub fn to_pretty_json() -> String {
    // The document is plain data; serialising it cannot fail.
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}
