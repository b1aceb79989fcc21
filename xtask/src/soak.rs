//! `cargo xtask soak [--minutes N] [--store embedded|redis|both] [--server PATH]`: the
//! release server under mixed traffic for N minutes (default 10), on the
//! embedded store and on a private Redis side by side, sampling each
//! server's resident memory and open descriptors every second.
//!
//! The traffic, per server, one thread each: valid keys (two threads), an
//! attacker's unknown and malformed keys from changing client addresses, a
//! rate-limited key pushed past its limit, and an operator churning keys
//! (create, use, rotate, revoke, list, audit). Every answer is checked
//! against what it must be, not just for a 5xx.
//!
//! It passes with zero 5xx, zero transport errors, zero wrong answers,
//! resident memory after the warm-up growing less than 10 %, and as many
//! descriptors open once the traffic stops as before it began. Not part of
//! `ci`: it is minutes long by design.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::harness::{
    ADMIN_TOKEN, Answer, Connection, PrivateRedis, RELEASE_SERVER, ServerProcess, Store,
    create_key, free_port, json_string,
};

/// The share of the run before memory is taken as the baseline: caches,
/// tables and allocator arenas fill first (at least a minute).
const WARM_UP_SHARE: f64 = 0.2;
/// Growth of resident memory after the warm-up that still passes.
const MAX_GROWTH: f64 = 0.10;
/// The rate-limited key's policy: requests per second.
const LIMITED_REQUESTS: u64 = 20;
/// Wrong answers described in the report, at most (all are counted).
const SHOWN_WRONG: usize = 10;
/// Valid keys the valid-traffic threads take turns with.
const VALID_KEYS: usize = 20;

/// Parsed `soak` arguments.
struct Options {
    duration: Duration,
    embedded: bool,
    redis: bool,
    /// A server binary to soak instead of building the release one (to
    /// compare two builds, or one under a wrapper that sets its
    /// environment and then `exec`s it, so the pid stays the server's).
    server: Option<std::path::PathBuf>,
}

fn options(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        duration: Duration::from_secs(600),
        embedded: true,
        redis: true,
        server: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--minutes" => {
                let minutes: f64 = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|m: &f64| m.is_finite() && *m > 0.0)
                    .ok_or("--minutes takes a positive number, e.g. --minutes 10")?;
                options.duration = Duration::from_secs_f64(minutes * 60.0);
            }
            "--store" => {
                (options.embedded, options.redis) = match args.next().map(String::as_str) {
                    Some("embedded") => (true, false),
                    Some("redis") => (false, true),
                    Some("both") => (true, true),
                    _ => return Err("--store takes embedded, redis or both".into()),
                }
            }
            "--server" => {
                let path = args
                    .next()
                    .ok_or("--server takes the path of a server binary")?;
                options.server = Some(path.into());
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: cargo xtask soak [--minutes N] [--store embedded|redis|both] [--server PATH]"
                ));
            }
        }
    }
    Ok(options)
}

/// Runs the soak and reports; fails when any server did not pass.
pub(crate) fn run(cargo: &str, args: &[String]) -> Result<(), String> {
    let options = options(args)?;
    crate::provision::provision(std::slice::from_ref(&crate::provision::REDIS))?;
    let binary = match &options.server {
        Some(path) => path.as_path(),
        None => {
            crate::bench::step(
                "release build of cloro-server",
                cargo,
                &["build", "--release", "--package", "cloro-server"],
            )?;
            Path::new(RELEASE_SERVER)
        }
    };
    let data_dir = std::env::temp_dir().join(format!("cloro-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let redis = if options.redis {
        Some(PrivateRedis::start()?)
    } else {
        None
    };
    // Trust loopback's X-Forwarded-For, so that the attacker's traffic comes
    // from many addresses and the valid traffic from its own. Every memory
    // bound small: each table and cache fills within the warm-up, so what
    // still grows after it is a leak, not a cache filling up to its bound
    // (at the defaults, the embedded store's 64 MiB page cache alone takes
    // a churning soak over 10 minutes to fill).
    let flags = [
        "--trusted-proxies",
        "127.0.0.1/32",
        "--unknown-key-cache-size",
        "1MiB",
        "--failed-auth-table-size",
        "1MiB",
        "--pending-lookups-size",
        "1MiB",
        "--store-cache-size",
        "4MiB",
    ];
    let mut servers = Vec::new();
    if options.embedded {
        let port = free_port()?;
        let process = ServerProcess::start(binary, port, &Store::Embedded(&data_dir), &flags)?;
        servers.push(("embedded", port, process));
    }
    if let Some(redis) = &redis {
        let port = free_port()?;
        let process = ServerProcess::start(binary, port, &Store::Redis(&redis.url), &flags)?;
        servers.push(("redis", port, process));
    }
    eprintln!(
        "==> soak: {:.1} min of mixed traffic on {}",
        options.duration.as_secs_f64() / 60.0,
        servers
            .iter()
            .map(|(name, _, _)| *name)
            .collect::<Vec<_>>()
            .join(" and ")
    );
    let runs: Vec<_> = servers
        .iter()
        .map(|(name, port, process)| {
            let (name, port, pid, duration) = (*name, *port, process.pid(), options.duration);
            thread::spawn(move || soak_one(name, port, pid, duration))
        })
        .collect();
    let mut failures = Vec::new();
    for run in runs {
        match run.join() {
            Ok(Ok(report)) => {
                report.print();
                failures.extend(report.failures());
            }
            Ok(Err(error)) => failures.push(error),
            Err(_) => failures.push("a soak thread panicked".into()),
        }
    }
    drop(servers);
    drop(redis);
    let _ = std::fs::remove_dir_all(&data_dir);
    if failures.is_empty() {
        eprintln!("soak passed");
        Ok(())
    } else {
        Err(format!("soak failed:\n  {}", failures.join("\n  ")))
    }
}

/// Counts the traffic threads keep.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    server_errors: AtomicU64,
    transport_errors: AtomicU64,
    wrong: AtomicU64,
    /// The first few wrong answers, described (never a key).
    shown: Mutex<Vec<String>>,
    limited_allowed: AtomicU64,
    limited_refused: AtomicU64,
    churn_cycles: AtomicU64,
}

impl Tally {
    /// Records `answer` to `what`; `ok` says whether it was the right one.
    fn check(&self, what: &str, answer: Result<&Answer, &String>, ok: impl Fn(&Answer) -> bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let problem = match answer {
            Err(error) => {
                self.transport_errors.fetch_add(1, Ordering::Relaxed);
                format!("{what}: {error}")
            }
            Ok(answer) if answer.status >= 500 => {
                self.server_errors.fetch_add(1, Ordering::Relaxed);
                format!("{what}: {} {}", answer.status, excerpt(&answer.body))
            }
            Ok(answer) if ok(answer) => return,
            Ok(answer) => {
                self.wrong.fetch_add(1, Ordering::Relaxed);
                format!("{what}: {} {}", answer.status, excerpt(&answer.body))
            }
        };
        let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        if shown.len() < SHOWN_WRONG {
            shown.push(problem);
        }
    }
}

fn excerpt(body: &str) -> &str {
    &body[..body.floor_char_boundary(160)]
}

/// One second's sample of the server process.
#[derive(Clone, Copy)]
struct Sample {
    rss_kib: u64,
    descriptors: u64,
}

fn sample(pid: u32) -> Result<Sample, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("the server is gone ({e})"))?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmRSS in /proc/<pid>/status")?;
    let descriptors = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| e.to_string())?
        .count() as u64;
    Ok(Sample {
        rss_kib,
        descriptors,
    })
}

/// What one server's soak measured.
struct Report {
    name: &'static str,
    tally: Arc<Tally>,
    elapsed: Duration,
    before: Sample,
    warm: Sample,
    peak_after_warm_up: Sample,
    end: Sample,
    after: Sample,
}

impl Report {
    fn growth(&self) -> f64 {
        self.peak_after_warm_up.rss_kib as f64 / self.warm.rss_kib as f64 - 1.0
    }

    /// The rate-limited key's 200s at most: the burst, then the rate.
    fn limited_ceiling(&self) -> u64 {
        LIMITED_REQUESTS + (LIMITED_REQUESTS as f64 * self.elapsed.as_secs_f64()).ceil() as u64
    }

    fn print(&self) {
        let t = &self.tally;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let seconds = self.elapsed.as_secs_f64();
        eprintln!();
        eprintln!("soak on the {} store, {:.0} s:", self.name, seconds);
        eprintln!(
            "  requests {} ({:.0}/s), 5xx {}, transport errors {}, wrong answers {}",
            get(&t.requests),
            get(&t.requests) as f64 / seconds,
            get(&t.server_errors),
            get(&t.transport_errors),
            get(&t.wrong)
        );
        eprintln!(
            "  rate-limited key ({LIMITED_REQUESTS}/s): {} allowed (ceiling {}), {} refused; key churn cycles {}",
            get(&t.limited_allowed),
            self.limited_ceiling(),
            get(&t.limited_refused),
            get(&t.churn_cycles)
        );
        eprintln!(
            "  resident memory: {} KiB before, {} after warm-up, peak {} after it ({:+.1} %, limit +{:.0} %), {} at the end",
            self.before.rss_kib,
            self.warm.rss_kib,
            self.peak_after_warm_up.rss_kib,
            self.growth() * 100.0,
            MAX_GROWTH * 100.0,
            self.end.rss_kib
        );
        eprintln!(
            "  descriptors: {} before the traffic, {} after warm-up, peak {}, {} at the end, {} once it stopped",
            self.before.descriptors,
            self.warm.descriptors,
            self.peak_after_warm_up.descriptors,
            self.end.descriptors,
            self.after.descriptors
        );
        for problem in t.shown.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            eprintln!("  wrong: {problem}");
        }
    }

    fn failures(&self) -> Vec<String> {
        let t = &self.tally;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let name = self.name;
        let mut failures = Vec::new();
        for (count, what) in [
            (get(&t.server_errors), "5xx answers"),
            (get(&t.transport_errors), "transport errors"),
            (get(&t.wrong), "wrong answers"),
        ] {
            if count > 0 {
                failures.push(format!("{name}: {count} {what}"));
            }
        }
        if get(&t.limited_allowed) > self.limited_ceiling() {
            failures.push(format!(
                "{name}: the rate-limited key was allowed {} times, over its ceiling {}",
                get(&t.limited_allowed),
                self.limited_ceiling()
            ));
        }
        if self.growth() >= MAX_GROWTH {
            failures.push(format!(
                "{name}: resident memory grew {:.1} % after the warm-up",
                self.growth() * 100.0
            ));
        }
        if self.after.descriptors > self.before.descriptors {
            failures.push(format!(
                "{name}: {} descriptors open once the traffic stopped, {} before it began",
                self.after.descriptors, self.before.descriptors
            ));
        }
        failures
    }
}

/// Drives one server for `duration` and samples it every second.
fn soak_one(name: &'static str, port: u16, pid: u32, duration: Duration) -> Result<Report, String> {
    let account = format!("acct_soak_{name}");
    let mut valid = Vec::with_capacity(VALID_KEYS);
    for i in 0..VALID_KEYS {
        let body = format!(
            r#"{{"account_id":"{account}","name":"valid {i}","rate_limit":{{"requests":1000000000,"per_seconds":1}}}}"#
        );
        valid.push(create_key(port, &body)?.0);
    }
    let limited_body = format!(
        r#"{{"account_id":"{account}","name":"limited","rate_limit":{{"requests":{LIMITED_REQUESTS},"per_seconds":1}}}}"#
    );
    let (limited, _) = create_key(port, &limited_body)?;
    let before = sample(pid)?;

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let valid = Arc::new(valid);
    let mut workers = Vec::new();
    for offset in 0..2 {
        let (tally, stop, valid) = (tally.clone(), stop.clone(), valid.clone());
        workers.push(thread::spawn(move || {
            valid_traffic(port, &valid, offset, &tally, &stop);
        }));
    }
    {
        let (tally, stop) = (tally.clone(), stop.clone());
        workers.push(thread::spawn(move || attacker(port, &tally, &stop)));
    }
    {
        let (tally, stop) = (tally.clone(), stop.clone());
        workers.push(thread::spawn(move || {
            rate_limited(port, &limited, &tally, &stop);
        }));
    }
    {
        let (tally, stop, account) = (tally.clone(), stop.clone(), account.clone());
        workers.push(thread::spawn(move || churn(port, &account, &tally, &stop)));
    }

    let start = Instant::now();
    let warm_up = duration
        .mul_f64(WARM_UP_SHARE)
        .max(Duration::from_secs(60).min(duration / 2));
    let mut samples = Vec::new();
    let mut warm = None;
    let mut error = None;
    let mut next_progress = Duration::from_secs(60);
    while start.elapsed() < duration {
        thread::sleep(Duration::from_secs(1));
        let sampled = sample(pid);
        if let (Ok(now), true) = (&sampled, start.elapsed() >= next_progress) {
            next_progress += Duration::from_secs(60);
            eprintln!(
                "  {name}: {:>4.0} s, {} requests, {} KiB resident, {} descriptors",
                start.elapsed().as_secs_f64(),
                tally.requests.load(Ordering::Relaxed),
                now.rss_kib,
                now.descriptors
            );
        }
        match sampled {
            Ok(now) if start.elapsed() >= warm_up => match warm {
                None => warm = Some(now),
                Some(_) => samples.push(now),
            },
            Ok(_) => {}
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let end = sample(pid);
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    for worker in workers {
        let _ = worker.join();
    }
    if let Some(error) = error {
        return Err(format!("{name}: {error}"));
    }
    let end = end?;
    // Let the server notice the closed connections before counting.
    thread::sleep(Duration::from_secs(2));
    let after = sample(pid)?;
    let warm = warm.unwrap_or(end);
    let peak_after_warm_up = Sample {
        rss_kib: samples
            .iter()
            .map(|s| s.rss_kib)
            .max()
            .unwrap_or(warm.rss_kib),
        descriptors: samples
            .iter()
            .map(|s| s.descriptors)
            .max()
            .unwrap_or(warm.descriptors),
    };
    Ok(Report {
        name,
        tally,
        elapsed,
        before,
        warm,
        peak_after_warm_up,
        end,
        after,
    })
}

/// `GET /v1/whoami` with valid keys in turn: always 200.
fn valid_traffic(port: u16, keys: &[String], offset: usize, tally: &Tally, stop: &AtomicBool) {
    let mut connection = Connection::new(port);
    let mut turn = offset;
    while !stop.load(Ordering::Relaxed) {
        let bearer = format!("Bearer {}", keys[turn % keys.len()]);
        turn += 1;
        let headers = [
            ("Authorization", bearer.as_str()),
            ("X-Forwarded-For", "198.51.100.7"),
        ];
        let answer = connection.request("GET", "/v1/whoami", &headers, "");
        tally.check("valid key", answer.as_ref(), |a| {
            a.status == 200 && a.body.contains("\"status\":\"active\"")
        });
    }
}

/// Unknown and malformed keys from changing addresses: never a 200; 401,
/// or 429 once an address spent its failed-attempt allowance.
fn attacker(port: u16, tally: &Tally, stop: &AtomicBool) {
    let mut connection = Connection::new(port);
    let mut random = Random::new();
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        // A few hundred addresses at a time, changing: some spend their
        // allowance, and the failed-attempt table sees churn.
        let address = format!(
            "10.{}.{}.{}",
            (round / 4000) % 256,
            random.below(4),
            random.below(256)
        );
        let unknown = Random::unknown_key(&mut random);
        let (what, credential) = match round % 4 {
            0 | 1 => ("an unknown key", format!("Bearer {unknown}")),
            2 => (
                "a bad checksum",
                format!("Bearer {}", with_last_digit_changed(&unknown)),
            ),
            _ => ("not a key", "Bearer sk_live_not-a-key".to_owned()),
        };
        let headers = [
            ("Authorization", credential.as_str()),
            ("X-Forwarded-For", address.as_str()),
        ];
        let answer = connection.request("GET", "/v1/whoami", &headers, "");
        tally.check(what, answer.as_ref(), |a| {
            if what == "an unknown key" {
                is(a, 401, "INVALID_API_KEY") || is(a, 429, "TOO_MANY_FAILED_ATTEMPTS")
            } else {
                is(a, 401, "INVALID_API_KEY_FORMAT")
            }
        });
        if round.is_multiple_of(64) {
            let answer = connection.request("GET", "/v1/whoami", &[], "");
            tally.check("no credential", answer.as_ref(), |a| {
                is(a, 401, "MISSING_API_KEY")
            });
        }
    }
}

/// A key limited to [`LIMITED_REQUESTS`] a second, asked as fast as one
/// connection can: 200 or 429 with `Retry-After`; the 200s are counted.
fn rate_limited(port: u16, key: &str, tally: &Tally, stop: &AtomicBool) {
    let mut connection = Connection::new(port);
    let bearer = format!("Bearer {key}");
    let headers = [
        ("Authorization", bearer.as_str()),
        ("X-Forwarded-For", "198.51.100.8"),
    ];
    while !stop.load(Ordering::Relaxed) {
        let answer = connection.request("GET", "/v1/whoami", &headers, "");
        if let Ok(a) = &answer {
            match a.status {
                200 => tally.limited_allowed.fetch_add(1, Ordering::Relaxed),
                429 => tally.limited_refused.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
        }
        tally.check("rate-limited key", answer.as_ref(), |a| match a.status {
            200 => true,
            429 => a.header("retry-after").is_some() && is(a, 429, "RATE_LIMIT_EXCEEDED"),
            _ => false,
        });
        // Less than a core's worth: the point is the limit, not the load.
        thread::sleep(Duration::from_millis(2));
    }
}

/// An operator's churn: create, use, rotate, use both, revoke, list, audit.
fn churn(port: u16, account: &str, tally: &Tally, stop: &AtomicBool) {
    let mut admin = Connection::new(port);
    let mut client = Connection::new(port);
    let token = format!("Bearer {ADMIN_TOKEN}");
    let json = [
        ("Authorization", token.as_str()),
        ("Content-Type", "application/json"),
    ];
    let mut cycle = 0u64;
    while !stop.load(Ordering::Relaxed) {
        cycle += 1;
        let body = format!(r#"{{"account_id":"{account}","name":"churn {cycle}"}}"#);
        let created = admin.request("POST", "/admin/v1/keys", &json, &body);
        tally.check("create", created.as_ref(), |a| a.status == 201);
        let Some((key, id)) = created
            .ok()
            .and_then(|a| Some((json_string(&a.body, "key")?, json_string(&a.body, "id")?)))
        else {
            continue;
        };
        let mut whoami = |key: &str, what: &str, status: u16, code: Option<&str>| {
            let bearer = format!("Bearer {key}");
            let headers = [
                ("Authorization", bearer.as_str()),
                ("X-Forwarded-For", "198.51.100.9"),
            ];
            let answer = client.request("GET", "/v1/whoami", &headers, "");
            tally.check(what, answer.as_ref(), |a| match code {
                Some(code) => is(a, status, code),
                None => a.status == status,
            });
        };
        whoami(&key, "a new key", 200, None);
        let rotated = admin.request(
            "POST",
            &format!("/admin/v1/keys/{id}/rotate"),
            &json,
            r#"{"grace_period_seconds":0}"#,
        );
        tally.check("rotate", rotated.as_ref(), |a| a.status == 201);
        let Some((new_key, new_id)) = rotated.ok().and_then(|a| {
            let key = json_string(&a.body, "key")?;
            let info = &a.body[a.body.find("\"key_info\"")?..];
            Some((key, json_string(info, "id")?))
        }) else {
            continue;
        };
        whoami(
            &key,
            "a key rotated without grace",
            401,
            Some("EXPIRED_API_KEY"),
        );
        whoami(&new_key, "the key it was rotated to", 200, None);
        let revoked = admin.request(
            "POST",
            &format!("/admin/v1/keys/{new_id}/revoke"),
            &json,
            r#"{"reason":"soak"}"#,
        );
        tally.check("revoke", revoked.as_ref(), |a| a.status == 200);
        // Only a revocation the server confirmed has a known outcome (one
        // whose answer was lost is already counted above).
        if revoked.is_ok_and(|a| a.status == 200) {
            whoami(&new_key, "a revoked key", 401, Some("REVOKED_API_KEY"));
        }
        if cycle.is_multiple_of(10) {
            let list = admin.request(
                "GET",
                &format!("/admin/v1/keys?account_id={account}&limit=5"),
                &json[..1],
                "",
            );
            tally.check("list", list.as_ref(), |a| {
                a.status == 200 && a.body.contains("\"keys\"")
            });
            let audit = admin.request(
                "GET",
                &format!("/admin/v1/audit?account_id={account}&limit=5"),
                &json[..1],
                "",
            );
            tally.check("audit", audit.as_ref(), |a| {
                a.status == 200 && a.body.contains("\"events\"")
            });
        }
        tally.churn_cycles.fetch_add(1, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `answer` is `status` with the SPEC §4 error `code`.
fn is(answer: &Answer, status: u16, code: &str) -> bool {
    answer.status == status && answer.body.contains(&format!("\"code\":\"{code}\""))
}

/// `key` with its last digit changed: its checksum no longer matches.
fn with_last_digit_changed(key: &str) -> String {
    let (head, last) = key.split_at(key.len() - 1);
    format!("{head}{}", if last == "0" { '1' } else { '0' })
}

/// xorshift64*: enough to vary keys and addresses (no crate for it).
struct Random(u64);

impl Random {
    fn new() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64);
        Random(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A well-formed key (SPEC §2, with a right checksum) that was never
    /// issued: it passes the format check and costs a store lookup.
    fn unknown_key(&mut self) -> String {
        let mut key = format!("sk_live_{:016x}{:016x}", self.next(), self.next());
        let check = crc32(key.as_bytes());
        key.push_str(&format!("{check:08x}"));
        key
    }
}

/// CRC-32 (IEEE), bit by bit: a few unknown keys a millisecond need no table.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
