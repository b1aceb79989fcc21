//! When and how long to wait before sending a request again.
//!
//! Only three outcomes are retried: 429 and 503 (the server says "later",
//! usually with `Retry-After`) and a connection that could not be made
//! (nothing was sent). Everything else, a 401 above all, fails the same way
//! every time, and a retry would only add load and latency. Only requests
//! that are safe to repeat are retried at all: a key-creating POST without
//! an `Idempotency-Key` that timed out may have created a key, and a second
//! one would be an orphan. With one (the SDK sends its own on create,
//! rotate and credits, the same on every attempt) the server acts once and
//! answers repeats with the first answer, so those are retried; and a 409
//! `IDEMPOTENCY_KEY_REUSED` to such a repeat (the first attempt is still
//! running) is waited out like a 503.
//!
//! A 429 `QUOTA_EXCEEDED` is retried only when it names a wait that fits
//! the budget: a quota that starts again next month, or credits that never
//! refill (no `Retry-After` at all), come back to the caller at once.
//!
//! A server's numbers are not trusted to be sane (SPEC §9, "the SDK
//! survives a hostile server"): `Retry-After` may be `18446744073709551615`,
//! 10^30 or a date in the year 9999. Every wait read from a server is
//! capped at [`MAX_SERVER_DELAY`], every sum of durations saturates or is
//! checked, and a retry is made only when its wait ends within
//! [`RetryPolicy::max_elapsed`]; a longer wait is handed to the caller at
//! once, in the error, instead of being slept.

use std::time::Duration;

use http::HeaderMap;
use jiff::Timestamp;
use jiff::fmt::rfc2822::DateTimeParser;

/// The longest wait the SDK takes from a server: `Retry-After`,
/// `details.retry_after` and `X-RateLimit-Reset` above it are read as this.
///
/// 366 days: longer than anything the server can mean (a monthly quota
/// resets within 31 days, SPEC §11), so an honest answer is never cut
/// short in practice, and far below the point where a caller's
/// `Instant::now() + wait` could overflow and panic on any platform (macOS
/// counts about 584 years of nanoseconds from boot).
pub const MAX_SERVER_DELAY: Duration = Duration::from_secs(366 * 24 * 60 * 60);

/// The most jitter added to a `Retry-After` wait.
const MAX_RETRY_AFTER_JITTER: Duration = Duration::from_millis(250);

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
    /// the last error is returned instead, at once. This is also the
    /// longest the SDK ever sleeps between attempts, whatever a server's
    /// `Retry-After` says. (The retry itself may then take up to the
    /// request timeout.)
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

    /// The wait before the next send, after `attempts` sends and `elapsed`
    /// since the first; `None` when there is to be no next send: the
    /// attempts are spent, or the wait would end past
    /// [`RetryPolicy::max_elapsed`].
    pub(crate) fn next_wait(
        &self,
        attempts: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        let wait = self.delay(attempts, retry_after);
        let ends = elapsed.checked_add(wait)?;
        (ends <= self.max_elapsed).then_some(wait)
    }

    /// The wait before retry number `retry` (1 for the first retry).
    ///
    /// With `Retry-After`, its value (at most [`MAX_SERVER_DELAY`]) plus up
    /// to a tenth more (at most 250 ms), so that clients told the same
    /// second do not all return in the same millisecond. Without it, "equal
    /// jitter": half the exponential step fixed, half random, which spreads
    /// clients out while keeping a floor under the wait. Saturating
    /// throughout: a policy of `Duration::MAX` is odd, not a panic.
    pub(crate) fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(after) => {
                let after = after.min(MAX_SERVER_DELAY);
                after.saturating_add(jitter((after / 10).min(MAX_RETRY_AFTER_JITTER)))
            }
            None => {
                let doublings = retry.saturating_sub(1).min(31);
                let step = self
                    .initial_backoff
                    .saturating_mul(1u32 << doublings)
                    .min(self.max_backoff);
                (step / 2).saturating_add(jitter(step / 2))
            }
        }
    }
}

/// `seconds` from a server (`details.retry_after`, `X-RateLimit-Reset`)
/// as a wait of at most [`MAX_SERVER_DELAY`].
pub(crate) fn server_delay(seconds: u64) -> Duration {
    Duration::from_secs(seconds).min(MAX_SERVER_DELAY)
}

/// `Retry-After` as a wait from now; see [`parse_retry_after`].
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(text, Timestamp::now())
}

/// `Retry-After` (RFC 9110 §10.2.3), delay-seconds or an HTTP-date, as a
/// wait from `now` of at most [`MAX_SERVER_DELAY`]. Anything else
/// (negative, fractional, `+5`, garbage) is `None`, and the backoff applies.
/// SPEC §5 servers send seconds; dates come from proxies and CDNs in front.
pub(crate) fn parse_retry_after(text: &str, now: Timestamp) -> Option<Duration> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        // The grammar (1*DIGIT) has no upper bound: a number past u64 still
        // means "a very long time", not "no answer", so it saturates. All
        // digits, so overflow is the only way parsing can fail.
        let seconds = text.parse::<u64>().unwrap_or(u64::MAX);
        return Some(server_delay(seconds));
    }
    // IMF-fixdate (`Wed, 21 Oct 2015 07:28:00 GMT`) is RFC 2822 with the
    // `GMT` zone; the obsolete RFC 850 and asctime forms are not read.
    static HTTP_DATE: DateTimeParser = DateTimeParser::new();
    let date = HTTP_DATE.parse_timestamp(text).ok()?;
    // A date already past means "now": the conversion fails for negatives.
    let wait = Duration::try_from(date.duration_since(now)).unwrap_or(Duration::ZERO);
    Some(wait.min(MAX_SERVER_DELAY))
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
        headers.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn absurd_retry_after_values_are_capped_or_ignored() {
        let now: Timestamp = "2026-01-15T12:00:00Z".parse().unwrap();
        let parse = |text: &str| parse_retry_after(text, now);
        assert_eq!(parse(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse(&u64::MAX.to_string()), Some(MAX_SERVER_DELAY));
        assert_eq!(
            parse(&format!("1{}", "0".repeat(30))),
            Some(MAX_SERVER_DELAY)
        );
        assert_eq!(parse(&"9".repeat(10_000)), Some(MAX_SERVER_DELAY));
        for bad in [
            "",
            "-1",
            "+5",
            "1.5",
            "1e9",
            "0x10",
            "5 s",
            "garbage",
            "\u{1b}[2J",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        // HTTP-dates: ahead, past (retry now), far future (capped), wrong weekday.
        assert_eq!(
            parse("Thu, 15 Jan 2026 12:00:30 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(
            parse("Thu, 30 Dec 9999 12:00:00 GMT"),
            Some(MAX_SERVER_DELAY)
        );
        // Past the last instant the clock library holds: unreadable, so
        // the backoff applies.
        assert_eq!(parse("Fri, 31 Dec 9999 23:59:59 GMT"), None);
        assert_eq!(parse("Mon, 15 Jan 2026 12:00:30 GMT"), None);
        assert_eq!(server_delay(u64::MAX), MAX_SERVER_DELAY);
    }

    #[test]
    fn waits_never_overflow_and_stay_in_the_budget() {
        let policy = RetryPolicy::default();
        // The wait is slept only when it ends within max_elapsed.
        assert_eq!(
            policy.next_wait(1, Duration::ZERO, Some(Duration::from_secs(60))),
            None
        );
        assert_eq!(
            policy.next_wait(1, Duration::ZERO, Some(Duration::MAX)),
            None
        );
        assert_eq!(
            policy.next_wait(1, Duration::MAX, Some(Duration::from_secs(1))),
            None
        );
        assert_eq!(policy.next_wait(4, Duration::ZERO, None), None);
        let wait = policy.next_wait(1, Duration::from_secs(5), Some(Duration::from_secs(2)));
        assert!(wait.is_some_and(|wait| wait >= Duration::from_secs(2)));

        // A policy of extremes is odd, not a panic.
        let extreme = RetryPolicy {
            max_attempts: u32::MAX,
            initial_backoff: Duration::MAX,
            max_backoff: Duration::MAX,
            max_elapsed: Duration::MAX,
        };
        for retry in [0, 1, 2, 31, 32, u32::MAX] {
            assert!(extreme.delay(retry, None) <= Duration::MAX);
            assert!(
                extreme.delay(retry, Some(Duration::MAX))
                    <= MAX_SERVER_DELAY + MAX_RETRY_AFTER_JITTER
            );
            let _ = extreme.next_wait(retry, Duration::MAX, Some(Duration::MAX));
            let _ = extreme.next_wait(retry, Duration::ZERO, None);
        }
    }
}
