//! Floods against the real binary (SPEC §9 "Hostile clients"): more silent
//! connections than its descriptor limit allows, and well-formed unknown
//! keys from random addresses. The process must stay up, serve again by
//! itself, not spin at its connection cap, and stay within its memory bound.
//!
//! These run the binary as a child process because what they check belongs
//! to the process: its descriptor limit, its resident memory, its CPU time.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloro_auth_core::{ApiKey, Environment};
use cloro_keystore::BoundedTable;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const MIB: u64 = 1 << 20;

/// The binary under test as a child process, its stderr collected.
struct FloodServer {
    child: Child,
    probe: Probe,
    /// Everything the server has written to stderr so far.
    log: Arc<Mutex<String>>,
    _data: tempfile::TempDir,
}

impl FloodServer {
    /// Starts the binary on the embedded store with `args`, under a
    /// descriptor limit of `nofile` (soft and hard) if given, and returns
    /// once `/readyz` answers 200.
    async fn start(nofile: Option<u64>, args: &[&str]) -> FloodServer {
        let data = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let binary = env!("CARGO_BIN_EXE_cloro-server");
        // prlimit sets the limit on itself and then execs the binary, so
        // the child's pid is the server's, and no unsafe `pre_exec` is needed.
        let mut command = match nofile {
            Some(limit) => {
                let mut command = Command::new("prlimit");
                command
                    .arg(format!("--nofile={limit}:{limit}"))
                    .arg("--")
                    .arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data.path())
            .args(args)
            // A line per request would cost the flood more than the server
            // does; the accept loop's lines say what its cap is.
            .env("CLORO_LOG", "warn,cloro_server::serve=info")
            // Two malloc arenas, not one per thread that ever allocated:
            // the memory tests measure the server's tables, and glibc's
            // per-thread arenas (redb and the lookups run on blocking
            // threads that come and go) once wandered past RSS_NOISE on a
            // loaded machine, as the soak saw them do too.
            .env("MALLOC_ARENA_MAX", "2")
            .env_remove("CLORO_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) if nofile.is_some() && error.kind() == std::io::ErrorKind::NotFound => {
                panic!(
                    "prlimit is needed to limit the server's descriptors: apt-get install util-linux ({error})"
                )
            }
            Err(error) => panic!("cannot start {binary}: {error}"),
        };
        let pid = child.id().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        // Drained all along: a full pipe would block the server's logging.
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut server = FloodServer {
            child,
            probe: Probe { pid, port },
            log,
            _data: data,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(server.alive(), "the server exited:\n{}", server.logs());
            if let Some((200, _)) = get(port, "/readyz", Duration::from_secs(1)).await {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not become ready:\n{}",
                server.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The connection cap the accept loop announced.
    fn connection_cap(&self) -> usize {
        let logs = self.logs();
        let line = logs
            .lines()
            .find(|line| line.contains("accepting connections"))
            .unwrap_or_else(|| panic!("no \"accepting connections\" line:\n{logs}"));
        let value = line
            .split("max_connections=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no max_connections in {line:?}"));
        value.parse().unwrap()
    }
}

/// What the test reads of the running server: its answers and its `/proc` entries.
#[derive(Clone, Copy)]
struct Probe {
    pid: u32,
    port: u16,
}

impl Probe {
    /// `GET path` on a connection of its own, closed after the answer:
    /// the status and body, or `None` if no answer came within `within`.
    async fn get(&self, path: &str, within: Duration) -> Option<(u16, String)> {
        get(self.port, path, within).await
    }

    /// A metric's value from `/metrics`, by its exposition name with labels.
    async fn metric(&self, series: &str) -> u64 {
        let (status, body) = self
            .get("/metrics", Duration::from_secs(10))
            .await
            .expect("/metrics answers");
        assert_eq!(status, 200, "{body}");
        body.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {series} in /metrics:\n{body}")) as u64
    }

    fn proc_file(&self, name: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/{name}", self.pid)).unwrap()
    }

    /// Resident memory (`VmRSS`) in bytes.
    fn rss(&self) -> u64 {
        let status = self.proc_file("status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {status}"));
        kib * 1024
    }

    /// CPU time used so far (user + system), in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = self.proc_file("stat");
        // The command name may hold spaces; the fields after it do not.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        // utime and stime are fields 14 and 15 of stat(5); 3 is the first
        // after the name.
        fields[14 - 3].parse::<u64>().unwrap() + fields[15 - 3].parse::<u64>().unwrap()
    }

    /// Descriptors the server holds, and how many of them are sockets.
    fn descriptors(&self) -> (usize, usize) {
        let mut all = 0;
        let mut sockets = 0;
        let Ok(entries) = std::fs::read_dir(format!("/proc/{}/fd", self.pid)) else {
            return (0, 0);
        };
        for entry in entries.flatten() {
            all += 1;
            if std::fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
            {
                sockets += 1;
            }
        }
        (all, sockets)
    }
}

/// `GET path` on a connection of its own, closed after the answer: the
/// status and body, or `None` if no answer came within `within`.
async fn get(port: u16, path: &str, within: Duration) -> Option<(u16, String)> {
    let exchange = async move {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let head = format!("GET {path} HTTP/1.1\r\nhost: flood\r\nconnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer.get(9..12)?.parse().ok()?;
        let body = answer.split_once("\r\n\r\n")?.1.to_owned();
        Some((status, body))
    };
    tokio::time::timeout(within, exchange).await.ok().flatten()
}

/// Clock ticks per second, for `/proc/<pid>/stat`.
fn clock_ticks_per_second() -> u64 {
    let output = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf runs");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// The descriptor limit the connection flood runs under.
const FLOOD_NOFILE: u64 = 128;
/// Silent connections opened: three times the descriptor limit, yet within
/// the listen backlog (tokio asks for 1024), so every connect completes and
/// waits in the kernel's queue until the server accepts it.
const SILENT_CONNECTIONS: usize = 400;
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_flood_of_silent_connections_beyond_the_descriptor_limit_ends_by_itself() {
    let mut server = FloodServer::start(Some(FLOOD_NOFILE), &["--header-timeout", "1s"]).await;
    // prlimit exec'd the binary: the limit is the server's own.
    let limits = server.probe.proc_file("limits");
    let open_files = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        open_files
            .split_whitespace()
            .skip(3)
            .take(2)
            .collect::<Vec<_>>(),
        [FLOOD_NOFILE.to_string(), FLOOD_NOFILE.to_string()],
        "{open_files}"
    );
    let cap = server.connection_cap();
    eprintln!("descriptor limit {FLOOD_NOFILE}: connection cap {cap}");
    assert!(
        cap < SILENT_CONNECTIONS && (cap as u64) < FLOOD_NOFILE,
        "the cap ({cap}) must leave descriptors to spare"
    );

    // The listener and the runtime's own (signal handling) sockets: the
    // fewest seen over a moment, as the readiness probe's connection may
    // still be closing (a fresh CI run once counted it, and later found
    // fewer sockets than "its own").
    let mut own_sockets = usize::MAX;
    for _ in 0..10 {
        own_sockets = own_sockets.min(server.probe.descriptors().1);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let started = Instant::now();
    let mut silent = Vec::with_capacity(SILENT_CONNECTIONS);
    for _ in 0..SILENT_CONNECTIONS {
        silent.push(
            TcpStream::connect(("127.0.0.1", server.probe.port))
                .await
                .unwrap(),
        );
    }
    // A client that arrives during the flood queues behind it, and is
    // accepted once a slot frees after the connections ahead of it: the
    // server holds `cap` at a time, each for the header timeout from its
    // accept (plus, at most, about as long again to finish closing). So
    // the answer comes after at least the waves of the slowest slot,
    // which proves the cap held, and within all the waves, which proves
    // the timeouts free it; a few seconds more for a loaded debug build.
    let served_before = (SILENT_CONNECTIONS - cap + 1).div_ceil(cap) as u32;
    let earliest = served_before * HEADER_TIMEOUT;
    let waves = (SILENT_CONNECTIONS + 1).div_ceil(cap) as u32;
    let bound = waves * 2 * HEADER_TIMEOUT + Duration::from_secs(2);
    let port = server.probe.port;
    let patient = tokio::spawn(async move {
        let probe = get(port, "/healthz", bound).await;
        (probe, started.elapsed())
    });

    // The flood holds the cap: that many client sockets, never more, and
    // never the whole descriptor limit.
    let clients = |server: &FloodServer| {
        let (all, sockets) = server.probe.descriptors();
        assert!((all as u64) < FLOOD_NOFILE, "{all} descriptors open");
        let clients = sockets.saturating_sub(own_sockets);
        assert!(clients <= cap, "{clients} connections held, over the cap");
        clients
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while clients(&server) < cap {
        assert!(
            Instant::now() < deadline,
            "the flood never reached the cap: {} connections",
            clients(&server)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ticks = clock_ticks_per_second();
    let cpu_before = server.probe.cpu_ticks();
    let sampled = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu = (server.probe.cpu_ticks() - cpu_before) as f64 / ticks as f64;
    let window = sampled.elapsed().as_secs_f64();
    let held = clients(&server);
    eprintln!("at the cap: {cpu:.2} s of CPU in {window:.2} s, {held} connections held");
    // Connections close and are replaced from the queue all along; at any
    // moment nearly all of the cap is held.
    assert!(
        held > cap / 2,
        "the cap was no longer held while CPU was sampled: {held} connections"
    );
    assert!(
        cpu / window < 0.3,
        "the accept loop spins at the cap: {cpu:.2} s of CPU in {window:.2} s"
    );
    assert!(server.alive(), "the server died:\n{}", server.logs());

    let (probe, waited) = patient.await.unwrap();
    eprintln!(
        "a request sent during the flood was answered after {waited:?} (between {earliest:?} and {bound:?})"
    );
    assert_eq!(
        probe.map(|(status, _)| status),
        Some(200),
        "no answer to /healthz within {bound:?} of the flood:\n{}",
        server.logs()
    );
    assert!(
        waited >= earliest,
        "answered after {waited:?}, before {earliest:?}: more than {cap} connections were held"
    );
    assert!(server.alive(), "the server died:\n{}", server.logs());

    // The server closed every silent connection itself.
    for (n, mut stream) in silent.into_iter().enumerate() {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "silent connection {n} was not closed by the server: {read:?}"
        );
    }
    let fresh = Instant::now();
    let (status, _) = server
        .probe
        .get("/healthz", Duration::from_secs(2))
        .await
        .expect("/healthz answers after the flood");
    assert_eq!(status, 200);
    eprintln!("after the flood: /healthz in {:?}", fresh.elapsed());
    assert!(server.alive());
}

/// What a flood of requests got back, by status.
type Statuses = BTreeMap<u16, u64>;

/// Which keys the flood sends; every one well-formed and unknown.
#[derive(Clone, Copy)]
enum Keys {
    /// A fresh random key each time: every one a store lookup and a new
    /// negative-cache entry.
    Random,
    /// The same key every time: after its first lookup, a negative-cache
    /// hit, so only the failed-attempt guard's table grows.
    One([u8; 16]),
}

/// Connections a key flood is pipelined over: a few, as a client that
/// wants throughput would, not as many as the server has threads to spare.
const FLOOD_CONNECTIONS: usize = 4;
/// Requests generated (and written) at a time.
const BATCH: usize = 256;

/// Sends `total` requests with `keys`, each from a random IPv6 address
/// (`X-Forwarded-For`, believed from 127.0.0.1), pipelined over
/// [`FLOOD_CONNECTIONS`] keep-alive connections; returns once every answer
/// has arrived.
async fn flood(port: u16, total: usize, keys: Keys) -> Statuses {
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..FLOOD_CONNECTIONS {
        let share = total / FLOOD_CONNECTIONS + usize::from(n < total % FLOOD_CONNECTIONS);
        tasks.spawn(flood_one_connection(port, share, keys));
    }
    let mut statuses = Statuses::new();
    while let Some(done) = tasks.join_next().await {
        for (status, count) in done.unwrap() {
            *statuses.entry(status).or_default() += count;
        }
    }
    statuses
}

/// A request of the flood, its key and client address random.
fn push_request(batch: &mut Vec<u8>, key: &ApiKey, random: &[u8]) {
    // fd00::/8 (unique local): never an IPv4-mapped address, and 56 bits
    // of /64 prefixes, so hardly two requests share an allowance.
    let mut address: [u8; 16] = random.try_into().unwrap();
    address[0] = 0xfd;
    let address = Ipv6Addr::from(address);
    batch.extend_from_slice(b"GET /v1/whoami HTTP/1.1\r\nhost: flood\r\nauthorization: Bearer ");
    batch.extend_from_slice(key.expose_secret().as_bytes());
    batch.extend_from_slice(format!("\r\nx-forwarded-for: {address}\r\n\r\n").as_bytes());
}

async fn flood_one_connection(port: u16, total: usize, keys: Keys) -> Statuses {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // Written while the answers are read: the server's answers would
    // otherwise fill the socket buffers and stop both sides.
    let write = tokio::spawn(async move {
        let mut left = total;
        let mut random = vec![0u8; BATCH * 32];
        let mut batch = Vec::with_capacity(BATCH * 160);
        while left > 0 {
            let n = left.min(BATCH);
            getrandom::fill(&mut random).unwrap();
            batch.clear();
            for chunk in random.chunks_exact(32).take(n) {
                let key_bytes = match keys {
                    Keys::Random => chunk[..16].try_into().unwrap(),
                    Keys::One(bytes) => bytes,
                };
                let key = ApiKey::from_random_bytes(Environment::Live, key_bytes);
                push_request(&mut batch, &key, &chunk[16..]);
            }
            writer.write_all(&batch).await.unwrap();
            left -= n;
        }
        writer
    });
    let statuses = count_answers(&mut reader, total).await;
    drop(write.await.unwrap());
    statuses
}

/// Reads `total` pipelined answers, counting them by status.
async fn count_answers(reader: &mut (impl AsyncReadExt + Unpin), total: usize) -> Statuses {
    const STATUS_LINE: &[u8] = b"HTTP/1.1 ";
    let mut statuses = Statuses::new();
    let mut answered = 0;
    let mut buffer = Vec::with_capacity(128 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    while answered < total {
        let read = tokio::time::timeout(Duration::from_secs(30), reader.read(&mut chunk))
            .await
            .expect("the server kept answering")
            .unwrap();
        assert!(
            read > 0,
            "the server closed a flood connection after {answered} answers"
        );
        buffer.extend_from_slice(&chunk[..read]);
        // Status lines, each followed by its code; no JSON body holds one.
        // What may be the start of one stays for the next read.
        let mut keep = buffer.len().saturating_sub(STATUS_LINE.len() + 2);
        let mut from = 0;
        while let Some(at) = buffer[from..]
            .windows(STATUS_LINE.len())
            .position(|window| window == STATUS_LINE)
        {
            let at = from + at;
            let Some(code) = buffer.get(at + 9..at + 12) else {
                keep = keep.min(at);
                break;
            };
            let code = std::str::from_utf8(code).unwrap().parse().unwrap();
            *statuses.entry(code).or_default() += 1;
            answered += 1;
            from = at + 12;
            keep = keep.max(from);
        }
        buffer.drain(..keep);
    }
    statuses
}

/// What the server looked like during and after one part of a key flood.
#[derive(Debug)]
struct Stage {
    requests: usize,
    statuses: Statuses,
    elapsed: Duration,
    /// The highest resident memory sampled (every 50 ms) during the stage.
    peak_rss: u64,
    /// Resident memory once every answer had arrived.
    rss_after: u64,
    /// The most negative-cache entries, and addresses tracked, that
    /// `/metrics` showed during the stage (read every 250 ms) and at its end.
    max_unknown: u64,
    max_addresses: u64,
    unknown_after: u64,
    addresses_after: u64,
}

impl Stage {
    fn report(&self, name: &str) {
        eprintln!(
            "{name}: {} requests in {:.1?} ({:.0}/s), {:?}; RSS peak {:.1} MiB, after {:.1} MiB; \
             unknown keys max {} after {}; addresses max {} after {}",
            self.requests,
            self.elapsed,
            self.requests as f64 / self.elapsed.as_secs_f64(),
            self.statuses,
            mib(self.peak_rss),
            mib(self.rss_after),
            self.max_unknown,
            self.unknown_after,
            self.max_addresses,
            self.addresses_after,
        );
    }
}

/// Floods `server` with `requests` requests of `keys`, watching it.
async fn flood_stage(server: &FloodServer, requests: usize, keys: Keys) -> Stage {
    let probe = server.probe;
    let watch = Watch::start(probe);
    let started = Instant::now();
    let statuses = flood(probe.port, requests, keys).await;
    let elapsed = started.elapsed();
    let (peak_rss, max_unknown, max_addresses) = watch.stop().await;
    let rss_after = probe.rss();
    let unknown_after = probe.metric(UNKNOWN_ENTRIES).await;
    let addresses_after = probe.metric(ADDRESSES).await;
    Stage {
        requests,
        statuses,
        elapsed,
        peak_rss: peak_rss.max(rss_after),
        rss_after,
        max_unknown: max_unknown.max(unknown_after),
        max_addresses: max_addresses.max(addresses_after),
        unknown_after,
        addresses_after,
    }
}

/// The server's resident memory (every 50 ms) and table sizes (every
/// 250 ms), sampled while a flood runs.
struct Watch {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<(u64, u64, u64)>,
}

impl Watch {
    fn start(probe: Probe) -> Watch {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let (mut peak_rss, mut max_unknown, mut max_addresses) = (0, 0, 0);
            for tick in 0u64.. {
                peak_rss = peak_rss.max(probe.rss());
                if tick % 5 == 0 {
                    max_unknown = max_unknown.max(probe.metric(UNKNOWN_ENTRIES).await);
                    max_addresses = max_addresses.max(probe.metric(ADDRESSES).await);
                }
                if *stopped.borrow() {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(50), stopped.changed()).await;
            }
            (peak_rss, max_unknown, max_addresses)
        });
        Watch { stop, task }
    }

    /// The highest resident memory, negative-cache entries and addresses
    /// tracked that were seen.
    async fn stop(self) -> (u64, u64, u64) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap()
    }
}

const UNKNOWN_ENTRIES: &str = "cloro_cache_entries{kind=\"unknown\"}";
const ADDRESSES: &str = "cloro_failed_auth_addresses";

/// SPEC §9: with the default table sizes, the whole process stays under this.
const RSS_BOUND: u64 = 150 * MIB;
/// How much resident memory may still grow once the tables are full: the
/// allocator's arenas (one per thread that allocates; redb's lookups run on
/// blocking threads that come and go) move it both ways. Measured over
/// eight more stages of the guard's flood (900,000 requests), it wandered
/// within 1.7 MiB with no trend; a leak of 28 bytes a request would exceed
/// this over a second stage's 114,688 requests.
const RSS_NOISE: u64 = 3 * MIB;

/// What else a key flood may add to resident memory besides the tables:
/// four connections' buffers, the runtime's and redb's blocking threads
/// (each with its allocator arena), a page cache of an empty database.
const PROCESS_NOISE: u64 = 3 * MIB;
/// The default budgets (`--unknown-key-cache-size`, `--failed-auth-table-size`).
const UNKNOWN_KEY_BUDGET: u64 = 16 * MIB;
/// The most an open, idle keep-alive connection may cost this (debug)
/// binary: measured about 33 KB, most of it hyper's two 8 KiB buffers.
const CONNECTION_BYTES: u64 = 40 * 1024;
const FAILED_AUTH_BUDGET: u64 = 8 * MIB;

/// Entries of the default tables, as the server builds them: the
/// negative cache keeps a timestamp per key, the guard a GCRA time (ns).
fn default_capacities() -> (usize, usize) {
    let unknown = BoundedTable::<jiff::Timestamp>::with_budget(UNKNOWN_KEY_BUDGET as usize);
    let addresses = BoundedTable::<i64>::with_budget(FAILED_AUTH_BUDGET as usize);
    (unknown.capacity(), addresses.capacity())
}

#[tokio::test]
async fn unknown_keys_from_random_addresses_stay_within_the_memory_bound() {
    // Every unknown key gets past the guard to the store and the negative
    // cache; every address is new, so the guard's table fills as well.
    let server = FloodServer::start(
        None,
        &[
            "--trusted-proxies",
            "127.0.0.1/32",
            "--max-failed-auth",
            "1000000/minute",
        ],
    )
    .await;
    let (unknown_capacity, address_capacity) = default_capacities();
    let baseline = server.probe.rss();
    eprintln!(
        "baseline RSS {:.1} MiB; negative cache {unknown_capacity} entries, guard {address_capacity} addresses",
        mib(baseline)
    );
    // Twice the cache's entries: it is full, and its order queue (a ring
    // of twice its entries) has been written all round, so the whole
    // allocation is resident. Then as much again, which must add nothing.
    let full = flood_stage(&server, 2 * unknown_capacity, Keys::Random).await;
    full.report("2x the negative cache");
    let more = flood_stage(&server, 2 * unknown_capacity, Keys::Random).await;
    more.report("4x the negative cache");
    // The guard's table empties every few seconds (see the other test),
    // so it is counted at its fullest.
    let per_entry =
        (full.rss_after - baseline) as f64 / (full.unknown_after + full.max_addresses) as f64;
    eprintln!(
        "RSS growth {:.1} MiB, then {:+.2} MiB: {per_entry:.0} bytes per entry held",
        mib(full.rss_after - baseline),
        (more.rss_after as f64 - full.rss_after as f64) / MIB as f64,
    );

    for stage in [&full, &more] {
        assert_eq!(
            stage.statuses.keys().collect::<Vec<_>>(),
            [&401],
            "every unknown key is INVALID_API_KEY: {:?}",
            stage.statuses
        );
        assert!(
            stage.peak_rss < RSS_BOUND,
            "{:.1} MiB resident",
            mib(stage.peak_rss)
        );
        assert!(stage.max_unknown <= unknown_capacity as u64);
        assert!(stage.max_addresses <= address_capacity as u64);
        // Full, and held there (random keys spread evenly over the shards,
        // so each one is full well before the stage ends).
        assert!(
            stage.unknown_after >= unknown_capacity as u64 * 99 / 100,
            "{} of {unknown_capacity}",
            stage.unknown_after
        );
    }
    // Both tables are full: what they hold is within their budgets.
    assert!(
        full.rss_after - baseline <= UNKNOWN_KEY_BUDGET + FAILED_AUTH_BUDGET + PROCESS_NOISE,
        "full tables hold {:.1} MiB, over their budgets of {} MiB",
        mib(full.rss_after - baseline),
        (UNKNOWN_KEY_BUDGET + FAILED_AUTH_BUDGET) / MIB
    );
    assert!(
        more.rss_after <= full.rss_after + RSS_NOISE,
        "resident memory kept growing with full tables: {:.1} MiB, then {:.1} MiB",
        mib(full.rss_after),
        mib(more.rss_after)
    );
}

#[tokio::test]
async fn random_addresses_fill_the_failed_attempt_table_and_no_more() {
    // The default allowance; one unknown key, so after its first lookup
    // every request is a negative-cache hit charged to a new address, and
    // the guard's table is all that grows.
    let server = FloodServer::start(None, &["--trusted-proxies", "127.0.0.1/32"]).await;
    let (_, address_capacity) = default_capacities();
    let mut key = [0u8; 16];
    getrandom::fill(&mut key).unwrap();
    let baseline = server.probe.rss();
    eprintln!(
        "baseline RSS {:.1} MiB; guard {address_capacity} addresses",
        mib(baseline)
    );
    // Four times its entries: it overflows (forgetting the oldest) three
    // times over, even if the sweep of addresses whose allowance is full
    // again (every few seconds) empties it in between.
    let full = flood_stage(&server, 4 * address_capacity, Keys::One(key)).await;
    full.report("4x the guard's table");
    let more = flood_stage(&server, 4 * address_capacity, Keys::One(key)).await;
    more.report("8x the guard's table");
    eprintln!(
        "RSS growth {:.1} MiB, then {:+.2} MiB: {:.0} bytes per address the table holds",
        mib(full.rss_after - baseline),
        (more.rss_after as f64 - full.rss_after as f64) / MIB as f64,
        (full.rss_after - baseline) as f64 / full.max_addresses as f64,
    );

    for stage in [&full, &more] {
        assert_eq!(
            stage.statuses.keys().collect::<Vec<_>>(),
            [&401],
            "every address is new, so every answer is INVALID_API_KEY: {:?}",
            stage.statuses
        );
        assert!(
            stage.peak_rss < RSS_BOUND,
            "{:.1} MiB resident",
            mib(stage.peak_rss)
        );
        assert!(stage.max_unknown <= 1);
        assert!(stage.max_addresses <= address_capacity as u64);
        assert!(
            stage.max_addresses >= address_capacity as u64 * 95 / 100,
            "the table never filled: {} of {address_capacity}",
            stage.max_addresses
        );
    }
    assert!(
        full.rss_after - baseline <= FAILED_AUTH_BUDGET + PROCESS_NOISE,
        "the full table holds {:.1} MiB, over its budget of {} MiB",
        mib(full.rss_after - baseline),
        FAILED_AUTH_BUDGET / MIB
    );
    assert!(
        more.rss_after <= full.rss_after + RSS_NOISE,
        "resident memory kept growing with a full table: {:.1} MiB, then {:.1} MiB",
        mib(full.rss_after),
        mib(more.rss_after)
    );
}

/// Raises this process's soft descriptor limit to its hard one (the server
/// inherits it), with prlimit on its own pid: the test crate has no unsafe
/// code for `setrlimit`.
fn raise_own_descriptor_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let fields: Vec<&str> = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    let (soft, hard) = (fields[3], fields[4]);
    if soft != hard {
        let status = std::process::Command::new("prlimit")
            .arg("--pid")
            .arg(std::process::id().to_string())
            .arg(format!("--nofile={hard}:{hard}"))
            .status()
            .unwrap_or_else(|error| {
                panic!("prlimit is needed to raise the descriptor limit: apt-get install util-linux ({error})")
            });
        assert!(status.success(), "prlimit failed: {status}");
    }
    hard.parse().unwrap_or(u64::MAX)
}

/// Opens `connections` keep-alive connections, each sending
/// `per_connection` pipelined unknown keys from random addresses; returns
/// them still open once every answer has arrived, with the answers.
async fn wide_flood(
    port: u16,
    connections: usize,
    per_connection: usize,
) -> (Vec<TcpStream>, Statuses) {
    // Connections opening and talking at once: within the listen backlog,
    // so no connect waits for a SYN to be sent again.
    let busy = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let permit = Arc::clone(&busy).acquire_owned().await.unwrap();
        tasks.spawn(async move {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let mut random = vec![0u8; per_connection * 32];
            getrandom::fill(&mut random).unwrap();
            let mut batch = Vec::with_capacity(per_connection * 160);
            for chunk in random.chunks_exact(32) {
                let key =
                    ApiKey::from_random_bytes(Environment::Live, chunk[..16].try_into().unwrap());
                push_request(&mut batch, &key, &chunk[16..]);
            }
            stream.write_all(&batch).await.unwrap();
            let statuses = count_answers(&mut stream, per_connection).await;
            drop(permit);
            (stream, statuses)
        });
    }
    let mut open = Vec::with_capacity(connections);
    let mut statuses = Statuses::new();
    while let Some(done) = tasks.join_next().await {
        let (stream, answers) = done.unwrap();
        open.push(stream);
        for (status, count) in answers {
            *statuses.entry(status).or_default() += count;
        }
    }
    (open, statuses)
}

#[tokio::test]
async fn unknown_keys_over_as_many_connections_as_allowed_cost_the_tables_and_a_bounded_sum_per_connection()
 {
    // The default cap is 10,000 connections: an attacker spreads the flood
    // over all of them, and each stays open (keep-alive) between its
    // requests. hyper keeps an 8 KiB read and an 8 KiB write buffer per
    // HTTP/1 connection for as long as it is open, so memory is the tables'
    // fixed budget plus a bounded cost per connection that the cap bounds
    // in turn (README, SECURITY.md: about 30 KiB each in a release build).
    let descriptors = raise_own_descriptor_limit();
    let server = FloodServer::start(None, &["--trusted-proxies", "127.0.0.1/32"]).await;
    let cap = server.connection_cap();
    let (unknown_capacity, _) = default_capacities();
    // A few slots stay free for /metrics.
    let connections = cap - 8;
    // Together twice the negative cache, so the tables are full too.
    let per_connection = (2 * unknown_capacity).div_ceil(connections);
    let baseline = server.probe.rss();
    eprintln!(
        "descriptor limit {descriptors}, cap {cap}; baseline RSS {:.1} MiB",
        mib(baseline)
    );
    let watch = Watch::start(server.probe);
    let started = Instant::now();
    let (open, statuses) = wide_flood(server.probe.port, connections, per_connection).await;
    let elapsed = started.elapsed();
    let held = server.probe.rss();
    let (peak_rss, max_unknown, max_addresses) = watch.stop().await;
    let peak_rss = peak_rss.max(held);
    eprintln!(
        "{connections} connections x {per_connection} requests in {elapsed:.1?}: {statuses:?}; \
         RSS peak {:.1} MiB, {:.1} MiB with every connection open ({:.0} bytes a connection, \
         the full tables counted in); unknown keys max {max_unknown}, addresses max {max_addresses}",
        mib(peak_rss),
        mib(held),
        (held - baseline) as f64 / connections as f64,
    );
    assert_eq!(
        statuses.keys().collect::<Vec<_>>(),
        [&401],
        "every unknown key is INVALID_API_KEY: {statuses:?}"
    );
    assert!(max_unknown <= unknown_capacity as u64);
    let bound = baseline
        + UNKNOWN_KEY_BUDGET
        + FAILED_AUTH_BUDGET
        + connections as u64 * CONNECTION_BYTES
        + PROCESS_NOISE;
    assert!(
        peak_rss < bound,
        "{:.1} MiB resident with {} connections open, over the {:.1} MiB of the tables and {} KiB a connection",
        mib(peak_rss),
        open.len(),
        mib(bound),
        CONNECTION_BYTES / 1024
    );
}
