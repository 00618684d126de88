//! Identifiers: prefixed ULID newtypes for Herald's own records, and the publisher-chosen event id.
//!
//! A prefixed id is `<prefix><ULID>` with the ULID in the canonical upper-case Crockford form that
//! the `ulid` crate prints. Only that form parses, so two ids are equal exactly when their text is,
//! and an id can be used as a map key, a NATS subject token or a database key without normalising.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Re-exported because [`AccountId::from_ulid`] and its siblings take one.
pub use ulid::Ulid;

/// Length of a ULID's text form.
const ULID_LEN: usize = 26;

/// Longest event id a publisher may choose.
pub const EVENT_ID_MAX_LEN: usize = 128;

/// Why a piece of text is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} id must start with `{prefix}`")]
    MissingPrefix {
        kind: &'static str,
        prefix: &'static str,
    },
    #[error("{kind} id must be `{prefix}` followed by a 26-character ULID, found {len} characters")]
    UlidLength {
        kind: &'static str,
        prefix: &'static str,
        len: usize,
    },
    #[error(
        "{kind} id must be `{prefix}` followed by a ULID in upper-case Crockford base32 \
         (0-9, A-Z without I, L, O, U; first character 0-7)"
    )]
    UlidText {
        kind: &'static str,
        prefix: &'static str,
    },
    #[error("event id must be 1 to {max} characters, found {len}", max = EVENT_ID_MAX_LEN)]
    EventIdLength { len: usize },
    #[error("event id may contain only A-Z, a-z, 0-9 and `._:-`, found {found:?}")]
    EventIdChar { found: char },
}

/// Checks `<prefix><canonical ULID>` and returns the text unchanged when it is one.
fn check_prefixed(kind: &'static str, prefix: &'static str, text: &str) -> Result<(), IdError> {
    let body = text
        .strip_prefix(prefix)
        .ok_or(IdError::MissingPrefix { kind, prefix })?;
    if body.len() != ULID_LEN {
        return Err(IdError::UlidLength {
            kind,
            prefix,
            len: body.chars().count(),
        });
    }
    // The ulid crate also accepts lower case and silently drops the overflow bits of a first
    // character above 7; comparing with the re-encoded value rejects both.
    match Ulid::from_string(body) {
        Ok(ulid) if ulid.array_to_str(&mut [0; ULID_LEN]) == body => Ok(()),
        _ => Err(IdError::UlidText { kind, prefix }),
    }
}

macro_rules! prefixed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The text every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh id from a new ULID, so ids sort roughly by creation time.
            #[allow(clippy::new_without_default)] // a default id would hide where ids come from
            pub fn new() -> Self {
                Self::from_ulid(Ulid::new())
            }

            /// The id whose body is `ulid`.
            pub fn from_ulid(ulid: Ulid) -> Self {
                Self(format!("{}{}", $prefix, ulid))
            }

            pub fn parse(text: &str) -> Result<Self, IdError> {
                check_prefixed($kind, $prefix, text)?;
                Ok(Self(text.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The ULID the id's body spells: 16 bytes to key a map by where the text would
            /// take a pointer to follow.
            pub fn ulid(&self) -> Ulid {
                // Every constructor checked that the body is a ULID in canonical text.
                Ulid::from_string(&self.0[$prefix.len()..])
                    .expect("an id's body is a checked ULID")
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::parse(text)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                check_prefixed($kind, $prefix, &text).map_err(serde::de::Error::custom)?;
                Ok(Self(text))
            }
        }
    };
}

prefixed_id!(
    /// An account (a tenant of the booking platform): `acct_<ULID>`.
    AccountId,
    "acct_",
    "account"
);
prefixed_id!(
    /// A webhook: `wh_<ULID>`.
    WebhookId,
    "wh_",
    "webhook"
);
prefixed_id!(
    /// One (event, webhook) pair, stable across retries and redeliveries: `dlv_<ULID>`.
    DeliveryId,
    "dlv_",
    "delivery"
);
prefixed_id!(
    /// An API key: `key_<ULID>`.
    ApiKeyId,
    "key_",
    "API key"
);
prefixed_id!(
    /// One HTTP attempt of a delivery: `atm_<ULID>`.
    AttemptId,
    "atm_",
    "attempt"
);

impl DeliveryId {
    /// The delivery id of `event` sent to `webhook`.
    ///
    /// It is derived rather than random so that a repeated fan-out of the same event produces the
    /// same id, which JetStream then deduplicates, and so that a receiver sees one `webhook-id` for
    /// every retry and redelivery. The body is the first 16 bytes of
    /// SHA-256(event id ‖ 0x00 ‖ webhook id) read as a ULID; the zero byte cannot occur in either
    /// id, so distinct pairs never hash the same input.
    pub fn derive(event: &EventId, webhook: &WebhookId) -> DeliveryId {
        let mut hasher = Sha256::new();
        hasher.update(event.as_str().as_bytes());
        hasher.update([0u8]);
        hasher.update(webhook.as_str().as_bytes());
        let digest = hasher.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        DeliveryId::from_ulid(Ulid::from(first))
    }
}

/// An event's id, chosen by the publisher and used as the de-duplication key.
///
/// Publishers have their own id schemes, so this is not a ULID: any 1–128 characters from
/// `[A-Za-z0-9._:-]`, a set that is safe in headers, URLs and JSON without escaping.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(String);

impl EventId {
    /// The prefix of ids that Herald generates itself.
    pub const GENERATED_PREFIX: &'static str = "evt_";

    /// A fresh `evt_<ULID>` id, for events Herald publishes (test events, the demo).
    pub fn generate() -> Self {
        Self(format!("{}{}", Self::GENERATED_PREFIX, Ulid::new()))
    }

    pub fn parse(text: &str) -> Result<Self, IdError> {
        check_event_id(text)?;
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_event_id(text: &str) -> Result<(), IdError> {
    if text.is_empty() || text.len() > EVENT_ID_MAX_LEN {
        return Err(IdError::EventIdLength {
            len: text.chars().count(),
        });
    }
    let allowed =
        |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-');
    if text.bytes().all(allowed) {
        return Ok(());
    }
    // Only the error needs characters: a multi-byte one is reported whole.
    let found = text
        .chars()
        .find(|c| !u8::try_from(*c).is_ok_and(allowed))
        .unwrap_or(char::REPLACEMENT_CHARACTER);
    Err(IdError::EventIdChar { found })
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({:?})", self.0)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for EventId {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl AsRef<str> for EventId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        check_event_id(&text).map_err(serde::de::Error::custom)?;
        Ok(Self(text))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_id_gives_back_the_ulid_it_was_made_from() {
        let ulid = Ulid::new();
        assert_eq!(AccountId::from_ulid(ulid).ulid(), ulid);
        let parsed = WebhookId::parse("wh_01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap();
        assert_eq!(parsed.ulid().to_string(), "01ARZ3NDEKTSV4RRFFQ69G5FAV");
    }

    #[test]
    fn new_ids_parse_back() {
        let id = AccountId::new();
        assert!(id.as_str().starts_with("acct_"));
        assert_eq!(id.as_str().len(), 5 + 26);
        assert_eq!(AccountId::parse(id.as_str()).unwrap(), id);
        assert_eq!(id.to_string().parse::<AccountId>().unwrap(), id);

        for text in [
            WebhookId::new().to_string(),
            DeliveryId::new().to_string(),
            ApiKeyId::new().to_string(),
            AttemptId::new().to_string(),
        ] {
            assert!(
                WebhookId::parse(&text).is_ok()
                    || DeliveryId::parse(&text).is_ok()
                    || ApiKeyId::parse(&text).is_ok()
                    || AttemptId::parse(&text).is_ok(),
                "{text}"
            );
        }
    }

    #[test]
    fn prefixed_id_errors() {
        let check = |text: &str, expect: &str| {
            let err = WebhookId::parse(text).unwrap_err();
            assert_eq!(err.to_string(), expect, "{text}");
        };
        check(
            "acct_01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "webhook id must start with `wh_`",
        );
        check(
            "wh_01ARZ3NDEKTSV4RRFFQ69G5FA",
            "webhook id must be `wh_` followed by a 26-character ULID, found 25 characters",
        );
        let text_rule = "webhook id must be `wh_` followed by a ULID in upper-case Crockford base32 \
                         (0-9, A-Z without I, L, O, U; first character 0-7)";
        check("wh_01arz3ndektsv4rrffq69g5fav", text_rule);
        check("wh_01ARZ3NDEKTSV4RRFFQ69G5FAU", text_rule);
        check("wh_81ARZ3NDEKTSV4RRFFQ69G5FAV", text_rule);
        check("wh_01ARZ3NDEKTSV4RRFFQ69G5FA!", text_rule);
        assert_eq!(
            ApiKeyId::parse("key_x").unwrap_err().to_string(),
            "API key id must be `key_` followed by a 26-character ULID, found 1 characters"
        );
    }

    #[test]
    fn event_ids() {
        for ok in [
            "a",
            "evt_01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "order:42.v2-final_1",
            &"x".repeat(128),
        ] {
            assert_eq!(EventId::parse(ok).unwrap().as_str(), ok);
        }
        let check = |text: &str, expect: &str| {
            assert_eq!(
                EventId::parse(text).unwrap_err().to_string(),
                expect,
                "{text}"
            );
        };
        check("", "event id must be 1 to 128 characters, found 0");
        check(
            &"x".repeat(129),
            "event id must be 1 to 128 characters, found 129",
        );
        check(
            "a b",
            "event id may contain only A-Z, a-z, 0-9 and `._:-`, found ' '",
        );
        check(
            "é",
            "event id may contain only A-Z, a-z, 0-9 and `._:-`, found 'é'",
        );
        check(
            "a/b",
            "event id may contain only A-Z, a-z, 0-9 and `._:-`, found '/'",
        );

        let generated = EventId::generate();
        assert!(generated.as_str().starts_with("evt_"));
        assert_eq!(generated.as_str().len(), 30);
    }

    #[test]
    fn delivery_id_is_derived_deterministically() {
        let event = EventId::parse("evt_01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap();
        let webhook = WebhookId::parse("wh_01BX5ZZKBKACTAV9WEVGEMMVRZ").unwrap();
        let id = DeliveryId::derive(&event, &webhook);
        assert_eq!(id, DeliveryId::derive(&event, &webhook));
        assert_eq!(DeliveryId::parse(id.as_str()).unwrap(), id);
        // Pinned, because receivers deduplicate on it across Herald versions.
        expect_test::expect!["dlv_131680B2C4MEK54H6P8MSCXMTT"].assert_eq(id.as_str());

        let other = WebhookId::parse("wh_01BX5ZZKBKACTAV9WEVGEMMVS0").unwrap();
        assert_ne!(DeliveryId::derive(&event, &other), id);
    }

    #[test]
    fn serde_as_strings() {
        let id = WebhookId::parse("wh_01BX5ZZKBKACTAV9WEVGEMMVRZ").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, r#""wh_01BX5ZZKBKACTAV9WEVGEMMVRZ""#);
        assert_eq!(serde_json::from_str::<WebhookId>(&json).unwrap(), id);
        let err = serde_json::from_str::<WebhookId>(r#""acct_01BX5ZZKBKACTAV9WEVGEMMVRZ""#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("webhook id must start with `wh_`"), "{err}");

        let event = EventId::parse("order-1").unwrap();
        assert_eq!(serde_json::to_string(&event).unwrap(), r#""order-1""#);
        assert!(serde_json::from_str::<EventId>(r#""order 1""#).is_err());
    }

    #[test]
    fn debug_names_the_kind() {
        let id = AttemptId::parse("atm_01BX5ZZKBKACTAV9WEVGEMMVRZ").unwrap();
        assert_eq!(
            format!("{id:?}"),
            r#"AttemptId("atm_01BX5ZZKBKACTAV9WEVGEMMVRZ")"#
        );
    }

    proptest! {
        #[test]
        fn any_ulid_roundtrips(bits: u128) {
            let id = AccountId::from_ulid(Ulid(bits));
            prop_assert_eq!(AccountId::parse(id.as_str()).unwrap(), id);
        }

        #[test]
        fn prefixed_parse_never_panics(text in "\\PC{0,40}") {
            let _ = DeliveryId::parse(&text);
        }

        #[test]
        fn valid_event_ids_parse(text in "[A-Za-z0-9._:-]{1,128}") {
            let parsed = EventId::parse(&text).unwrap();
            prop_assert_eq!(parsed.as_str(), text.as_str());
        }

        #[test]
        fn event_id_with_other_char_fails(
            head in "[A-Za-z0-9._:-]{0,10}",
            bad in "[^A-Za-z0-9._:-]",
            tail in "[A-Za-z0-9._:-]{0,10}",
        ) {
            let text = format!("{head}{bad}{tail}");
            prop_assert!(EventId::parse(&text).is_err());
        }

        #[test]
        fn derived_delivery_ids_parse(event in "[A-Za-z0-9._:-]{1,128}", bits: u128) {
            let event = EventId::parse(&event).unwrap();
            let webhook = WebhookId::from_ulid(Ulid(bits));
            let id = DeliveryId::derive(&event, &webhook);
            prop_assert_eq!(DeliveryId::parse(id.as_str()).unwrap(), id);
        }
    }
}
