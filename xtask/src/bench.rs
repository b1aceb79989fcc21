//! `cargo xtask bench`: criterion benches, then a load comparison of the
//! running server with wrk (SPEC perf goals): authenticated `GET /v1/whoami`
//! against the unauthenticated `/healthz` of the same server in the same
//! run, and a flood of invalid keys with the store calls it caused. Then a
//! propagation run: two servers on one private `redis-server`, 100 keys
//! revoked on one, and the delay until the other refuses each (SPEC §8;
//! goal p99 <= 100 ms).
//!
//! Everything runs on this one machine: wrk and the server share its cores,
//! so absolute figures understate a real deployment; the ratios are what
//! the comparison is for.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{
    ADMIN_TOKEN, PrivateRedis, RELEASE_SERVER, ServerProcess, Store, create_key, free_port, http,
    metric,
};

/// A rate limit no benchmark reaches.
const BENCH_KEY: &str = r#"{"account_id":"acct_bench","name":"bench","rate_limit":{"requests":1000000000,"per_seconds":1}}"#;
/// wrk settings: one thread and a modest connection count leave the other
/// core to the server.
const WRK_THREADS: &str = "1";
const WRK_CONNECTIONS: &str = "32";
const WRK_DURATION: &str = "10s";

/// One wrk run's figures.
struct Load {
    requests_per_second: f64,
    p50: String,
    p99: String,
    non_2xx: u64,
}

/// Runs the criterion benches and the load comparison.
pub(crate) fn run(cargo: &str) -> Result<(), String> {
    step("criterion benches", cargo, &["bench", "--workspace"])?;
    crate::provision::provision(std::slice::from_ref(&crate::provision::WRK))?;
    step(
        "release build of cloro-server",
        cargo,
        &["build", "--release", "--package", "cloro-server"],
    )?;
    let data_dir = std::env::temp_dir().join(format!("cloro-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let port = free_port()?;
    let mut server = ServerProcess::start(
        Path::new(RELEASE_SERVER),
        port,
        &Store::Embedded(&data_dir),
        &[],
    )?;
    let result = compare(port);
    server.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
    result?;
    propagation(Path::new(RELEASE_SERVER))
}

/// Only the propagation run (after a release build of the server).
pub(crate) fn run_propagation(cargo: &str) -> Result<(), String> {
    step(
        "release build of cloro-server",
        cargo,
        &["build", "--release", "--package", "cloro-server"],
    )?;
    propagation(Path::new(RELEASE_SERVER))
}

/// Revocations made on one node and refused on another.
const REVOCATIONS: usize = 100;

/// Two nodes on one private Redis: the delay from a revocation's answer on
/// node A until node B first refuses the key (B had it cached).
fn propagation(binary: &Path) -> Result<(), String> {
    let redis = PrivateRedis::start()?;
    let store = Store::Redis(&redis.url);
    let (port_a, port_b) = (free_port()?, free_port()?);
    let a = ServerProcess::start(binary, port_a, &store, &[])?;
    let b = ServerProcess::start(binary, port_b, &store, &[])?;
    let result = measure_revocations(port_a, port_b);
    drop((a, b, redis));
    let mut delays = result?;
    delays.sort();
    let at = |q: f64| delays[((delays.len() - 1) as f64 * q).round() as usize];
    eprintln!();
    eprintln!("propagation ({REVOCATIONS} revocations on node A, refused on node B):");
    eprintln!(
        "  p50 {:?}  p99 {:?}  max {:?} (goal p99 <= 100 ms)",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    Ok(())
}

fn measure_revocations(port_a: u16, port_b: u16) -> Result<Vec<Duration>, String> {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let mut delays = Vec::with_capacity(REVOCATIONS);
    for _ in 0..REVOCATIONS {
        let (key, id) = create_key(port_a, BENCH_KEY)?;
        let bearer = format!("Bearer {key}");
        let whoami = |port| http(port, "GET", "/v1/whoami", &[("Authorization", &bearer)], "");
        // Cache it on B: the delay measured is the invalidation's.
        if whoami(port_b)?.0 != 200 {
            return Err("a fresh key was refused on node B".into());
        }
        let (status, body) = http(
            port_a,
            "POST",
            &format!("/admin/v1/keys/{id}/revoke"),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            "{}",
        )?;
        if status != 200 {
            return Err(format!("revoking answered {status}: {body}"));
        }
        let revoked = Instant::now();
        loop {
            if whoami(port_b)?.0 == 401 {
                delays.push(revoked.elapsed());
                break;
            }
            if revoked.elapsed() > Duration::from_secs(5) {
                return Err("node B still accepted a revoked key after 5 s".into());
            }
        }
    }
    Ok(delays)
}

fn compare(port: u16) -> Result<(), String> {
    let (key, _) = create_key(port, BENCH_KEY)?;
    let base = format!("http://127.0.0.1:{port}");
    // Warm up both paths (connection setup, the key's cache entry).
    wrk(&format!("{base}/healthz"), None, "2s")?;
    wrk(&format!("{base}/v1/whoami"), Some(&key), "2s")?;

    let unauthenticated = wrk(&format!("{base}/healthz"), None, WRK_DURATION)?;
    let authenticated = wrk(&format!("{base}/v1/whoami"), Some(&key), WRK_DURATION)?;
    let misses_before = metric(port, "cloro_cache_misses_total")?;
    let bad_key = bad_checksum(&key);
    let flood = wrk(&format!("{base}/v1/whoami"), Some(&bad_key), WRK_DURATION)?;
    let misses_after = metric(port, "cloro_cache_misses_total")?;

    let ratio = authenticated.requests_per_second / unauthenticated.requests_per_second;
    eprintln!();
    eprintln!(
        "load comparison (wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{WRK_DURATION}, same server, same run):"
    );
    eprintln!(
        "  {:<38} {:>12} {:>10} {:>10}",
        "", "requests/s", "p50", "p99"
    );
    for (name, load) in [
        ("GET /healthz (no auth)", &unauthenticated),
        ("GET /v1/whoami (API key, rate limit)", &authenticated),
        ("invalid-key flood (bad checksum)", &flood),
    ] {
        eprintln!(
            "  {name:<38} {:>12.0} {:>10} {:>10}",
            load.requests_per_second, load.p50, load.p99
        );
    }
    eprintln!(
        "  authenticated / unauthenticated throughput: {:.1}% (goal >= 90%)",
        ratio * 100.0
    );
    eprintln!(
        "  store lookups caused by the flood: {} (goal 0); its non-2xx answers: {}",
        misses_after.saturating_sub(misses_before),
        flood.non_2xx
    );
    if authenticated.non_2xx > 0 {
        return Err(format!(
            "{} authenticated requests failed",
            authenticated.non_2xx
        ));
    }
    Ok(())
}

pub(crate) fn step(name: &str, cargo: &str, args: &[&str]) -> Result<(), String> {
    eprintln!("==> {name}: cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .status()
        .map_err(|e| format!("{name}: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("{name} failed ({status})"))
}

/// The same key with one digit changed: fails its checksum.
fn bad_checksum(key: &str) -> String {
    let mut bytes = key.as_bytes().to_vec();
    bytes[20] = if bytes[20] == b'0' { b'1' } else { b'0' };
    String::from_utf8_lossy(&bytes).into_owned()
}

fn wrk(url: &str, key: Option<&str>, duration: &str) -> Result<Load, String> {
    let mut command = Command::new("wrk");
    command.args([
        "-t",
        WRK_THREADS,
        "-c",
        WRK_CONNECTIONS,
        "-d",
        duration,
        "--latency",
    ]);
    if let Some(key) = key {
        command.args(["-H", &format!("Authorization: Bearer {key}")]);
    }
    let output = command.arg(url).output().map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let field = |prefix: &str| {
        BufReader::new(text.as_bytes())
            .lines()
            .map_while(Result::ok)
            .find(|line| line.trim_start().starts_with(prefix))
            .and_then(|line| line.split_whitespace().nth(1).map(str::to_owned))
    };
    let requests_per_second = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("unexpected wrk output:\n{text}"))?;
    // "Non-2xx or 3xx responses: N": the count is the line's last word.
    let non_2xx = BufReader::new(text.as_bytes())
        .lines()
        .map_while(Result::ok)
        .find(|line| line.trim_start().starts_with("Non-2xx"))
        .and_then(|line| line.split_whitespace().last().and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    Ok(Load {
        requests_per_second,
        p50: field("50%").unwrap_or_default(),
        p99: field("99%").unwrap_or_default(),
        non_2xx,
    })
}
