//! Limits: what a key, an account or a client address may still do. The one
//! GCRA step (`gcra`), the in-process allowances and in-flight permits
//! (`local`), the failed-attempt guard per client address
//! (`failed_attempts`), the plans that name each account's limits
//! (`plans`), and the subjects allowances belong to (`subject`).

mod failed_attempts;
mod gcra;
mod local;
mod plans;
mod subject;

pub use failed_attempts::{Charge, FailedAttempts};
pub use gcra::{GcraParams, RateDecision, decide as gcra_decide};
pub use local::{ConcurrencyPermit, ConcurrencyState, LocalRateLimiter, gcra_step};
pub use plans::{Plan, Plans, PlansError};
pub use subject::{KeyedHasher, Subject, account_subject};
