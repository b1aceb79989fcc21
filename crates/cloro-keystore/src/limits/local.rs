//! In-process limiters: GCRA allowances (rate limits and the failed-attempt
//! guard) and in-flight permits (concurrency limits).
//!
//! A per-key allowance and a key's in-flight count live in the key's slot
//! of the verify cache, found by the lookup the request makes anyway.
//! Account allowances and client addresses live in a sharded map
//! (`DashMap`): a request takes one shard's read lock to find its cell and
//! then updates the cell with atomics, so there is no global lock on the
//! hot path.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

use dashmap::DashMap;

use super::gcra::{self, GcraParams, RateDecision};
use super::subject::Subject;
use crate::table::KeyedHasher;

/// One GCRA step on a cell holding `tat`, as a compare-and-swap loop:
/// concurrent requests each get a distinct slot, exactly as if serialised.
pub fn gcra_step(cell: &AtomicI64, params: &GcraParams, now: i64) -> RateDecision {
    let mut tat = cell.load(Ordering::Acquire);
    loop {
        let (decision, next) = gcra::decide(tat, now, params);
        if !decision.is_allowed() {
            return decision;
        }
        match cell.compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return decision,
            Err(current) => tat = current,
        }
    }
}

/// GCRA state per subject, in this process only.
#[derive(Debug, Default)]
pub struct LocalRateLimiter {
    /// Theoretical arrival time per subject, in nanoseconds since the Unix epoch.
    tats: DashMap<Subject, AtomicI64, KeyedHasher>,
}

impl LocalRateLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        LocalRateLimiter {
            tats: DashMap::with_hasher(KeyedHasher::default()),
        }
    }

    /// Takes one request from `subject`'s allowance if it has one.
    pub fn check(&self, subject: &Subject, params: &GcraParams, now: i64) -> RateDecision {
        if let Some(cell) = self.tats.get(subject) {
            return gcra_step(&cell, params, now);
        }
        let cell = self
            .tats
            .entry(*subject)
            .or_insert_with(|| AtomicI64::new(0));
        gcra_step(&cell, params, now)
    }

    /// Whether `subject` would be refused right now, without using anything.
    pub fn would_refuse(
        &self,
        subject: &Subject,
        params: &GcraParams,
        now: i64,
    ) -> Option<RateDecision> {
        let tat = self.tats.get(subject)?.load(Ordering::Acquire);
        let (decision, _) = gcra::decide(tat, now, params);
        (!decision.is_allowed()).then_some(decision)
    }

    /// Drops subjects whose allowance is full again at `now`: for GCRA a
    /// `tat` in the past is the same as no state, so memory stays bounded by
    /// the subjects active within one window.
    pub fn forget_idle(&self, now: i64) {
        self.tats.retain(|_, tat| tat.load(Ordering::Acquire) > now);
    }

    /// Subjects currently tracked.
    pub fn tracked(&self) -> usize {
        self.tats.len()
    }
}

/// Counts one request in flight until dropped, whether the request finished,
/// failed or was cancelled.
#[derive(Debug)]
pub struct ConcurrencyPermit {
    counter: Arc<AtomicU32>,
    /// The state when the permit was granted, for the response headers.
    pub state: ConcurrencyState,
}

/// The values of the `X-Concurrent-*` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConcurrencyState {
    /// `X-Concurrent-Limit`.
    pub limit: u32,
    /// `X-Concurrent-Current`: requests in flight, this one included.
    pub current: u32,
    /// `X-Concurrent-Remaining`.
    pub remaining: u32,
}

impl Drop for ConcurrencyPermit {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConcurrencyPermit {
    /// A permit on `counter` if fewer than `limit` requests hold one.
    ///
    /// # Errors
    /// The state at refusal (`current` = requests in flight plus this one)
    /// when the limit is reached.
    pub fn acquire(
        counter: &Arc<AtomicU32>,
        limit: u32,
    ) -> Result<ConcurrencyPermit, ConcurrencyState> {
        let before = counter.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            counter.fetch_sub(1, Ordering::AcqRel);
            // SPEC §5: `X-Concurrent-Current` counts the refused request too.
            return Err(ConcurrencyState {
                limit,
                current: before.saturating_add(1),
                remaining: 0,
            });
        }
        let current = before + 1;
        Ok(ConcurrencyPermit {
            counter: Arc::clone(counter),
            state: ConcurrencyState {
                limit,
                current,
                remaining: limit - current,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use cloro_auth_core::KeyHash;
    use cloro_auth_core::wire::RateLimitPolicy;

    use super::*;

    const SECOND: i64 = 1_000_000_000;

    fn params(requests: u32, per_seconds: u32) -> GcraParams {
        GcraParams::of(&RateLimitPolicy::new(
            NonZeroU32::new(requests).unwrap(),
            NonZeroU32::new(per_seconds).unwrap(),
        ))
    }

    #[test]
    fn subjects_have_separate_allowances() {
        let limiter = LocalRateLimiter::new();
        let (a, b) = (KeyHash::of(b"a"), KeyHash::of(b"b"));
        let p = params(2, 60);
        let now = 100 * SECOND;
        assert!(limiter.check(&a, &p, now).is_allowed());
        assert!(limiter.check(&a, &p, now).is_allowed());
        assert!(!limiter.check(&a, &p, now).is_allowed());
        assert!(limiter.check(&b, &p, now).is_allowed());
        assert!(limiter.would_refuse(&a, &p, now).is_some());
        assert!(limiter.would_refuse(&b, &p, now).is_none());
    }

    #[test]
    fn concurrent_checks_never_exceed_the_limit() {
        let limiter = Arc::new(LocalRateLimiter::new());
        let subject = KeyHash::of(b"shared");
        let p = params(1000, 3600);
        let allowed = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let limiter = Arc::clone(&limiter);
                    scope.spawn(move || {
                        (0..500)
                            .filter(|_| limiter.check(&subject, &p, 10 * SECOND).is_allowed())
                            .count()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .sum::<usize>()
        });
        assert_eq!(allowed, 1000);
    }

    #[test]
    fn idle_subjects_are_forgotten() {
        let limiter = LocalRateLimiter::new();
        let p = params(10, 10);
        limiter.check(&KeyHash::of(b"x"), &p, 0);
        assert_eq!(limiter.tracked(), 1);
        limiter.forget_idle(SECOND / 2);
        assert_eq!(limiter.tracked(), 1, "still owes half a second");
        limiter.forget_idle(2 * SECOND);
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn concurrency_permits_count_and_release() {
        let counter = Arc::new(AtomicU32::new(0));
        let first = ConcurrencyPermit::acquire(&counter, 2).unwrap();
        assert_eq!(
            first.state,
            ConcurrencyState {
                limit: 2,
                current: 1,
                remaining: 1
            }
        );
        let second = ConcurrencyPermit::acquire(&counter, 2).unwrap();
        assert_eq!(second.state.current, 2);
        let refused = ConcurrencyPermit::acquire(&counter, 2).unwrap_err();
        assert_eq!(
            refused,
            ConcurrencyState {
                limit: 2,
                current: 3,
                remaining: 0
            }
        );
        drop(first);
        let third = ConcurrencyPermit::acquire(&counter, 2).unwrap();
        assert_eq!(third.state.remaining, 0);
        drop((second, third));
        assert_eq!(counter.load(Ordering::SeqCst), 0);
    }
}
