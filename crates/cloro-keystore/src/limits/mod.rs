//! Limits: what a key, an account or a client address may still do. This
//! module holds the contract of a limiter shared by every node
//! ([`SharedRateLimiter`], kept by `crate::redis`'s limiter); beside it the
//! one GCRA step (`gcra`), the in-process allowances and in-flight permits
//! (`local`), the failed-attempt guard per client address
//! (`failed_attempts`), the plans that name each account's limits
//! (`plans`), and the subjects allowances belong to (`subject`).

mod failed_attempts;
mod gcra;
mod local;
mod plans;
mod subject;

pub use failed_attempts::{Charge, FailedAttempts};
pub use gcra::{GcraParams, RateDecision, RateState, decide as gcra_decide};
pub use local::{ConcurrencyPermit, ConcurrencyState, LocalRateLimiter, gcra_step};
pub use plans::{Plan, Plans, PlansError};
pub use subject::{Subject, account_subject};

use core::fmt;

use async_trait::async_trait;
use cloro_auth_core::AccountId;
use cloro_auth_core::wire::RateLimitPolicy;

use crate::quota::{Meter, MeterOutcome};
use crate::store::StoreError;

/// A rate limiter shared by every node (the Redis one). It keeps its own
/// clock (the Redis server's), so nodes with skewed clocks still agree, and
/// picks its own time unit, so it takes the policy rather than parameters.
/// When it fails or is late, the verifier limits on its own node instead
/// (SPEC §5).
#[async_trait]
pub trait SharedRateLimiter: Send + Sync + fmt::Debug + 'static {
    /// Takes one request from `subject`'s allowance under `policy` if it
    /// has one and then, if there is a `meter`, charges its quota and
    /// credits (SPEC §11), all in one atomic step: the outcome of the meter
    /// is `None` when the rate limit refused (nothing charged) or there is
    /// no meter. `account` owns `subject`: its allowance lives beside its
    /// quota counters.
    async fn check(
        &self,
        account: &AccountId,
        subject: &Subject,
        policy: &RateLimitPolicy,
        meter: Option<&Meter>,
    ) -> Result<(RateDecision, Option<MeterOutcome>), StoreError>;

    /// Says this node is alive and answers how many nodes are (at least
    /// 1), so a node can take its share of a quota during an outage.
    async fn live_nodes(&self, node_id: u64) -> Result<u32, StoreError>;
}
