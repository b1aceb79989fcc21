//! The verify cache: key hash → what the store said, trusted for `cache_ttl`
//! from the store read that filled it (time to live, not time to idle, so a
//! busy key is re-read at least that often; SPEC §8).
//!
//! Two maps, because the two kinds of entry have different enemies:
//!
//! - **Known keys** live in a sharded map of per-key slots. A slot holds the
//!   cached record and the per-key counters that must outlive a refill or
//!   an invalidation (the GCRA state, the in-flight count, pending usage).
//!   Only keys that exist in the store get a slot, so an attacker cannot
//!   grow this map; idle slots are swept. The per-key limiter state comes
//!   with the lookup instead of costing a second map lookup.
//! - **Unknown keys** (negative entries) go to a [`BoundedTable`], bounded in
//!   bytes and forgetting the oldest first, because anyone can mint
//!   well-formed keys that do not exist (SPEC §9).
//!
//! Concurrent misses for one hash make a single store call (a *fill*); the
//! fills in flight are bounded too. A caller that gives up mid-fill leaves
//! nothing behind: another waiter takes the fill over, or the last one out
//! removes it.
//!
//! **A revoked key stays revoked.** Every invalidation bumps an epoch before
//! it touches the maps. A fill caches its result only if the epoch is still
//! the one it started in, and checks that under the same shard lock the
//! insert takes, which the invalidation also takes after its bump; so an
//! invalidation can never land between the check and the insert. A caller
//! that joins a fill after an invalidation does not take its (possibly
//! older) answer but looks again.
//!
//! The epoch a key's fill sees is the sum of a global one (bumped for an
//! account or everything) and one of [`EPOCH_STRIPES`] picked by the key's
//! hash (bumped for a key): both only grow, so the sum changes whenever
//! either does. Striped, an operator churning other keys does not make
//! every fill in flight look again: with one epoch for all, a busy node
//! under churn could send a joiner round four times and answer it 503.

use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use cloro_auth_core::{AccountId, KeyHash, PlanName, Scope};
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::OnceCell;

use crate::invalidation::{Invalidation, InvalidationSink};
use crate::limits::{Subject, account_subject};
use crate::quota::CounterHint;
use crate::store::{KeyLookup, KeyRecord, StoreError};
use crate::table::{BoundedTable, KeyedHasher};

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
    /// `X-Cloro-Scopes`: the scopes, space-separated, computed once and
    /// shared by every answer (an `HTTP` header value takes it without a
    /// copy).
    pub scopes_header: Bytes,
    /// `X-Cloro-Key-Id` and `X-Cloro-Account-Id`, likewise.
    pub id_header: Bytes,
    /// See [`CachedKey::id_header`].
    pub account_header: Bytes,
    /// This node's counters for the key, shared by every refill of it.
    pub(crate) counters: Arc<KeyCounters>,
    /// The quota counter this entry charges, once found (a fresh entry
    /// looks it up again, so a period change is picked up by the refill).
    pub(crate) quota_hint: CounterHint,
}

impl CachedKey {
    /// The key's account.
    pub fn account_id(&self) -> &AccountId {
        &self.record.account_id
    }
}

/// Per-key state of this node that outlives any one cached record.
#[derive(Debug, Default)]
pub(crate) struct KeyCounters {
    /// Local GCRA theoretical arrival time (ns) of a per-key rate limit.
    pub(crate) tat: AtomicI64,
    /// Requests of this key in flight on this node.
    pub(crate) in_flight: Arc<AtomicU32>,
    /// Uses since the last usage flush.
    pub(crate) usage_count: AtomicU64,
    /// Latest use (ns since the Unix epoch).
    pub(crate) last_used: AtomicI64,
    /// Whether the key is on the list of keys to flush.
    pub(crate) usage_queued: AtomicBool,
    /// Refused requests since the last usage flush, by outcome (indexed
    /// as `UsageOutcome::ALL`; `valid` is `usage_count`).
    pub(crate) refused: [AtomicU64; 8],
    /// The minute (Unix seconds of its start, 0 for none) of the first
    /// count since the last flush: the bucket the flush files them under.
    pub(crate) usage_minute: AtomicI64,
}

impl KeyCounters {
    /// Whether forgetting these counters at `now` would lose anything.
    fn busy(&self, now_nanos: i64) -> bool {
        self.tat.load(Ordering::Acquire) > now_nanos
            || self.in_flight.load(Ordering::Acquire) > 0
            || self.usage_queued.load(Ordering::Acquire)
    }
}

/// What the cache knows about a hash.
#[derive(Clone, Debug)]
pub enum CacheEntry {
    /// The store knows the key (in whatever status).
    Known(Arc<CachedKey>),
    /// The store has no such key.
    Unknown,
}

/// A known key's slot: the cached record, when it was read, and whether an
/// invalidation has since made it stale.
#[derive(Debug)]
struct Slot {
    key: Arc<CachedKey>,
    filled_at: Timestamp,
    stale: bool,
}

/// Shards of the known-key map. Each lookup takes its shard's read lock, an
/// atomic write to the lock word; with dashmap's default (4 × cores, here 8)
/// two threads verifying different keys often hit the same word.
const KNOWN_SHARDS: usize = 64;

/// How often a caller that joined a fill which an invalidation overtook
/// looks again before giving up with the store error below: invalidations
/// are rare, so only a storm of them exhausts this.
const FILL_ATTEMPTS: usize = 4;

/// Stripes of the per-key invalidation epoch (see the module docs).
const EPOCH_STRIPES: usize = 64;

/// Bytes one fill in flight costs: its map entry, the shared cell and the
/// answer it holds (measured on x86_64 with the cached record's usual
/// size, rounded up).
pub const PENDING_LOOKUP_BYTES: usize = 512;

/// A fill under way: its result and the invalidation epoch it started in.
type Fill = Arc<OnceCell<(Result<CacheEntry, StoreError>, u64)>>;

/// The memory the cache may use for what clients can make it hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheBounds {
    /// Bytes for negative entries (unknown keys).
    pub unknown_keys: usize,
    /// Bytes for fills in flight, at [`PENDING_LOOKUP_BYTES`] each.
    pub pending_lookups: usize,
}

impl Default for CacheBounds {
    fn default() -> Self {
        CacheBounds {
            unknown_keys: 16 << 20,
            pending_lookups: 4 << 20,
        }
    }
}

/// The outcome of [`KeyCache::get_or_load`].
#[derive(Debug)]
pub struct Filled<P> {
    /// What the cache or the store said.
    pub result: Result<CacheEntry, StoreError>,
    /// What this caller's check before the lookup returned, when this
    /// caller made the store call (and so paid for it); `None` otherwise.
    pub paid: Option<P>,
}

/// Why [`KeyCache::get_or_load`] made no store call for this caller.
#[derive(Debug)]
pub enum FillRefused<E> {
    /// The caller's own check before the lookup refused it.
    Refused(E),
    /// Too many lookups are in flight already.
    Busy,
}

/// The verify cache. Shared behind an `Arc`.
#[derive(Debug)]
pub struct KeyCache {
    known: DashMap<KeyHash, Slot, KeyedHasher>,
    /// Negative entries, with the time the store said "no such key".
    unknown: BoundedTable<Timestamp>,
    fills: DashMap<KeyHash, Fill, KeyedHasher>,
    /// Entries in `fills`, kept beside it: `DashMap::len` locks every shard.
    pending: AtomicUsize,
    max_pending: usize,
    /// Bumped by every invalidation of an account or of everything; a
    /// fill that saw it change is not cached (see [`KeyCache::epoch_of`]).
    epoch: AtomicU64,
    /// Bumped by the invalidation of a key, in the stripe of its hash.
    key_epochs: Box<[AtomicU64]>,
    ttl: SignedDuration,
}

/// Removes an abandoned fill: one whose every caller went away before it
/// was made (a completed fill is removed by the caller that completed it).
struct FillGuard<'a> {
    cache: &'a KeyCache,
    hash: KeyHash,
    fill: Fill,
}

impl Drop for FillGuard<'_> {
    fn drop(&mut self) {
        if self.fill.initialized() {
            return;
        }
        // Two holders: the map and this guard; anyone else still waits on it.
        let removed = self.cache.fills.remove_if(&self.hash, |_, current| {
            Arc::ptr_eq(current, &self.fill) && Arc::strong_count(current) <= 2
        });
        if removed.is_some() {
            self.cache.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl KeyCache {
    /// A cache trusting store reads for `ttl`, within `bounds`.
    pub fn new(bounds: CacheBounds, ttl: Duration) -> Self {
        KeyCache {
            known: DashMap::with_hasher_and_shard_amount(KeyedHasher::default(), KNOWN_SHARDS),
            unknown: BoundedTable::with_budget(bounds.unknown_keys),
            fills: DashMap::with_hasher(KeyedHasher::default()),
            pending: AtomicUsize::new(0),
            max_pending: (bounds.pending_lookups / PENDING_LOOKUP_BYTES).max(1),
            epoch: AtomicU64::new(0),
            key_epochs: (0..EPOCH_STRIPES).map(|_| AtomicU64::new(0)).collect(),
            ttl: SignedDuration::try_from(ttl).unwrap_or(SignedDuration::MAX),
        }
    }

    /// The invalidation epoch of `hash`'s entry: changes whenever an
    /// invalidation may have made a fill of it out of date.
    fn epoch_of(&self, hash: &KeyHash) -> u64 {
        self.epoch
            .load(Ordering::Acquire)
            .wrapping_add(self.key_epoch(hash).load(Ordering::Acquire))
    }

    fn key_epoch(&self, hash: &KeyHash) -> &AtomicU64 {
        &self.key_epochs[usize::from(hash.as_bytes()[0]) % EPOCH_STRIPES]
    }

    fn fresh(&self, filled_at: Timestamp, now: Timestamp) -> bool {
        // A clock that went backwards makes an entry stale, not immortal.
        filled_at <= now
            && filled_at
                .saturating_add(self.ttl)
                .is_ok_and(|end| now < end)
    }

    /// The entry trusted at `now`, if any; never touches the store.
    pub fn get(&self, hash: &KeyHash, now: Timestamp) -> Option<CacheEntry> {
        if let Some(slot) = self.known.get(hash) {
            let fresh = !slot.stale && self.fresh(slot.filled_at, now);
            return fresh.then(|| CacheEntry::Known(Arc::clone(&slot.key)));
        }
        self.unknown
            .get_mut(hash, |filled_at| self.fresh(*filled_at, now))
            .unwrap_or(false)
            .then_some(CacheEntry::Unknown)
    }

    /// The trusted entry, or the store's answer through `load`, made once
    /// for all concurrent callers of the same hash. `before_lookup` runs
    /// only in the caller that is about to make the store call, and only
    /// then: its error refuses that caller alone (another waiting caller
    /// then makes the call, after its own check), and its value comes back
    /// in [`Filled::paid`].
    ///
    /// # Errors
    /// The caller's refusal, or [`FillRefused::Busy`] when the fills in
    /// flight are at their bound. A store error is in [`Filled::result`],
    /// and is never cached.
    pub async fn get_or_load<F, Fut, C, P, E>(
        &self,
        hash: &KeyHash,
        now: Timestamp,
        before_lookup: C,
        load: F,
    ) -> Result<Filled<P>, FillRefused<E>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<KeyLookup>, StoreError>>,
        C: Fn() -> Result<P, E>,
    {
        for _ in 0..FILL_ATTEMPTS {
            if let Some(entry) = self.get(hash, now) {
                return Ok(Filled {
                    result: Ok(entry),
                    paid: None,
                });
            }
            let fill = match self.fills.entry(*hash) {
                Entry::Occupied(entry) => Arc::clone(entry.get()),
                Entry::Vacant(entry) => {
                    if self.pending.load(Ordering::Acquire) >= self.max_pending {
                        return Err(FillRefused::Busy);
                    }
                    self.pending.fetch_add(1, Ordering::AcqRel);
                    Arc::clone(entry.insert(Fill::default()).value())
                }
            };
            let joined_in = self.epoch_of(hash);
            let guard = FillGuard {
                cache: self,
                hash: *hash,
                fill,
            };
            // Set by this caller's own init, if it is the one that runs.
            let paid = std::sync::Mutex::new(None);
            let outcome = guard
                .fill
                .get_or_try_init(|| async {
                    let payment = before_lookup()?;
                    if let Ok(mut slot) = paid.lock() {
                        *slot = Some(payment);
                    }
                    let started_in = self.epoch_of(hash);
                    let result = load().await.map(|found| match found {
                        Some(lookup) => CacheEntry::Known(Arc::new(self.cached_key(lookup))),
                        None => CacheEntry::Unknown,
                    });
                    Ok((result, started_in))
                })
                .await;
            let (result, started_in) = match outcome {
                Ok(done) => done.clone(),
                Err(refusal) => return Err(FillRefused::Refused(refusal)),
            };
            let paid = paid.into_inner().ok().flatten();
            if paid.is_some() {
                // Done: later callers must find the cached entry or make a
                // fill of their own, never this one's answer.
                if self
                    .fills
                    .remove_if(hash, |_, current| Arc::ptr_eq(current, &guard.fill))
                    .is_some()
                {
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                }
                if let Ok(entry) = &result {
                    self.store_if_current(hash, entry, now, started_in);
                }
                return Ok(Filled { result, paid });
            }
            // Joined someone else's fill: its answer is good for this
            // request unless an invalidation came between the fill's start
            // and this request joining it.
            if started_in == joined_in {
                return Ok(Filled { result, paid: None });
            }
        }
        Ok(Filled {
            result: Err(StoreError::unavailable(
                "the key changed during every lookup; try again",
            )),
            paid: None,
        })
    }

    /// A cached key for a fresh lookup, keeping the counters of the key's
    /// previous slot if there is one.
    fn cached_key(&self, lookup: KeyLookup) -> CachedKey {
        let counters = self
            .known
            .get(&lookup.record.hash)
            .map(|slot| Arc::clone(&slot.key.counters))
            .unwrap_or_default();
        CachedKey {
            account_subject: account_subject(&lookup.record.account_id),
            scopes_header: Bytes::from(
                lookup
                    .record
                    .scopes
                    .iter()
                    .map(Scope::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            id_header: Bytes::copy_from_slice(lookup.record.id.as_str().as_bytes()),
            account_header: Bytes::copy_from_slice(lookup.record.account_id.as_str().as_bytes()),
            record: lookup.record,
            account_plan: lookup.account_plan,
            counters,
            quota_hint: CounterHint::default(),
        }
    }

    /// Caches what a fill found, unless an invalidation came after it
    /// started. The epoch is read under the known map's shard lock for the
    /// hash, which every invalidation takes after bumping the epoch.
    fn store_if_current(
        &self,
        hash: &KeyHash,
        entry: &CacheEntry,
        now: Timestamp,
        started_in: u64,
    ) {
        let slot = self.known.entry(*hash);
        if self.epoch_of(hash) != started_in {
            return;
        }
        match entry {
            CacheEntry::Known(key) => {
                self.unknown.remove(hash);
                slot.insert(Slot {
                    key: Arc::clone(key),
                    filled_at: now,
                    stale: false,
                });
            }
            CacheEntry::Unknown => {
                // Inserted while the shard lock is still held (see above).
                self.unknown
                    .upsert(hash, || now, |filled_at| *filled_at = now);
                if let Entry::Occupied(known) = slot {
                    known.remove();
                }
            }
        }
    }

    /// Forgets known-key slots that are out of date and hold no state worth
    /// keeping, so the map tracks only keys in use.
    pub fn forget_idle(&self, now: Timestamp) {
        let now_nanos = i64::try_from(now.as_nanosecond()).unwrap_or(i64::MAX);
        let ttl = self.ttl;
        self.known.retain(|_, slot| {
            let fresh = !slot.stale
                && slot
                    .filled_at
                    .saturating_add(ttl)
                    .is_ok_and(|end| now < end);
            fresh || slot.key.counters.busy(now_nanos)
        });
        self.unknown
            .retain(|_, filled_at| filled_at.saturating_add(ttl).is_ok_and(|end| now < end));
    }

    /// Known-key slots held.
    pub fn known_count(&self) -> usize {
        self.known.len()
    }

    /// Negative entries held.
    pub fn unknown_count(&self) -> u64 {
        u64::try_from(self.unknown.len()).unwrap_or(u64::MAX)
    }

    /// Store lookups in flight.
    pub fn pending_count(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }
}

impl InvalidationSink for KeyCache {
    fn invalidate(&self, change: Invalidation) {
        let epoch = match &change {
            Invalidation::Key(hash) => self.key_epoch(hash),
            Invalidation::Account(_) | Invalidation::Everything => &self.epoch,
        };
        epoch.fetch_add(1, Ordering::AcqRel);
        match change {
            Invalidation::Key(hash) => {
                // Always through the shard's write lock, present or not:
                // that is what orders this after a fill's epoch check.
                if let Entry::Occupied(mut slot) = self.known.entry(hash) {
                    slot.get_mut().stale = true;
                }
                self.unknown.remove(&hash);
            }
            Invalidation::Account(account) => {
                for mut slot in self.known.iter_mut() {
                    if slot.key.record.account_id == account {
                        slot.stale = true;
                    }
                }
            }
            Invalidation::Everything => {
                for mut slot in self.known.iter_mut() {
                    slot.stale = true;
                }
                self.unknown.clear();
            }
        }
    }
}
