//! What `bench` and `soak` drive the release server with: the server and a
//! private `redis-server` as child processes, and a minimal HTTP/1.1
//! client over std's `TcpStream` (xtask stays free of dependencies).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An admin token only these runs use.
pub(crate) const ADMIN_TOKEN: &str = "xtask_bench_admin_token_0123456789abcdef";

/// The release binary `cargo build --release -p cloro-server` writes.
pub(crate) const RELEASE_SERVER: &str = "target/release/cloro-server";

pub(crate) fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// Where a server keeps its keys.
pub(crate) enum Store<'a> {
    /// The embedded store in this directory.
    Embedded(&'a Path),
    /// The Redis at this URL.
    Redis(&'a str),
}

/// The server as a child process, stopped with SIGTERM (also when dropped).
pub(crate) struct ServerProcess {
    child: Child,
}

impl ServerProcess {
    /// Starts `binary` on `127.0.0.1:port` with `extra` flags and waits until
    /// `/readyz` answers 200.
    pub(crate) fn start(
        binary: &Path,
        port: u16,
        store: &Store<'_>,
        extra: &[&str],
    ) -> Result<Self, String> {
        Self::start_with_env(binary, port, store, extra, &[])
    }

    /// [`ServerProcess::start`] with these environment variables too
    /// (`TOKIO_WORKER_THREADS`, say).
    pub(crate) fn start_with_env(
        binary: &Path,
        port: u16,
        store: &Store<'_>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let mut command = Command::new(binary);
        command.envs(env.iter().copied());
        command.args(["--listen", &format!("127.0.0.1:{port}")]);
        match store {
            Store::Embedded(dir) => command.arg("--data-dir").arg(dir),
            Store::Redis(url) => command.args(["--redis-url", url]),
        };
        let child = command
            .args(extra)
            .env("CLORO_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("CLORO_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut server = ServerProcess { child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if http(port, "GET", "/readyz", &[], "").is_ok_and(|(status, _)| status == 200) {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        server.stop();
        Err("the server did not become ready within 20 s".into())
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
        }
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `redis-server` of this run's own on a free port, persistence off,
/// killed when dropped (never the machine's own Redis).
pub(crate) struct PrivateRedis {
    child: Child,
    pub(crate) url: String,
}

impl PrivateRedis {
    pub(crate) fn start() -> Result<Self, String> {
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("cannot start redis-server (apt-get install redis-server): {e}")
            })?;
        let redis = PrivateRedis {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not listen within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(redis)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A key created through the admin API with this JSON body: the key and
/// its id.
pub(crate) fn create_key(port: u16, body: &str) -> Result<(String, String), String> {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (status, response) = http(
        port,
        "POST",
        "/admin/v1/keys",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body,
    )?;
    if status != 201 {
        return Err(format!("creating a key answered {status}: {response}"));
    }
    let key = json_string(&response, "key").ok_or("no key in the create response")?;
    let id = json_string(&response, "id").ok_or("no id in the create response")?;
    Ok((key, id))
}

/// The first string value of `"field"` in a JSON text (enough for the
/// flat answers of the admin API; ids and keys hold no escapes).
pub(crate) fn json_string(json: &str, field: &str) -> Option<String> {
    let marker = format!("\"{field}\":\"");
    let start = json.find(&marker)? + marker.len();
    let end = json[start..].find('"')? + start;
    Some(json[start..end].to_owned())
}

/// One sample's value from `/metrics`.
pub(crate) fn metric(port: u16, name: &str) -> Result<u64, String> {
    let (_, text) = http(port, "GET", "/metrics", &[], "")?;
    text.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with([' ', '{']))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok())
        .map(|value| value as u64)
        .ok_or_else(|| format!("metric {name} not found in /metrics"))
}

/// One request over a fresh connection: status code and body.
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut request = request_head(method, path, headers, body.len());
    request.push_str("Connection: close\r\n\r\n");
    request.push_str(body);
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    BufReader::new(stream)
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The request line and headers, without the blank line that ends them.
fn request_head(method: &str, path: &str, headers: &[(&str, &str)], body_len: usize) -> String {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {body_len}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head
}

/// An answer read by [`Connection`].
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// Header names in lower case.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A keep-alive HTTP/1.1 connection that reconnects when the server closed
/// it (after an idle timeout, or an answer with `Connection: close`).
pub(crate) struct Connection {
    port: u16,
    stream: Option<BufReader<TcpStream>>,
}

impl Connection {
    pub(crate) fn new(port: u16) -> Self {
        Connection { port, stream: None }
    }

    /// Sends one request and reads its answer. A connection the server
    /// closed before answering is retried once on a fresh one.
    pub(crate) fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Answer, String> {
        let reused = self.stream.is_some();
        match self.try_request(method, path, headers, body) {
            Ok(answer) => Ok(answer),
            Err(_) if reused => {
                self.stream = None;
                self.try_request(method, path, headers, body)
            }
            Err(error) => Err(error),
        }
    }

    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Answer, String> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            self.stream = Some(BufReader::new(stream));
        }
        let reader = self.stream.as_mut().ok_or("no connection")?;
        let mut request = request_head(method, path, headers, body.len());
        request.push_str("\r\n");
        request.push_str(body);
        reader
            .get_mut()
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let answer = read_answer(reader);
        let close = answer
            .as_ref()
            .map_or(true, |a| a.header("connection") == Some("close"));
        if close {
            self.stream = None;
        }
        answer
    }
}

/// One response: its head, then a body of `Content-Length` bytes.
fn read_answer(reader: &mut BufReader<TcpStream>) -> Result<Answer, String> {
    let mut line = String::new();
    if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
        return Err("the server closed the connection".into());
    }
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not a status line: {:?}", line.trim_end()))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        let field = line.trim_end();
        if field.is_empty() {
            break;
        }
        let (name, value) = field.split_once(':').ok_or("a header without a colon")?;
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length: usize = match headers.iter().find(|(n, _)| n == "content-length") {
        Some((_, value)) => value.parse().map_err(|_| "a bad Content-Length")?,
        None if headers.iter().any(|(n, _)| n == "transfer-encoding") => {
            return Err("a chunked answer (this client reads Content-Length only)".into());
        }
        None => 0,
    };
    let mut body = vec![0; length];
    reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
