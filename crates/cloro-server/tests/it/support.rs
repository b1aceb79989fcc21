//! Shared test harness: a server on a free port with either store, a small
//! HTTP client that returns status, headers and the body, and a raw TCP one
//! for the bytes a client library would tidy or refuse to send.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use cloro_auth_core::AccountId;
use cloro_auth_core::wire::CreateKeyRequest;
use cloro_keystore::Clock;
use cloro_server::App;
use cloro_server::config::{Flags, Settings};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// An admin token tests use; long enough to be accepted.
pub(crate) const ADMIN_TOKEN: &str = "test_admin_token_0123456789abcdefghijklmnop";

/// A running server.
pub(crate) struct TestServer {
    pub(crate) address: SocketAddr,
    pub(crate) app: Arc<App>,
    client: Client<HttpConnector, Full<Bytes>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    background: Option<cloro_server::Background>,
    _data_dir: Option<tempfile::TempDir>,
}

/// An answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// `error.code` of an error body.
    pub(crate) fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A header as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl TestServer {
    /// A server on the embedded store in a fresh temp dir, configured by `toml`.
    pub(crate) async fn embedded(toml: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let flags = Flags {
            data_dir: Some(dir.path().to_owned()),
            ..Flags::default()
        };
        Self::start(Settings::from_toml(flags, toml).unwrap(), Some(dir)).await
    }

    /// A server on the Redis at `url`, configured by `toml`.
    pub(crate) async fn redis(url: &str, toml: &str) -> TestServer {
        Self::redis_with_clock(url, toml, Clock::system()).await
    }

    /// [`TestServer::embedded`] reading "now" from `clock`.
    pub(crate) async fn embedded_with_clock(toml: &str, clock: Clock) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let flags = Flags {
            data_dir: Some(dir.path().to_owned()),
            ..Flags::default()
        };
        let settings = Settings::from_toml(flags, toml).unwrap();
        Self::start_with_clock(settings, Some(dir), clock).await
    }

    /// [`TestServer::redis`] reading "now" from `clock`.
    pub(crate) async fn redis_with_clock(url: &str, toml: &str, clock: Clock) -> TestServer {
        let flags = Flags {
            redis_url: Some(url.to_owned()),
            ..Flags::default()
        };
        Self::start_with_clock(Settings::from_toml(flags, toml).unwrap(), None, clock).await
    }

    /// A server with these settings.
    pub(crate) async fn start(
        settings: Settings,
        data_dir: Option<tempfile::TempDir>,
    ) -> TestServer {
        Self::start_with_clock(settings, data_dir, Clock::system()).await
    }

    /// A server with these settings and clock.
    pub(crate) async fn start_with_clock(
        settings: Settings,
        data_dir: Option<tempfile::TempDir>,
        clock: Clock,
    ) -> TestServer {
        let (app, background) = App::build_with_clock(settings, Some(ADMIN_TOKEN), clock)
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(cloro_server::serve(
            app.clone(),
            listener,
            None,
            async move {
                let _ = stopped.await;
            },
        ));
        let task = tokio::spawn(async move {
            task.await.unwrap().unwrap();
        });
        TestServer {
            address,
            app,
            client: Client::builder(TokioExecutor::new()).build_http(),
            stop: Some(stop),
            task: Some(task),
            background: Some(background),
            _data_dir: data_dir,
        }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Sends one request.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let response = self.client.request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    /// `GET path` with an API key (or any bearer token).
    pub(crate) async fn get_with_key(&self, path: &str, key: &str) -> Answer {
        self.send(
            Method::GET,
            path,
            &[("authorization", &format!("Bearer {key}"))],
            "",
        )
        .await
    }

    /// Creates a key directly through the app (the admin API has its own tests).
    pub(crate) async fn create_key(&self, edit: impl FnOnce(&mut CreateKeyRequest)) -> String {
        let mut request = CreateKeyRequest::new(AccountId::new("acct_test").unwrap(), "test key");
        edit(&mut request);
        let issued = self
            .app
            .admin()
            .create(request, "test", self.app.clock().now())
            .await
            .unwrap();
        issued.key.expose_secret().to_owned()
    }

    /// Stops accepting, drains, and waits for the server task.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
        // The webhook worker lets go of the store before a restart in this
        // process opens it again.
        if let Some(background) = self.background.take() {
            background.stop().await;
        }
        // As `cloro_server::run` does after serving: usage and the quota
        // ledger are written at shutdown.
        self.app.flush_usage().await;
    }
}

impl TestServer {
    /// A server on the embedded store that forwards `/v1/*` to `upstream`,
    /// configured by `toml` (which must not set `upstream` itself).
    pub(crate) async fn with_upstream(upstream: &str, toml: &str) -> TestServer {
        // Top-level keys go before any table the rest of the file opens.
        Self::embedded(&format!("upstream = \"{upstream}\"\n{toml}")).await
    }
}

/// What the test upstream saw of one request.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: Method,
    pub(crate) uri: http::Uri,
    pub(crate) headers: HeaderMap,
}

impl Seen {
    /// A header as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The API behind the gateway, for tests: records every request head and
/// answers 200, streaming the request body straight back as it arrives, with
/// hop-by-hop fields the gateway must not pass on.
pub(crate) struct TestUpstream {
    pub(crate) address: SocketAddr,
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestUpstream {
    /// An upstream on a free loopback port.
    pub(crate) async fn start() -> TestUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let record = record.clone();
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let (parts, body) = request.into_parts();
                        record.lock().unwrap().push(Seen {
                            method: parts.method,
                            uri: parts.uri,
                            headers: parts.headers,
                        });
                        let response = http::Response::builder()
                            .header("x-upstream", "echo")
                            .header("connection", "x-upstream-hop")
                            .header("x-upstream-hop", "1")
                            .header("keep-alive", "timeout=5")
                            .body(body)
                            .unwrap();
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        TestUpstream {
            address,
            seen,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every request seen so far, oldest first.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The one request seen so far.
    pub(crate) fn only(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(seen.len(), 1, "expected exactly one upstream request");
        seen.into_iter().next().unwrap()
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Status, headers (lower-cased names) and body of one answer read off a
/// raw TCP connection.
#[derive(Debug)]
pub(crate) struct Raw {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Raw {
    /// Parses one answer: a head, then its body (de-chunked if need be).
    /// Anything unparsable gives status 0 rather than a panic, so the
    /// assertion that follows shows what came back.
    pub(crate) fn parse(response: &[u8]) -> Raw {
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or((response, &b""[..]), |at| {
                (&response[..at], &response[at + 4..])
            });
        let head = String::from_utf8_lossy(split.0);
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
        let body = if chunked {
            dechunk(split.1)
        } else {
            split.1.to_vec()
        };
        Raw {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// A header as text (the first, if several).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, `Null` when it is not JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }

    /// `error.code` of an error body.
    pub(crate) fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// `error.details.field` of an error body.
    pub(crate) fn field(&self) -> String {
        self.json()["error"]["details"]["field"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// The payload of a chunked body (extensions and trailers ignored).
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..end])
            .ok()
            .and_then(|line| usize::from_str_radix(line.split(';').next()?.trim(), 16).ok());
        let Some(size) = size.filter(|&size| size > 0) else {
            break;
        };
        let start = end + 2;
        let Some(chunk) = rest.get(start..start + size) else {
            break;
        };
        body.extend_from_slice(chunk);
        rest = rest.get(start + size + 2..).unwrap_or_default();
    }
    body
}

/// The bytes of a request head: `method target HTTP/1.1`, `Host`, then
/// these header lines as given (raw bytes; `\r\n` added to each), then
/// the empty line.
pub(crate) fn raw_head(method: &str, target: &str, header_lines: &[&[u8]]) -> Vec<u8> {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n").into_bytes();
    for line in header_lines {
        head.extend_from_slice(line);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Sends one request on a connection of its own (`Connection: close`):
/// `method target`, these header lines as raw bytes, and `body` (with its
/// `Content-Length` when not empty); reads the answer to the end.
pub(crate) async fn raw(
    server: &TestServer,
    method: &str,
    target: &str,
    header_lines: &[&[u8]],
    body: &[u8],
) -> Raw {
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    let length = format!("Content-Length: {}", body.len());
    let mut lines: Vec<&[u8]> = vec![b"Connection: close"];
    if !body.is_empty() {
        lines.push(length.as_bytes());
    }
    lines.extend_from_slice(header_lines);
    let mut request = raw_head(method, target, &lines);
    request.extend_from_slice(body);
    stream.write_all(&request).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    Raw::parse(&response)
}

/// Reads one answer off a keep-alive connection, framed by its
/// `Content-Length` (every answer this server writes itself has one);
/// `None` if the connection ends first. Bytes past it stay in `buffer`.
pub(crate) async fn read_answer(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Raw> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = Raw::parse(&buffer[..at + 4]);
            let length: usize = head
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let end = at + 4 + length;
            if buffer.len() >= end {
                let answer = Raw::parse(&buffer[..end]);
                buffer.drain(..end);
                return Some(answer);
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}
