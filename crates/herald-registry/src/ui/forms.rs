//! What forms share: errors beside their fields, and choices for selects
//! and checkboxes.

use crate::service::FieldError;

/// Errors to show beside fields, by the form's field name; `form` holds
/// those that belong to no field.
#[derive(Debug, Default, Clone)]
pub struct FieldErrors(Vec<(String, String)>);

impl FieldErrors {
    /// Adds `message` for `field`, as a sentence; a field keeps its first.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        if self.get(field).is_none() {
            self.0.push((field.to_owned(), sentence(&message.into())));
        }
    }

    /// Adds the service's errors. `rename` maps a service field (`url`,
    /// `events[2]`) to the form's; unknown ones go to `form`.
    pub fn extend(
        &mut self,
        errors: Vec<FieldError>,
        rename: impl Fn(&str) -> Option<&'static str>,
    ) {
        for error in errors {
            let field = rename(&error.field).unwrap_or("form");
            self.add(field, error.message);
        }
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, message)| message.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The service's messages are phrases ("must not be empty"); beside a
/// field they read as sentences.
fn sentence(message: &str) -> String {
    let mut chars = message.trim().chars();
    let Some(first) = chars.next() else {
        return String::new();
    };
    let mut text: String = first.to_uppercase().chain(chars).collect();
    if !text.ends_with(['.', '?', '!']) {
        text.push('.');
    }
    text
}

/// An option of a select, or a checkbox.
#[derive(Debug, Clone)]
pub struct Choice {
    pub value: String,
    pub label: String,
    /// A short explanation shown beside the label.
    pub hint: String,
    pub selected: bool,
}

impl Choice {
    pub fn new(value: impl Into<String>, label: impl Into<String>, selected: bool) -> Self {
        Self {
            value: value.into(),
            label: label.into(),
            hint: String::new(),
            selected,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = hint.into();
        self
    }

    /// An id for the element, from the value: letters, digits and dashes.
    pub fn dom_id(&self, prefix: &str) -> String {
        // Event names are lower-case words, digits and underscores between
        // dots, so this is one-to-one for them.
        let tail: String = self
            .value
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        format!("{prefix}-{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_the_first_message_per_field() {
        let mut errors = FieldErrors::default();
        errors.extend(
            vec![
                FieldError::new("events[0]", "unknown event type x"),
                FieldError::new("events[1]", "unknown event type y"),
                FieldError::new("secret", "odd"),
            ],
            |field| field.starts_with("events").then_some("events"),
        );
        assert_eq!(errors.get("events"), Some("Unknown event type x."));
        assert_eq!(errors.get("form"), Some("Odd."));
        assert_eq!(errors.get("secret"), None);
    }

    #[test]
    fn dom_ids_are_safe() {
        let id = |value: &str| Choice::new(value, "", false).dom_id("event");
        assert_eq!(id("booking.*"), "event-booking--");
        assert_ne!(id("a.b_c"), id("a.b.c"));
    }
}

/// Query parameters of a page; a query that cannot be read is the
/// console's 400 page, not a bare text answer.
#[derive(Debug)]
pub struct UiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for UiQuery<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = super::UiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, super::UiError> {
        let query = parts.uri.query().unwrap_or_default();
        serde_html_form::from_str(query)
            .map(Self)
            .map_err(|e| super::UiError::BadForm(format!("the address's query: {e}")))
    }
}
