//! Request paths mean one thing (SPEC §9): the one normalisation every entry
//! point runs before route scopes are matched, and whose result is what the
//! upstream receives and what logs show.
//!
//! Upstreams disagree about what `%6D`, `;x=1`, `%2F` or `..` mean: one
//! framework decodes or strips them and runs a handler that our scope table
//! never matched. So the spellings that can only mean one thing are made to
//! look the same (RFC 3986 §6.2.2: unreserved characters decoded, other
//! escapes upper-cased), and the ones that upstreams read differently are
//! refused outright, before authentication.
//!
//! [`normalise_path`] is idempotent, never panics and allocates only when the
//! path actually changes.

#[cfg(feature = "alloc")]
use alloc::borrow::Cow;
#[cfg(feature = "alloc")]
use alloc::string::String;
use core::fmt;

/// Why a path is refused. Each is a 400 `INVALID_REQUEST` naming the path.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathError {
    /// The path does not start with `/` (an asterisk or authority form).
    NotAbsolute,
    /// A byte outside visible ASCII (a space, a control or a non-ASCII byte).
    InvalidCharacter,
    /// A `;` (raw or `%3B`): some upstreams strip what follows as a path
    /// parameter, others keep it.
    Semicolon,
    /// A backslash, raw: some upstreams read it as `/`.
    Backslash,
    /// A `.` or `..` segment.
    DotSegment,
    /// An encoded `.`, `/` or `\` (`%2E`, `%2F`, `%5C`), which decode into
    /// dot-segments or separators upstream.
    EncodedSeparator,
    /// An encoded control character (`%00`–`%1F`, `%7F`).
    EncodedControl,
    /// An encoded `%` (`%25`): an upstream that decodes twice would read
    /// the escape that follows it.
    EncodedPercent,
    /// A `%` not followed by two hex digits.
    BadEscape,
}

impl PathError {
    /// What is wrong, for the error message; lowercase, no trailing period.
    pub const fn describe(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the path must start with `/`",
            PathError::InvalidCharacter => {
                "the path contains a character outside visible ASCII; percent-encode it"
            }
            PathError::Semicolon => "the path contains a `;` (raw or as %3B)",
            PathError::Backslash => "the path contains a backslash",
            PathError::DotSegment => "the path contains a `.` or `..` segment",
            PathError::EncodedSeparator => "the path contains an encoded `.`, `/` or `\\`",
            PathError::EncodedControl => "the path contains an encoded control character",
            PathError::EncodedPercent => "the path contains an encoded `%` (%25)",
            PathError::BadEscape => "the path contains a `%` not followed by two hex digits",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

impl core::error::Error for PathError {}

/// What one escape (`%XY`, value `byte`) becomes.
enum Escape {
    /// An unreserved character: written as itself.
    Decode(u8),
    /// Kept encoded, with upper-case hex digits.
    Keep(u8),
}

fn classify_escape(byte: u8) -> Result<Escape, PathError> {
    match byte {
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => Ok(Escape::Decode(byte)),
        b'.' | b'/' | b'\\' => Err(PathError::EncodedSeparator),
        b';' => Err(PathError::Semicolon),
        b'%' => Err(PathError::EncodedPercent),
        0x00..=0x1F | 0x7F => Err(PathError::EncodedControl),
        _ => Ok(Escape::Keep(byte)),
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Walks `raw`, calling `emit` with each byte of the normalised path, or
/// stops at the first refusal. Returns whether any byte differs from `raw`.
fn walk(raw: &[u8], mut emit: impl FnMut(u8)) -> Result<bool, PathError> {
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut changed = false;
    let mut at = 0;
    while let Some(&c) = raw.get(at) {
        match c {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    raw.get(at + 1).copied().and_then(hex_value),
                    raw.get(at + 2).copied().and_then(hex_value),
                ) else {
                    return Err(PathError::BadEscape);
                };
                match classify_escape((hi << 4) | lo)? {
                    Escape::Decode(byte) => {
                        changed = true;
                        emit(byte);
                    }
                    Escape::Keep(byte) => {
                        let upper = [
                            b'%',
                            UPPER_HEX[usize::from(byte >> 4)],
                            UPPER_HEX[usize::from(byte & 0xF)],
                        ];
                        changed |= upper[1] != raw[at + 1] || upper[2] != raw[at + 2];
                        upper.into_iter().for_each(&mut emit);
                    }
                }
                at += 3;
            }
            b';' => return Err(PathError::Semicolon),
            b'\\' => return Err(PathError::Backslash),
            0x21..=0x7E => {
                emit(c);
                at += 1;
            }
            _ => return Err(PathError::InvalidCharacter),
        }
    }
    Ok(changed)
}

/// Visible ASCII that needs no second look: not `%`, `;`, `\` or `.`.
const PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0x21;
    while c <= 0x7E {
        table[c] = !matches!(c as u8, b'%' | b';' | b'\\' | b'.');
        c += 1;
    }
    table
};

/// A path made only of [`PLAIN`] bytes, starting with `/`: already normal.
fn is_plain(path: &[u8]) -> bool {
    path.first() == Some(&b'/') && path.iter().all(|&c| PLAIN[usize::from(c)])
}

/// Whether a normalised path has a `.` or `..` segment. Encoded dots were
/// refused already, so only literal ones remain to find.
fn has_dot_segment(path: &[u8]) -> bool {
    path.split(|&c| c == b'/')
        .any(|segment| segment == b"." || segment == b"..")
}

/// Checks a path without building the normalised form: `Ok` exactly when
/// [`normalise_path`] would succeed.
///
/// # Errors
/// The first rule of SPEC §9 the path breaks.
pub fn check_path(raw: &str) -> Result<(), PathError> {
    // Dot segments are judged on the decoded form, which only differs from
    // the raw one in unreserved characters (never `.` or `/`), so the raw
    // bytes answer the same.
    walk(raw.as_bytes(), |_| {})?;
    if has_dot_segment(raw.as_bytes()) {
        return Err(PathError::DotSegment);
    }
    Ok(())
}

/// The path in its one normal form (SPEC §9): percent-encoded unreserved
/// characters decoded, the hex digits of every other escape upper-cased.
/// Borrowed when nothing changes.
///
/// # Errors
/// A `;`, a backslash, a dot-segment, an encoded `.`, `/`, `\`, `;`, `%` or
/// control character, a broken escape, a byte outside visible ASCII, or a
/// path that does not start with `/`.
#[cfg(feature = "alloc")]
pub fn normalise_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    // Nearly every path is plain: one table lookup a byte settles it.
    if is_plain(raw.as_bytes()) {
        return Ok(Cow::Borrowed(raw));
    }
    let changed = walk(raw.as_bytes(), |_| {})?;
    if has_dot_segment(raw.as_bytes()) {
        return Err(PathError::DotSegment);
    }
    if !changed {
        return Ok(Cow::Borrowed(raw));
    }
    let mut normal = String::with_capacity(raw.len());
    // The walk succeeded once, so it succeeds again; every emitted byte is
    // visible ASCII, so pushing it as a char is exact.
    walk(raw.as_bytes(), |byte| normal.push(char::from(byte)))?;
    Ok(Cow::Owned(normal))
}

/// An origin-form request target (`/path?query`, RFC 9112 §3.2.1) as a
/// gateway reports it in `X-Original-URI` or `X-Forwarded-Uri`, split into
/// path and query; `None` unless every byte is visible ASCII, it starts with
/// `/` and it has no fragment (SPEC §9: a source must be readable).
pub fn split_origin_form(raw: &[u8]) -> Option<(&str, Option<&str>)> {
    if raw.first() != Some(&b'/')
        || raw
            .iter()
            .any(|&c| !(0x21..=0x7E).contains(&c) || c == b'#')
    {
        return None;
    }
    let text = core::str::from_utf8(raw).ok()?;
    Some(match text.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (text, None),
    })
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        assert_eq!(normalise_path("/v1/%6Donitor").unwrap(), "/v1/monitor");
        assert_eq!(normalise_path("/v1/%6donitor").unwrap(), "/v1/monitor");
        assert_eq!(normalise_path("/v1/caf%c3%a9").unwrap(), "/v1/caf%C3%A9");
        assert_eq!(normalise_path("/v1/%7E%2d%5F").unwrap(), "/v1/~-_");
        assert_eq!(normalise_path("/v1/a%20b").unwrap(), "/v1/a%20b");
        assert!(matches!(
            normalise_path("/v1/monitor"),
            Ok(Cow::Borrowed(_))
        ));
        assert!(matches!(normalise_path("/v1/a%20b"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn confusing_paths_are_refused() {
        let cases = [
            ("/v1/monitor;x=1", PathError::Semicolon),
            ("/v1/monitor%3bx", PathError::Semicolon),
            ("/v1/../admin", PathError::DotSegment),
            ("/v1/./x", PathError::DotSegment),
            ("/v1/..", PathError::DotSegment),
            ("/v1\\x", PathError::Backslash),
            ("/v1/%2e%2e/admin", PathError::EncodedSeparator),
            ("/v1/a%2Fb", PathError::EncodedSeparator),
            ("/v1/%5c", PathError::EncodedSeparator),
            ("/v1/%00", PathError::EncodedControl),
            ("/v1/%0a", PathError::EncodedControl),
            ("/v1/%7F", PathError::EncodedControl),
            ("/v1/%256D", PathError::EncodedPercent),
            ("/v1/%", PathError::BadEscape),
            ("/v1/%4", PathError::BadEscape),
            ("/v1/%zz", PathError::BadEscape),
            ("v1/x", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("/v1/\u{e9}", PathError::InvalidCharacter),
            ("/v1/a b", PathError::InvalidCharacter),
        ];
        for (path, error) in cases {
            assert_eq!(normalise_path(path), Err(error), "{path}");
            assert_eq!(check_path(path), Err(error), "{path}");
        }
    }

    #[test]
    fn ordinary_paths_pass_unchanged() {
        for path in [
            "/",
            "/v1/monitor",
            "/v1/a.b",
            "/v1/..x",
            "/v1/x..",
            "/v1//x",
            "/v1/a:b@c",
        ] {
            assert_eq!(normalise_path(path).unwrap(), path);
            assert_eq!(check_path(path), Ok(()));
        }
    }

    #[test]
    fn origin_forms_split_or_are_unreadable() {
        assert_eq!(
            split_origin_form(b"/v1/x?a=b"),
            Some(("/v1/x", Some("a=b")))
        );
        assert_eq!(split_origin_form(b"/v1/x"), Some(("/v1/x", None)));
        assert_eq!(split_origin_form(b"/v1/x?"), Some(("/v1/x", Some(""))));
        for unreadable in [
            &b""[..],
            b"v1/x",
            b"http://h/v1",
            b"/v1/a b",
            b"/v1/\xc3\xa9",
            b"/v1#f",
            b"/v1/\x00",
        ] {
            assert_eq!(split_origin_form(unreadable), None, "{unreadable:?}");
        }
    }

    #[test]
    fn a_decoded_dot_segment_cannot_appear() {
        // `%2E` is refused rather than decoded, so decoding never makes `..`.
        assert_eq!(normalise_path("/v1/.%2e"), Err(PathError::EncodedSeparator));
    }
}
