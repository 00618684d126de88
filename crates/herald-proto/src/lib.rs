//! The messages that cross Herald's process boundaries, generated from `proto/` by prost, and
//! their conversions to and from herald-core's domain types.
//!
//! Only this crate knows protobuf: other crates hand it bytes or core types.

mod event;

pub use event::{DecodeError, decode_event, encode_event};

use chrono::{DateTime, Utc};

// Generated code is checked by prost-build's own tests, not by our lints; its doc comments are
// copied from the .proto files and do not follow rustdoc conventions.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    rustdoc::all
)]
pub mod events {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/herald.events.v1.rs"));
    }
}

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    rustdoc::all
)]
pub mod webhooks {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/herald.webhooks.v1.rs"));
    }
}

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    rustdoc::all
)]
pub mod deliveries {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/herald.deliveries.v1.rs"));
    }
}

/// Any of Herald's messages as protobuf bytes, so that no other crate needs
/// prost to put one on the wire.
pub fn encode<M: prost::Message>(message: &M) -> Vec<u8> {
    message.encode_to_vec()
}

/// One of Herald's messages from protobuf bytes; the error names the
/// message and says what was wrong.
pub fn decode<M: prost::Message + Default>(bytes: &[u8]) -> Result<M, prost::DecodeError> {
    M::decode(bytes)
}

/// Content type of a protobuf-encoded message.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/protobuf";

/// Content type of a JSON-encoded event, and the default when a message has none.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// `time` as a protobuf timestamp.
///
/// chrono represents a leap second as a nanosecond count of 1e9 or more, which protobuf forbids;
/// such an instant becomes the last nanosecond of its second.
pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    let nanos = time.timestamp_subsec_nanos().min(999_999_999);
    prost_types::Timestamp {
        seconds: time.timestamp(),
        // Below 1e9 after the clamp, so it always fits.
        nanos: i32::try_from(nanos).unwrap_or(999_999_999),
    }
}

/// The instant a protobuf timestamp names, or `None` when its nanoseconds are outside
/// 0..1e9 or its seconds are beyond what chrono represents.
pub fn datetime(timestamp: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    if nanos > 999_999_999 {
        return None;
    }
    DateTime::from_timestamp(timestamp.seconds, nanos)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timestamps() {
        let time: DateTime<Utc> = "2026-11-27T10:00:00.123456789Z".parse().unwrap();
        let ts = timestamp(time);
        assert_eq!((ts.seconds, ts.nanos), (1_795_773_600, 123_456_789));
        assert_eq!(datetime(&ts), Some(time));

        let check_invalid = |seconds: i64, nanos: i32| {
            let ts = prost_types::Timestamp { seconds, nanos };
            assert_eq!(datetime(&ts), None, "{ts:?}");
        };
        check_invalid(0, -1);
        check_invalid(0, 1_000_000_000);
        check_invalid(i64::MAX, 0);
    }

    proptest! {
        #[test]
        fn timestamp_roundtrip(seconds in -62_135_596_800i64..=253_402_300_799, nanos in 0u32..1_000_000_000) {
            let time = DateTime::from_timestamp(seconds, nanos).unwrap();
            prop_assert_eq!(datetime(&timestamp(time)), Some(time));
        }
    }
}
