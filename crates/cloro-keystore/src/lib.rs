//! Where Cloro keys live and how a request's key is checked.
//!
//! - [`KeyStore`]: the contract of a durable store; [`MemoryStore`] for
//!   tests, the embedded redb store for one node, the Redis store for many.
//! - [`KeyAdmin`]: create, update, revoke, rotate, plans and audit, written
//!   once on top of any store.
//! - The verifier (hot path): header, format, failed-attempt guard, cache,
//!   status, scope, rate limit, concurrency.
//! - Limits: the GCRA step ([`RateDecision`]), local allowances and
//!   permits, the failed-attempt guard, plans, and [`SharedRateLimiter`]
//!   for limits exact across nodes.
//! - Redis: the store, the shared limiter and invalidation, all on one
//!   [`RedisConnection`].
//! - [`IdempotencyStore`]: what an admin `Idempotency-Key` remembers, on
//!   every store.
//!
//! - [`mask_url`], [`mask_url_list`]: the one masker for URLs that may hold
//!   a password; [`LogLimit`]: one line per second for a warning a client
//!   can provoke (SPEC §9).
//!
//! No store, cache or log here ever holds a plaintext key: only
//! [`cloro_auth_core::KeyHash`].

#![forbid(unsafe_code)]

mod admin;
mod clock;
mod invalidation;
mod limits;
mod log_limit;
mod quota;
mod redis;
mod store;
mod table;
mod url_mask;
mod verify;

pub use admin::{
    AdminError, EXPIRY_NOTICE_ACTOR, IssuedKey, KeyAdmin, LeakReport, LeakedKeyAction,
    RevokedLeaked, Rotation,
};
pub use clock::Clock;
pub use invalidation::{ChangeNotifier, Invalidation, InvalidationSink, LocalNotifier};
pub use limits::{
    Charge, ConcurrencyPermit, ConcurrencyState, FailedAttempts, GcraParams, LocalRateLimiter,
    Plan, Plans, PlansError, RateDecision, RateState, SharedRateLimiter, Subject, account_subject,
    gcra_decide, gcra_step,
};
pub use log_limit::LogLimit;
pub use quota::{
    CounterHint, CreditsChange, CreditsMeter, Ledger, LocalLedger, Meter, MeterOutcome,
    QUOTA_EVENT_ACTOR, QuotaMeter, QuotaSubject, RefillWindow, Window,
};
pub use redis::RedisIdempotencyStore;
pub use redis::{
    INVALIDATION_CHANNEL, InvalidationListener, RedisConnection, RedisLedger, RedisNotifier,
    RedisOptions, RedisRateLimiter, RedisStore, spawn_cluster_invalidation_listener,
    spawn_invalidation_listener,
};
pub use store::{
    AccountRecord, AdminTokenRecord, AdminTokenStore, CounterStore, Cursor, EmbeddedStore,
    KeyBatch, KeyLookup, KeyRecord, KeyStore, KeyUsage, MemoryStore, Page, PageRequest,
    RecordWrite, SeriesPoint, StoreError, StoreFailure, USAGE_DEDUP_WINDOW, UsageBatch, UsageDelta,
};
pub use store::{
    Claim, ClaimToken, IDEMPOTENCY_LEASE, IDEMPOTENCY_WINDOW, IdempotencySlot, IdempotencyStore,
    RequestFingerprint, StoredAnswer,
};
pub use store::{
    DELIVERY_RETENTION, Delivery, OutboxEvent, WEBHOOK_LEASE, WebhookRecord, WebhookStore,
};
pub use store::{ExpiryNotice, NoticeStage, ScheduledNotice};
pub use store::{MAX_SESSIONS, SessionRecord, SessionStore, SessionSubject};
pub use table::{BoundedTable, KeyedHasher};
pub use url_mask::{mask_url, mask_url_list};
pub use verify::{
    CacheBounds, CacheEntry, CachedKey, FillRefused, Filled, KeyCache, LEDGER_PERSIST_INTERVAL,
    MAINTENANCE_INTERVAL, PENDING_LOOKUP_BYTES, QuotaState, Readiness, Refused, StoreHealth,
    StripedCounter, UsageRecorder, Verified, Verifier, VerifierConfig, VerifierStats,
    VerifyRequest,
};
