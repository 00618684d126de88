//! Seals secrets at rest with ChaCha20-Poly1305 when a key is configured.
//!
//! Sealed text is `v1:<base64(nonce ‖ ciphertext)>`; without a key, text is
//! stored as `plain:<text>` so that adding a key later still reads old rows.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};

use crate::config::EncryptionKey;

const SEALED: &str = "v1:";
const PLAIN: &str = "plain:";

#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    #[error("a sealed secret was found but no HERALD_ENCRYPTION_KEY is configured")]
    NoKey,
    #[error("a sealed secret could not be opened: wrong HERALD_ENCRYPTION_KEY or corrupt data")]
    Corrupt,
}

#[derive(Clone)]
pub struct Cipher {
    aead: Option<ChaCha20Poly1305>,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cipher")
            .field("sealing", &self.aead.is_some())
            .finish()
    }
}

impl Cipher {
    pub fn new(key: Option<&EncryptionKey>) -> Self {
        Self {
            aead: key.map(|k| ChaCha20Poly1305::new(Key::from_slice(&k.0))),
        }
    }

    pub fn seal(&self, secret: &SecretString) -> String {
        let Some(aead) = &self.aead else {
            return format!("{PLAIN}{}", secret.expose_secret());
        };
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        // Encryption with a valid key and a 12-byte nonce cannot fail; the
        // error type exists for buffer-based APIs.
        let sealed = aead
            .encrypt(Nonce::from_slice(&nonce), secret.expose_secret().as_bytes())
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{SEALED}{}", STANDARD.encode(out))
    }

    pub fn open(&self, stored: &str) -> Result<SecretString, CipherError> {
        if let Some(plain) = stored.strip_prefix(PLAIN) {
            return Ok(SecretString::from(plain.to_owned()));
        }
        let body = stored.strip_prefix(SEALED).ok_or(CipherError::Corrupt)?;
        let aead = self.aead.as_ref().ok_or(CipherError::NoKey)?;
        let bytes = STANDARD.decode(body).map_err(|_| CipherError::Corrupt)?;
        if bytes.len() < 12 {
            return Err(CipherError::Corrupt);
        }
        let (nonce, sealed) = bytes.split_at(12);
        let plain = aead
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| CipherError::Corrupt)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| CipherError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(cipher: &Cipher, text: &str) -> String {
        match cipher.open(text) {
            Ok(s) => s.expose_secret().to_owned(),
            Err(e) => panic!("cannot open {text}: {e}"),
        }
    }

    #[test]
    fn sealed_text_hides_the_secret_and_opens_again() {
        let cipher = Cipher::new(Some(&EncryptionKey([7; 32])));
        let secret = SecretString::from("whsec_hello".to_owned());
        let sealed = cipher.seal(&secret);
        assert!(sealed.starts_with("v1:") && !sealed.contains("hello"));
        assert_ne!(sealed, cipher.seal(&secret), "nonces must differ");
        assert_eq!(open(&cipher, &sealed), "whsec_hello");
    }

    #[test]
    fn plain_rows_stay_readable_once_a_key_is_added() {
        let plain = Cipher::new(None).seal(&SecretString::from("whsec_x".to_owned()));
        assert_eq!(
            open(&Cipher::new(Some(&EncryptionKey([1; 32]))), &plain),
            "whsec_x"
        );
    }

    #[test]
    fn wrong_or_missing_key_is_an_error() {
        let sealed = Cipher::new(Some(&EncryptionKey([1; 32])))
            .seal(&SecretString::from("whsec_x".to_owned()));
        assert!(matches!(
            Cipher::new(None).open(&sealed),
            Err(CipherError::NoKey)
        ));
        assert!(matches!(
            Cipher::new(Some(&EncryptionKey([2; 32]))).open(&sealed),
            Err(CipherError::Corrupt)
        ));
    }
}
