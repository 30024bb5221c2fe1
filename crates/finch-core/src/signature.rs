//! Finch webhook signatures: how Finch signs a delivery and how we check it.
//!
//! The signed content is `{Finch-Event-Id}.{Finch-Timestamp}.{raw body}`,
//! HMAC-SHA256 keyed with the base64-decoded webhook secret. The
//! `Finch-Signature` header is a space-separated list of `version,base64`
//! entries so that Finch can sign with an old and a new secret while a secret
//! is rotated; one matching `v1` entry is enough.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

pub const EVENT_ID_HEADER: &str = "finch-event-id";
pub const TIMESTAMP_HEADER: &str = "finch-timestamp";
pub const SIGNATURE_HEADER: &str = "finch-signature";

/// Longest event id we accept. Finch's ids are `msg_` plus 27 characters;
/// the bound keeps a hostile header from becoming a huge primary key.
pub const MAX_EVENT_ID_LEN: usize = 255;

/// Most `Finch-Signature` entries looked at. Finch sends one per secret it
/// signs with (two while a secret is rotated); a header with more is refused
/// before any is decoded, so a hostile list of thousands costs a scan of the
/// header rather than thousands of decodes and comparisons.
pub const MAX_SIGNATURE_ENTRIES: usize = 8;

/// Prefix some tools put in front of the base64 secret; Finch's dashboard shows it bare.
const SECRET_PREFIX: &str = "whsec_";

type HmacSha256 = Hmac<Sha256>;

/// A decoded webhook secret. Its bytes never reach `Debug`, logs or errors.
#[derive(Clone)]
pub struct WebhookSecret(SecretSlice<u8>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the secret is empty")]
    Empty,
    #[error("the secret is not valid base64")]
    NotBase64,
}

impl WebhookSecret {
    /// Parses a secret as Finch shows it (base64), with or without a `whsec_` prefix.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        let text = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        if text.is_empty() {
            return Err(SecretError::Empty);
        }
        let bytes = BASE64.decode(text).map_err(|_| SecretError::NotBase64)?;
        if bytes.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self(bytes.into()))
    }

    /// Parses a comma-separated list of secrets, as `FINCH_WEBHOOK_SECRET` holds during rotation.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, SecretError> {
        let secrets = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(Self::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if secrets.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(secrets)
    }

    /// Makes a fresh random secret, encoded the way Finch displays one.
    pub fn generate() -> (Self, String) {
        let bytes: [u8; 24] = rand::random();
        let text = BASE64.encode(bytes);
        (Self(bytes.to_vec().into()), text)
    }

    fn mac(&self, event_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(self.0.expose_secret())
            .expect("HMAC-SHA256 accepts keys of any length");
        mac.update(event_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `v1,<base64>` entry Finch would send for this secret.
    pub fn sign(&self, event_id: &str, timestamp: i64, body: &[u8]) -> String {
        let digest = self.mac(event_id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", BASE64.encode(digest))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// The full `Finch-Signature` header for a delivery signed with every given secret.
pub fn signature_header(
    secrets: &[WebhookSecret],
    event_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| secret.sign(event_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a delivery was refused. The first two are the sender's mistake (400);
/// the rest mean the delivery is not provably from Finch right now (401).
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("malformed header {0}")]
    MalformedHeader(&'static str),
    #[error("timestamp too old")]
    TimestampTooOld,
    #[error("timestamp too new")]
    TimestampTooNew,
    #[error("no signature matches")]
    NoMatchingSignature,
}

impl VerifyError {
    /// Short machine-readable reason, used in response bodies and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_header",
            Self::MalformedHeader(_) => "malformed_header",
            Self::TimestampTooOld => "timestamp_too_old",
            Self::TimestampTooNew => "timestamp_too_new",
            Self::NoMatchingSignature => "invalid_signature",
        }
    }

    pub fn is_client_format_error(&self) -> bool {
        matches!(self, Self::MissingHeader(_) | Self::MalformedHeader(_))
    }
}

/// The authenticated identity of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub event_id: String,
    pub timestamp: i64,
}

/// Checks deliveries against the configured secrets, agreeing with the
/// official SDK's `verify_signature` on which deliveries are authentic.
#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Vec<WebhookSecret>,
    tolerance_secs: i64,
}

impl Verifier {
    pub fn new(secrets: Vec<WebhookSecret>, tolerance_secs: u64) -> Self {
        assert!(!secrets.is_empty(), "a verifier needs at least one secret");
        Self {
            secrets,
            tolerance_secs: i64::try_from(tolerance_secs).unwrap_or(i64::MAX),
        }
    }

    /// Verifies headers and raw body at the given wall-clock time (unix seconds).
    ///
    /// The timestamp is checked before the signature, as the SDK does, so that
    /// stale replays are reported as such.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> Result<Verified, VerifyError> {
        let event_id = required_header(headers, EVENT_ID_HEADER)?;
        if event_id.len() > MAX_EVENT_ID_LEN || event_id.contains(char::is_whitespace) {
            return Err(VerifyError::MalformedHeader(EVENT_ID_HEADER));
        }
        let timestamp: i64 = required_header(headers, TIMESTAMP_HEADER)?
            .parse()
            .map_err(|_| VerifyError::MalformedHeader(TIMESTAMP_HEADER))?;
        let signatures = required_header(headers, SIGNATURE_HEADER)?;

        let age = now_unix.saturating_sub(timestamp);
        if age > self.tolerance_secs {
            return Err(VerifyError::TimestampTooOld);
        }
        if age < -self.tolerance_secs {
            return Err(VerifyError::TimestampTooNew);
        }

        if entries(signatures).nth(MAX_SIGNATURE_ENTRIES).is_some() {
            return Err(VerifyError::MalformedHeader(SIGNATURE_HEADER));
        }
        let candidates: Vec<Vec<u8>> = entries(signatures)
            .filter_map(|entry| {
                let (version, encoded) = entry.split_once(',')?;
                if version != "v1" || encoded.contains(',') {
                    return None;
                }
                BASE64.decode(encoded).ok()
            })
            .collect();

        // Every secret is checked against every candidate, without stopping at
        // the first match, so timing says nothing about which one matched.
        let mut matched = Choice::from(0);
        for secret in &self.secrets {
            let expected = secret
                .mac(event_id, timestamp, body)
                .finalize()
                .into_bytes();
            for candidate in &candidates {
                matched |= expected.as_slice().ct_eq(candidate.as_slice());
            }
        }
        if bool::from(matched) {
            Ok(Verified {
                event_id: event_id.to_owned(),
                timestamp,
            })
        } else {
            Err(VerifyError::NoMatchingSignature)
        }
    }
}

/// The space-separated entries of a `Finch-Signature` header; runs of
/// spaces separate like one, as in the SDK.
fn entries(header: &str) -> impl Iterator<Item = &str> {
    header.split(' ').filter(|entry| !entry.is_empty())
}

fn required_header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, VerifyError> {
    let value = headers
        .get(name)
        .ok_or(VerifyError::MissingHeader(name))?
        .to_str()
        .map_err(|_| VerifyError::MalformedHeader(name))?
        .trim();
    if value.is_empty() {
        return Err(VerifyError::MissingHeader(name));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    // The documentation's example secret.
    const SECRET: &str = "5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH";

    fn headers(id: &str, ts: &str, sig: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(EVENT_ID_HEADER, HeaderValue::from_str(id).unwrap());
        map.insert(TIMESTAMP_HEADER, HeaderValue::from_str(ts).unwrap());
        map.insert(SIGNATURE_HEADER, HeaderValue::from_str(sig).unwrap());
        map
    }

    #[test]
    fn matches_a_signature_computed_independently() {
        // Computed with Python's hmac/base64 from the documentation's recipe.
        let secret = WebhookSecret::parse(SECRET).unwrap();
        assert_eq!(
            secret.sign("msg_1", 1688737757, b"{}"),
            "v1,/gXV1CeqymgBa6IbgJicWTqylg86i7WQFCNP/4BbvZc="
        );
    }

    #[test]
    fn prefix_and_plain_secret_are_the_same_key() {
        let plain = WebhookSecret::parse(SECRET).unwrap();
        let prefixed = WebhookSecret::parse(&format!("whsec_{SECRET}")).unwrap();
        assert_eq!(plain.sign("a", 1, b"x"), prefixed.sign("a", 1, b"x"));
    }

    #[test]
    fn secret_debug_is_redacted() {
        let secret = WebhookSecret::parse(SECRET).unwrap();
        assert_eq!(format!("{secret:?}"), "WebhookSecret(<redacted>)");
    }

    #[test]
    fn rejects_bad_secrets() {
        assert_eq!(
            WebhookSecret::parse("not base64!").unwrap_err(),
            SecretError::NotBase64
        );
        assert_eq!(
            WebhookSecret::parse("whsec_").unwrap_err(),
            SecretError::Empty
        );
        assert_eq!(
            WebhookSecret::parse_list(" , ").unwrap_err(),
            SecretError::Empty
        );
    }

    #[test]
    fn leading_zeros_in_timestamp_sign_the_canonical_number() {
        // The SDK signs str(floor(float(header))), so "0100" is signed as "100".
        let secret = WebhookSecret::parse(SECRET).unwrap();
        let verifier = Verifier::new(vec![secret.clone()], 300);
        let sig = secret.sign("msg_1", 100, b"{}");
        assert!(verifier
            .verify(&headers("msg_1", "0100", &sig), b"{}", 100)
            .is_ok());
    }

    #[test]
    fn more_entries_than_the_cap_are_refused_even_with_a_valid_one() {
        let secret = WebhookSecret::parse(SECRET).unwrap();
        let verifier = Verifier::new(vec![secret.clone()], 300);
        let good = secret.sign("msg_1", 100, b"{}");
        let list = |count: usize| {
            let mut entries = vec!["v1,AAAA"; count - 1];
            entries.push(&good);
            entries.join("  ")
        };
        assert!(verifier
            .verify(
                &headers("msg_1", "100", &list(MAX_SIGNATURE_ENTRIES)),
                b"{}",
                100
            )
            .is_ok());
        assert_eq!(
            verifier.verify(
                &headers("msg_1", "100", &list(MAX_SIGNATURE_ENTRIES + 1)),
                b"{}",
                100
            ),
            Err(VerifyError::MalformedHeader(SIGNATURE_HEADER))
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const NOW: i64 = 1_700_000_000;

        fn verifier() -> (WebhookSecret, Verifier) {
            let secret = WebhookSecret::parse(SECRET).unwrap();
            (secret.clone(), Verifier::new(vec![secret], 300))
        }

        /// Header values as a client may send them: any visible ASCII and spaces.
        fn header_text() -> impl Strategy<Value = String> {
            "[ -~]{0,200}"
        }

        /// An entry the SDK skips or fails to match: no space inside.
        fn junk_entry() -> impl Strategy<Value = String> {
            prop_oneof![
                "v1,[A-Za-z0-9+/=]{0,60}",
                "v[0-9],[A-Za-z0-9+/=]{0,60}",
                "[!-~]{1,40}",
            ]
        }

        proptest! {
            #[test]
            fn any_headers_and_body_get_a_verdict_without_panicking(
                id in header_text(),
                timestamp in header_text(),
                signature in header_text(),
                body in proptest::collection::vec(any::<u8>(), 0..256),
            ) {
                let (_, verifier) = verifier();
                let mut map = HeaderMap::new();
                for (name, value) in [
                    (EVENT_ID_HEADER, &id),
                    (TIMESTAMP_HEADER, &timestamp),
                    (SIGNATURE_HEADER, &signature),
                ] {
                    if let Ok(value) = http::HeaderValue::from_str(value) {
                        map.insert(name, value);
                    }
                }
                let _ = verifier.verify(&map, &body, NOW);
            }

            /// The SDK's rule: one matching `v1` entry among any others is
            /// enough, within the tolerance; ours adds the entry cap.
            #[test]
            fn a_valid_entry_among_junk_is_accepted_up_to_the_cap_and_refused_beyond(
                id in "[!-~]{1,64}",
                skew in -300i64..=300,
                body in proptest::collection::vec(any::<u8>(), 0..256),
                junk in proptest::collection::vec(junk_entry(), 0..12),
                position in any::<prop::sample::Index>(),
                separator in " {1,3}",
            ) {
                let (secret, verifier) = verifier();
                let timestamp = NOW + skew;
                let mut entries = junk.clone();
                entries.insert(position.index(junk.len() + 1), secret.sign(&id, timestamp, &body));
                let header = entries.join(&separator);
                let verdict = verifier.verify(&headers(&id, &timestamp.to_string(), &header), &body, NOW);
                if entries.len() <= MAX_SIGNATURE_ENTRIES {
                    prop_assert_eq!(verdict, Ok(Verified { event_id: id.clone(), timestamp }));
                } else {
                    prop_assert_eq!(verdict, Err(VerifyError::MalformedHeader(SIGNATURE_HEADER)));
                }
            }

            /// Outside the tolerance a delivery is refused whatever its signature.
            #[test]
            fn timestamps_outside_the_tolerance_are_refused_for_their_age(
                skew in prop_oneof![301i64..100_000, -100_000i64..-300],
                body in proptest::collection::vec(any::<u8>(), 0..64),
            ) {
                let (secret, verifier) = verifier();
                let timestamp = NOW - skew;
                let header = secret.sign("msg_1", timestamp, &body);
                let verdict = verifier.verify(&headers("msg_1", &timestamp.to_string(), &header), &body, NOW);
                let expected = if skew > 0 { VerifyError::TimestampTooOld } else { VerifyError::TimestampTooNew };
                prop_assert_eq!(verdict, Err(expected));
            }

            /// A signature over anything else never verifies.
            #[test]
            fn a_signature_of_another_body_is_refused(
                body in proptest::collection::vec(any::<u8>(), 0..128),
                other in proptest::collection::vec(any::<u8>(), 0..128),
            ) {
                prop_assume!(body != other);
                let (secret, verifier) = verifier();
                let header = secret.sign("msg_1", NOW, &other);
                prop_assert_eq!(
                    verifier.verify(&headers("msg_1", &NOW.to_string(), &header), &body, NOW),
                    Err(VerifyError::NoMatchingSignature)
                );
            }
        }
    }

    #[test]
    fn malformed_entries_are_skipped() {
        let secret = WebhookSecret::parse(SECRET).unwrap();
        let verifier = Verifier::new(vec![secret.clone()], 300);
        let good = secret.sign("msg_1", 100, b"{}");
        let list = format!("garbage v1,%%% v1,a,b  v2,{} {good}", &good[3..]);
        assert!(verifier
            .verify(&headers("msg_1", "100", &list), b"{}", 100)
            .is_ok());
    }
}
