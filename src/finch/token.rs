//! Access tokens at rest: AES-256-GCM with a random 96-bit nonce per
//! encryption. The stored value is `nonce || ciphertext || tag`, next to the
//! id of the key that made it. The connection id is bound in as associated
//! data, so a ciphertext moved to another connection's row does not decrypt.
//!
//! A [`KeyRing`] holds every configured key by id: the current one encrypts,
//! any of them decrypts, which lets `connections rotate-key` move the rows
//! from an old key to a new one while both are configured.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

const NONCE_LEN: usize = 12;

/// Prefixed to the connection id in the associated data, so the binding
/// cannot be confused with any other use of the same key.
const AAD_CONTEXT: &[u8] = b"finch-webhooks access token v1\0";

/// One token-encryption key. Its `Debug` shows only the key id.
#[derive(Clone)]
pub struct TokenKey {
    /// The AES-256-GCM cipher of the key.
    cipher: Aes256Gcm,
    /// Stored beside each ciphertext: names the key without revealing it.
    id: String,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey").field("id", &self.id).finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token was encrypted with key {0}, which is not configured (FINCH_TOKEN_KEYS)")]
    UnknownKey(String),
    #[error(
        "the stored token does not decrypt for this connection: it was encrypted for another \
         connection's row, or the row is corrupt"
    )]
    NotThisConnection,
    #[error("the stored token could not be decrypted (wrong key or corrupted row)")]
    Corrupt,
}

impl TokenKey {
    /// Base64 of exactly 32 bytes, named by its fingerprint.
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let bytes = decode_key(text)?;
        Ok(Self::from_bytes(&bytes))
    }

    /// Base64 of exactly 32 bytes, named `id`.
    pub fn with_id(id: &str, text: &str) -> Result<Self, String> {
        let valid = !id.is_empty()
            && id.len() <= 32
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(format!(
                "key id `{id}` must be 1 to 32 letters, digits, `-`, `_` or `.`"
            ));
        }
        let bytes = decode_key(text)?;
        Ok(Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
            id: id.to_owned(),
        })
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

    /// Encrypts `token` for the row of `connection_id`.
    pub fn encrypt(&self, connection_id: &str, token: &SecretString) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = associated_data(connection_id);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: token.expose_secret().as_bytes(),
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption of a short token cannot fail");
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&ciphertext);
        stored
    }

    /// Decrypts a token of the row of `connection_id`. `bound` says whether
    /// it was encrypted with the connection id (every token since key
    /// rings); older ones were not, until `rotate-key` rewrites them.
    fn decrypt(
        &self,
        connection_id: &str,
        stored: &[u8],
        bound: bool,
    ) -> Result<SecretString, TokenError> {
        if stored.len() <= NONCE_LEN {
            return Err(TokenError::Corrupt);
        }
        let (nonce, ciphertext) = stored.split_at(NONCE_LEN);
        let aad = associated_data(connection_id);
        let plain = if bound {
            self.cipher
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: &aad,
                    },
                )
                .map_err(|_| TokenError::NotThisConnection)?
        } else {
            self.cipher
                .decrypt(Nonce::from_slice(nonce), ciphertext)
                .map_err(|_| TokenError::Corrupt)?
        };
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| TokenError::Corrupt)
    }
}

fn decode_key(text: &str) -> Result<Vec<u8>, String> {
    let bytes = BASE64
        .decode(text.trim())
        .map_err(|_| "is not base64".to_owned())?;
    if bytes.len() != 32 {
        return Err(format!(
            "must be base64 of 32 bytes, not {} bytes",
            bytes.len()
        ));
    }
    Ok(bytes)
}

fn associated_data(connection_id: &str) -> Vec<u8> {
    let mut aad = AAD_CONTEXT.to_vec();
    aad.extend_from_slice(connection_id.as_bytes());
    aad
}

/// Every configured key: the current one encrypts, any one decrypts.
#[derive(Clone, Debug)]
pub struct KeyRing {
    /// Encrypts every token written from now on.
    current: TokenKey,
    /// Still decrypt the tokens they wrote, until `rotate-key` rewrites them.
    others: Vec<TokenKey>,
}

/// A token as stored: the ciphertext and the key that made it.
pub struct Sealed {
    pub key_id: String,
    pub ciphertext: Vec<u8>,
}

impl KeyRing {
    /// `current` encrypts; `others` (ids distinct from it and each other) only decrypt.
    pub fn new(current: TokenKey, others: Vec<TokenKey>) -> Self {
        Self { current, others }
    }

    /// A ring of one key.
    pub fn single(key: TokenKey) -> Self {
        Self::new(key, Vec::new())
    }

    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    /// Encrypts `token` with the current key, bound to `connection_id`.
    pub fn seal(&self, connection_id: &str, token: &SecretString) -> Sealed {
        Sealed {
            key_id: self.current.id().to_owned(),
            ciphertext: self.current.encrypt(connection_id, token),
        }
    }

    /// Decrypts a stored token with the key it names.
    pub fn open(
        &self,
        connection_id: &str,
        key_id: &str,
        stored: &[u8],
        bound: bool,
    ) -> Result<SecretString, TokenError> {
        std::iter::once(&self.current)
            .chain(&self.others)
            .find(|key| key.id() == key_id)
            .ok_or_else(|| TokenError::UnknownKey(key_id.to_owned()))?
            .decrypt(connection_id, stored, bound)
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
        let ring = KeyRing::single(key(7));
        let token = SecretString::from("tok_sandbox_123");
        let a = ring.seal("conn-a", &token);
        let b = ring.seal("conn-a", &token);
        assert_ne!(a.ciphertext, b.ciphertext, "nonces must differ");
        assert!(!a.ciphertext.windows(15).any(|w| w == b"tok_sandbox_123"));
        let opened = ring.open("conn-a", &a.key_id, &a.ciphertext, true).unwrap();
        assert_eq!(opened.expose_secret(), "tok_sandbox_123");
    }

    #[test]
    fn a_ciphertext_does_not_open_for_another_connection() {
        let ring = KeyRing::single(key(7));
        let sealed = ring.seal("conn-a", &SecretString::from("t"));
        assert_eq!(
            ring.open("conn-b", &sealed.key_id, &sealed.ciphertext, true)
                .err(),
            Some(TokenError::NotThisConnection)
        );
        // Nor by claiming it was written before the binding.
        assert_eq!(
            ring.open("conn-b", &sealed.key_id, &sealed.ciphertext, false)
                .err(),
            Some(TokenError::Corrupt)
        );
    }

    #[test]
    fn any_key_of_the_ring_opens_what_it_sealed_and_unknown_ids_are_named() {
        let old = KeyRing::single(key(1));
        let sealed = old.seal("c", &SecretString::from("t"));
        let both = KeyRing::new(key(2), vec![key(1)]);
        assert_eq!(
            both.open("c", &sealed.key_id, &sealed.ciphertext, true)
                .unwrap()
                .expose_secret(),
            "t"
        );
        assert_eq!(both.seal("c", &SecretString::from("t")).key_id, key(2).id());
        let new_only = KeyRing::single(key(2));
        assert_eq!(
            new_only
                .open("c", &sealed.key_id, &sealed.ciphertext, true)
                .err(),
            Some(TokenError::UnknownKey(key(1).id().to_owned()))
        );
        let mut tampered = sealed.ciphertext.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(both.open("c", &sealed.key_id, &tampered, true).is_err());
    }

    #[test]
    fn tokens_written_before_the_binding_still_open() {
        let key = key(3);
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut legacy = nonce.to_vec();
        legacy.extend(key.cipher.encrypt(&nonce, b"old".as_slice()).unwrap());
        let ring = KeyRing::single(key.clone());
        let opened = ring.open("any", key.id(), &legacy, false).unwrap();
        assert_eq!(opened.expose_secret(), "old");
    }

    #[test]
    fn debug_shows_only_the_key_ids() {
        let text = format!("{:?}", KeyRing::new(key(9), vec![key(8)]));
        assert!(text.contains(key(9).id()) && text.contains(key(8).id()));
        assert!(!text.contains("cipher"));
    }

    #[test]
    fn keys_must_hold_32_bytes_and_ids_be_plain() {
        assert!(TokenKey::from_base64("c2hvcnQ=").is_err());
        assert!(TokenKey::from_base64("!!").is_err());
        let good = BASE64.encode([0u8; 32]);
        assert!(TokenKey::from_base64(&good).is_ok());
        assert_eq!(TokenKey::with_id("2026-q1", &good).unwrap().id(), "2026-q1");
        assert!(TokenKey::with_id("a b", &good).is_err());
        assert!(TokenKey::with_id("", &good).is_err());
    }
}
