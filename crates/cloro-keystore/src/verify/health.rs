//! Whether the store answers, as `/readyz` reports it (SPEC §6): ready;
//! degraded while the store fails but the cache serves (so a load balancer
//! does not drop every node at once); not ready before the store was ever
//! reached.

use std::sync::atomic::{AtomicU8, Ordering};

/// The store's state as last seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// The store has never answered.
    NotReady,
    /// The last store call worked.
    Ready,
    /// The store answered before but the last call failed.
    Degraded,
}

/// Updated by every store call the verifier makes and by readiness probes.
#[derive(Debug)]
pub struct StoreHealth {
    state: AtomicU8,
}

const NOT_READY: u8 = 0;
const READY: u8 = 1;
const DEGRADED: u8 = 2;

impl Default for StoreHealth {
    fn default() -> Self {
        StoreHealth {
            state: AtomicU8::new(NOT_READY),
        }
    }
}

impl StoreHealth {
    /// Notes a store call that worked.
    pub fn record_success(&self) {
        if self.state.load(Ordering::Relaxed) != READY {
            self.state.store(READY, Ordering::Release);
        }
    }

    /// Notes a failed store call.
    pub fn record_failure(&self) {
        // Never reached stays never reached: only a success makes a node ready.
        let _ = self
            .state
            .compare_exchange(READY, DEGRADED, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The current state.
    pub fn readiness(&self) -> Readiness {
        match self.state.load(Ordering::Acquire) {
            READY => Readiness::Ready,
            DEGRADED => Readiness::Degraded,
            _ => Readiness::NotReady,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        let health = StoreHealth::default();
        health.record_failure();
        assert_eq!(health.readiness(), Readiness::NotReady);
        health.record_success();
        assert_eq!(health.readiness(), Readiness::Ready);
        health.record_failure();
        assert_eq!(health.readiness(), Readiness::Degraded);
        health.record_success();
        assert_eq!(health.readiness(), Readiness::Ready);
    }
}
