//! When and how long to wait before sending a request again.
//!
//! Only three outcomes are retried: 429 and 503 (the server says "later",
//! usually with `Retry-After`) and a connection that could not be made
//! (nothing was sent). Everything else, a 401 above all, fails the same way
//! every time, and a retry would only add load and latency. Only requests
//! that are safe to repeat are retried at all; a key-creating POST that
//! timed out may have created a key, and a second one would be an orphan.

use std::time::Duration;

use http::HeaderMap;

/// How failed requests are retried.
///
/// ```
/// # use std::time::Duration;
/// let mut policy = cloro_client::RetryPolicy::default();
/// policy.max_attempts = 3;
/// policy.max_elapsed = Duration::from_secs(10);
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Sends at most, the first one included; 1 turns retries off.
    pub max_attempts: u32,
    /// The wait before the first retry when the server names none; it
    /// doubles for each retry after that.
    pub initial_backoff: Duration,
    /// The longest computed wait (a `Retry-After` may ask for more).
    pub max_backoff: Duration,
    /// No retry is scheduled to start later than this after the first send;
    /// the last error is returned instead. (The retry itself may then take
    /// up to the request timeout.)
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, 250 ms doubling to at most 8 s, 30 s in all.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            max_elapsed: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry number `retry` (1 for the first retry).
    ///
    /// With `Retry-After`, its value plus up to a tenth more (at most
    /// 250 ms), so that clients told the same second do not all return in
    /// the same millisecond. Without it, "equal jitter": half the
    /// exponential step fixed, half random, which spreads clients out while
    /// keeping a floor under the wait.
    pub(crate) fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(after) => after + jitter((after / 10).min(Duration::from_millis(250))),
            None => {
                let doublings = retry.saturating_sub(1).min(31);
                let step = self
                    .initial_backoff
                    .saturating_mul(1u32 << doublings)
                    .min(self.max_backoff);
                step / 2 + jitter(step / 2)
            }
        }
    }
}

/// `Retry-After` in seconds (SPEC §5 sends only that form); the HTTP-date
/// form is ignored, so the backoff applies.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    text.trim().parse().ok().map(Duration::from_secs)
}

/// A uniformly random duration in `0..=max`.
fn jitter(max: Duration) -> Duration {
    let max_nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if max_nanos == 0 {
        return Duration::ZERO;
    }
    // Without OS randomness the wait is merely less spread out, never wrong.
    let random = getrandom::u64().unwrap_or(0);
    Duration::from_nanos(match max_nanos.checked_add(1) {
        Some(bound) => random % bound,
        None => random,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            ..RetryPolicy::default()
        };
        for _ in 0..100 {
            let first = policy.delay(1, None);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let second = policy.delay(2, None);
            assert!(second >= Duration::from_millis(100) && second <= Duration::from_millis(200));
            let capped = policy.delay(30, None);
            assert!(capped >= Duration::from_millis(175) && capped <= Duration::from_millis(350));
        }
    }

    #[test]
    fn retry_after_is_honoured() {
        let policy = RetryPolicy::default();
        for _ in 0..100 {
            let wait = policy.delay(1, Some(Duration::from_secs(1)));
            assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_millis(1100));
            let long = policy.delay(1, Some(Duration::from_secs(20)));
            assert!(long >= Duration::from_secs(20) && long <= Duration::from_millis(20_250));
        }
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }
}
