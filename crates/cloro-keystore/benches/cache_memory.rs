//! Memory per cached key (issue: an authenticated request as cheap as a
//! static answer; goal ≤ 512 B per key beyond the empty server): N keys in
//! a memory store, then each verified once, so the verifier holds N cached
//! keys with their limiter state. The figure is what verifying them
//! added, divided by N, for N = 100k and 1M:
//!
//! - heap bytes, counted by a counting allocator around the system one
//!   (exact, the same on every run: what our structures hold), and
//! - resident bytes, from `/proc/self/status` (what the machine pays,
//!   with the allocator's own overhead and the map's spare capacity).
//!
//! Run with `cargo bench -p cloro-keystore --bench cache_memory --profile release`.

// A bench that meets the unexpected should stop right there, loudly.
#![allow(missing_docs, clippy::unwrap_used)]

use std::alloc::System;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use cloro_auth_core::AccountId;
use cloro_auth_core::wire::{CreateKeyRequest, RateLimitPolicy};
use cloro_keystore::{
    CachedKey, KeyAdmin, KeyRecord, LocalNotifier, MemoryStore, Plans, Verifier, VerifierConfig,
    VerifyRequest,
};
use jiff::Timestamp;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

/// The system allocator, counting (`stats_alloc` keeps the unsafe part,
/// which this workspace forbids).
#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The goal, in bytes per cached key.
const GOAL: f64 = 512.0;

/// Bytes the heap holds now (`stats_alloc` counts a reallocation's growth
/// and shrinkage in these two already).
fn heap_bytes() -> i64 {
    let stats = ALLOCATOR.stats();
    stats.bytes_allocated as i64 - stats.bytes_deallocated as i64
}

/// Resident bytes of this process (`VmRSS`, in KiB whatever the page size).
fn resident_bytes() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: i64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("cache_memory: bytes per cached key, beyond the keys' store (goal ≤ {GOAL} B)");
    let mut over = false;
    for count in [100_000, 1_000_000] {
        let (heap, resident) = runtime.block_on(measure(count));
        println!(
            "  {count:>9} keys: {heap:>6.0} B heap, {resident:>6.0} B resident per key{}",
            if resident > GOAL {
                "  (over the goal)"
            } else {
                ""
            }
        );
        over |= resident > GOAL;
    }
    // Where the bytes go: the structures every cached key holds, inline
    // (each also holds heap bytes: name, scopes, headers, counters).
    println!(
        "  inline sizes: CachedKey {} B, of which KeyRecord {} B",
        size_of::<CachedKey>(),
        size_of::<KeyRecord>()
    );
    if over {
        println!("cache_memory: over the goal");
    }
}

/// Heap and resident bytes per key that verifying `count` keys once added.
async fn measure(count: usize) -> (f64, f64) {
    let store = Arc::new(MemoryStore::new());
    let plans = Arc::new(Plans::builtin());
    // Usage counting off: its pending counts live only until the next
    // flush (every few seconds), and a flush during a long fill would write
    // usage rows into the memory store, which is not the cache's cost.
    let config = VerifierConfig {
        cache_ttl: Duration::from_secs(3600),
        count_usage: false,
        ..Default::default()
    };
    let verifier = Verifier::new(store.clone(), plans.clone(), None, &config);
    let admin = KeyAdmin::new(store, plans, Arc::new(LocalNotifier::default()))
        .with_ledger(verifier.ledger().clone());
    let account = AccountId::new("acct_bench").unwrap();
    let mut headers = Vec::with_capacity(count);
    for i in 0..count {
        let mut request = CreateKeyRequest::new(account, format!("key {i}"));
        request.rate_limit = Some(RateLimitPolicy::new(
            NonZeroU32::new(1_000_000).unwrap(),
            NonZeroU32::MIN,
        ));
        let issued = admin
            .create(request, "bench", Timestamp::now())
            .await
            .unwrap();
        headers.push(format!("Bearer {}", issued.key.expose_secret()));
    }
    let request = VerifyRequest {
        client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        required_scope: None,
        limit_concurrency: true,
        cost: 1,
        now: Timestamp::now(),
    };
    let (heap_before, resident_before) = (heap_bytes(), resident_bytes());
    for header in &headers {
        verifier
            .verify([header.as_bytes()], &request)
            .await
            .unwrap();
    }
    let (heap_after, resident_after) = (heap_bytes(), resident_bytes());
    assert_eq!(verifier.cache().known_count(), count);
    let per_key = |before: i64, after: i64| (after - before) as f64 / count as f64;
    (
        per_key(heap_before, heap_after),
        per_key(resident_before, resident_after),
    )
}
