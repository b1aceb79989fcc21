//! The request-side cost of a key before any store is touched: header
//! grammar, key format with CRC-32, then SHA-256. SPEC goal: parse + checksum
//! ≤ 50 ns, with hashing ≤ 120 ns; the bare SHA-256 of 48 bytes is the floor.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;

use cloro_auth_core::{ApiKey, Environment, KeyHash, bearer_token_from_value};
use criterion::{Criterion, criterion_group, criterion_main};

fn verify_parse(c: &mut Criterion) {
    let key = ApiKey::from_random_bytes(Environment::Live, *b"0123456789abcdef");
    let header = format!("Bearer {}", key.expose_secret());
    let mut bad = header.clone().into_bytes();
    bad[30] = if bad[30] == b'a' { b'b' } else { b'a' };

    let mut group = c.benchmark_group("verify_parse");
    group.bench_function("sha256_48_bytes_floor", |b| {
        b.iter(|| KeyHash::of(black_box(key.expose_secret().as_bytes())))
    });
    group.bench_function("header_only", |b| {
        b.iter(|| bearer_token_from_value(black_box(header.as_bytes())))
    });
    group.bench_function("header_and_checksum", |b| {
        b.iter(|| {
            let token = bearer_token_from_value(black_box(header.as_bytes())).ok()?;
            ApiKey::check_format(token.as_bytes()).ok()
        })
    });
    group.bench_function("header_checksum_sha256", |b| {
        b.iter(|| {
            let token = bearer_token_from_value(black_box(header.as_bytes())).ok()?;
            ApiKey::check_format(token.as_bytes()).ok()?;
            Some(KeyHash::of(token.as_bytes()))
        })
    });
    group.bench_function("bad_checksum_rejected", |b| {
        b.iter(|| {
            let token = bearer_token_from_value(black_box(&bad)).ok()?;
            ApiKey::check_format(token.as_bytes()).err()
        })
    });
    group.finish();
}

criterion_group!(benches, verify_parse);
criterion_main!(benches);
