//! `RedisServer`: a private `redis-server` per test, started from `PATH` on a
//! free loopback port with no persistence, and killed when the handle drops.
//!
//! Tests use it to exercise the Redis store against a real server, including
//! the failures that matter in production: a Redis that hangs (`pause`,
//! SIGSTOP) rather than refuses, and one that restarts empty on the same
//! address. It never connects to a Redis it did not start: readiness is
//! checked against the process id the server reports, so a stranger that
//! grabbed the port in a race is never mistaken for ours.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh server may take to answer; generous for loaded 2-core CI.
const READY_DEADLINE: Duration = Duration::from_secs(10);
/// Fresh ports to try when another process takes ours between probe and bind.
const START_ATTEMPTS: usize = 5;
/// The well-known Redis port: a system Redis may live there, so never use it.
const SYSTEM_REDIS_PORT: u16 = 6379;
const LOG_FILE: &str = "redis.log";

const NOT_FOUND: &str = "redis-server not found on PATH: install it (Debian/Ubuntu: \
     `apt-get install redis-server`; macOS: `brew install redis`); the Redis tests never skip";

/// The Unix socket a server with a password also listens on, in its directory.
const SOCKET_FILE: &str = "redis.sock";

/// A `redis-server` process owned by a test.
///
/// Dropping the handle kills and reaps the process and removes its
/// directory, also when the test panics.
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
    /// `requirepass`, when the server was started with one.
    password: Option<String>,
}

// Hand-written so that a test's Redis password stays out of test output.
impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers.
    ///
    /// # Panics
    /// When `redis-server` is not on `PATH` (the message says how to install
    /// it: Redis tests fail rather than skip), or when it does not start.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts a server that refuses every command until `AUTH password`
    /// (`requirepass`), listening on a loopback port and also on the Unix
    /// socket [`Self::unix_socket`], so tests can connect with a password
    /// in every URL form.
    ///
    /// # Panics
    /// As [`Self::start`].
    pub fn start_with_password(password: &str) -> Self {
        Self::start_with(Some(password.to_owned()))
    }

    fn start_with(password: Option<String>) -> Self {
        let binary = find_on_path("redis-server").unwrap_or_else(|| panic!("{NOT_FOUND}"));
        let dir = tempfile::Builder::new()
            .prefix("cloro-redis-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create a directory for redis-server: {error}"));
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let mut child = spawn(&binary, port, dir.path(), password.as_deref());
            match wait_ready(&mut child, port, dir.path(), password.as_deref()) {
                Ok(()) => {
                    return RedisServer {
                        binary,
                        port,
                        dir,
                        child,
                        password,
                    };
                }
                Err(failure) => {
                    stop(&mut child);
                    failures.push(failure);
                }
            }
        }
        panic!(
            "redis-server did not start in {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    /// `redis://127.0.0.1:PORT`, without credentials.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The loopback port the server listens on; never 6379.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Unix socket a server started with a password also listens on
    /// (only the test's user may connect).
    ///
    /// # Panics
    /// For a server started without a password: it has no socket.
    pub fn unix_socket(&self) -> PathBuf {
        assert!(
            self.password.is_some(),
            "only RedisServer::start_with_password listens on a Unix socket"
        );
        self.dir.path().join(SOCKET_FILE)
    }

    /// Freezes the server (SIGSTOP): connections stay open and commands get
    /// no answer, which is how a hung Redis looks to a client.
    ///
    /// # Panics
    /// When the signal cannot be sent.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused server run again (SIGCONT).
    ///
    /// # Panics
    /// When the signal cannot be sent.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Kills the server and starts a new, empty one on the same port, then
    /// waits until it answers. Clients see their connections drop.
    ///
    /// # Panics
    /// When the new server does not start, e.g. because another process
    /// took the port meanwhile.
    pub fn restart(&mut self) {
        stop(&mut self.child);
        let password = self.password.as_deref();
        self.child = spawn(&self.binary, self.port, self.dir.path(), password);
        if let Err(failure) = wait_ready(&mut self.child, self.port, self.dir.path(), password) {
            panic!("restarting redis-server on its port failed: {failure}");
        }
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(&pid)
            .status()
            .unwrap_or_else(|error| panic!("cannot run `kill -{name} {pid}`: {error}"));
        assert!(
            status.success(),
            "`kill -{name} {pid}` failed with {status}"
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Kills and reaps; SIGKILL also ends a stopped process, so a paused server
/// never outlives its test.
pub(crate) fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// A port the OS just handed out on loopback. Another process may take it
/// before redis-server binds; `start` then tries another.
fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|error| panic!("cannot bind a loopback port: {error}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("cannot read a bound port: {error}"))
            .port();
        if port != SYSTEM_REDIS_PORT {
            return port;
        }
    }
}

fn spawn(binary: &Path, port: u16, dir: &Path, password: Option<&str>) -> Child {
    let extra = match password {
        Some(password) => vec![
            "--requirepass".to_owned(),
            password.to_owned(),
            "--unixsocket".to_owned(),
            dir.join(SOCKET_FILE).display().to_string(),
            "--unixsocketperm".to_owned(),
            "700".to_owned(),
        ],
        None => Vec::new(),
    };
    spawn_with(binary, port, dir, LOG_FILE, &extra)
}

/// Starts `redis-server` on `port` with `extra` arguments, logging to
/// `log` in `dir`.
pub(crate) fn spawn_with(
    binary: &Path,
    port: u16,
    dir: &Path,
    log: &str,
    extra: &[String],
) -> Child {
    Command::new(binary)
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1"])
        // No RDB snapshots and no AOF: a restart comes back empty and the
        // tests never write to disk beyond the log.
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        // In the foreground, so the child handle is the server itself.
        .args(["--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join(log))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", binary.display()))
}

/// Polls until the server on `port` answers PING and reports `child`'s pid.
fn wait_ready(
    child: &mut Child,
    port: u16,
    dir: &Path,
    password: Option<&str>,
) -> Result<(), String> {
    wait_ready_as(child, port, dir, LOG_FILE, password)
}

/// [`wait_ready`] for a server that logs to `log` in `dir`.
pub(crate) fn wait_ready_logged(
    child: &mut Child,
    port: u16,
    dir: &Path,
    log: &str,
) -> Result<(), String> {
    wait_ready_as(child, port, dir, log, None)
}

/// [`wait_ready_logged`] for a server that needs `AUTH password` first.
fn wait_ready_as(
    child: &mut Child,
    port: u16,
    dir: &Path,
    log: &str,
    password: Option<&str>,
) -> Result<(), String> {
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "redis-server on port {port} exited with {status} before answering; its log ends:\n{}",
                log_tail(dir, log)
            ));
        }
        if answers_as(port, child.id(), password) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "redis-server on port {port} did not answer within {READY_DEADLINE:?}; its log ends:\n{}",
                log_tail(dir, log)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether the server on `port` answers `PING` with `+PONG` and says (in
/// `INFO server`) that its process id is `pid`, after `AUTH password` when
/// it needs one.
fn answers_as(port: u16, pid: u32, password: Option<&str>) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let timeout = Some(Duration::from_millis(500));
    if stream.set_read_timeout(timeout).is_err() || stream.set_write_timeout(timeout).is_err() {
        return false;
    }
    let Ok(reader_stream) = stream.try_clone() else {
        return false;
    };
    let mut reader = BufReader::new(reader_stream);
    let mut line = String::new();
    if let Some(password) = password {
        // As a RESP array, so that any byte of the password goes through.
        let auth = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n", password.len());
        if stream.write_all(auth.as_bytes()).is_err()
            || reader.read_line(&mut line).is_err()
            || line.trim_end() != "+OK"
        {
            return false;
        }
        line.clear();
    }
    if stream.write_all(b"PING\r\n").is_err()
        || reader.read_line(&mut line).is_err()
        || line.trim_end() != "+PONG"
    {
        return false;
    }
    line.clear();
    if stream.write_all(b"INFO server\r\n").is_err() || reader.read_line(&mut line).is_err() {
        return false;
    }
    // A bulk string: `$<length>\r\n<bytes>\r\n`.
    let Some(length) = line
        .trim_end()
        .strip_prefix('$')
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return false;
    };
    let mut info = vec![0u8; length + 2];
    if reader.read_exact(&mut info).is_err() {
        return false;
    }
    String::from_utf8_lossy(&info)
        .lines()
        .filter_map(|l| l.strip_prefix("process_id:"))
        .any(|reported| reported.trim() == pid.to_string())
}

pub(crate) fn log_tail(dir: &Path, log: &str) -> String {
    let log = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_pauses_resumes_and_restarts_on_the_same_port() {
        let mut server = RedisServer::start();
        let port = server.port();
        assert_ne!(port, SYSTEM_REDIS_PORT);
        assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
        assert!(answers_as(port, server.child.id(), None));

        server.pause();
        let started = Instant::now();
        assert!(
            !answers_as(port, server.child.id(), None),
            "a paused server answers"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        server.resume();
        assert!(answers_as(port, server.child.id(), None));

        let old_pid = server.child.id();
        server.restart();
        assert_eq!(server.port(), port);
        assert_ne!(server.child.id(), old_pid);
        assert!(answers_as(port, server.child.id(), None));
    }

    #[test]
    fn drop_kills_the_server_even_when_paused() {
        let server = RedisServer::start();
        let port = server.port();
        server.pause();
        drop(server);
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        assert!(TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err());
    }

    #[test]
    fn a_password_server_refuses_until_auth_and_listens_on_a_socket() {
        let mut server = RedisServer::start_with_password("s3cret pass@word");
        let pid = server.child.id();
        assert!(!answers_as(server.port(), pid, None), "served without AUTH");
        assert!(answers_as(server.port(), pid, Some("s3cret pass@word")));
        assert!(server.unix_socket().exists());
        assert!(!format!("{server:?}").contains("s3cret"));
        server.restart();
        assert!(answers_as(
            server.port(),
            server.child.id(),
            Some("s3cret pass@word")
        ));
    }

    #[test]
    fn missing_binary_is_not_found() {
        assert_eq!(find_on_path("cloro-no-such-binary"), None);
        assert!(NOT_FOUND.contains("apt-get install redis-server"));
    }
}
