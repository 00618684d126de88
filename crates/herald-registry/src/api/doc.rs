//! The shapes of request values as the OpenAPI document states them, so that
//! a client (or a fuzzer) can tell a valid request from one the API refuses.
//! Each is documentation only: the parsers in herald-core and the service's
//! rules decide; these say the same thing in JSON Schema.

// Schemas only: these types are named in `value_type`, never built.
#![allow(dead_code)]

use utoipa::ToSchema;

/// A display name: 1–100 characters with at least one that is not
/// whitespace, and no control characters.
#[derive(Debug, ToSchema)]
#[schema(
    value_type = String,
    min_length = 1,
    max_length = 100,
    pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
)]
pub struct Name(String);

/// An account's name: as [`Name`], up to 200 characters.
#[derive(Debug, ToSchema)]
#[schema(
    value_type = String,
    min_length = 1,
    max_length = 200,
    pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
)]
pub struct AccountName(String);

/// Free text: up to 1000 characters; line breaks and tabs are the only
/// control characters allowed.
#[derive(Debug, ToSchema)]
#[schema(
    value_type = String,
    max_length = 1000,
    pattern = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"
)]
pub struct Description(String);

/// An event type: lower-case dot-separated segments of a-z, 0-9, `_` and
/// `-`, each starting with a letter or digit.
#[derive(Debug, ToSchema)]
#[schema(
    value_type = String,
    max_length = 128,
    pattern = r"^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)*$",
    example = "booking.created"
)]
pub struct EventTypeName(String);

/// An event type, or a prefix with a trailing wildcard (`booking.*`), at
/// most 128 characters in all.
#[derive(Debug, ToSchema)]
#[schema(
    value_type = String,
    max_length = 128,
    pattern = r"^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)*(\.\*)?$",
    example = "booking.*"
)]
pub struct EventPatternText(String);

/// An absolute http(s) URL with a host name or an IPv4 address, without
/// credentials or a fragment. (IPv6 literals and characters that need
/// percent-encoding are accepted too, but not described here.)
#[derive(Debug, ToSchema)]
#[schema(
    value_type = String,
    max_length = 2048,
    pattern = r"^[hH][tT][tT][pP][sS]?://(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])|([A-Za-z0-9]+(-[A-Za-z0-9]+)*\.)*[A-Za-z][A-Za-z0-9]*(-[A-Za-z0-9]+)*)(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0))?([/?][A-Za-z0-9._~!$&()*+,;=:@/%?-]*)?$",
    example = "https://example.com/hooks/herald"
)]
pub struct Url(String);

/// A Standard Webhooks secret: `whsec_` and the base64 of 24 to 64 bytes.
#[derive(Debug, ToSchema)]
#[schema(
    value_type = String,
    pattern = r"^whsec_((([A-Za-z0-9+/]{4}){8,20}([A-Za-z0-9+/]{2}(==)?|[A-Za-z0-9+/]{3}=?)?)|(([A-Za-z0-9+/]{4}){21}([A-Za-z0-9+/]{2}(==)?)?))$",
    example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
)]
pub struct Secret(String);

/// An `Idempotency-Key`: 1–255 visible ASCII characters.
#[derive(Debug, ToSchema)]
#[schema(value_type = String, min_length = 1, max_length = 255, pattern = r"^[\t\x20-\x7e]*[\x21-\x7e][\t\x20-\x7e]*$")]
pub struct IdempotencyKey(String);

/// An `If-Match` naming a webhook's version: `"3"`, `W/"3"` or `3`.
#[derive(Debug, ToSchema)]
#[schema(value_type = String, pattern = r#"^[\t ]*(W/)?"?[0-9]{1,18}"?[\t ]*$"#, example = "\"3\"")]
pub struct IfMatch(String);

/// Where a delivery stands.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Status {
    /// Handed to the workers, no attempt reported yet.
    Pending,
    Delivered,
    /// The last attempt failed and another is scheduled.
    Failed,
    /// No further attempt will be made.
    Exhausted,
}

/// Items per page.
#[derive(Debug, ToSchema)]
#[schema(value_type = u64, minimum = 1, maximum = 250)]
pub struct Limit(u64);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use herald_core::{EventPattern, EventType, SigningSecret, WebhookUrl};
    use proptest::prelude::*;
    use proptest::string::string_regex;

    /// The pattern the published document states for the schema `name`.
    fn pattern(name: &str) -> String {
        let doc = serde_json::to_value(crate::openapi::document()).unwrap();
        doc["components"]["schemas"][name]["pattern"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no pattern"))
            .to_owned()
    }

    /// Every string the document calls valid, the parser accepts: what a
    /// client builds from the schema is not refused for its shape.
    fn accepted_by(name: &str, parse: impl Fn(&str) -> bool) {
        // Generation takes the pattern without its anchors; every one here
        // is anchored at both ends.
        let pattern = pattern(name);
        let body = pattern
            .strip_prefix('^')
            .and_then(|p| p.strip_suffix('$'))
            .unwrap();
        let strategy = string_regex(body).unwrap();
        proptest!(ProptestConfig::with_cases(300), |(text in strategy)| {
            prop_assert!(parse(&text), "{name} allows {text:?}, which is refused");
        });
    }

    #[test]
    fn documented_shapes_are_accepted() {
        accepted_by("Secret", |t| SigningSecret::parse(t).is_ok());
        accepted_by("EventTypeName", |t| {
            t.len() > 128 || EventType::parse(t).is_ok()
        });
        accepted_by("EventPatternText", |t| {
            t.len() > 128 || EventPattern::parse(t).is_ok()
        });
        accepted_by("Name", |t| {
            t.chars().count() > 100 || crate::service::display_name("name", t, 100).is_ok()
        });
        accepted_by("Description", |t| {
            crate::service::free_text("description", t, 1000).is_ok()
        });
        accepted_by("Url", |t| t.len() > 2048 || WebhookUrl::parse(t).is_ok());
    }
}
