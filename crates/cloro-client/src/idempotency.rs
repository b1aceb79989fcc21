//! [`IdempotencyKey`]: the `Idempotency-Key` the SDK sends with the admin
//! POSTs that change something each time they run (create, rotate,
//! credits), so that sending one twice has the effect of sending it once
//! (SPEC §11) and a retry can never mint a second key or add credits twice.

use std::fmt;

use http::HeaderValue;

/// The header name (SPEC §11).
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The most characters the server accepts in a key (SPEC §11).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// An `Idempotency-Key`: 1 to 255 visible ASCII characters.
///
/// The SDK makes a random one for every create, rotate and credits call
/// and sends it on each of that call's attempts. Pass one of your own (see
/// [`AdminClient::with_idempotency_key`](crate::AdminClient::with_idempotency_key))
/// when the call may be repeated by a later run of your program, say after
/// a crash: the server then answers the repeat with the first answer
/// instead of acting again, for 24 hours.
///
/// Not a secret: it only names a request, so it prints in full.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    value: HeaderValue,
}

/// Why a text cannot be an [`IdempotencyKey`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdempotencyKeyError {
    /// No characters.
    #[error("an idempotency key cannot be empty")]
    Empty,
    /// More than [`MAX_IDEMPOTENCY_KEY_LEN`] characters.
    #[error("an idempotency key has at most 255 characters, this one {0}")]
    TooLong(usize),
    /// A space, a control character or a non-ASCII one.
    #[error("an idempotency key holds only visible ASCII characters (no spaces)")]
    Invisible,
}

impl IdempotencyKey {
    /// `text` as a key, checked as the server checks it.
    ///
    /// # Errors
    /// [`IdempotencyKeyError`] when it is empty, too long, or holds a
    /// character other than visible ASCII (`!` to `~`).
    pub fn new(text: &str) -> Result<Self, IdempotencyKeyError> {
        if text.is_empty() {
            return Err(IdempotencyKeyError::Empty);
        }
        if text.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(IdempotencyKeyError::TooLong(text.len()));
        }
        if !text.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(IdempotencyKeyError::Invisible);
        }
        let value = HeaderValue::from_str(text).map_err(|_| IdempotencyKeyError::Invisible)?;
        Ok(IdempotencyKey { value })
    }

    /// A fresh key: 32 lowercase hex digits, 128 bits from the OS CSPRNG,
    /// so two calls never share one by chance.
    pub fn random() -> Self {
        // Without OS randomness, the time and a process-wide counter keep
        // keys apart in practice; a shared key would only make the server
        // refuse the second call (409), never act twice.
        let bytes: [u8; 16] = {
            let mut bytes = [0u8; 16];
            if getrandom::fill(&mut bytes).is_err() {
                bytes = fallback_bytes();
            }
            bytes
        };
        let mut text = String::with_capacity(32);
        for byte in bytes {
            text.push_str(&format!("{byte:02x}"));
        }
        IdempotencyKey {
            value: HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("0")),
        }
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        // Checked visible ASCII when made, so always text.
        self.value.to_str().unwrap_or_default()
    }

    pub(crate) fn header_value(&self) -> HeaderValue {
        self.value.clone()
    }
}

/// Sixteen bytes that differ between calls when the OS has no randomness.
fn fallback_bytes() -> [u8; 16] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&(nanos as u64).to_be_bytes());
    bytes[8..].copy_from_slice(&(count ^ u64::from(std::process::id())).to_be_bytes());
    bytes
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdempotencyKey")
            .field(&self.as_str())
            .finish()
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for IdempotencyKey {
    type Err = IdempotencyKeyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        IdempotencyKey::new(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_as_the_server_checks_them() {
        assert_eq!(
            IdempotencyKey::new("order-42").unwrap().as_str(),
            "order-42"
        );
        assert!(IdempotencyKey::new(&"a".repeat(255)).is_ok());
        assert_eq!(
            IdempotencyKey::new(&"a".repeat(256)),
            Err(IdempotencyKeyError::TooLong(256))
        );
        assert_eq!(IdempotencyKey::new(""), Err(IdempotencyKeyError::Empty));
        for bad in ["a b", "tab\t", "é", "nul\0", "new\nline"] {
            assert_eq!(
                IdempotencyKey::new(bad),
                Err(IdempotencyKeyError::Invisible),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn random_keys_are_32_hex_digits_and_differ() {
        let first = IdempotencyKey::random();
        let second = IdempotencyKey::random();
        assert_eq!(first.as_str().len(), 32);
        assert!(
            first
                .as_str()
                .bytes()
                .all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase())
        );
        assert_ne!(first, second);
        assert!(IdempotencyKey::new(first.as_str()).is_ok());
    }
}
