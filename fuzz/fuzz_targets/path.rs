//! Path normalisation (SPEC §9) on arbitrary bytes. `normalise_path` never
//! panics, accepts exactly what an independent reading of the rules
//! accepts, and `check_path` gives the same verdict. Its output is a fixed
//! point (normalising again changes nothing and borrows), means the same
//! bytes as the input once every escape is decoded, and holds none of the
//! spellings upstreams read differently: `;`, `\`, a dot-segment, an
//! encoded `.`, `/`, `\`, `%`, `;` or control character, a lower-case hex
//! escape, an escaped unreserved character. `split_origin_form` splits
//! exactly the visible-ASCII origin forms and loses no byte.

#![no_main]

use std::borrow::Cow;

use cloro_auth_core::{check_path, normalise_path, split_origin_form};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    check_origin_form(raw);
    let Ok(text) = std::str::from_utf8(raw) else {
        return;
    };
    let normal = normalise_path(text);
    assert_eq!(
        check_path(text),
        normal.as_ref().map(|_| ()).map_err(|e| *e),
        "check_path and normalise_path disagree on {text:?}"
    );
    assert_eq!(
        normal.is_ok(),
        reference_accepts(raw),
        "normalise_path and the SPEC §9 reference disagree on {text:?}: {normal:?}"
    );
    let Ok(normal) = normal else {
        return;
    };
    assert_eq!(matches!(normal, Cow::Borrowed(_)), normal == text);

    // A fixed point, found without allocating.
    let again = normalise_path(&normal).expect("a normal path is refused");
    assert!(matches!(again, Cow::Borrowed(_)) && again == normal);
    assert_eq!(check_path(&normal), Ok(()));

    assert_normal_form(&normal);
    assert_eq!(
        decode_all(normal.as_bytes()),
        decode_all(raw),
        "{text:?} -> {normal:?} changed what the path means"
    );
});

/// What the normal form may not hold.
fn assert_normal_form(normal: &str) {
    let bytes = normal.as_bytes();
    assert!(bytes.first() == Some(&b'/'));
    assert!(bytes.iter().all(|c| (0x21..=0x7E).contains(c)));
    assert!(
        !normal.contains(';') && !normal.contains('\\'),
        "{normal:?}"
    );
    assert!(
        !normal
            .split('/')
            .any(|segment| segment == "." || segment == ".."),
        "{normal:?} has a dot-segment"
    );
    let upper = normal.to_ascii_uppercase();
    for refused in ["%2E", "%2F", "%5C", "%25", "%3B"] {
        assert!(!upper.contains(refused), "{normal:?} holds {refused}");
    }
    let mut at = 0;
    while let Some(offset) = normal[at..].find('%') {
        let escape = &bytes[at + offset..];
        let digits = escape.get(1..3).expect("a cut escape in the output");
        assert!(
            digits
                .iter()
                .all(|c| matches!(c, b'0'..=b'9' | b'A'..=b'F')),
            "{normal:?}: an escape that is not two upper-case hex digits"
        );
        let byte =
            u8::from_str_radix(std::str::from_utf8(digits).unwrap_or(""), 16).expect("hex digits");
        assert!(
            !is_unreserved(byte),
            "{normal:?}: an escaped unreserved character"
        );
        assert!(
            !(byte < 0x20 || byte == 0x7F),
            "{normal:?}: an escaped control"
        );
        at += offset + 3;
    }
}

/// SPEC §9 read once more, rule by rule, on the decoded bytes.
fn reference_accepts(raw: &[u8]) -> bool {
    if raw.first() != Some(&b'/') || raw.iter().any(|c| !(0x21..=0x7E).contains(c)) {
        return false;
    }
    if raw.contains(&b';') || raw.contains(&b'\\') {
        return false;
    }
    let mut decoded = Vec::new();
    let mut rest = raw;
    while let Some((&c, tail)) = rest.split_first() {
        if c != b'%' {
            decoded.push(c);
            rest = tail;
            continue;
        }
        let Some(byte) = tail
            .get(..2)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .filter(|hex| hex.bytes().all(|c| c.is_ascii_hexdigit()))
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        else {
            return false;
        };
        if matches!(byte, b'.' | b'/' | b'\\' | b';' | b'%') || byte < 0x20 || byte == 0x7F {
            return false;
        }
        // Only unreserved escapes are decoded; a kept one cannot make a
        // segment `.` or `..`, so a placeholder stands for it.
        decoded.push(if is_unreserved(byte) { byte } else { b'%' });
        rest = &tail[2..];
    }
    !decoded
        .split(|&c| c == b'/')
        .any(|segment| segment == b"." || segment == b"..")
}

/// Every escape decoded (what an upstream finally sees); broken escapes
/// are kept as they are.
fn decode_all(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut at = 0;
    while at < raw.len() {
        let byte = raw
            .get(at + 1..at + 3)
            .filter(|_| raw[at] == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .filter(|hex| hex.bytes().all(|c| c.is_ascii_hexdigit()))
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match byte {
            Some(byte) => {
                out.push(byte);
                at += 3;
            }
            None => {
                out.push(raw[at]);
                at += 1;
            }
        }
    }
    out
}

/// RFC 3986 §2.3.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// `split_origin_form`: `Some` exactly for `/…` of visible ASCII without
/// `#`, split at the first `?`, every byte kept.
fn check_origin_form(raw: &[u8]) {
    let readable =
        raw.first() == Some(&b'/') && raw.iter().all(|&c| (0x21..=0x7E).contains(&c) && c != b'#');
    match split_origin_form(raw) {
        None => assert!(!readable, "{raw:?} refused"),
        Some((path, query)) => {
            assert!(readable, "{raw:?} accepted");
            assert!(path.starts_with('/') && !path.contains('?'));
            let joined = match query {
                Some(query) => format!("{path}?{query}"),
                None => path.to_owned(),
            };
            assert_eq!(joined.as_bytes(), raw);
        }
    }
}
