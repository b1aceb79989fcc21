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
        let cell = &key.usage;
        cell.count.fetch_add(1, Ordering::Relaxed);
        cell.last_used.fetch_max(now_nanos, Ordering::Relaxed);
        // Queue the key once per flush; the load keeps the common case free of
        // a contended read-modify-write.
        if !cell.queued.load(Ordering::Relaxed)
            && !cell.queued.swap(true, Ordering::AcqRel)
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
            key.usage.queued.store(false, Ordering::Release);
            let count = key.usage.count.swap(0, Ordering::AcqRel);
            let nanos = key.usage.last_used.load(Ordering::Acquire);
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
            for (key, delta) in keys.iter().zip(&batch) {
                key.usage.count.fetch_add(delta.count, Ordering::AcqRel);
            }
            if let Ok(mut pending) = self.pending.lock() {
                pending.extend(keys);
            }
            return Err(error);
        }
        Ok(batch.len())
    }
}
