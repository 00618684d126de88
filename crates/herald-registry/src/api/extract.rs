//! Request extractors whose rejections are problem+json naming the field.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldError};

/// A JSON body, with the raw bytes kept for idempotency fingerprints.
#[derive(Debug)]
pub struct ApiJson<T>(pub T, pub Bytes);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| {
                let v = v.trim();
                v.eq_ignore_ascii_case("application/json") || v.ends_with("+json")
            })
            .unwrap_or(false);
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = crate::api::body_limit(request.extensions());
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(limit)
                } else {
                    ApiError::Malformed {
                        detail: rejection.body_text(),
                        field: None,
                    }
                }
            })?;
        let value = parse_json(&bytes)?;
        Ok(Self(value, bytes))
    }
}

/// Deserialises a JSON body, which must be an object; errors name the JSON
/// path of the culprit.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde reads a struct from an array too (`["x"]` would fill the first
    // field), which no client means.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|&b| b != b'{') {
        return Err(ApiError::Invalid(vec![FieldError::new(
            "body",
            "must be a JSON object",
        )]));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = strip_position(&inner.to_string());
        match inner.classify() {
            serde_json::error::Category::Data => {
                ApiError::Invalid(vec![FieldError::new(field_name(&path, &message), message)])
            }
            _ => ApiError::Malformed {
                detail: format!("invalid JSON: {message}"),
                field: None,
            },
        }
    })?;
    deserializer.end().map_err(|e| ApiError::Malformed {
        detail: format!("invalid JSON: {}", strip_position(&e.to_string())),
        field: None,
    })?;
    Ok(value)
}

/// serde_json appends "at line 1 column 9"; clients see the field instead.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// The field a serde error is about. For a missing or unknown field the path
/// stops at its parent and the name is only in the message.
fn field_name(path: &str, message: &str) -> String {
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    match (path, named) {
        (".", Some(name)) => name.to_owned(),
        (".", None) => "body".to_owned(),
        (parent, Some(name)) if !parent.ends_with(name) => format!("{parent}.{name}"),
        (path, _) => path.to_owned(),
    }
}

/// An optional whole number from 0 to 2^63 - 1 (the document's int64).
/// JSON Schema counts `3.0` as an integer, and so does the API: a client's
/// JSON library may write whole numbers that way.
pub fn whole_number<'de, D>(deserializer: D) -> Result<Option<u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize as _;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(n) = number.as_u64() {
        return if i64::try_from(n).is_ok() {
            Ok(Some(n))
        } else {
            Err(serde::de::Error::custom(format!(
                "expected a whole number of at most {}, found {number}",
                i64::MAX
            )))
        };
    }
    match number.as_f64() {
        // 2^53: beyond it a float no longer says which whole number it is.
        Some(f) if f.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&f) => {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // Checked above.
            Ok(Some(f as u64))
        }
        _ => Err(serde::de::Error::custom(format!(
            "expected a whole number of at least 0, found {number}"
        ))),
    }
}

/// Query parameters; errors name the parameter as `query:<name>`.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Self)
            .map_err(|error| {
                let path = error.path().to_string();
                let message = error.into_inner().to_string();
                let name = field_name(&path, &message);
                ApiError::Invalid(vec![FieldError::new(format!("query:{name}"), message)])
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // Fields exist to be deserialised.
    struct Sample {
        name: String,
        count: u32,
        #[serde(default)]
        tags: Vec<u8>,
    }

    fn check(body: &str, expect: &str) {
        let problem = match parse_json::<Sample>(body.as_bytes()) {
            Ok(v) => panic!("{body} parsed as {v:?}"),
            Err(e) => e.problem(),
        };
        assert_eq!(
            format!("{} {}", problem.status, problem.detail),
            expect,
            "{body}"
        );
    }

    #[test]
    fn errors_name_the_field() {
        check(
            r#"{"name": 1, "count": 1}"#,
            "422 name: invalid type: integer `1`, expected a string",
        );
        check(r#"{"count": 1}"#, "422 name: missing field `name`");
        check(
            r#"{"name": "a", "count": 1, "colour": 2}"#,
            "422 colour: unknown field `colour`, expected one of `name`, `count`, `tags`",
        );
        check(
            r#"{"name": "a", "count": 1, "tags": [1, "x"]}"#,
            "422 tags[1]: invalid type: string \"x\", expected u8",
        );
        check(
            r#"{"name": "a", "#,
            "400 invalid JSON: EOF while parsing a value",
        );
        check(
            r#"{"name": "a", "count": 1} x"#,
            "400 invalid JSON: trailing characters",
        );
        check(r#"["a", 1]"#, "422 body: must be a JSON object");
        check(r#" "a""#, "422 body: must be a JSON object");
        check("", "400 invalid JSON: EOF while parsing a value");
    }

    #[derive(Debug, serde::Deserialize)]
    struct Versioned {
        #[serde(default, deserialize_with = "whole_number")]
        version: Option<u64>,
    }

    #[test]
    fn whole_numbers_may_be_written_as_floats() {
        let read = |body: &str| parse_json::<Versioned>(body.as_bytes()).map(|v| v.version);
        assert_eq!(read(r#"{"version": 3}"#).unwrap(), Some(3));
        assert_eq!(read(r#"{"version": 3.0}"#).unwrap(), Some(3));
        assert_eq!(read(r#"{"version": null}"#).unwrap(), None);
        assert_eq!(read("{}").unwrap(), None);
        for bad in [
            r#"{"version": 3.5}"#,
            r#"{"version": -1}"#,
            r#"{"version": "3"}"#,
            r#"{"version": 9223372036854775808}"#,
        ] {
            let problem = read(bad).unwrap_err().problem();
            assert_eq!(problem.status, 422, "{bad}");
        }
    }
}
