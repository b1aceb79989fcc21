//! `X-Request-Id` (SPEC §6): a client's id is kept if it is
//! `[A-Za-z0-9._-]{1,64}` (so it is safe in logs and headers), otherwise
//! one is made.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;

/// The request's id: the client's, if acceptable, else a new `req_…`.
pub fn request_id(headers: &HeaderMap) -> String {
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

/// `req_`, 8 hex digits drawn once per process, and a 16-digit counter:
/// unique within a process and, with overwhelming odds, across nodes. Ids
/// are for correlating logs, not secrets, so the OS generator is asked once
/// rather than once per request (a system call on the hot path).
fn new_request_id() -> String {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut random = [0u8; 4];
        // Without randomness, the clock still tells processes apart.
        if getrandom::fill(&mut random).is_err() {
            random = (jiff::Timestamp::now().as_nanosecond() as u32).to_le_bytes();
        }
        u32::from_le_bytes(random)
    });
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("req_{prefix:08x}{count:016x}")
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
