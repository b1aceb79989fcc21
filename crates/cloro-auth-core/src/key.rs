//! The API key itself: `sk_<env>_<32 hex random><8 hex CRC-32>` (SPEC §2).
//!
//! The checksum lets the server refuse a mistyped or invented key without a
//! store lookup, and lets secret scanners recognise a leaked key. A key is a
//! secret: its `Debug` and `Display` print only the redacted start, and its
//! bytes are wiped when it is dropped.

use core::fmt;

use zeroize::Zeroize;

use crate::error::FormatError;
use crate::hash::KeyHash;
use crate::hex;

/// Length of every Cloro key: 8 prefix characters, 32 random hex digits and
/// 8 checksum hex digits.
pub const KEY_LEN: usize = PREFIX_LEN + RANDOM_HEX_LEN + CHECK_HEX_LEN;

pub(crate) const PREFIX_LEN: usize = 8;
const RANDOM_HEX_LEN: usize = 32;
const CHECK_HEX_LEN: usize = 8;
/// How many random digits the redacted form shows: enough to tell keys
/// apart in a list, far too few (16 bits of 128) to help a guesser.
pub(crate) const REDACTED_RANDOM_DIGITS: usize = 4;

/// Which side of the house a key belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Environment {
    /// Production traffic: `sk_live_…`.
    Live,
    /// Development and CI: `sk_test_…`.
    Test,
}

impl Environment {
    /// The word used in the key prefix and on the wire: `live` or `test`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }

    const fn prefix(self) -> &'static [u8; PREFIX_LEN] {
        match self {
            Environment::Live => b"sk_live_",
            Environment::Test => b"sk_test_",
        }
    }

    fn from_prefix(prefix: &[u8]) -> Option<Self> {
        match prefix {
            b"sk_live_" => Some(Environment::Live),
            b"sk_test_" => Some(Environment::Test),
            _ => None,
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::str::FromStr for Environment {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "live" => Ok(Environment::Live),
            "test" => Ok(Environment::Test),
            _ => Err(FormatError::WrongPrefix),
        }
    }
}

/// A well-formed Cloro API key. Holding one proves only the format; whether
/// the key exists is the store's question.
///
/// The bytes are always ASCII and always [`KEY_LEN`] long, so the key lives
/// inline with no allocation and is wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    bytes: [u8; KEY_LEN],
}

impl ApiKey {
    /// A new key from the OS CSPRNG.
    ///
    /// # Errors
    /// When the operating system cannot supply randomness.
    #[cfg(feature = "getrandom")]
    pub fn generate(environment: Environment) -> Result<Self, getrandom::Error> {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random)?;
        let key = Self::from_random_bytes(environment, random);
        random.zeroize();
        Ok(key)
    }

    /// A key built from 16 bytes that the caller drew from a CSPRNG; for
    /// targets where this crate cannot reach the OS generator.
    pub fn from_random_bytes(environment: Environment, random: [u8; 16]) -> Self {
        let mut bytes = [0u8; KEY_LEN];
        bytes[..PREFIX_LEN].copy_from_slice(environment.prefix());
        hex::encode_into(&random, &mut bytes[PREFIX_LEN..PREFIX_LEN + RANDOM_HEX_LEN]);
        let check = crc32fast::hash(&bytes[..PREFIX_LEN + RANDOM_HEX_LEN]);
        hex::encode_into(
            &check.to_be_bytes(),
            &mut bytes[PREFIX_LEN + RANDOM_HEX_LEN..],
        );
        ApiKey { bytes }
    }

    /// Checks a bearer token against SPEC §2 and keeps it if it passes.
    ///
    /// # Errors
    /// [`FormatError`] says which rule the token broke.
    pub fn parse_token(token: &str) -> Result<Self, FormatError> {
        Self::check_format(token.as_bytes())?;
        let mut bytes = [0u8; KEY_LEN];
        bytes.copy_from_slice(token.as_bytes());
        Ok(ApiKey { bytes })
    }

    /// The format check alone, without copying the token: the environment
    /// when `token` is a well-formed key.
    ///
    /// # Errors
    /// [`FormatError`] says which rule the token broke.
    pub fn check_format(token: &[u8]) -> Result<Environment, FormatError> {
        if token.len() != KEY_LEN {
            return Err(
                if token.len() < PREFIX_LEN
                    || Environment::from_prefix(&token[..PREFIX_LEN]).is_none()
                {
                    FormatError::WrongPrefix
                } else {
                    FormatError::WrongLength
                },
            );
        }
        let (prefix, rest) = token.split_at(PREFIX_LEN);
        let environment = Environment::from_prefix(prefix).ok_or(FormatError::WrongPrefix)?;
        if !rest.iter().all(|&c| hex::digit_value(c).is_some()) {
            return Err(FormatError::NotLowerHex);
        }
        let (body, check) = token.split_at(PREFIX_LEN + RANDOM_HEX_LEN);
        let expected = hex::decode_u32(check).ok_or(FormatError::NotLowerHex)?;
        if crc32fast::hash(body) != expected {
            return Err(FormatError::BadChecksum);
        }
        Ok(environment)
    }

    /// `live` or `test`.
    pub fn environment(&self) -> Environment {
        match Environment::from_prefix(&self.bytes[..PREFIX_LEN]) {
            Some(environment) => environment,
            // Every constructor checked the prefix.
            None => Environment::Live,
        }
    }

    /// The SHA-256 the stores are keyed by.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.bytes)
    }

    /// The form that may be shown and logged: `sk_live_1a2b...`.
    pub fn redacted(&self) -> RedactedKey {
        RedactedKey::of_key_bytes(&self.bytes)
    }

    /// The plaintext. Named so that every use stands out in review: the only
    /// places that may call it are the create/rotate responses and clients
    /// building an `Authorization` header.
    pub fn expose_secret(&self) -> &str {
        // ASCII by construction (prefix and hex digits).
        core::str::from_utf8(&self.bytes).unwrap_or("")
    }
}

impl Drop for ApiKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ApiKey")
            .field(&format_args!("{}", self.redacted()))
            .finish()
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.redacted(), f)
    }
}

/// The redacted start of a key, `sk_live_1a2b...`: prefix, the first four
/// random digits and an ASCII ellipsis, so it is also safe in a header.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RedactedKey {
    bytes: [u8; PREFIX_LEN + REDACTED_RANDOM_DIGITS + 3],
}

impl RedactedKey {
    fn of_key_bytes(key: &[u8; KEY_LEN]) -> Self {
        let mut bytes = [b'.'; PREFIX_LEN + REDACTED_RANDOM_DIGITS + 3];
        bytes[..PREFIX_LEN + REDACTED_RANDOM_DIGITS]
            .copy_from_slice(&key[..PREFIX_LEN + REDACTED_RANDOM_DIGITS]);
        RedactedKey { bytes }
    }

    /// The text, e.g. `sk_test_9f00...`.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes).unwrap_or("sk_...")
    }
}

impl fmt::Display for RedactedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RedactedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// `text` with everything that looks like one of our keys (`sk_live_` or
/// `sk_test_` and the letters and digits after it, well-formed or not)
/// cut to its redacted start, `sk_live_1a2b...`. The one masker for text a
/// client sent that may be echoed back or logged, such as a JSON parser's
/// "invalid type: string \"sk_live_…\"" message.
#[cfg(feature = "alloc")]
pub fn redact_keys_in(text: &str) -> alloc::string::String {
    let mut out = alloc::string::String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("sk_") {
        let (before, candidate) = rest.split_at(at);
        out.push_str(before);
        let is_key = candidate.starts_with("sk_live_") || candidate.starts_with("sk_test_");
        if !is_key {
            out.push_str("sk_");
            rest = &candidate[3..];
            continue;
        }
        let tail = &candidate[PREFIX_LEN..];
        let mut secret_len = tail.bytes().take_while(u8::is_ascii_alphanumeric).count();
        // A run ending in `sk` before a `_` may be the start of the next
        // key (`sk_live_sk_live_…`): leave those two letters to it.
        if tail[secret_len..].starts_with('_') && tail[..secret_len].ends_with("sk") {
            secret_len -= 2;
        }
        let shown = secret_len.min(REDACTED_RANDOM_DIGITS);
        out.push_str(&candidate[..PREFIX_LEN + shown]);
        if secret_len > shown {
            out.push_str("...");
        }
        rest = &tail[secret_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_from(random: [u8; 16]) -> ApiKey {
        ApiKey::from_random_bytes(Environment::Live, random)
    }

    #[test]
    fn generated_shape_matches_spec() {
        let key = key_from([0x1a; 16]);
        let text = key.expose_secret();
        assert_eq!(text.len(), 48);
        assert!(text.starts_with("sk_live_1a1a1a1a"));
        let check = u32::from_str_radix(&text[40..], 16).unwrap();
        assert_eq!(check, crc32fast::hash(&text.as_bytes()[..40]));
    }

    #[test]
    fn known_vector_parses() {
        // Independent vector: CRC-32 of "sk_test_" + 32 zeros, computed with zlib.
        let key = ApiKey::from_random_bytes(Environment::Test, [0; 16]);
        let token = key.expose_secret();
        assert_eq!(&token[..40], "sk_test_00000000000000000000000000000000");
        assert_eq!(
            ApiKey::check_format(token.as_bytes()),
            Ok(Environment::Test)
        );
    }

    #[test]
    fn format_errors_are_specific() {
        let key = key_from([7; 16]);
        let good = key.expose_secret();
        assert_eq!(ApiKey::check_format(good.as_bytes()), Ok(Environment::Live));

        let upper = good.to_ascii_uppercase().replace("SK_LIVE_", "sk_live_");
        assert_eq!(
            ApiKey::check_format(upper.as_bytes()),
            Err(FormatError::NotLowerHex)
        );

        let prod = good.replace("sk_live_", "sk_prod_");
        assert_eq!(
            ApiKey::check_format(prod.as_bytes()),
            Err(FormatError::WrongPrefix)
        );

        assert_eq!(
            ApiKey::check_format(&good.as_bytes()[..47]),
            Err(FormatError::WrongLength)
        );
        assert_eq!(ApiKey::check_format(b"sk_"), Err(FormatError::WrongPrefix));

        let mut flipped = good.as_bytes().to_vec();
        flipped[20] = if flipped[20] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            ApiKey::check_format(&flipped),
            Err(FormatError::BadChecksum)
        );
    }

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let key = key_from([0xab; 16]);
        let debug = std::format!("{key:?}");
        let display = std::format!("{key}");
        assert_eq!(display, "sk_live_abab...");
        assert_eq!(debug, "ApiKey(sk_live_abab...)");
        assert!(!debug.contains(&key.expose_secret()[12..]));
    }

    #[test]
    fn hash_is_sha256_of_the_text() {
        use sha2::Digest;
        let key = key_from([3; 16]);
        let expected: [u8; 32] = sha2::Sha256::digest(key.expose_secret().as_bytes()).into();
        assert_eq!(key.hash().as_bytes(), &expected);
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn keys_in_text_are_cut_to_their_start() {
        let key = ApiKey::from_random_bytes(Environment::Live, [7; 16]);
        let text = alloc::format!(
            "invalid type: string \"{}\", expected a sequence",
            key.expose_secret()
        );
        let redacted = redact_keys_in(&text);
        assert!(!redacted.contains(&key.expose_secret()[12..]), "{redacted}");
        assert!(redacted.contains(key.redacted().as_str()), "{redacted}");
        assert_eq!(redact_keys_in("sk_test_ab"), "sk_test_ab");
        assert_eq!(
            redact_keys_in("a sk_ b sk_live_0123456789zz!"),
            "a sk_ b sk_live_0123...!"
        );
        assert_eq!(redact_keys_in("no keys, just sk_"), "no keys, just sk_");
        assert_eq!(redact_keys_in("sk_live_"), "sk_live_");
        assert_eq!(
            redact_keys_in("sk_live_sk_live_0123456789"),
            "sk_live_sk_live_0123..."
        );
        assert_eq!(
            redact_keys_in("sk_test_abcsk_test_0123456789"),
            "sk_test_abcsk_test_0123..."
        );
    }
}
