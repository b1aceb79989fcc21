//! Reading `Authorization: Bearer <token>` (SPEC §3; RFC 9110 §11.4, RFC 6750 §2.1).
//!
//! Input is the raw field bytes as they came off the wire, so the answer for
//! any byte string is decided here, once: either the token or exactly one
//! [`AuthError`]. Nothing here allocates or panics.

use crate::error::{AuthError, FormatError, Malformed};

/// Tokens longer than this are refused before any store lookup. A Cloro key
/// is 48 bytes and an admin token 76; 256 leaves room for future formats.
pub const MAX_TOKEN_LEN: usize = 256;

/// The least an admin token must have: 32 `b64token` characters (about 190
/// bits if random). The server refuses to start with less, and the SDK
/// refuses to send less, so neither accepts what the other would refuse.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;

/// Whether `token` is a `b64token` (RFC 6750 §2.1): what a bearer token may
/// be. The one definition, used by the header parser, the admin token and
/// the SDK's credentials.
pub fn is_b64token(token: &[u8]) -> bool {
    check_b64token(token).is_ok()
}

/// Whether `token` can be an admin token: a `b64token` of
/// [`MIN_ADMIN_TOKEN_LEN`] to [`MAX_TOKEN_LEN`] characters.
pub fn is_admin_token_shaped(token: &str) -> bool {
    (MIN_ADMIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&token.len()) && is_b64token(token.as_bytes())
}

/// The bearer token from all `Authorization` fields of a request.
///
/// # Errors
/// No field is `MISSING_API_KEY`; more than one (even identical) is
/// `MALFORMED_AUTHORIZATION`; a single field is judged by
/// [`bearer_token_from_value`].
pub fn bearer_token<'a, I>(fields: I) -> Result<&'a str, AuthError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut fields = fields.into_iter();
    let Some(value) = fields.next() else {
        return Err(AuthError::MissingApiKey);
    };
    if fields.next().is_some() {
        return Err(AuthError::MalformedAuthorization(Malformed::MultipleFields));
    }
    bearer_token_from_value(value)
}

/// The bearer token from one `Authorization` field value.
///
/// # Errors
/// The one SPEC §4 error that the value earns; see the module docs.
pub fn bearer_token_from_value(value: &[u8]) -> Result<&str, AuthError> {
    let value = trim_ows(value);
    if value.is_empty() {
        return Err(AuthError::MissingApiKey);
    }

    // The scheme is a `token` (RFC 9110 §5.6.2); `BearerXYZ` is a different
    // scheme, not Bearer with a missing space.
    let scheme_len = value
        .iter()
        .position(|&c| !is_tchar(c))
        .unwrap_or(value.len());
    let (scheme, rest) = value.split_at(scheme_len);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(AuthError::MissingBearerPrefix);
    }
    if rest.is_empty() {
        return Err(AuthError::MalformedAuthorization(Malformed::EmptyToken));
    }

    let spaces = rest.iter().take_while(|&&c| c == b' ').count();
    if spaces == 0 {
        return Err(AuthError::MalformedAuthorization(Malformed::BadSeparator));
    }
    // Trailing whitespace was trimmed, so a token follows the spaces.
    let token = &rest[spaces..];
    check_b64token(token).map_err(AuthError::MalformedAuthorization)?;
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::InvalidApiKeyFormat(FormatError::TooLong));
    }
    core::str::from_utf8(token)
        .map_err(|_| AuthError::MalformedAuthorization(Malformed::InvalidCharacter))
}

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`,
/// with the reason a token is not one.
fn check_b64token(token: &[u8]) -> Result<(), Malformed> {
    let body = token.iter().take_while(|&&c| is_b64char(c)).count();
    if body == 0 {
        return Err(match token.first() {
            // Whitespace other than SP, or a comma, right after the scheme.
            Some(b'\t' | b',') | Some(0x80..=0xff) => Malformed::BadSeparator,
            _ => Malformed::InvalidCharacter,
        });
    }
    let padding = token[body..].iter().take_while(|&&c| c == b'=').count();
    match token.get(body + padding) {
        None => Ok(()),
        // `Bearer abc def`, `Bearer abc, Basic x`, `Bearer realm="x"`.
        Some(b' ' | b'\t' | b',' | b'"') => Err(Malformed::TrailingData),
        _ => Err(Malformed::InvalidCharacter),
    }
}

/// Character classes as one table lookup per byte: the two scans below run
/// over every byte of every request's header, and branchy `matches!` chains
/// were measurably slower than a table here.
const CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/') {
            table[c] |= B64;
        }
        if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            )
        {
            table[c] |= TCHAR;
        }
        c += 1;
    }
    table
};
const B64: u8 = 1;
const TCHAR: u8 = 2;

/// `b64token` characters before the padding (RFC 6750 §2.1).
fn is_b64char(c: u8) -> bool {
    CLASS[usize::from(c)] & B64 != 0
}

/// `tchar` of RFC 9110 §5.6.2.
fn is_tchar(c: u8) -> bool {
    CLASS[usize::from(c)] & TCHAR != 0
}

/// Strips optional whitespace (SP, HTAB) around a field value (RFC 9110 §5.5).
fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |c: &u8| matches!(c, b' ' | b'\t');
    let start = value.iter().position(|c| !is_ows(c)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|c| !is_ows(c))
        .map_or(start, |last| last + 1);
    &value[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Result<&str, AuthError> {
        bearer_token_from_value(value.as_bytes())
    }

    const MALFORMED_EMPTY: AuthError = AuthError::MalformedAuthorization(Malformed::EmptyToken);
    const BAD_SEPARATOR: AuthError = AuthError::MalformedAuthorization(Malformed::BadSeparator);
    const BAD_CHAR: AuthError = AuthError::MalformedAuthorization(Malformed::InvalidCharacter);
    const TRAILING: AuthError = AuthError::MalformedAuthorization(Malformed::TrailingData);

    #[test]
    fn scheme_is_case_insensitive_token_is_not() {
        assert_eq!(parse("Bearer AbC"), Ok("AbC"));
        assert_eq!(parse("bearer AbC"), Ok("AbC"));
        assert_eq!(parse("BEARER AbC"), Ok("AbC"));
        assert_eq!(parse("bEaReR AbC"), Ok("AbC"));
    }

    #[test]
    fn one_or_more_spaces_separate() {
        assert_eq!(parse("Bearer    tok"), Ok("tok"));
        assert_eq!(parse("Bearer\ttok"), Err(BAD_SEPARATOR));
        assert_eq!(parse("Bearer \ttok"), Err(BAD_SEPARATOR));
        assert_eq!(parse("Bearer\u{a0}tok"), Err(BAD_SEPARATOR));
        assert_eq!(parse("Bearer,tok"), Err(BAD_SEPARATOR));
    }

    #[test]
    fn field_whitespace_is_trimmed() {
        assert_eq!(parse("  Bearer tok \t"), Ok("tok"));
        assert_eq!(parse("\tBearer tok"), Ok("tok"));
    }

    #[test]
    fn missing_and_empty() {
        assert_eq!(
            bearer_token(core::iter::empty()),
            Err(AuthError::MissingApiKey)
        );
        assert_eq!(parse(""), Err(AuthError::MissingApiKey));
        assert_eq!(parse("   "), Err(AuthError::MissingApiKey));
        assert_eq!(parse("Bearer"), Err(MALFORMED_EMPTY));
        assert_eq!(parse("Bearer    "), Err(MALFORMED_EMPTY));
    }

    #[test]
    fn other_schemes_lack_the_prefix() {
        for value in [
            "sk_live_00000000000000000000000000000000deadbeef",
            "Basic dXNlcjpwYXNz",
            "Token abc",
            "BearerToken abc",
            "Bearersk_live_abc",
            "Bearer-abc",
            "\u{e9}Bearer abc",
        ] {
            assert_eq!(
                parse(value),
                Err(AuthError::MissingBearerPrefix),
                "{value:?}"
            );
        }
    }

    #[test]
    fn b64token_alphabet_and_padding() {
        assert_eq!(parse("Bearer a-._~+/Z9"), Ok("a-._~+/Z9"));
        assert_eq!(parse("Bearer abc=="), Ok("abc=="));
        assert_eq!(parse("Bearer =abc"), Err(BAD_CHAR));
        assert_eq!(parse("Bearer ==="), Err(BAD_CHAR));
        assert_eq!(parse("Bearer ab=c"), Err(BAD_CHAR));
        assert_eq!(parse("Bearer ab!c"), Err(BAD_CHAR));
        assert_eq!(parse("Bearer ab\u{e9}"), Err(BAD_CHAR));
        assert_eq!(bearer_token_from_value(b"Bearer ab\0c"), Err(BAD_CHAR));
        assert_eq!(
            bearer_token_from_value(b"Bearer \xff\xfe"),
            Err(BAD_SEPARATOR)
        );
    }

    #[test]
    fn auth_params_and_lists_are_malformed() {
        assert_eq!(parse("Bearer abc def"), Err(TRAILING));
        assert_eq!(parse("Bearer abc, Basic xyz"), Err(TRAILING));
        assert_eq!(parse("Bearer realm=\"x\""), Err(TRAILING));
        assert_eq!(parse("Bearer abc,def"), Err(TRAILING));
        assert_eq!(parse("Bearer abc\tdef"), Err(TRAILING));
    }

    #[test]
    fn several_fields_are_malformed_even_if_equal() {
        let one: &[u8] = b"Bearer abc";
        assert_eq!(
            bearer_token([one, one]),
            Err(AuthError::MalformedAuthorization(Malformed::MultipleFields))
        );
        assert_eq!(bearer_token([one]), Ok("abc"));
    }

    #[test]
    fn long_tokens_are_refused_by_length() {
        let token = "a".repeat(MAX_TOKEN_LEN);
        assert_eq!(parse(&std::format!("Bearer {token}")), Ok(token.as_str()));
        let token = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            parse(&std::format!("Bearer {token}")),
            Err(AuthError::InvalidApiKeyFormat(FormatError::TooLong))
        );
        let huge = std::format!("Bearer {}", "x".repeat(64 * 1024));
        assert_eq!(
            parse(&huge),
            Err(AuthError::InvalidApiKeyFormat(FormatError::TooLong))
        );
    }
}
