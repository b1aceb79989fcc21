//! `X-Request-Id` (SPEC §6): a client's id is kept if it is
//! `[A-Za-z0-9._-]{1,64}` (so it is safe in logs and headers), otherwise
//! one is made.

use http::HeaderMap;

/// The request's id: the client's, if acceptable, else a new `req_…`.
pub(crate) fn request_id(headers: &HeaderMap) -> String {
    let offered = headers.get("x-request-id").map(http::HeaderValue::as_bytes);
    match offered {
        Some(id)
            if (1..=64).contains(&id.len())
                && id
                    .iter()
                    .all(|&c| c.is_ascii_alphanumeric() || b"._-".contains(&c)) =>
        {
            String::from_utf8_lossy(id).into_owned()
        }
        _ => new_request_id(),
    }
}

fn new_request_id() -> String {
    let mut random = [0u8; 12];
    // A failed RNG still yields a unique-enough id from the clock; ids are
    // for correlation, not security.
    if getrandom::fill(&mut random).is_err() {
        let nanos = jiff::Timestamp::now().as_nanosecond().to_le_bytes();
        random.copy_from_slice(&nanos[..12]);
    }
    let mut id = String::with_capacity(28);
    id.push_str("req_");
    for byte in random {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_good_ids_and_replaces_bad_ones() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", "abc-123.X_y".parse().unwrap());
        assert_eq!(request_id(&headers), "abc-123.X_y");
        headers.insert("x-request-id", "has space".parse().unwrap());
        let replaced = request_id(&headers);
        assert!(
            replaced.starts_with("req_") && replaced.len() == 28,
            "{replaced}"
        );
        headers.insert("x-request-id", "a".repeat(65).parse().unwrap());
        assert_ne!(request_id(&headers).len(), 65);
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }
}
