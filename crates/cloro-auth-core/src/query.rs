//! Spotting an API key in a URL query (SPEC §3, RFC 6750 §5.3). Such a
//! request is refused before anything else and its query is never logged:
//! URLs end up in proxy logs, browser history and referrers.

/// Parameter names that carry credentials by convention, compared without case.
const CREDENTIAL_PARAMS: [&[u8]; 5] = [b"access_token", b"api_key", b"apikey", b"key", b"token"];
const KEY_PREFIXES: [&[u8]; 2] = [b"sk_live_", b"sk_test_"];

/// Whether a query string (without the `?`) carries a credential: a parameter
/// named `access_token`, `api_key`, `apikey`, `key` or `token` in any case, or
/// any value starting `sk_live_` or `sk_test_`. Names and values are compared
/// after percent-decoding, so `%73k_live_…` is caught too.
pub fn query_carries_key(query: &[u8]) -> bool {
    query.split(|&c| c == b'&').any(|pair| {
        let (name, value) = match pair.iter().position(|&c| c == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        CREDENTIAL_PARAMS
            .iter()
            .any(|param| decoded_eq_ignore_case(name, param))
            || KEY_PREFIXES
                .iter()
                .any(|prefix| decoded_starts_with(value, prefix))
    })
}

/// Percent-decoding (with `+` as space, as forms send it), byte by byte.
fn decoded(raw: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut at = 0;
    core::iter::from_fn(move || {
        let c = *raw.get(at)?;
        at += 1;
        if c == b'+' {
            return Some(b' ');
        }
        if c == b'%'
            && let (Some(hi), Some(lo)) = (
                raw.get(at).and_then(hex_value),
                raw.get(at + 1).and_then(hex_value),
            )
        {
            at += 2;
            return Some((hi << 4) | lo);
        }
        Some(c)
    })
}

fn hex_value(c: &u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn decoded_eq_ignore_case(raw: &[u8], expected: &[u8]) -> bool {
    let mut bytes = decoded(raw);
    expected
        .iter()
        .all(|e| bytes.next().is_some_and(|c| c.eq_ignore_ascii_case(e)))
        && bytes.next().is_none()
}

fn decoded_starts_with(raw: &[u8], prefix: &[u8]) -> bool {
    let mut bytes = decoded(raw);
    prefix.iter().all(|p| bytes.next() == Some(*p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names_in_any_case() {
        for query in [
            "access_token=x",
            "API_KEY=x",
            "apikey",
            "a=1&Key=2",
            "TOKEN=",
            "%6Bey=1",
            "ToKeN=a&b=c",
        ] {
            assert!(query_carries_key(query.as_bytes()), "{query}");
        }
    }

    #[test]
    fn key_like_values_under_any_name() {
        for query in [
            "q=sk_live_abc",
            "x=1&y=sk_test_",
            "q=%73k_live_1",
            "q=sk%5Ftest_9",
        ] {
            assert!(query_carries_key(query.as_bytes()), "{query}");
        }
    }

    #[test]
    fn ordinary_queries_pass() {
        for query in [
            "",
            "limit=10&cursor=abc",
            "keys=1",
            "monkey=1",
            "q=SK_LIVE_x",
            "q=sk_prod_x",
            "tokens=2",
            "%zz=1",
        ] {
            assert!(!query_carries_key(query.as_bytes()), "{query}");
        }
    }
}
