//! `LogLimit`: at most one log line per interval for one kind of warning
//! (SPEC §9, "Logs can't be flooded"). A warning a client can provoke (a
//! wrong admin token, a failed store lookup) would otherwise write a line
//! per request, and a flood of requests would become a flood of logs that
//! hides everything else and fills the disk.
//!
//! Each kind is a `static` at its call site, so kinds never share a budget
//! and no registry has to be looked up on the hot path:
//!
//! ```
//! use cloro_keystore::LogLimit;
//!
//! static LOOKUP_FAILED: LogLimit = LogLimit::per_second();
//!
//! # let error = "timeout";
//! if let Some(suppressed) = LOOKUP_FAILED.admit() {
//!     tracing::warn!(%error, suppressed, "key lookup failed; answering AUTH_UNAVAILABLE");
//! }
//! ```
//!
//! The line that is written carries `suppressed`: how many of its kind were
//! dropped since the previous line, so the rate of the flood stays visible.
//! Lines dropped after the last one written are counted into the next.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The budget of one kind of log line: one line per `interval`.
#[derive(Debug)]
pub struct LogLimit {
    interval: Duration,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    /// When the last line was admitted; `None` before the first.
    last_line: Option<Instant>,
    /// Lines refused since then.
    suppressed: u64,
}

impl LogLimit {
    /// One line per second: SPEC §9's budget for client-provoked warnings.
    pub const fn per_second() -> Self {
        LogLimit::new(Duration::from_secs(1))
    }

    /// One line per `interval`.
    pub const fn new(interval: Duration) -> Self {
        LogLimit {
            interval,
            window: Mutex::new(Window {
                last_line: None,
                suppressed: 0,
            }),
        }
    }

    /// Whether a line may be written now: `Some(suppressed)`, the number
    /// of lines refused since the last one, if so; `None` (and one more
    /// suppressed) if not.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    /// [`Self::admit`] at `now`, so that tests move time instead of
    /// sleeping. A `now` before the last line (two threads that read the
    /// clock in one order and lock in the other) counts as within it.
    pub fn admit_at(&self, now: Instant) -> Option<u64> {
        // Nothing panics while the lock is held; should something have, the
        // counts are still coherent, so a poisoned lock is used as it is.
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        match window.last_line {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                window.suppressed = window.suppressed.saturating_add(1);
                None
            }
            _ => {
                window.last_line = Some(now);
                Some(core::mem::take(&mut window.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_carries_the_count_suppressed() {
        let limit = LogLimit::per_second();
        let start = Instant::now();
        assert_eq!(limit.admit_at(start), Some(0), "the first line is written");
        for ms in [1, 10, 500, 999] {
            assert_eq!(limit.admit_at(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(limit.admit_at(start + Duration::from_secs(1)), Some(4));
        assert_eq!(limit.admit_at(start + Duration::from_millis(1500)), None);
        // A quiet spell: the next line comes at once, with what it missed.
        assert_eq!(limit.admit_at(start + Duration::from_secs(60)), Some(1));
        assert_eq!(limit.admit_at(start + Duration::from_secs(61)), Some(0));
    }

    #[test]
    fn a_clock_read_before_the_last_line_counts_as_within_it() {
        let limit = LogLimit::new(Duration::from_millis(100));
        let start = Instant::now() + Duration::from_secs(1);
        assert_eq!(limit.admit_at(start), Some(0));
        assert_eq!(limit.admit_at(start - Duration::from_millis(500)), None);
        assert_eq!(limit.admit_at(start + Duration::from_millis(100)), Some(1));
    }

    #[test]
    fn kinds_have_budgets_of_their_own() {
        static WRONG_TOKEN: LogLimit = LogLimit::per_second();
        static LOOKUP_FAILED: LogLimit = LogLimit::per_second();
        let now = Instant::now();
        assert_eq!(WRONG_TOKEN.admit_at(now), Some(0));
        assert_eq!(WRONG_TOKEN.admit_at(now), None);
        assert_eq!(LOOKUP_FAILED.admit_at(now), Some(0));
    }

    #[test]
    fn a_flood_from_many_threads_writes_one_line_and_counts_the_rest() {
        let limit = LogLimit::per_second();
        let now = Instant::now();
        let admitted: Vec<Option<u64>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| (0..250).map(|_| limit.admit_at(now)).collect::<Vec<_>>()))
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| worker.join().unwrap())
                .collect()
        });
        assert_eq!(admitted.iter().flatten().count(), 1);
        assert_eq!(limit.admit_at(now + Duration::from_secs(1)), Some(999));
    }
}
