//! Batched usage: `last_used_at` and use counts are added up in memory on
//! the hot path (two atomics) and written to the store every few seconds,
//! never once per request.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

use crate::cache::CachedKey;
use crate::record::UsageDelta;
use crate::store::{KeyStore, StoreError};

/// Keys used since the last flush.
#[derive(Debug, Default)]
pub struct UsageRecorder {
    pending: Mutex<Vec<Arc<CachedKey>>>,
}

impl UsageRecorder {
    /// Counts one successful use of `key` at `now_nanos`.
    pub(crate) fn record(&self, key: &Arc<CachedKey>, now_nanos: i64) {
        let counters = &key.counters;
        counters.usage_count.fetch_add(1, Ordering::Relaxed);
        counters.last_used.fetch_max(now_nanos, Ordering::Relaxed);
        // Queue the key once per flush; the load keeps the common case free of
        // a contended read-modify-write.
        if !counters.usage_queued.load(Ordering::Relaxed)
            && !counters.usage_queued.swap(true, Ordering::AcqRel)
            && let Ok(mut pending) = self.pending.lock()
        {
            pending.push(Arc::clone(key));
        }
    }

    /// Writes what was counted since the last flush. On failure the counts
    /// go back to their keys, to be written next time.
    ///
    /// # Errors
    /// The store's error.
    pub async fn flush(&self, store: &dyn KeyStore) -> Result<usize, StoreError> {
        let keys = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return Ok(0),
        };
        let mut batch = Vec::with_capacity(keys.len());
        for key in &keys {
            let counters = &key.counters;
            counters.usage_queued.store(false, Ordering::Release);
            let count = counters.usage_count.swap(0, Ordering::AcqRel);
            let nanos = counters.last_used.load(Ordering::Acquire);
            let Ok(last_used_at) = Timestamp::from_nanosecond(i128::from(nanos)) else {
                continue;
            };
            if count > 0 {
                batch.push(UsageDelta {
                    account_id: key.record.account_id,
                    key_id: key.record.id,
                    last_used_at,
                    count,
                });
            }
        }
        if batch.is_empty() {
            return Ok(0);
        }
        if let Err(error) = store.record_usage(&batch).await {
            for delta in &batch {
                if let Some(key) = keys.iter().find(|key| key.record.id == delta.key_id) {
                    key.counters
                        .usage_count
                        .fetch_add(delta.count, Ordering::AcqRel);
                    key.counters.usage_queued.store(true, Ordering::Release);
                }
            }
            if let Ok(mut pending) = self.pending.lock() {
                pending.extend(keys);
            }
            return Err(error);
        }
        Ok(batch.len())
    }
}
