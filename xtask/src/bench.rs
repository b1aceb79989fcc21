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
    load(Path::new(RELEASE_SERVER))?;
    propagation(Path::new(RELEASE_SERVER))
}

/// Only the load comparison, against `binary` (a release build of the
/// server unless the caller names another binary).
pub(crate) fn run_load(cargo: &str, binary: Option<&str>) -> Result<(), String> {
    crate::provision::provision(std::slice::from_ref(&crate::provision::WRK))?;
    let binary = match binary {
        Some(path) => Path::new(path).to_owned(),
        None => {
            step(
                "release build of cloro-server",
                cargo,
                &["build", "--release", "--package", "cloro-server"],
            )?;
            Path::new(RELEASE_SERVER).to_owned()
        }
    };
    load(&binary)
}

fn load(binary: &Path) -> Result<(), String> {
    let data_dir = std::env::temp_dir().join(format!("cloro-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let result = compare(binary, &data_dir);
    let _ = std::fs::remove_dir_all(&data_dir);
    result
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

/// A route of the load comparison, and the key it sends.
struct Case {
    name: &'static str,
    /// For the scaling line.
    short: &'static str,
    path: &'static str,
    key: Option<String>,
}

/// One server's figures at one worker-thread count.
struct Row {
    threads: usize,
    loads: Vec<Load>,
}

/// The server at 1 and at 2 worker threads (each its own process on the
/// same data), every route in turn, then nginx's static answer with one
/// worker: every figure of the performance goals from one run, as ratios.
fn compare(binary: &Path, data_dir: &Path) -> Result<(), String> {
    let mut rows = Vec::new();
    let mut cases = Vec::new();
    for threads in [1usize, 2] {
        let port = free_port()?;
        let threads_text = threads.to_string();
        let mut server = ServerProcess::start(
            binary,
            port,
            &Store::Embedded(data_dir),
            &["--workers", &threads_text],
        )?;
        let measured = measure(port, &mut cases);
        server.stop();
        rows.push(Row {
            threads,
            loads: measured?,
        });
    }
    let nginx = nginx_static()?;
    print_comparison(&cases, &rows, &nginx);
    Ok(())
}

/// Every case against the server on `port` (the key is made on first use
/// and kept for the next server, which shares the data).
fn measure(port: u16, cases: &mut Vec<Case>) -> Result<Vec<Load>, String> {
    if cases.is_empty() {
        let (key, _) = create_key(port, BENCH_KEY)?;
        let bad = bad_checksum(&key);
        cases.extend([
            Case {
                name: "GET /healthz (no auth)",
                short: "healthz",
                path: "/healthz",
                key: None,
            },
            Case {
                name: "GET /auth/verify (key, rate limit)",
                short: "verify",
                path: "/auth/verify",
                key: Some(key.clone()),
            },
            Case {
                name: "GET /v1/whoami (key, rate limit)",
                short: "whoami",
                path: "/v1/whoami",
                key: Some(key),
            },
            Case {
                name: "bad-key flood (bad checksum)",
                short: "flood",
                path: "/v1/whoami",
                key: Some(bad),
            },
        ]);
    }
    let base = format!("http://127.0.0.1:{port}");
    let mut loads = Vec::new();
    for case in cases.iter() {
        let url = format!("{base}{}", case.path);
        // Warm up: connections, the key's cache entry.
        wrk(&url, case.key.as_deref(), "2s")?;
        let misses_before = metric(port, "cloro_cache_misses_total")?;
        let load = wrk(&url, case.key.as_deref(), WRK_DURATION)?;
        let misses = metric(port, "cloro_cache_misses_total")?.saturating_sub(misses_before);
        let flood = case.name.starts_with("bad-key");
        if flood && misses > 0 {
            return Err(format!(
                "the bad-key flood caused {misses} store lookups (goal 0)"
            ));
        }
        if !flood && load.non_2xx > 0 {
            return Err(format!(
                "{}: {} answers were not 2xx",
                case.name, load.non_2xx
            ));
        }
        loads.push(load);
    }
    Ok(loads)
}

fn print_comparison(cases: &[Case], rows: &[Row], nginx: &Load) {
    eprintln!();
    eprintln!(
        "load comparison (wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{WRK_DURATION}, one run, requests/s and p99):"
    );
    eprint!("  {:<38}", "");
    for row in rows {
        eprint!(" {:>22}", format!("{} server thread(s)", row.threads));
    }
    eprintln!();
    for (index, case) in cases.iter().enumerate() {
        eprint!("  {:<38}", case.name);
        for row in rows {
            let load = &row.loads[index];
            eprint!(" {:>12.0} {:>9}", load.requests_per_second, load.p99);
        }
        eprintln!();
    }
    eprintln!(
        "  {:<38} {:>12.0} {:>9}",
        "nginx `return 200`, 1 worker", nginx.requests_per_second, nginx.p99
    );
    let rate = |row: &Row, index: usize| row.loads[index].requests_per_second;
    for row in rows {
        let healthz = rate(row, 0);
        eprintln!(
            "  {} thread(s): verify / healthz {:.2} (goal >= 0.90), whoami / healthz {:.2} (goal >= 0.85), flood / healthz {:.2} (goal >= 0.95)",
            row.threads,
            rate(row, 1) / healthz,
            rate(row, 2) / healthz,
            rate(row, 3) / healthz,
        );
    }
    if let [one, two] = rows {
        let scaling: Vec<String> = cases
            .iter()
            .enumerate()
            .map(|(index, case)| {
                format!("{} {:.2}", case.short, rate(two, index) / rate(one, index))
            })
            .collect();
        eprintln!("  2 threads / 1 thread (goal >= 1): {}", scaling.join(", "));
        eprintln!(
            "  healthz (1 thread) / nginx: {:.2} (goal >= 0.95); verify (1 thread) / nginx: {:.2} (target >= 0.85)",
            rate(one, 0) / nginx.requests_per_second,
            rate(one, 1) / nginx.requests_per_second,
        );
    }
}

/// nginx with one worker answering `return 200` from its config, the
/// static baseline of the HTTP layer.
fn nginx_static() -> Result<Load, String> {
    crate::provision::provision(std::slice::from_ref(&crate::provision::NGINX))?;
    let dir = std::env::temp_dir().join(format!("cloro-bench-nginx-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs")).map_err(|e| e.to_string())?;
    let port = free_port()?;
    let config = format!(
        "worker_processes 1;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/logs/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; keepalive_requests 1000000;\n\
           client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fastcgi;\n\
           uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;\n\
           server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\"; }} }} }}\n",
        dir = dir.display()
    );
    let config_path = dir.join("nginx.conf");
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
    let mut nginx = Command::new("nginx")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&config_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start nginx (apt-get install nginx): {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while http(port, "GET", "/", &[], "").is_err() {
        if Instant::now() > deadline {
            let _ = nginx.kill();
            return Err("nginx did not answer within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("http://127.0.0.1:{port}/");
    let measured = wrk(&url, None, "2s").and_then(|_| wrk(&url, None, WRK_DURATION));
    let _ = nginx.kill();
    let _ = nginx.wait();
    let _ = std::fs::remove_dir_all(&dir);
    measured
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
        p99: field("99%").unwrap_or_default(),
        non_2xx,
    })
}
