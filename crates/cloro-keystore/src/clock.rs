//! Where the time comes from: the system clock, or a clock a test sets and
//! moves. The verifier, its housekeeping, the guard and the admin API all
//! read one `Clock`, so a test of expiry, rotation grace or a refilling
//! allowance moves time instead of sleeping through it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use jiff::{SignedDuration, Timestamp};

/// A source of the current time. Cloning shares it: moving a manual clock
/// moves every clone.
#[derive(Clone, Default)]
pub struct Clock {
    /// Nanoseconds since the Unix epoch when manual; `None` reads the system.
    manual: Option<Arc<AtomicI64>>,
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.manual {
            None => f.write_str("Clock::system"),
            Some(_) => write!(f, "Clock::manual({})", self.now()),
        }
    }
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock { manual: None }
    }

    /// A clock that stands at `at` until moved.
    pub fn manual(at: Timestamp) -> Self {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(nanos(at)))),
        }
    }

    /// The time now.
    pub fn now(&self) -> Timestamp {
        match &self.manual {
            None => Timestamp::now(),
            Some(at) => Timestamp::from_nanosecond(i128::from(at.load(Ordering::Acquire)))
                .unwrap_or(Timestamp::MAX),
        }
    }

    /// Moves a manual clock by `by` (backwards too, as a wall clock can);
    /// the system clock cannot be moved, and `false` says so.
    pub fn advance(&self, by: SignedDuration) -> bool {
        let Some(at) = &self.manual else {
            return false;
        };
        let by = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        at.fetch_add(by, Ordering::AcqRel);
        true
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
    }
}

fn nanos(at: Timestamp) -> i64 {
    i64::try_from(at.as_nanosecond()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let start = Timestamp::from_second(1_800_000_000).unwrap();
        let clock = Clock::manual(start);
        let copy = clock.clone();
        assert_eq!(clock.now(), start);
        assert!(copy.advance(SignedDuration::from_secs(90)));
        assert_eq!(clock.now(), start + SignedDuration::from_secs(90));
        assert!(clock.advance(SignedDuration::from_secs(-30)));
        assert_eq!(copy.now(), start + SignedDuration::from_secs(60));
    }

    #[test]
    fn the_system_clock_cannot_be_moved() {
        let clock = Clock::system();
        assert!(!clock.advance(SignedDuration::from_secs(1)));
        let before = Timestamp::now();
        assert!(clock.now() >= before);
    }
}
