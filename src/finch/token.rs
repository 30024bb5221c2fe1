//! Access tokens at rest: AES-256-GCM with a random 96-bit nonce per
//! encryption. The stored value is `nonce || ciphertext || tag`, next to the
//! id of the key that made it so a new key can be introduced later.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

const NONCE_LEN: usize = 12;

/// The token-encryption key. Its `Debug` shows only the key id.
#[derive(Clone)]
pub struct TokenKey {
    cipher: Aes256Gcm,
    id: String,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey").field("id", &self.id).finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token was encrypted with key {0}, which is not configured")]
    UnknownKey(String),
    #[error("the stored token could not be decrypted (wrong key or corrupted row)")]
    Corrupt,
}

impl TokenKey {
    /// Base64 of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|_| "is not base64".to_owned())?;
        if bytes.len() != 32 {
            return Err(format!(
                "must be base64 of 32 bytes, not {} bytes",
                bytes.len()
            ));
        }
        Ok(Self::from_bytes(&bytes))
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        let key = Key::<Aes256Gcm>::from_slice(bytes);
        // A fingerprint, not the key: it names the key without revealing it.
        let digest = Sha256::digest(bytes);
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            cipher: Aes256Gcm::new(key),
            id,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn encrypt(&self, token: &SecretString) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .cipher
            .encrypt(&nonce, token.expose_secret().as_bytes())
            .expect("AES-GCM encryption of a short token cannot fail");
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&ciphertext);
        stored
    }

    pub fn decrypt(&self, key_id: &str, stored: &[u8]) -> Result<SecretString, TokenError> {
        if key_id != self.id {
            return Err(TokenError::UnknownKey(key_id.to_owned()));
        }
        if stored.len() <= NONCE_LEN {
            return Err(TokenError::Corrupt);
        }
        let (nonce, ciphertext) = stored.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| TokenError::Corrupt)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| TokenError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> TokenKey {
        TokenKey::from_bytes(&[byte; 32])
    }

    #[test]
    fn round_trips_with_a_fresh_nonce_each_time() {
        let key = key(7);
        let token = SecretString::from("tok_sandbox_123");
        let a = key.encrypt(&token);
        let b = key.encrypt(&token);
        assert_ne!(a, b, "nonces must differ");
        assert!(!a.windows(15).any(|w| w == b"tok_sandbox_123"));
        assert_eq!(
            key.decrypt(key.id(), &a).unwrap().expose_secret(),
            "tok_sandbox_123"
        );
    }

    #[test]
    fn refuses_other_keys_and_tampering() {
        let stored = key(1).encrypt(&SecretString::from("t"));
        let other = key(2);
        assert!(matches!(
            other.decrypt(key(1).id(), &stored),
            Err(TokenError::UnknownKey(_))
        ));
        assert_eq!(
            other.decrypt(other.id(), &stored).err(),
            Some(TokenError::Corrupt)
        );
        let mut tampered = stored.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(
            key(1).decrypt(key(1).id(), &tampered).err(),
            Some(TokenError::Corrupt)
        );
    }

    #[test]
    fn debug_shows_only_the_key_id() {
        let text = format!("{:?}", key(9));
        assert!(text.starts_with("TokenKey { id: "));
        assert!(!text.contains("cipher"));
    }

    #[test]
    fn base64_must_hold_32_bytes() {
        assert!(TokenKey::from_base64("c2hvcnQ=").is_err());
        assert!(TokenKey::from_base64("!!").is_err());
        assert!(TokenKey::from_base64(&BASE64.encode([0u8; 32])).is_ok());
    }
}
