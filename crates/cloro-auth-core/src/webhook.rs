//! Webhook signatures as the Standard Webhooks specification defines them
//! (SPEC §12): the sender signs `<webhook-id>.<webhook-timestamp>.<body>`
//! with HMAC-SHA256 under the endpoint's secret and sends
//! `webhook-signature: v1,<base64 of the MAC>`; the receiver recomputes it
//! and compares in constant time, and refuses a timestamp too far from its
//! clock, so a captured delivery cannot be replayed later.
//!
//! The secret is `whsec_` and the base64 of its bytes; [`WebhookSecret`]
//! never prints them. Both sides use this one module: the server to sign,
//! the SDK's `webhooks::verify` to check.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// What every secret's text starts with.
pub const WEBHOOK_SECRET_PREFIX: &str = "whsec_";
/// How many random bytes a secret we make holds (Standard Webhooks allows
/// 24 to 64).
pub const WEBHOOK_SECRET_BYTES: usize = 32;
/// How far a delivery's timestamp may be from the receiver's clock, by
/// default (the specification's recommendation).
pub const DEFAULT_TOLERANCE_SECONDS: u64 = 5 * 60;

type HmacSha256 = Hmac<Sha256>;

/// An endpoint's signing secret. Its bytes are wiped on drop and no
/// `Debug` or `Display` shows them; [`WebhookSecret::expose`] gives the
/// `whsec_…` text for the one answer that reveals it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    bytes: Zeroizing<Vec<u8>>,
}

impl WebhookSecret {
    /// A secret of these bytes (24 to 64 of them).
    ///
    /// # Errors
    /// [`SignatureError::BadSecret`] for fewer than 24 or more than 64.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SignatureError> {
        if !(24..=64).contains(&bytes.len()) {
            return Err(SignatureError::BadSecret);
        }
        Ok(WebhookSecret {
            bytes: Zeroizing::new(bytes.to_vec()),
        })
    }

    /// A new secret from the OS CSPRNG.
    ///
    /// # Errors
    /// The OS gave no random bytes.
    #[cfg(feature = "getrandom")]
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = Zeroizing::new([0u8; WEBHOOK_SECRET_BYTES]);
        getrandom::fill(&mut *bytes)?;
        Ok(WebhookSecret {
            bytes: Zeroizing::new(bytes.to_vec()),
        })
    }

    /// Reads `whsec_<base64>` (the prefix may be left out, as Standard
    /// Webhooks libraries allow).
    ///
    /// # Errors
    /// [`SignatureError::BadSecret`] for text that is not such a secret;
    /// the error never quotes it.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let encoded = text.strip_prefix(WEBHOOK_SECRET_PREFIX).unwrap_or(text);
        let bytes = Zeroizing::new(
            STANDARD
                .decode(encoded)
                .map_err(|_| SignatureError::BadSecret)?,
        );
        Self::from_bytes(&bytes)
    }

    /// The secret's bytes (to seal them at rest).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The `whsec_…` text: for the answer that creates the endpoint, and
    /// nowhere else.
    pub fn expose(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::from(WEBHOOK_SECRET_PREFIX));
        STANDARD.encode_string(&*self.bytes, &mut text);
        text
    }

    fn mac(&self, id: &str, timestamp: u64, body: &[u8]) -> HmacSha256 {
        // HMAC takes a key of any length; `from_bytes` bounds it anyway.
        let mut mac = HmacSha256::new_from_slice(&self.bytes).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(decimal(timestamp, &mut [0; 20]));
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` value of a delivery: `v1,<base64>`.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let code = self.mac(id, timestamp, body).finalize().into_bytes();
        let mut value = String::from("v1,");
        STANDARD.encode_string(code, &mut value);
        value
    }

    /// Checks a received delivery: its `webhook-timestamp` within
    /// `tolerance_seconds` of `now` (Unix seconds), and one of the
    /// space-separated signatures of `signature_header` a `v1` MAC of
    /// `id.timestamp.body` under this secret.
    ///
    /// # Errors
    /// Which check failed; no error quotes the secret or a signature.
    pub fn verify(
        &self,
        id: &str,
        timestamp: &str,
        body: &[u8],
        signature_header: &str,
        now: u64,
        tolerance_seconds: u64,
    ) -> Result<(), SignatureError> {
        let sent: u64 = timestamp
            .parse()
            .map_err(|_| SignatureError::BadTimestamp)?;
        if sent.abs_diff(now) > tolerance_seconds {
            return Err(SignatureError::OutsideTolerance);
        }
        let mut any_v1 = false;
        for signature in signature_header.split(' ').filter(|s| !s.is_empty()) {
            let Some(encoded) = signature.strip_prefix("v1,") else {
                continue;
            };
            any_v1 = true;
            let Ok(code) = STANDARD.decode(encoded) else {
                continue;
            };
            // `verify_slice` compares in constant time.
            if self.mac(id, sent, body).verify_slice(&code).is_ok() {
                return Ok(());
            }
        }
        Err(if any_v1 {
            SignatureError::Mismatch
        } else {
            SignatureError::NoSignature
        })
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

/// Why a webhook secret or signature was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// The secret is not `whsec_` and base64 of 24 to 64 bytes.
    BadSecret,
    /// `webhook-timestamp` is not a number of seconds.
    BadTimestamp,
    /// `webhook-timestamp` is further from now than the tolerance.
    OutsideTolerance,
    /// `webhook-signature` holds no `v1,` signature.
    NoSignature,
    /// No signature matches the body under this secret.
    Mismatch,
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignatureError::BadSecret => {
                "the webhook secret is not `whsec_` followed by base64 of 24 to 64 bytes"
            }
            SignatureError::BadTimestamp => "webhook-timestamp is not a Unix time in seconds",
            SignatureError::OutsideTolerance => {
                "webhook-timestamp is too far from this clock: a replay, or a clock to fix"
            }
            SignatureError::NoSignature => "webhook-signature holds no v1 signature",
            SignatureError::Mismatch => "no webhook-signature matches this body under this secret",
        })
    }
}

impl core::error::Error for SignatureError {}

/// `value` in decimal ASCII, written into the end of `digits`.
fn decimal(mut value: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        // A remainder below 10 always fits a byte.
        digits[at] = b'0' + u8::try_from(value % 10).unwrap_or(0);
        value /= 10;
        if value == 0 {
            break;
        }
    }
    &digits[at..]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently with Python's `hmac` and `base64` modules:
    /// `base64(hmac.new(b"\x00".."\x1f", b"msg_1.1700000000.{\"a\":1}", sha256))`.
    const VECTOR: &str = "v1,AMaOha7DUT/0J0JMycRuYOBSvbx3WtwLd2khXXbaVj4=";

    fn secret() -> WebhookSecret {
        WebhookSecret::from_bytes(&(0u8..32).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn signs_as_an_independent_implementation_does() {
        assert_eq!(secret().sign("msg_1", 1_700_000_000, b"{\"a\":1}"), VECTOR);
    }

    #[test]
    fn text_round_trips_and_never_prints() {
        let secret = secret();
        let text = secret.expose();
        assert!(text.starts_with("whsec_"));
        assert_eq!(WebhookSecret::parse(&text).unwrap(), secret);
        assert_eq!(
            WebhookSecret::parse(text.trim_start_matches("whsec_")).unwrap(),
            secret
        );
        let shown = alloc::format!("{secret:?}");
        assert!(!shown.contains(&text[6..]), "{shown}");
        assert_eq!(
            WebhookSecret::parse("whsec_c2hvcnQ="),
            Err(SignatureError::BadSecret)
        );
        assert_eq!(
            WebhookSecret::parse("whsec_!!"),
            Err(SignatureError::BadSecret)
        );
    }

    #[test]
    fn verifies_its_own_and_refuses_everything_else() {
        let secret = secret();
        let body = b"{\"type\":\"key.revoked\"}";
        let signature = secret.sign("msg_1", 1000, body);
        let verify = |id: &str, ts: &str, body: &[u8], header: &str, now: u64| {
            secret.verify(id, ts, body, header, now, DEFAULT_TOLERANCE_SECONDS)
        };
        assert_eq!(verify("msg_1", "1000", body, &signature, 1000), Ok(()));
        // Several signatures (a secret being rotated): any one may match.
        let several = alloc::format!("v1,AAAA {signature} v2,zzz");
        assert_eq!(verify("msg_1", "1000", body, &several, 1100), Ok(()));
        assert_eq!(
            verify("msg_2", "1000", body, &signature, 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("msg_1", "1001", body, &signature, 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("msg_1", "1000", b"{}", &signature, 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("msg_1", "1000", body, &signature, 1000 + 301),
            Err(SignatureError::OutsideTolerance)
        );
        assert_eq!(
            verify("msg_1", "1000", body, &signature, 1000 - 301),
            Err(SignatureError::OutsideTolerance)
        );
        assert_eq!(
            verify("msg_1", "10e2", body, &signature, 1000),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify("msg_1", "1000", body, "v2,abc", 1000),
            Err(SignatureError::NoSignature)
        );
        assert_eq!(
            verify("msg_1", "1000", body, "", 1000),
            Err(SignatureError::NoSignature)
        );
        let other = WebhookSecret::from_bytes(&[7; 32]).unwrap();
        assert_eq!(
            other.verify("msg_1", "1000", body, &signature, 1000, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn decimal_digits() {
        assert_eq!(decimal(0, &mut [0; 20]), b"0");
        assert_eq!(decimal(1_700_000_000, &mut [0; 20]), b"1700000000");
        assert_eq!(decimal(u64::MAX, &mut [0; 20]), b"18446744073709551615");
    }
}
