//! The verifier's hot path, measured (issue goals in brackets):
//! a cached valid key with the local limiter [≤ 250 ns], a bad checksum
//! [≤ 50 ns, zero store calls], 100k distinct cached keys visited uniformly
//! [≤ 800 ns], and two threads against one [throughput ≥ 1.8×].
//!
//! A cache hit never awaits, so each call is polled once with a no-op waker:
//! that measures the verifier, not an executor. The request (with its
//! timestamp) is built once per run: the server reads the clock per request
//! for its own needs (the error body's timestamp), and the
//! `components_100k_uniform/clock_read` figure gives that cost separately.

#![allow(missing_docs, clippy::unwrap_used)] // criterion's macros; a bench stops loudly

use std::future::Future;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use cloro_auth_core::wire::{CreateKeyRequest, RateLimitPolicy};
use cloro_auth_core::{AccountId, KeyHash};
use cloro_keystore::{
    BoundedTable, GcraParams, KeyAdmin, KeyedHasher, LocalNotifier, LocalRateLimiter, MemoryStore,
    Plans, Verifier, VerifierConfig, VerifyRequest,
};
use criterion::{Criterion, criterion_group, criterion_main};
use jiff::Timestamp;

fn poll_once<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a cache hit must not wait"),
    }
}

struct Bench {
    store: Arc<MemoryStore>,
    verifier: Arc<Verifier>,
    headers: Vec<String>,
}

/// `count` keys in a memory store, each verified once so the cache is warm.
fn setup(count: usize) -> Bench {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(MemoryStore::new());
    let plans = Arc::new(Plans::builtin());
    let config = VerifierConfig {
        cache_ttl: Duration::from_secs(3600),
        ..Default::default()
    };
    let verifier = Verifier::new(store.clone(), plans.clone(), None, &config);
    let admin = KeyAdmin::new(store.clone(), plans, Arc::new(LocalNotifier::default()));
    // A limit no benchmark reaches, so every call takes the full allowed path.
    let unlimited = RateLimitPolicy::new(
        NonZeroU32::new(1_000_000_000).unwrap(),
        NonZeroU32::new(1).unwrap(),
    );
    let headers = runtime.block_on(async {
        let mut headers = Vec::with_capacity(count);
        for i in 0..count {
            let mut request =
                CreateKeyRequest::new(AccountId::new("acct_bench").unwrap(), format!("k{i}"));
            request.rate_limit = Some(unlimited);
            let issued = admin
                .create(request, "bench", Timestamp::now())
                .await
                .unwrap();
            let header = format!("Bearer {}", issued.key.expose_secret());
            verifier
                .verify([header.as_bytes()], &request_now())
                .await
                .unwrap();
            headers.push(header);
        }
        headers
    });
    Bench {
        store,
        verifier,
        headers,
    }
}

fn request_now() -> VerifyRequest {
    VerifyRequest {
        client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        required_scope: None,
        limit_concurrency: true,
        cost: 1,
        now: Timestamp::now(),
    }
}

fn verify_ok(verifier: &Verifier, header: &str, request: &VerifyRequest) -> bool {
    poll_once(verifier.verify([header.as_bytes()], request)).is_ok()
}

fn single_key(c: &mut Criterion) {
    let bench = setup(1);
    let header = bench.headers[0].clone();
    let mut bad = header.clone().into_bytes();
    bad[30] = if bad[30] == b'a' { b'b' } else { b'a' };
    let bad = String::from_utf8(bad).unwrap();
    let lookups_before = bench.store.lookup_count();
    let request = request_now();

    let mut group = c.benchmark_group("verify");
    group.bench_function("cached_valid_key_local_limiter", |b| {
        b.iter(|| assert!(verify_ok(&bench.verifier, black_box(&header), &request)))
    });
    group.bench_function("bad_checksum", |b| {
        b.iter(|| assert!(!verify_ok(&bench.verifier, black_box(&bad), &request)))
    });
    group.finish();
    let store_calls = bench.store.lookup_count() - lookups_before;
    assert_eq!(
        store_calls, 0,
        "the hot path and bad checksums must not reach the store"
    );
    eprintln!("store calls during cached and bad-checksum runs: {store_calls}");
}

fn many_keys(c: &mut Criterion) {
    const KEYS: usize = 100_000;
    let bench = setup(KEYS);
    // A fixed pseudo-random visiting order (xorshift), so runs are comparable.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let order: Vec<usize> = (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % KEYS as u64) as usize
        })
        .collect();
    let lookups_before = bench.store.lookup_count();
    let request = request_now();
    let mut next = 0;
    c.bench_function("verify/100k_cached_keys_uniform", |b| {
        b.iter(|| {
            next = (next + 1) & ((1 << 20) - 1);
            assert!(verify_ok(
                &bench.verifier,
                &bench.headers[order[next]],
                &request
            ));
        })
    });
    // The bench's own share of the figure above: fetching one of 100k header
    // strings from memory and hashing it. A server pays the hash but not the
    // fetch, since it has just parsed the header.
    let mut next = 0;
    c.bench_function("verify/100k_baseline_fetch_header_and_sha256", |b| {
        b.iter(|| {
            next = (next + 1) & ((1 << 20) - 1);
            KeyHash::of(black_box(bench.headers[order[next]].as_bytes()))
        })
    });
    assert_eq!(
        bench.store.lookup_count(),
        lookups_before,
        "all 100k keys stayed cached"
    );
}

fn parallel(c: &mut Criterion) {
    let bench = setup(64);
    let request = request_now();
    let mut group = c.benchmark_group("verify_parallel");
    // Time per verification over all threads: one thread's figure divided by
    // this one is the speed-up.
    for threads in [1usize, 2] {
        group.bench_function(format!("{threads}_threads_distinct_keys"), |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                std::thread::scope(|scope| {
                    for thread in 0..threads {
                        let verifier = &bench.verifier;
                        let request = &request;
                        let headers = &bench.headers[thread * 32..thread * 32 + 32];
                        scope.spawn(move || {
                            for i in 0..iters as usize {
                                assert!(verify_ok(verifier, &headers[i % 32], request));
                            }
                        });
                    }
                });
                started.elapsed() / threads as u32
            })
        });
    }
    group.finish();
}

/// The parts of the 100k-key path on their own, to see where time goes.
fn components(c: &mut Criterion) {
    const KEYS: usize = 100_000;
    let hashes: Vec<KeyHash> = (0..KEYS as u32)
        .map(|i| KeyHash::of(&i.to_le_bytes()))
        .collect();
    // The negative cache's table, and the known-key map's kind of map.
    let table: BoundedTable<u64> = BoundedTable::with_budget(64 << 20);
    let map: dashmap::DashMap<KeyHash, Arc<u64>, KeyedHasher> =
        dashmap::DashMap::with_hasher(KeyedHasher::default());
    for (i, hash) in hashes.iter().enumerate() {
        table.upsert(hash, || i as u64, |_| ());
        map.insert(*hash, Arc::new(i as u64));
    }
    let limiter = LocalRateLimiter::new();
    let params = GcraParams::of(&RateLimitPolicy::new(
        NonZeroU32::new(1_000_000_000).unwrap(),
        NonZeroU32::new(1).unwrap(),
    ));
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % KEYS as u64) as usize
    };
    let mut group = c.benchmark_group("components_100k_uniform");
    group.bench_function("bounded_table_get", |b| {
        b.iter(|| table.get_mut(&hashes[next()], |v| *v))
    });
    group.bench_function("dashmap_get", |b| {
        b.iter(|| map.get(&hashes[next()]).map(|v| **v))
    });
    let now = 1_000_000_000_000;
    group.bench_function("local_limiter_check", |b| {
        b.iter(|| limiter.check(&hashes[next()], &params, now))
    });
    group.bench_function("clock_read", |b| b.iter(Timestamp::now));
    group.finish();
}

criterion_group!(benches, single_key, many_keys, parallel, components);
criterion_main!(benches);
