//! The verify path: the [`Verifier`] (a request's key to its identity and
//! limit state), the cache of what the store said (`cache`), usage counted
//! on the hot path and flushed in batches (`usage`), the store's health as
//! readiness sees it (`health`), and the verifier's striped counters
//! (`striped`).

mod cache;
mod health;
mod striped;
mod usage;
mod verifier;

pub use cache::{
    CacheBounds, CacheEntry, CachedKey, FillRefused, Filled, KeyCache, PENDING_LOOKUP_BYTES,
};
pub use health::{Readiness, StoreHealth};
pub use striped::StripedCounter;
pub use usage::UsageRecorder;
pub use verifier::{
    LEDGER_PERSIST_INTERVAL, MAINTENANCE_INTERVAL, QuotaState, Refused, Verified, Verifier,
    VerifierConfig, VerifierStats, VerifyRequest,
};
