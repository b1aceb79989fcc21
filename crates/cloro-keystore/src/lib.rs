//! Where Cloro keys live and how a request's key is checked.
//!
//! - [`KeyStore`]: the contract of a durable store; [`MemoryStore`] for
//!   tests, the embedded redb store for one node, the Redis store for many.
//! - [`KeyAdmin`]: create, update, revoke, rotate, plans and audit, written
//!   once on top of any store.
//! - The verifier (hot path): header, format, failed-attempt guard, cache,
//!   status, scope, rate limit, concurrency.
//!
//! - [`mask_url`], [`mask_url_list`]: the one masker for URLs that may hold
//!   a password; [`LogLimit`]: one line per second for a warning a client
//!   can provoke (SPEC §9).
//!
//! No store, cache or log here ever holds a plaintext key: only
//! [`cloro_auth_core::KeyHash`].

#![forbid(unsafe_code)]

mod admin;
mod bounded;
mod cache;
mod embedded;
mod failed_attempts;
mod gcra;
mod health;
mod invalidation;
mod local_limit;
mod log_limit;
mod memory;
mod plans;
mod record;
mod redis_connection;
mod redis_invalidation;
mod redis_limit;
mod redis_store;
mod store;
mod striped;
mod subject;
mod url_mask;
mod usage;
mod verifier;

pub use admin::{AdminError, IssuedKey, KeyAdmin, Rotation};
pub use bounded::BoundedTable;
pub use cache::{
    CacheBounds, CacheEntry, CachedKey, FillRefused, Filled, KeyCache, PENDING_LOOKUP_BYTES,
};
pub use embedded::EmbeddedStore;
pub use failed_attempts::{Charge, FailedAttempts};
pub use gcra::{GcraParams, RateDecision, decide as gcra_decide};
pub use health::{Readiness, StoreHealth};
pub use invalidation::{ChangeNotifier, Invalidation, InvalidationSink, LocalNotifier};
pub use local_limit::{ConcurrencyPermit, ConcurrencyState, LocalRateLimiter, gcra_step};
pub use log_limit::LogLimit;
pub use memory::MemoryStore;
pub use plans::{Plan, Plans, PlansError};
pub use record::{AccountRecord, KeyLookup, KeyRecord, KeyUsage, UsageBatch, UsageDelta};
pub use redis_invalidation::{
    INVALIDATION_CHANNEL, InvalidationListener, RedisNotifier, spawn_cluster_invalidation_listener,
    spawn_invalidation_listener,
};
pub use redis_limit::RedisRateLimiter;
pub use redis_store::{RedisOptions, RedisStore};
pub use store::{
    Cursor, KeyBatch, KeyStore, Page, PageRequest, RecordWrite, StoreError, USAGE_DEDUP_WINDOW,
};
pub use striped::StripedCounter;
pub use subject::{KeyedHasher, Subject, account_subject};
pub use url_mask::{mask_url, mask_url_list};
pub use usage::UsageRecorder;
pub use verifier::{
    MAINTENANCE_INTERVAL, Refused, SharedRateLimiter, Verified, Verifier, VerifierConfig,
    VerifierStats, VerifyRequest,
};
