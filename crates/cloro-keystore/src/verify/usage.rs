//! Batched usage: `last_used_at` and use counts are added up in memory on
//! the hot path (two atomics) and written to the store every few seconds,
//! never once per request.
//!
//! # Counted once
//!
//! A flush turns what was counted into one [`UsageBatch`] per account, named
//! by this recorder's node id (random per process) and the flush's sequence
//! number, which only grows. A store applies a batch only if its sequence is
//! above the last one it applied from this node for that account
//! ([`KeyStore::record_usage`]).
//!
//! A batch whose write failed may still have been applied (a timeout says
//! nothing about what Redis did), so its counts are never put back into the
//! keys' atomics: the batch itself is kept and sent again, unchanged, at the
//! next flush. Until it is confirmed its account gets no newer batch; the
//! counts of the account's keys keep adding up in their atomics and go out
//! in the first flush after. So a retry can never arrive behind a newer
//! batch of its account (and be skipped as old), and an outage leaves at
//! most one batch per account waiting, not one per flush.
//!
//! Accounts are independent: one whose write failed holds back only itself.
//! A batch still unconfirmed after [`GIVE_UP_AFTER`] (half the store's
//! [`USAGE_DEDUP_WINDOW`]) is dropped with a warning: sent later, it could
//! reach a store that has forgotten it and count twice; dropped, it counts
//! too little, the lesser harm. (It also keeps a batch that a store refuses
//! every time from holding its account back for ever.)
//!
//! Flushes run one at a time, and a batch is kept until the store has
//! confirmed it, so neither two concurrent callers nor a flush cancelled
//! mid-write can send an account's batches out of order or lose them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloro_auth_core::AccountId;
use cloro_auth_core::wire::{UsageCounts, UsageGranularity, UsageOutcome};
use jiff::Timestamp;

use super::cache::CachedKey;
use crate::store::{KeyStore, StoreError, USAGE_DEDUP_WINDOW, UsageBatch, UsageDelta};

/// How long an unconfirmed batch is retried: half the store's
/// [`USAGE_DEDUP_WINDOW`], which leaves the other half as margin for clocks
/// and slow flushes.
pub(crate) const GIVE_UP_AFTER: Duration = Duration::from_secs(USAGE_DEDUP_WINDOW.as_secs() / 2);

/// Keys used since the last flush, and batches not yet confirmed.
#[derive(Debug)]
pub struct UsageRecorder {
    node_id: u64,
    pending: Mutex<Vec<Arc<CachedKey>>>,
    /// Held across the store call, so flushes run one at a time.
    flush: tokio::sync::Mutex<FlushState>,
}

#[derive(Debug, Default)]
struct FlushState {
    /// The sequence of the last flush that made batches; 0 before any.
    last_sequence: u64,
    unconfirmed: Unconfirmed,
}

/// Batches sent (or about to be) whose success the store has not confirmed,
/// with when each was first sent. Two parallel lists, because the store
/// takes the batches as one slice.
#[derive(Debug, Default)]
struct Unconfirmed {
    batches: Vec<UsageBatch>,
    first_sent: Vec<Instant>,
}

impl Unconfirmed {
    fn push(&mut self, batch: UsageBatch, first_sent: Instant) {
        self.batches.push(batch);
        self.first_sent.push(first_sent);
    }

    fn accounts(&self) -> HashSet<AccountId> {
        self.batches.iter().map(|batch| batch.account_id).collect()
    }

    /// Drops the batches first sent [`GIVE_UP_AFTER`] or more before `now`.
    fn give_up_before(&mut self, now: Instant) {
        let batches = std::mem::take(&mut self.batches);
        let first_sent = std::mem::take(&mut self.first_sent);
        let (mut dropped, mut uses) = (0usize, 0u64);
        for (batch, sent) in batches.into_iter().zip(first_sent) {
            if now.saturating_duration_since(sent) >= GIVE_UP_AFTER {
                dropped += 1;
                uses = add_uses(uses, &batch);
            } else {
                self.push(batch, sent);
            }
        }
        if dropped > 0 {
            tracing::warn!(
                dropped,
                uses,
                "usage batches unconfirmed for {GIVE_UP_AFTER:?} were dropped: \
                 retried any later they could be counted twice"
            );
        }
    }

    /// Keeps only the batches whose `outcomes` (one per batch, in order)
    /// failed; the first failure, or how many were confirmed.
    fn keep_failed(&mut self, outcomes: Vec<Result<(), StoreError>>) -> Result<usize, StoreError> {
        let batches = std::mem::take(&mut self.batches);
        let first_sent = std::mem::take(&mut self.first_sent);
        let mut outcomes = outcomes.into_iter();
        let mut confirmed = 0;
        let mut first_error = None;
        for (batch, sent) in batches.into_iter().zip(first_sent) {
            let outcome = outcomes.next().unwrap_or_else(|| {
                Err(StoreError::corrupt(
                    "the store answered fewer usage results than batches",
                ))
            });
            match outcome {
                Ok(()) => confirmed += 1,
                Err(error) => {
                    first_error.get_or_insert(error);
                    self.push(batch, sent);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(confirmed),
        }
    }
}

/// `total` plus the uses `batch` carries.
fn add_uses(total: u64, batch: &UsageBatch) -> u64 {
    batch
        .deltas
        .iter()
        .fold(total, |total, delta| total.saturating_add(delta.count))
}

impl Default for UsageRecorder {
    /// A recorder with a random node id.
    fn default() -> Self {
        UsageRecorder::new(random_node_id())
    }
}

impl UsageRecorder {
    /// A recorder whose batches carry `node_id`. Two recorders writing to
    /// one store at the same time must have different ids, or the store
    /// skips one's batches as old; [`UsageRecorder::default`] picks a random
    /// one.
    pub fn new(node_id: u64) -> Self {
        UsageRecorder {
            node_id,
            pending: Mutex::default(),
            flush: tokio::sync::Mutex::default(),
        }
    }

    /// The node id this recorder's batches carry.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Counts one successful use of `key` at `now_nanos`.
    pub(crate) fn record(&self, key: &Arc<CachedKey>, now_nanos: i64) {
        let counters = &key.counters;
        counters.usage_count.fetch_add(1, Ordering::Relaxed);
        counters.last_used.fetch_max(now_nanos, Ordering::Relaxed);
        self.stamp_and_queue(key, now_nanos);
    }

    /// Counts one request of `key` refused with `outcome` at `now_nanos`.
    pub(crate) fn record_refusal(
        &self,
        key: &Arc<CachedKey>,
        outcome: UsageOutcome,
        now_nanos: i64,
    ) {
        if outcome == UsageOutcome::Valid {
            return self.record(key, now_nanos);
        }
        key.counters.refused[outcome.index()].fetch_add(1, Ordering::Relaxed);
        self.stamp_and_queue(key, now_nanos);
    }

    /// Notes the minute of the first count since the last flush, and queues
    /// the key once per flush. Both loads keep the common case free of a
    /// contended read-modify-write.
    fn stamp_and_queue(&self, key: &Arc<CachedKey>, now_nanos: i64) {
        let counters = &key.counters;
        if counters.usage_minute.load(Ordering::Relaxed) == 0 {
            let minute = UsageGranularity::Minute.bucket_start(now_nanos.div_euclid(1_000_000_000));
            let _ = counters.usage_minute.compare_exchange(
                0,
                minute,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
        if !counters.usage_queued.load(Ordering::Relaxed)
            && !counters.usage_queued.swap(true, Ordering::AcqRel)
            && let Ok(mut pending) = self.pending.lock()
        {
            pending.push(Arc::clone(key));
        }
    }

    /// Writes what was counted since the last flush, after any batch still
    /// unconfirmed from an earlier one (see the module docs). Batches that
    /// fail are kept, to be sent again unchanged next time.
    ///
    /// Returns how many batches (one per account and flush) the store
    /// confirmed.
    ///
    /// # Errors
    /// The store's first error when any batch failed; the others were still
    /// written.
    pub async fn flush(&self, store: &dyn KeyStore) -> Result<usize, StoreError> {
        self.flush_at(store, Instant::now()).await
    }

    /// [`Self::flush`] with the clock read by the caller, so tests can move it.
    pub(crate) async fn flush_at(
        &self,
        store: &dyn KeyStore,
        now: Instant,
    ) -> Result<usize, StoreError> {
        let mut state = self.flush.lock().await;
        let keys = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return Ok(0),
        };
        state.unconfirmed.give_up_before(now);
        let waiting = state.unconfirmed.accounts();

        let mut fresh: HashMap<AccountId, Vec<UsageDelta>> = HashMap::new();
        let mut held_back = Vec::new();
        for key in keys {
            if waiting.contains(&key.record.account_id) {
                // Still queued; its counts keep adding up until its account's
                // unconfirmed batch is settled.
                held_back.push(key);
                continue;
            }
            let counters = &key.counters;
            counters.usage_queued.store(false, Ordering::Release);
            // The minute first, then the counts: a count made after the
            // swap stamps a new minute for the next flush.
            let minute = counters.usage_minute.swap(0, Ordering::AcqRel);
            let count = counters.usage_count.swap(0, Ordering::AcqRel);
            let mut refused = [0u64; 8];
            for (taken, counter) in refused.iter_mut().zip(&counters.refused) {
                *taken = counter.swap(0, Ordering::AcqRel);
            }
            let refused = UsageCounts::from_array(refused);
            let nanos = counters.last_used.load(Ordering::Acquire);
            let last_used_at =
                Timestamp::from_nanosecond(i128::from(nanos)).unwrap_or(Timestamp::UNIX_EPOCH);
            if count > 0 || !refused.is_empty() {
                fresh
                    .entry(key.record.account_id)
                    .or_default()
                    .push(UsageDelta {
                        key_id: key.record.id,
                        last_used_at,
                        count,
                        minute,
                        refused,
                    });
            }
        }
        if !held_back.is_empty()
            && let Ok(mut pending) = self.pending.lock()
        {
            pending.extend(held_back);
        }
        if !fresh.is_empty() {
            state.last_sequence += 1;
            let sequence = state.last_sequence;
            for (account_id, deltas) in fresh {
                let batch = UsageBatch {
                    account_id,
                    node_id: self.node_id,
                    sequence,
                    deltas,
                };
                state.unconfirmed.push(batch, now);
            }
        }
        if state.unconfirmed.batches.is_empty() {
            return Ok(0);
        }
        // The batches stay in `state` while the store works: if this future
        // is dropped, they are all still there for the next flush.
        let outcomes = store.record_usage(&state.unconfirmed.batches).await;
        state.unconfirmed.keep_failed(outcomes)
    }
}

/// A node id nobody else is likely to use. Without randomness (which
/// never happens on a supported system), the clock and process id still
/// make a collision unlikely; a collision only under-counts.
fn random_node_id() -> u64 {
    let mut random = [0u8; 8];
    if getrandom::fill(&mut random).is_ok() {
        return u64::from_le_bytes(random);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    // Truncating the nanoseconds keeps their fast-changing low bits.
    (nanos as u64) ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use cloro_auth_core::wire::CreateKeyRequest;
    use cloro_auth_core::{AccountId, KeyId};

    use super::*;
    use crate::{KeyAdmin, KeyCache, LocalNotifier, MemoryStore, Plans};

    struct Fixture {
        store: Arc<MemoryStore>,
        cache: KeyCache,
        recorder: UsageRecorder,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                store: Arc::new(MemoryStore::new()),
                cache: KeyCache::new(crate::CacheBounds::default(), Duration::from_secs(60)),
                recorder: UsageRecorder::new(7),
            }
        }

        /// A new key of `account`, as the verifier's cache holds it.
        async fn key(&self, account: &str) -> Arc<CachedKey> {
            let admin = KeyAdmin::new(
                self.store.clone(),
                Arc::new(Plans::builtin()),
                Arc::new(LocalNotifier::default()),
            );
            let request = CreateKeyRequest::new(AccountId::new(account).unwrap(), "k");
            let now = Timestamp::now();
            let hash = admin
                .create(request, "admin", now)
                .await
                .unwrap()
                .key
                .hash();
            let filled = self
                .cache
                .get_or_load(&hash, now, || Ok::<_, ()>(()), || self.store.lookup(&hash))
                .await
                .unwrap();
            match filled.result.unwrap() {
                crate::CacheEntry::Known(key) => key,
                crate::CacheEntry::Unknown => panic!("the key was just created"),
            }
        }

        fn use_times(&self, key: &Arc<CachedKey>, times: u64) {
            for _ in 0..times {
                self.recorder.record(key, 1_800_000_000_000_000_000);
            }
        }

        async fn count(&self, id: &KeyId) -> u64 {
            self.store.key(id).await.unwrap().unwrap().usage.count
        }

        async fn flush(&self, at: Instant) -> Result<usize, StoreError> {
            self.recorder.flush_at(self.store.as_ref(), at).await
        }
    }

    #[tokio::test]
    async fn a_failed_batch_is_resent_alone_then_newer_uses_follow() {
        let f = Fixture::new();
        let key = f.key("acct_resend").await;
        let start = Instant::now();
        f.use_times(&key, 3);
        f.store.set_down(true);
        assert!(f.flush(start).await.is_err());
        // Uses after the failure wait behind the unconfirmed batch.
        f.use_times(&key, 2);
        f.store.set_down(false);
        assert_eq!(f.flush(start).await.unwrap(), 1);
        assert_eq!(f.count(&key.record.id).await, 3);
        assert_eq!(f.flush(start).await.unwrap(), 1);
        assert_eq!(f.count(&key.record.id).await, 5);
        assert_eq!(f.flush(start).await.unwrap(), 0, "nothing left");
    }

    #[tokio::test]
    async fn a_batch_unconfirmed_for_too_long_is_dropped_not_resent() {
        let f = Fixture::new();
        let key = f.key("acct_give_up").await;
        let start = Instant::now();
        f.store.set_down(true);
        f.use_times(&key, 4);
        assert!(f.flush(start).await.is_err());
        f.use_times(&key, 1);
        // Not yet too old: still the only batch of its account.
        assert!(f.flush(start + GIVE_UP_AFTER / 2).await.is_err());
        // Too old: dropped, and the newer use goes out in its own batch.
        assert!(f.flush(start + GIVE_UP_AFTER).await.is_err());
        f.store.set_down(false);
        assert_eq!(f.flush(start + GIVE_UP_AFTER).await.unwrap(), 1);
        assert_eq!(f.count(&key.record.id).await, 1);
    }

    #[tokio::test]
    async fn batches_name_the_node_and_a_growing_sequence() {
        let f = Fixture::new();
        let first = f.key("acct_seq_a").await;
        let second = f.key("acct_seq_b").await;
        f.use_times(&first, 1);
        f.use_times(&second, 1);
        let start = Instant::now();
        f.flush(start).await.unwrap();
        f.use_times(&first, 1);
        f.flush(start).await.unwrap();
        let state = f.recorder.flush.lock().await;
        assert_eq!(
            state.last_sequence, 2,
            "one sequence per flush, not per account"
        );
        assert!(state.unconfirmed.batches.is_empty());
        assert_eq!(f.recorder.node_id(), 7);
    }
}
