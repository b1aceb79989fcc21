//! Reference readings of SPEC §2 (the key format) and §3 (the
//! `Authorization` grammar), written as differently from the parsers as
//! practical: string methods instead of byte tables, a bitwise CRC-32
//! instead of `crc32fast`. The property tests here and the fuzz targets in
//! `fuzz/` (which include this file by path) both hold the parsers to them,
//! so there is one reference, not two that could drift apart.
//!
//! Only `std` and the error enums of `cloro-auth-core` are used, so the
//! file compiles unchanged in both places.

use cloro_auth_core::{Environment, ErrorCode, FormatError, MAX_TOKEN_LEN};

/// RFC 6750 §2.1: the characters of a `b64token` before its padding.
pub(crate) const B64_ALPHABET: &str =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/";

/// The `tchar`s of RFC 9110 §5.6.2 other than letters and digits: what may
/// continue a scheme name, so `Bearer-x` is another scheme, not Bearer.
const TCHAR_PUNCTUATION: &str = "!#$%&'*+-.^_`|~";

/// What SPEC §3 and §4 say one `Authorization` field value earns: the
/// token, or the one error code.
pub(crate) fn bearer_reference(value: &[u8]) -> Result<&str, ErrorCode> {
    // Every byte the grammar allows is ASCII, so a value that is not even
    // UTF-8 cannot carry a token; which code it earns depends on where the
    // odd bytes are, so read it lossily for that.
    let Ok(text) = std::str::from_utf8(value) else {
        let lossy = String::from_utf8_lossy(value);
        return Err(match bearer_reference(lossy.as_bytes()) {
            Ok(_) => ErrorCode::MalformedAuthorization,
            Err(code) => code,
        });
    };
    let text = text.trim_matches([' ', '\t']);
    if text.is_empty() {
        return Err(ErrorCode::MissingApiKey);
    }
    // `get` and not `[..6]`: six bytes may end inside a character.
    let Some(rest) = text
        .get(..6)
        .filter(|scheme| scheme.eq_ignore_ascii_case("bearer"))
        .map(|_| &text[6..])
    else {
        return Err(ErrorCode::MissingBearerPrefix);
    };
    let continues_scheme = rest
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || TCHAR_PUNCTUATION.contains(c));
    if continues_scheme {
        return Err(ErrorCode::MissingBearerPrefix);
    }
    let Some(token) = rest.strip_prefix(' ') else {
        return Err(ErrorCode::MalformedAuthorization);
    };
    let token = token.trim_start_matches(' ');
    let body = token.trim_end_matches('=');
    if body.is_empty() || !body.chars().all(|c| B64_ALPHABET.contains(c)) {
        return Err(ErrorCode::MalformedAuthorization);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(ErrorCode::InvalidApiKeyFormat);
    }
    Ok(token)
}

/// What SPEC §2 says of a token as a key: its environment, or the first
/// rule it breaks, in the order prefix, length, lower-case hex, checksum.
pub(crate) fn key_reference(token: &[u8]) -> Result<Environment, FormatError> {
    let environment = if token.starts_with(b"sk_live_") {
        Environment::Live
    } else if token.starts_with(b"sk_test_") {
        Environment::Test
    } else {
        return Err(FormatError::WrongPrefix);
    };
    if token.len() != 48 {
        return Err(FormatError::WrongLength);
    }
    let digits = &token[8..];
    if !digits
        .iter()
        .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(FormatError::NotLowerHex);
    }
    let written = std::str::from_utf8(&digits[32..])
        .ok()
        .and_then(|hex| u32::from_str_radix(hex, 16).ok());
    if written != Some(crc32_ieee(&token[..40])) {
        return Err(FormatError::BadChecksum);
    }
    Ok(environment)
}

/// CRC-32 (IEEE 802.3, reflected, as zlib computes it), one bit at a time:
/// slow and obviously the textbook algorithm.
pub(crate) fn crc32_ieee(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
