//! For receivers of Cloro webhooks: [`verify`] checks a delivery's
//! Standard Webhooks signature and timestamp before its body is believed.
//!
//! ```
//! # fn handle(headers: &http::HeaderMap, body: &[u8]) -> Result<(), cloro_client::webhooks::VerifyError> {
//! let secret = cloro_client::webhooks::WebhookSecret::parse("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")?;
//! let payload = cloro_client::webhooks::verify(&secret, headers, body)?;
//! println!("{} at {}", payload.event_type, payload.timestamp);
//! # Ok(())
//! # }
//! ```

use core::fmt;

use cloro_auth_core::webhook::DEFAULT_TOLERANCE_SECONDS;
pub use cloro_auth_core::webhook::{SignatureError, WebhookSecret};
use cloro_auth_core::wire::WebhookPayload;
use http::HeaderMap;
use jiff::Timestamp;

/// Why a delivery was not believed.
#[derive(Debug)]
pub enum VerifyError {
    /// A header Standard Webhooks requires is missing or not text.
    MissingHeader(&'static str),
    /// The signature or the timestamp did not check out.
    Signature(SignatureError),
    /// Signed correctly, but not a Cloro event body.
    Body(serde_json::Error),
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::MissingHeader(name) => {
                write!(f, "the delivery has no readable {name} header")
            }
            VerifyError::Signature(error) => error.fmt(f),
            VerifyError::Body(error) => write!(f, "the signed body is not a Cloro event: {error}"),
        }
    }
}

impl std::error::Error for VerifyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VerifyError::MissingHeader(_) => None,
            VerifyError::Signature(error) => Some(error),
            VerifyError::Body(error) => Some(error),
        }
    }
}

impl From<SignatureError> for VerifyError {
    fn from(error: SignatureError) -> Self {
        VerifyError::Signature(error)
    }
}

/// Checks a delivery against `secret` with the default tolerance of five
/// minutes against this machine's clock, and reads its body.
///
/// # Errors
/// See [`VerifyError`]; the body is not read unless the signature holds.
pub fn verify(
    secret: &WebhookSecret,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<WebhookPayload, VerifyError> {
    let now = u64::try_from(Timestamp::now().as_second()).unwrap_or(0);
    verify_at(secret, headers, body, now, DEFAULT_TOLERANCE_SECONDS)
}

/// [`verify`] at `now` (Unix seconds) with a tolerance of your choosing.
///
/// # Errors
/// As [`verify`].
pub fn verify_at(
    secret: &WebhookSecret,
    headers: &HeaderMap,
    body: &[u8],
    now: u64,
    tolerance_seconds: u64,
) -> Result<WebhookPayload, VerifyError> {
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .ok_or(VerifyError::MissingHeader(name))
    };
    secret.verify(
        header("webhook-id")?,
        header("webhook-timestamp")?,
        body,
        header("webhook-signature")?,
        now,
        tolerance_seconds,
    )?;
    serde_json::from_slice(body).map_err(VerifyError::Body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn delivery(secret: &WebhookSecret, body: &str, timestamp: u64) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", HeaderValue::from_static("evt_1"));
        headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
        let signature = secret.sign("evt_1", timestamp, body.as_bytes());
        headers.insert(
            "webhook-signature",
            HeaderValue::from_str(&signature).unwrap(),
        );
        headers
    }

    const BODY: &str = r#"{"type":"key.revoked","timestamp":"2026-12-03T10:00:00Z","data":{"event_id":"evt_1","account_id":"acct_1","key_id":null,"actor":"admin","details":{}}}"#;

    #[test]
    fn a_signed_event_is_read_and_anything_else_refused() {
        let secret = WebhookSecret::from_bytes(&[9; 32]).unwrap();
        let headers = delivery(&secret, BODY, 1_000);
        let payload = verify_at(&secret, &headers, BODY.as_bytes(), 1_010, 300).unwrap();
        assert_eq!(payload.data.event_id, "evt_1");

        let tampered = BODY.replace("acct_1", "acct_2");
        assert!(matches!(
            verify_at(&secret, &headers, tampered.as_bytes(), 1_010, 300),
            Err(VerifyError::Signature(SignatureError::Mismatch))
        ));
        assert!(matches!(
            verify_at(&secret, &headers, BODY.as_bytes(), 2_000, 300),
            Err(VerifyError::Signature(SignatureError::OutsideTolerance))
        ));
        let mut unsigned = headers.clone();
        unsigned.remove("webhook-signature");
        assert!(matches!(
            verify_at(&secret, &unsigned, BODY.as_bytes(), 1_010, 300),
            Err(VerifyError::MissingHeader("webhook-signature"))
        ));
        let other = WebhookSecret::from_bytes(&[8; 32]).unwrap();
        assert!(matches!(
            verify_at(&other, &headers, BODY.as_bytes(), 1_010, 300),
            Err(VerifyError::Signature(SignatureError::Mismatch))
        ));
        let not_an_event = "[1, 2]";
        let signed = delivery(&secret, not_an_event, 1_000);
        assert!(matches!(
            verify_at(&secret, &signed, not_an_event.as_bytes(), 1_000, 300),
            Err(VerifyError::Body(_))
        ));
    }
}
