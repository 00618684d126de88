//! Secrets at rest: sealed with ChaCha20-Poly1305 under a keyring of one or more keys.
//!
//! The first key of the keyring seals; every key opens, so a key is rotated by putting the new
//! one first and dropping the old one once nothing sealed with it remains. Each sealed text is
//! bound to a context (the webhook id for signing secrets) as associated data: a sealed value
//! copied next to another webhook does not open there.
//!
//! Formats, by prefix:
//! - `v2:<key id>:<base64(nonce ‖ ciphertext)>`: sealed, bound to its context. The key id is the
//!   first four bytes of the key's SHA-256, in hex: it names the key, it reveals nothing of it.
//! - `v1:<base64(nonce ‖ ciphertext)>`: sealed by Herald before contexts, still opened.
//! - `plain:<text>`: written while no key is configured, so that adding a key later still
//!   reads it.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};

const SEALED: &str = "v2:";
const SEALED_WITHOUT_CONTEXT: &str = "v1:";
const PLAIN: &str = "plain:";
const NONCE_LEN: usize = 12;
const KEY_LEN: usize = 32;

/// Why a stored text did not open. None of these says anything about the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the secret is sealed but no encryption key is configured (HERALD_ENCRYPTION_KEY)")]
    NoKey,
    #[error(
        "the secret is sealed with key {0}, which is not among the configured encryption keys \
         (HERALD_ENCRYPTION_KEY)"
    )]
    UnknownKey(String),
    #[error(
        "the sealed secret does not open: it belongs to another record, or the data is corrupt"
    )]
    Corrupt,
}

/// Why `HERALD_ENCRYPTION_KEY` is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "key {position} is not 32 bytes in standard base64 (make one with: openssl rand -base64 32)"
)]
pub struct KeyringError {
    position: usize,
}

struct SealingKey {
    id: String,
    aead: ChaCha20Poly1305,
}

/// The keys that seal and open secrets; empty when none is configured, in which case secrets
/// are stored as `plain:` text.
#[derive(Clone, Default)]
pub struct Keyring {
    keys: std::sync::Arc<[SealingKey]>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.key_ids().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// Parses comma-separated base64 keys, the sealing key first.
    pub fn parse(text: &SecretString) -> Result<Keyring, KeyringError> {
        let keys = text
            .expose_secret()
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .enumerate()
            .map(|(index, part)| {
                STANDARD
                    .decode(part)
                    .ok()
                    .and_then(|bytes| <[u8; KEY_LEN]>::try_from(bytes).ok())
                    .ok_or(KeyringError {
                        position: index + 1,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_keys(&keys))
    }

    pub fn from_keys(keys: &[[u8; KEY_LEN]]) -> Keyring {
        let keys = keys
            .iter()
            .map(|key| SealingKey {
                id: hex_prefix(&Sha256::digest(key)),
                aead: ChaCha20Poly1305::new(Key::from_slice(key)),
            })
            .collect::<Vec<_>>();
        Keyring { keys: keys.into() }
    }

    /// A new random key in the form `HERALD_ENCRYPTION_KEY` takes.
    pub fn generate_key() -> SecretString {
        let mut key = [0u8; KEY_LEN];
        rand::rng().fill_bytes(&mut key);
        SecretString::from(STANDARD.encode(key))
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The ids of the configured keys, the sealing key first; safe to log.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|key| key.id.as_str())
    }

    /// Seals `secret` bound to `context`; `plain:` text when no key is configured.
    pub fn seal(&self, secret: &SecretString, context: &[u8]) -> String {
        let Some(key) = self.keys.first() else {
            return format!("{PLAIN}{}", secret.expose_secret());
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: secret.expose_secret().as_bytes(),
            aad: context,
        };
        // Encryption with a valid key and a 12-byte nonce cannot fail; the error type exists for
        // buffer-based APIs.
        let sealed = key
            .aead
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{SEALED}{}:{}", key.id, STANDARD.encode(out))
    }

    /// Opens what [`Keyring::seal`] made for the same `context`.
    pub fn open(&self, stored: &str, context: &[u8]) -> Result<SecretString, SealError> {
        if let Some(plain) = stored.strip_prefix(PLAIN) {
            return Ok(SecretString::from(plain.to_owned()));
        }
        if let Some(rest) = stored.strip_prefix(SEALED) {
            let (id, body) = rest.split_once(':').ok_or(SealError::Corrupt)?;
            if self.is_empty() {
                return Err(SealError::NoKey);
            }
            let key = self
                .keys
                .iter()
                .find(|key| key.id == id)
                .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
            return open_with(&key.aead, body, context);
        }
        if let Some(body) = stored.strip_prefix(SEALED_WITHOUT_CONTEXT) {
            if self.is_empty() {
                return Err(SealError::NoKey);
            }
            return self
                .keys
                .iter()
                .find_map(|key| open_with(&key.aead, body, &[]).ok())
                .ok_or(SealError::Corrupt);
        }
        Err(SealError::Corrupt)
    }

    /// What every text sealed with the sealing key starts with; none without a key.
    pub fn sealing_prefix(&self) -> Option<String> {
        self.keys.first().map(|key| format!("{SEALED}{}:", key.id))
    }

    /// Whether `stored` is sealed with the sealing key and so needs no resealing after a
    /// rotation. `plain:` text needs sealing once a key is configured.
    pub fn is_current(&self, stored: &str) -> bool {
        match self.sealing_prefix() {
            None => stored.starts_with(PLAIN),
            Some(prefix) => stored.starts_with(&prefix),
        }
    }
}

fn open_with(
    aead: &ChaCha20Poly1305,
    body: &str,
    context: &[u8],
) -> Result<SecretString, SealError> {
    let bytes = STANDARD.decode(body).map_err(|_| SealError::Corrupt)?;
    if bytes.len() < NONCE_LEN {
        return Err(SealError::Corrupt);
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let plain = aead
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: context,
            },
        )
        .map_err(|_| SealError::Corrupt)?;
    String::from_utf8(plain)
        .map(SecretString::from)
        .map_err(|_| SealError::Corrupt)
}

fn hex_prefix(digest: &[u8]) -> String {
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> SecretString {
        SecretString::from(text.to_owned())
    }

    fn opened(keyring: &Keyring, text: &str, context: &[u8]) -> String {
        match keyring.open(text, context) {
            Ok(s) => s.expose_secret().to_owned(),
            Err(e) => panic!("cannot open {text}: {e}"),
        }
    }

    #[test]
    fn sealed_text_hides_the_secret_and_opens_again() {
        let keyring = Keyring::from_keys(&[[7; 32]]);
        let sealed = keyring.seal(&secret("whsec_hello"), b"wh_1");
        assert!(sealed.starts_with("v2:") && !sealed.contains("hello"));
        assert_ne!(
            sealed,
            keyring.seal(&secret("whsec_hello"), b"wh_1"),
            "nonces must differ"
        );
        assert_eq!(opened(&keyring, &sealed, b"wh_1"), "whsec_hello");
    }

    #[test]
    fn a_sealed_secret_does_not_open_for_another_context() {
        let keyring = Keyring::from_keys(&[[7; 32]]);
        let sealed = keyring.seal(&secret("whsec_hello"), b"wh_1");
        assert_eq!(
            keyring.open(&sealed, b"wh_2").err(),
            Some(SealError::Corrupt)
        );
    }

    #[test]
    fn a_new_key_seals_and_the_old_one_still_opens() {
        let old = Keyring::from_keys(&[[1; 32]]);
        let rotated = Keyring::from_keys(&[[2; 32], [1; 32]]);
        let before = old.seal(&secret("whsec_x"), b"wh");
        assert!(!rotated.is_current(&before));
        assert_eq!(opened(&rotated, &before, b"wh"), "whsec_x");
        let after = rotated.seal(&secret("whsec_x"), b"wh");
        assert!(rotated.is_current(&after));
        let id = old.key_ids().next().map(str::to_owned).unwrap_or_default();
        assert_eq!(
            Keyring::from_keys(&[[2; 32]]).open(&before, b"wh").err(),
            Some(SealError::UnknownKey(id))
        );
    }

    #[test]
    fn plain_text_stays_readable_once_a_key_is_added() {
        let plain = Keyring::default().seal(&secret("whsec_x"), b"wh");
        assert_eq!(plain, "plain:whsec_x");
        let keyring = Keyring::from_keys(&[[1; 32]]);
        assert_eq!(opened(&keyring, &plain, b"wh"), "whsec_x");
        assert!(!keyring.is_current(&plain));
        assert!(Keyring::default().is_current(&plain));
    }

    #[test]
    fn a_missing_key_or_a_tampered_text_is_an_error() {
        let sealed = Keyring::from_keys(&[[1; 32]]).seal(&secret("whsec_x"), b"wh");
        assert_eq!(
            Keyring::default().open(&sealed, b"wh").err(),
            Some(SealError::NoKey)
        );
        let mut tampered = sealed.clone();
        let last = tampered
            .pop()
            .map_or('A', |c| if c == 'A' { 'B' } else { 'A' });
        tampered.push(last);
        assert!(
            Keyring::from_keys(&[[1; 32]])
                .open(&tampered, b"wh")
                .is_err()
        );
        assert_eq!(
            Keyring::from_keys(&[[1; 32]])
                .open("whsec_bare", b"wh")
                .err(),
            Some(SealError::Corrupt)
        );
    }

    #[test]
    fn texts_sealed_before_contexts_still_open() {
        // `v1:` as Herald wrote it: nonce ‖ ciphertext under the key, no associated data.
        let key = [3u8; 32];
        let aead = ChaCha20Poly1305::new(Key::from_slice(&key));
        let nonce = [9u8; NONCE_LEN];
        let mut body = nonce.to_vec();
        body.extend(
            aead.encrypt(Nonce::from_slice(&nonce), b"whsec_old".as_slice())
                .unwrap_or_default(),
        );
        let stored = format!("v1:{}", STANDARD.encode(body));
        let keyring = Keyring::from_keys(&[[4; 32], key]);
        assert_eq!(opened(&keyring, &stored, b"any"), "whsec_old");
    }

    #[test]
    fn the_keyring_parses_a_list_and_names_the_bad_key() {
        let one = STANDARD.encode([1u8; 32]);
        let two = STANDARD.encode([2u8; 32]);
        let keyring = Keyring::parse(&secret(&format!("{one}, {two}"))).map_err(|e| e.to_string());
        assert_eq!(keyring.map(|k| k.key_ids().count()), Ok(2));
        let err = Keyring::parse(&secret(&format!("{one},c2hvcnQ="))).err();
        assert_eq!(err, Some(KeyringError { position: 2 }));
        assert!(!format!("{:?}", Keyring::from_keys(&[[1; 32]])).contains(&one));
    }
}
