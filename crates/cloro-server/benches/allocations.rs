//! Heap allocations per request (issue: an authenticated request as cheap
//! as a static answer): a counting allocator around the system one, and
//! the server's whole request path (`App::handle`, from a parsed request to
//! a response with its body collected) for `/healthz`, `/auth/verify`,
//! `/v1/whoami`, a 401 and a 429. Counts, not times: they are the same on
//! every run and every machine, so a change that adds one shows.
//!
//! The goal: `/auth/verify` at most 3 allocations above `/healthz`.
//! Run with `cargo bench -p cloro-server --bench allocations`.

// A bench that meets the unexpected should stop right there, loudly.
#![allow(clippy::unwrap_used)]

use std::alloc::System;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use cloro_auth_core::AccountId;
use cloro_auth_core::wire::{CreateKeyRequest, RateLimitPolicy};
use cloro_server::App;
use cloro_server::config::{Flags, Settings};
use http::Request;
use http_body_util::{BodyExt, Empty};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

/// The system allocator, counting (`stats_alloc` keeps the unsafe part,
/// which this workspace forbids).
#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations and reallocations since `region` began.
fn allocations(region: &Region<'_, System>) -> u64 {
    let change = region.change();
    (change.allocations + change.reallocations) as u64
}

const ADMIN_TOKEN: &str = "bench_admin_token_0123456789abcdefghijklmnop";
/// Requests per route; the figure is the mean (steady state: the first
/// requests fill caches and are not counted).
const REQUESTS: u64 = 2_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(measure());
}

async fn measure() {
    let dir = tempfile::tempdir().unwrap();
    let flags = Flags {
        data_dir: Some(dir.path().to_owned()),
        ..Flags::default()
    };
    // Unknown keys are the 401 measured here, not a lockout's 429.
    let settings = Settings::from_toml(flags, "max_failed_auth = \"1000000000/minute\"\n").unwrap();
    let (app, _background) = App::build(settings, Some(ADMIN_TOKEN)).await.unwrap();
    let now = app.clock().now();
    let mut unlimited = CreateKeyRequest::new(AccountId::new("acct_bench").unwrap(), "bench");
    unlimited.rate_limit = Some(RateLimitPolicy::new(
        std::num::NonZeroU32::MAX,
        std::num::NonZeroU32::MIN,
    ));
    let key = app.admin().create(unlimited, "bench", now).await.unwrap();
    let key = key.key.expose_secret().to_owned();
    let mut limited = CreateKeyRequest::new(AccountId::new("acct_limited").unwrap(), "limited");
    limited.rate_limit = Some(RateLimitPolicy::new(
        std::num::NonZeroU32::MIN,
        std::num::NonZeroU32::new(3600).unwrap(),
    ));
    let spent = app.admin().create(limited, "bench", now).await.unwrap();
    let spent = spent.key.expose_secret().to_owned();
    let unknown = {
        // A well-formed key that was never issued: 401 INVALID_API_KEY.
        let other = cloro_auth_core::ApiKey::generate(cloro_auth_core::Environment::Live).unwrap();
        other.expose_secret().to_owned()
    };
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let cases: [(&str, &str, Option<&str>, u16); 5] = [
        ("GET /healthz", "/healthz", None, 200),
        ("GET /auth/verify", "/auth/verify", Some(&key), 200),
        ("GET /v1/whoami", "/v1/whoami", Some(&key), 200),
        ("401 (unknown key)", "/v1/whoami", Some(&unknown), 401),
        ("429 (rate limit spent)", "/v1/whoami", Some(&spent), 429),
    ];
    println!("heap allocations per request (mean of {REQUESTS}, after warm-up):");
    let mut healthz = 0.0;
    let mut verify = 0.0;
    for (name, path, bearer, status) in cases {
        let send = |app: Arc<App>| async move {
            let mut request = Request::get(path);
            if let Some(bearer) = bearer {
                request = request.header("authorization", format!("Bearer {bearer}"));
            }
            let request = request.body(Empty::<Bytes>::new()).unwrap();
            let response = app.handle(request, peer).await;
            let answered = response.status().as_u16();
            let _ = response.into_body().collect().await;
            answered
        };
        // Warm up (and spend the limited key's one request).
        for _ in 0..20 {
            send(app.clone()).await;
        }
        let region = Region::new(ALLOCATOR);
        for _ in 0..REQUESTS {
            let answered = send(app.clone()).await;
            assert_eq!(answered, status, "{name}");
        }
        let per_request = allocations(&region) as f64 / REQUESTS as f64;
        println!("  {name:<26} {per_request:>6.1}");
        match path {
            "/healthz" => healthz = per_request,
            "/auth/verify" => verify = per_request,
            _ => {}
        }
    }
    println!(
        "  /auth/verify - /healthz: {:.1} (goal <= 3; the request and its header, built here, count for both)",
        verify - healthz
    );
}
