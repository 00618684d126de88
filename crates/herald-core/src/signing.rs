//! Standard Webhooks v1 signatures: the secrets, signing a delivery and verifying one.
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{body}`, signed with HMAC-SHA256 keyed
//! by the base64-decoded part of a `whsec_…` secret and sent as `v1,<base64>`, so that receivers
//! can verify with any Standard Webhooks library.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore as _;
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How far a `webhook-timestamp` may be from the receiver's clock, either way.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// What every signing secret's text starts with.
pub const SECRET_PREFIX: &str = "whsec_";
const SIGNATURE_VERSION: &str = "v1";
const MIN_KEY_LEN: usize = 24;
const MAX_KEY_LEN: usize = 64;
const GENERATED_KEY_LEN: usize = 32;
/// `v1,` and the base64 of a 32-byte HMAC-SHA256 tag.
const SIGNATURE_LEN: usize = 3 + 44;

/// Standard base64 that also accepts secrets whose padding was trimmed, as some tools do.
const LENIENT_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        // The key is the decoded bytes; unused low bits in the last character change nothing.
        .with_decode_allow_trailing_bits(true),
);

type HmacSha256 = Hmac<Sha256>;

/// Why a piece of text is not a signing secret. The messages never repeat the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("signing secret must start with `whsec_`")]
    MissingPrefix,
    #[error("signing secret must be `whsec_` followed by standard base64")]
    InvalidBase64,
    #[error("signing secret must decode to {MIN_KEY_LEN} to {MAX_KEY_LEN} bytes, found {len}")]
    KeyLength { len: usize },
}

/// Why a delivery's signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("webhook-timestamp is not a whole number of seconds since the Unix epoch")]
    InvalidTimestamp,
    #[error("webhook-timestamp is older than the allowed tolerance")]
    TimestampTooOld,
    #[error("webhook-timestamp is further in the future than the allowed tolerance")]
    TimestampTooNew,
    #[error("no v1 signature matches any signing secret")]
    NoMatchingSignature,
    #[error("webhook-signature must be space-separated `<version>,<base64>` entries")]
    MalformedSignatureHeader,
}

/// A webhook's HMAC key. The bytes live in a zeroised-on-drop box and never reach `Debug`.
#[derive(Clone)]
pub struct SigningSecret {
    key: SecretSlice<u8>,
}

impl SigningSecret {
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = LENIENT_STANDARD
            .decode(encoded)
            .map_err(|_| SecretError::InvalidBase64)?;
        let key = SecretSlice::from(key);
        let len = key.expose_secret().len();
        if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&len) {
            return Err(SecretError::KeyLength { len });
        }
        Ok(Self { key })
    }

    /// A new secret of 32 random bytes from the operating system-seeded CSPRNG.
    pub fn generate() -> Self {
        let mut key = vec![0u8; GENERATED_KEY_LEN];
        rand::rng().fill_bytes(&mut key);
        Self {
            key: SecretSlice::from(key),
        }
    }

    /// The `whsec_…` text, for storing the secret and for showing it once to its owner.
    pub fn expose_whsec(&self) -> String {
        format!(
            "{SECRET_PREFIX}{}",
            STANDARD.encode(self.key.expose_secret())
        )
    }

    /// The `v1,<base64>` signature of one delivery.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut signature = String::with_capacity(SIGNATURE_LEN);
        self.sign_into(&mut signature, msg_id, timestamp, body);
        signature
    }

    /// Appends the `v1,<base64>` signature to `out`: a delivery's header is built in one
    /// allocation, however many secrets sign it.
    fn sign_into(&self, out: &mut String, msg_id: &str, timestamp: i64, body: &[u8]) {
        let tag = self.tag(msg_id, timestamp, body);
        out.push_str(SIGNATURE_VERSION);
        out.push(',');
        STANDARD.encode_string(tag, out);
    }

    fn tag(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(itoa::Buffer::new().format(timestamp).as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length (long ones are hashed first), so this cannot fail.
        #[allow(clippy::expect_used)]
        HmacSha256::new_from_slice(self.key.expose_secret()).expect("HMAC takes any key length")
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret([redacted])")
    }
}

/// Compares key bytes in constant time, so equality checks cannot leak the key through timing.
impl PartialEq for SigningSecret {
    fn eq(&self, other: &Self) -> bool {
        self.key
            .expose_secret()
            .ct_eq(other.key.expose_secret())
            .into()
    }
}

impl Eq for SigningSecret {}

/// The `webhook-signature` header: one `v1,…` signature per live secret, space-separated, so that
/// receivers keep verifying with either secret during a rotation.
pub fn signature_header(
    secrets: &[&SigningSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    // Exactly as long as it will be: a string with spare room costs `Bytes` (so the header
    // value made of it) an allocation of its own.
    let mut header =
        String::with_capacity(secrets.len() * SIGNATURE_LEN + secrets.len().saturating_sub(1));
    for (n, secret) in secrets.iter().enumerate() {
        if n > 0 {
            header.push(' ');
        }
        secret.sign_into(&mut header, msg_id, timestamp, body);
    }
    header
}

/// Verifies a delivery as a receiver would, against every secret the receiver holds.
///
/// The timestamp is checked first, in both directions, so that a captured delivery cannot be
/// replayed later and a clock far ahead is noticed. Signatures of versions other than `v1` are
/// skipped, as the Standard Webhooks specification asks.
pub fn verify(
    secrets: &[SigningSecret],
    msg_id: &str,
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now_unix: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let timestamp: i64 = timestamp_header
        .trim()
        .parse()
        .map_err(|_| VerifyError::InvalidTimestamp)?;
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if now_unix.saturating_sub(timestamp) > tolerance {
        return Err(VerifyError::TimestampTooOld);
    }
    if timestamp.saturating_sub(now_unix) > tolerance {
        return Err(VerifyError::TimestampTooNew);
    }

    if signature_header.trim().is_empty() {
        return Err(VerifyError::MalformedSignatureHeader);
    }
    let mut candidates = Vec::new();
    for entry in signature_header.split_ascii_whitespace() {
        let (version, signature) = entry
            .split_once(',')
            .ok_or(VerifyError::MalformedSignatureHeader)?;
        if version != SIGNATURE_VERSION {
            continue;
        }
        // A v1 entry that is not base64 cannot match; it is not worth failing the others for.
        if let Ok(tag) = STANDARD.decode(signature) {
            candidates.push(tag);
        }
    }

    let mut matched = subtle::Choice::from(0);
    for secret in secrets {
        let expected = secret.tag(msg_id, timestamp, body);
        for candidate in &candidates {
            matched |= expected.as_slice().ct_eq(candidate);
        }
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with the value in the message
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Published vectors: the Standard Webhooks specification's example and the reference
    /// libraries' test suite.
    const VECTORS: [(&str, &str, i64, &str, &str); 2] = [
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
        (
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            r#"{"email":"test@example.com","username":"test_user"}"#,
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        ),
    ];

    fn secret(text: &str) -> SigningSecret {
        SigningSecret::parse(text).unwrap()
    }

    #[test]
    fn known_answers() {
        for (key, id, timestamp, body, expected) in VECTORS {
            assert_eq!(secret(key).sign(id, timestamp, body.as_bytes()), expected);
            verify(
                &[secret(key)],
                id,
                &timestamp.to_string(),
                expected,
                body.as_bytes(),
                timestamp,
                DEFAULT_TOLERANCE,
            )
            .unwrap();
        }
    }

    #[test]
    fn secret_rules() {
        let check = |text: &str, expect: &str| {
            assert_eq!(secret(text).expose_whsec(), expect, "{text}");
        };
        let check_err = |text: &str, expect: &str| {
            let err = SigningSecret::parse(text).unwrap_err().to_string();
            assert_eq!(err, expect, "{text}");
            assert!(!err.contains(text.trim_start_matches("whsec_")), "{err}");
        };
        check(VECTORS[0].0, VECTORS[0].0);
        // Trimmed padding is accepted and restored.
        let padded = format!("whsec_{}", STANDARD.encode([7u8; 32]));
        check(padded.trim_end_matches('='), &padded);
        check_err(
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "signing secret must start with `whsec_`",
        );
        check_err(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa-w",
            "signing secret must be `whsec_` followed by standard base64",
        );
        check_err(
            &format!("whsec_{}", STANDARD.encode([1u8; 23])),
            "signing secret must decode to 24 to 64 bytes, found 23",
        );
        check_err(
            &format!("whsec_{}", STANDARD.encode([1u8; 65])),
            "signing secret must decode to 24 to 64 bytes, found 65",
        );
        assert!(SigningSecret::parse(&format!("whsec_{}", STANDARD.encode([1u8; 64]))).is_ok());
    }

    #[test]
    fn debug_is_redacted() {
        let s = secret(VECTORS[0].0);
        assert_eq!(format!("{s:?}"), "SigningSecret([redacted])");
        assert_eq!(format!("{:?}", Some(&s)), "Some(SigningSecret([redacted]))");
    }

    #[test]
    fn generated_secrets_differ_and_roundtrip() {
        let a = SigningSecret::generate();
        let b = SigningSecret::generate();
        assert_ne!(a, b);
        assert_eq!(secret(&a.expose_whsec()), a);
        assert_eq!(a.expose_whsec().len(), "whsec_".len() + 44);
    }

    /// Runs `verify` on the first published vector with one thing changed.
    fn verify_vector(
        secrets: &[SigningSecret],
        timestamp_header: &str,
        signature_header: &str,
        body: &str,
        now: i64,
    ) -> Result<(), VerifyError> {
        let (_, id, _, _, _) = VECTORS[0];
        verify(
            secrets,
            id,
            timestamp_header,
            signature_header,
            body.as_bytes(),
            now,
            DEFAULT_TOLERANCE,
        )
    }

    #[test]
    fn verify_outcomes() {
        use VerifyError::*;
        let (key, _, ts, body, sig) = VECTORS[0];
        let key = [secret(key)];
        let other = [secret(VECTORS[1].0)];
        let both = [other[0].clone(), key[0].clone()];
        let ts_text = ts.to_string();
        let tampered = r#"{"test": 2432232315}"#;
        let many = format!("v1,Zm9v v2,whatever v1,!!! {sig}");
        let later = (ts + 1).to_string();
        let ancient = i64::MIN.to_string();
        /// Secrets, `webhook-timestamp`, `webhook-signature`, body, receiver's clock, outcome.
        type Case<'a> = (
            &'a [SigningSecret],
            &'a str,
            &'a str,
            &'a str,
            i64,
            Result<(), VerifyError>,
        );
        #[rustfmt::skip]
        let cases: [Case<'_>; 18] = [
            (&key, &ts_text, sig, body, ts, Ok(())),
            (&both, &ts_text, sig, body, ts, Ok(())),
            (&key, &ts_text, sig, tampered, ts, Err(NoMatchingSignature)),
            (&other, &ts_text, sig, body, ts, Err(NoMatchingSignature)),
            (&[], &ts_text, sig, body, ts, Err(NoMatchingSignature)),
            // Other versions and undecodable v1 entries are skipped if another one matches.
            (&key, &ts_text, &many, body, ts, Ok(())),
            (&key, &ts_text, "v2,whatever", body, ts, Err(NoMatchingSignature)),
            (&key, &ts_text, "", body, ts, Err(MalformedSignatureHeader)),
            (&key, &ts_text, "garbage", body, ts, Err(MalformedSignatureHeader)),
            // The timestamp is signed, so changing the header breaks the signature.
            (&key, &later, sig, body, ts, Err(NoMatchingSignature)),
            (&key, "soon", sig, body, ts, Err(InvalidTimestamp)),
            (&key, "", sig, body, ts, Err(InvalidTimestamp)),
            // Exactly at the tolerance is accepted; a second beyond is not, either way.
            (&key, &ts_text, sig, body, ts + 300, Ok(())),
            (&key, &ts_text, sig, body, ts - 300, Ok(())),
            (&key, &ts_text, sig, body, ts + 301, Err(TimestampTooOld)),
            (&key, &ts_text, sig, body, ts - 301, Err(TimestampTooNew)),
            (&key, &ancient, sig, body, i64::MAX, Err(TimestampTooOld)),
            (&key, &ts_text, sig, body, i64::MIN, Err(TimestampTooNew)),
        ];
        for (secrets, timestamp, header, body, now, expect) in cases {
            assert_eq!(
                verify_vector(secrets, timestamp, header, body, now),
                expect,
                "timestamp {timestamp:?}, header {header:?}, body {body:?}, now {now}"
            );
        }
    }

    #[test]
    fn header_has_one_signature_per_secret() {
        let (key, id, ts, body, sig) = VECTORS[0];
        let a = secret(key);
        let b = secret(VECTORS[1].0);
        let header = signature_header(&[&a, &b], id, ts, body.as_bytes());
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sig);
        assert_eq!(parts[1], b.sign(id, ts, body.as_bytes()));
        for only in [a, b] {
            verify_vector(&[only], &ts.to_string(), &header, body, ts).unwrap();
        }
        assert_eq!(signature_header(&[], id, ts, body.as_bytes()), "");
    }

    fn arb_secret() -> impl Strategy<Value = SigningSecret> {
        proptest::collection::vec(any::<u8>(), MIN_KEY_LEN..=MAX_KEY_LEN).prop_map(|key| {
            SigningSecret {
                key: SecretSlice::from(key),
            }
        })
    }

    proptest! {
        #[test]
        fn sign_then_verify(
            secret in arb_secret(),
            id in "[A-Za-z0-9_]{1,40}",
            ts in 0i64..4_000_000_000,
            skew in -300i64..=300,
            body: Vec<u8>,
        ) {
            let header = signature_header(&[&secret], &id, ts, &body);
            prop_assert_eq!(header.capacity(), header.len());
            prop_assert_eq!(
                verify(&[secret], &id, &ts.to_string(), &header, &body, ts + skew, DEFAULT_TOLERANCE),
                Ok(())
            );
        }

        #[test]
        fn flipped_bit_fails(
            secret in arb_secret(),
            body in proptest::collection::vec(any::<u8>(), 1..64),
            index: proptest::sample::Index,
            bit in 0u8..8,
        ) {
            let header = secret.sign("msg_1", 1_700_000_000, &body);
            let mut tampered = body.clone();
            tampered[index.index(body.len())] ^= 1 << bit;
            prop_assert_eq!(
                verify(&[secret], "msg_1", "1700000000", &header, &tampered, 1_700_000_000, DEFAULT_TOLERANCE),
                Err(VerifyError::NoMatchingSignature)
            );
        }

        #[test]
        fn whsec_roundtrip(secret in arb_secret()) {
            let text = secret.expose_whsec();
            prop_assert_eq!(SigningSecret::parse(&text).unwrap(), secret);
        }

        #[test]
        fn parse_never_panics(text in "whsec_\\PC{0,100}") {
            let _ = SigningSecret::parse(&text);
        }
    }
}
