//! The verify cache: key hash → what the store said, for `cache_ttl` from
//! the store read that filled it (time to live, not time to idle, so a busy
//! key is re-read at least that often; SPEC §8).
//!
//! Unknown keys are cached too (negative entries), so a client retrying a
//! bad key does not reach the store each time. Concurrent misses for one
//! hash make a single store call. An invalidation that arrives while such a
//! call is under way stops its result from being cached: otherwise a read
//! that started before a revocation could put the revoked key's old record
//! back for a whole TTL.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use cloro_auth_core::{AccountId, KeyHash, PlanName, Scope};
use dashmap::DashMap;
use tokio::sync::OnceCell;

use crate::invalidation::{Invalidation, InvalidationSink};
use crate::record::{KeyLookup, KeyRecord};
use crate::store::StoreError;
use crate::subject::{DigestHasherBuilder, Subject, account_subject};

/// A key as the verifier sees it: the record, the account's plan at read
/// time, and the precomputed bits the hot path needs.
#[derive(Debug)]
pub struct CachedKey {
    /// The stored record.
    pub record: KeyRecord,
    /// The account's plan when read; `None` is the default plan.
    pub account_plan: Option<PlanName>,
    /// The rate-limit subject of the whole account.
    pub account_subject: Subject,
    /// `X-Cloro-Scopes`: the scopes, space-separated, computed once.
    pub scopes_header: String,
    /// Uses since the last usage flush.
    pub(crate) usage: UsageCell,
}

impl CachedKey {
    fn new(lookup: KeyLookup) -> Self {
        let scopes_header = lookup
            .record
            .scopes
            .iter()
            .map(Scope::as_str)
            .collect::<Vec<_>>()
            .join(" ");
        CachedKey {
            account_subject: account_subject(&lookup.record.account_id),
            scopes_header,
            record: lookup.record,
            account_plan: lookup.account_plan,
            usage: UsageCell::default(),
        }
    }

    /// The key's account.
    pub fn account_id(&self) -> &AccountId {
        &self.record.account_id
    }
}

/// Usage counted in memory between flushes (see `crate::usage`).
#[derive(Debug, Default)]
pub(crate) struct UsageCell {
    pub(crate) count: AtomicU64,
    /// Nanoseconds since the Unix epoch of the latest use.
    pub(crate) last_used: AtomicI64,
    /// Whether this key is already on the list of keys to flush.
    pub(crate) queued: AtomicBool,
}

/// One cache entry.
#[derive(Clone, Debug)]
pub enum CacheEntry {
    /// The store knows the key (in whatever status).
    Known(Arc<CachedKey>),
    /// The store has no such key.
    Unknown,
}

/// A fill under way: its result and the invalidation epoch it started in.
type Fill = Arc<OnceCell<(Result<CacheEntry, StoreError>, u64)>>;

/// The verify cache. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct KeyCache {
    entries: moka::sync::Cache<KeyHash, CacheEntry, DigestHasherBuilder>,
    fills: DashMap<KeyHash, Fill, DigestHasherBuilder>,
    /// Bumped by every invalidation; a fill that saw it change is not cached.
    epoch: AtomicU64,
}

impl KeyCache {
    /// A cache of at most `capacity` entries, each living `ttl` from its fill.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .time_to_live(ttl)
            .support_invalidation_closures()
            .build_with_hasher(DigestHasherBuilder);
        KeyCache {
            entries,
            fills: DashMap::with_hasher(DigestHasherBuilder),
            epoch: AtomicU64::new(0),
        }
    }

    /// The cached entry, if any; never touches the store.
    pub fn get(&self, hash: &KeyHash) -> Option<CacheEntry> {
        self.entries.get(hash)
    }

    /// The cached entry, or the store's answer through `load`, made once for
    /// all concurrent callers of the same hash.
    ///
    /// # Errors
    /// The store error, which is never cached.
    pub async fn get_or_load<F, Fut>(
        &self,
        hash: &KeyHash,
        load: F,
    ) -> Result<CacheEntry, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<KeyLookup>, StoreError>>,
    {
        if let Some(entry) = self.entries.get(hash) {
            return Ok(entry);
        }
        let fill = Arc::clone(&self.fills.entry(*hash).or_default());
        let (result, started_in) = fill
            .get_or_init(|| async {
                let started_in = self.epoch.load(Ordering::Acquire);
                let result = load().await.map(|found| match found {
                    Some(lookup) => CacheEntry::Known(Arc::new(CachedKey::new(lookup))),
                    None => CacheEntry::Unknown,
                });
                (result, started_in)
            })
            .await
            .clone();
        self.fills
            .remove_if(hash, |_, current| Arc::ptr_eq(current, &fill));
        if let Ok(entry) = &result
            && self.epoch.load(Ordering::Acquire) == started_in
        {
            self.entries.insert(*hash, entry.clone());
        }
        result
    }

    /// Entries held (approximate: moka counts lazily).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }
}

impl InvalidationSink for KeyCache {
    fn invalidate(&self, change: Invalidation) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        match change {
            Invalidation::Key(hash) => self.entries.invalidate(&hash),
            Invalidation::Account(account) => {
                let predicate = move |_: &KeyHash, entry: &CacheEntry| matches!(entry, CacheEntry::Known(key) if key.record.account_id == account);
                if self.entries.invalidate_entries_if(predicate).is_err() {
                    // Only fails if closures were not enabled at build time;
                    // dropping everything is the safe answer.
                    self.entries.invalidate_all();
                }
            }
            Invalidation::Everything => self.entries.invalidate_all(),
        }
    }
}
