//! A successful answer and what its headers say about the caller's limits
//! (SPEC §5), so a program can slow down before it is refused.

use std::time::Duration;

use http::{HeaderMap, StatusCode};

use crate::retry::server_delay;

/// The key's (or account's) rate-limit state after this request, from
/// `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per period.
    pub limit: u64,
    /// Requests allowed right now.
    pub remaining: u64,
    /// Time until the allowance is full again (at most
    /// [`MAX_SERVER_DELAY`](crate::MAX_SERVER_DELAY), whatever the server
    /// says, so adding it to an `Instant` cannot overflow).
    pub reset: Duration,
}

impl RateLimit {
    /// The state in `headers`, when all three fields are there and numeric.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        Some(RateLimit {
            limit: number(headers, "x-ratelimit-limit")?,
            remaining: number(headers, "x-ratelimit-remaining")?,
            reset: server_delay(number(headers, "x-ratelimit-reset")?),
        })
    }
}

/// The key's concurrency state, from `X-Concurrent-*` (keys with a
/// concurrency limit only).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConcurrencyLimit {
    /// Requests allowed in flight at once.
    pub limit: u64,
    /// Requests in flight, this one included.
    pub current: u64,
    /// How many more may start now.
    pub remaining: u64,
}

impl ConcurrencyLimit {
    /// The state in `headers`, when all three fields are there and numeric.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        Some(ConcurrencyLimit {
            limit: number(headers, "x-concurrent-limit")?,
            current: number(headers, "x-concurrent-current")?,
            remaining: number(headers, "x-concurrent-remaining")?,
        })
    }
}

/// What every answer says besides its body.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseMeta {
    /// The HTTP status.
    pub status: StatusCode,
    /// The `X-Request-Id` the server gave the request.
    pub request_id: Option<String>,
    /// Rate-limit state, where the limiter ran (`/v1/*` answers).
    pub rate_limit: Option<RateLimit>,
    /// Concurrency state, for keys with a concurrency limit.
    pub concurrency: Option<ConcurrencyLimit>,
    /// How many times the request was sent, retries included.
    pub attempts: u32,
    /// Whether the server answered with its stored answer to an earlier
    /// request with the same `Idempotency-Key` (`Idempotent-Replayed:
    /// true`, SPEC §11): nothing was changed this time.
    pub replayed: bool,
}

impl ResponseMeta {
    pub(crate) fn new(status: StatusCode, headers: &HeaderMap, attempts: u32) -> Self {
        ResponseMeta {
            status,
            request_id: request_id(headers),
            rate_limit: RateLimit::from_headers(headers),
            concurrency: ConcurrencyLimit::from_headers(headers),
            attempts,
            replayed: headers
                .get("idempotent-replayed")
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.trim().eq_ignore_ascii_case("true")),
        }
    }

    /// The meta of an answer the SDK knew without asking (a revoke-leaked
    /// call with nothing that could be a key): `attempts` 0 says that no
    /// request was sent.
    pub(crate) fn not_sent() -> Self {
        ResponseMeta::new(StatusCode::OK, &HeaderMap::new(), 0)
    }
}

/// A successful answer: the decoded body and its [`ResponseMeta`].
#[derive(Clone, Debug)]
pub struct Response<T> {
    value: T,
    meta: ResponseMeta,
}

impl<T> Response<T> {
    pub(crate) fn new(value: T, meta: ResponseMeta) -> Self {
        Response { value, meta }
    }

    /// The body.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The body, owned.
    pub fn into_value(self) -> T {
        self.value
    }

    /// Status, request id, limits and attempts.
    pub fn meta(&self) -> &ResponseMeta {
        &self.meta
    }

    /// The rate-limit state after this request, where the server reported one.
    pub fn rate_limit(&self) -> Option<&RateLimit> {
        self.meta.rate_limit.as_ref()
    }

    /// The body and the metadata, apart.
    pub fn into_parts(self) -> (T, ResponseMeta) {
        (self.value, self.meta)
    }

    /// The same answer with its body changed by `f`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Response<U> {
        Response {
            value: f(self.value),
            meta: self.meta,
        }
    }
}

/// `X-Request-Id`, when it is text.
pub(crate) fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

fn number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_from_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-limit", "1000".parse().unwrap());
        headers.insert("x-ratelimit-remaining", "999".parse().unwrap());
        assert_eq!(RateLimit::from_headers(&headers), None);
        headers.insert("x-ratelimit-reset", "4".parse().unwrap());
        assert_eq!(
            RateLimit::from_headers(&headers),
            Some(RateLimit {
                limit: 1000,
                remaining: 999,
                reset: Duration::from_secs(4)
            })
        );
        headers.insert("x-concurrent-limit", "10".parse().unwrap());
        headers.insert("x-concurrent-current", "1".parse().unwrap());
        headers.insert("x-concurrent-remaining", "nine".parse().unwrap());
        assert_eq!(ConcurrencyLimit::from_headers(&headers), None);
        assert!(!ResponseMeta::new(StatusCode::OK, &headers, 1).replayed);
        headers.insert("idempotent-replayed", "true".parse().unwrap());
        assert!(ResponseMeta::new(StatusCode::OK, &headers, 1).replayed);
        headers.insert("x-ratelimit-reset", u64::MAX.to_string().parse().unwrap());
        assert_eq!(
            RateLimit::from_headers(&headers).map(|limit| limit.reset),
            Some(crate::MAX_SERVER_DELAY)
        );
    }
}
