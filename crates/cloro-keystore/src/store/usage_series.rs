//! What every store shares about usage series (SPEC §10): the buckets a
//! minute's counts go into, and when a bucket is old enough to drop.

use cloro_auth_core::KeyId;
use cloro_auth_core::wire::{UsageCounts, UsageGranularity};

/// One stored bucket of one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeriesPoint {
    /// The key.
    pub key_id: KeyId,
    /// The bucket's start, Unix seconds.
    pub start: i64,
    /// Its counts.
    pub counts: UsageCounts,
}

/// Buckets dropped at most per usage write and granularity: old buckets
/// go a little at a time, so no write is slow, and they still go faster
/// than new ones come (a write adds at most one bucket per key and
/// granularity).
pub(crate) const PRUNE_PER_WRITE: usize = 256;

/// The start of the bucket of each granularity that holds `minute`.
pub(crate) fn bucket_starts(minute: i64) -> [(UsageGranularity, i64); 3] {
    UsageGranularity::ALL.map(|granularity| (granularity, granularity.bucket_start(minute)))
}

/// Buckets of `granularity` that start before this (Unix seconds) are past
/// retention at `now_seconds`.
pub(crate) fn retention_cutoff(granularity: UsageGranularity, now_seconds: i64) -> i64 {
    granularity.bucket_start(now_seconds.saturating_sub(granularity.retention_seconds()))
}
