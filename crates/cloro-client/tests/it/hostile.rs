//! The SDK and the CLI against a hostile server (SPEC §9, "the SDK survives
//! a hostile server"): a raw TCP listener that writes hand-made HTTP/1.1,
//! or no HTTP at all. Every case must end in a typed error within a bounded
//! time, never in a panic or an endless wait. Timeouts are short so the
//! suite stays fast; nothing here sleeps for long.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use cloro_client::cli::{Cli, EXIT_UNREACHABLE};
use cloro_client::cloro_auth_core::wire::CreateKeyRequest;
use cloro_client::cloro_auth_core::{AccountId, Environment};
use cloro_client::{
    AdminClient, AdminToken, ApiKey, Client, ClientBuilder, Error, ErrorCode, KeyListQuery,
    MAX_SERVER_DELAY, RetryPolicy, TransportErrorKind,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::support::{ADMIN_TOKEN, KEY_INFO, quick_retries, unknown_key};

/// How long the client under test may take for one attempt.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(400);
/// How long it may take to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// Every case ends well within this, retries included.
const BOUND: Duration = Duration::from_secs(3);

/// A listener that reads each request head, then lets `behave` do what it
/// likes with the connection. Dropping it ends every connection.
struct Hostile {
    base_url: String,
    requests: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl Hostile {
    async fn start<F, Fut>(behave: F) -> Hostile
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        let behave = Arc::new(behave);
        let accept = tokio::spawn(async move {
            // Owned here, so aborting this task ends every connection too.
            let mut connections = JoinSet::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                let behave = Arc::clone(&behave);
                let counted = Arc::clone(&counted);
                connections.spawn(async move {
                    if read_head(&mut stream).await {
                        counted.fetch_add(1, Ordering::SeqCst);
                        behave(stream).await;
                    }
                });
            }
        });
        Hostile {
            base_url,
            requests,
            accept,
        }
    }

    /// Answers every request with `bytes`, then closes.
    async fn answering(bytes: Vec<u8>) -> Hostile {
        Hostile::start(move |stream| write_and_close(stream, bytes.clone())).await
    }

    /// How many request heads arrived.
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Reads until the end of a request head; `false` if it never comes.
async fn read_head(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
        if head.len() > 64 * 1024 {
            return false;
        }
    }
    true
}

async fn write_and_close(mut stream: TcpStream, bytes: Vec<u8>) {
    // The client may hang up first (that is often the point): ignore it.
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
}

/// Holds the connection open, saying nothing, until the server is dropped.
async fn hold(stream: TcpStream) {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    drop(stream);
}

/// A complete HTTP/1.1 answer with `content-length` and `connection: close`.
fn http(status: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut text = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    text.into_bytes()
}

/// A SPEC §4 error body, with `details` as given.
fn error_body(code: &str, details: &str) -> String {
    format!(
        r#"{{"error": {{"code": "{code}", "message": "hostile", "details": {details}, "timestamp": "2026-01-15T12:00:00Z", "request_id": "req_hostile"}}}}"#
    )
}

fn policy() -> RetryPolicy {
    let mut policy = quick_retries();
    policy.max_elapsed = Duration::from_secs(1);
    policy
}

fn builder(base_url: &str) -> ClientBuilder {
    ClientBuilder::new()
        .base_url(base_url)
        .connect_timeout(CONNECT_TIMEOUT)
        .request_timeout(REQUEST_TIMEOUT)
        .retry_policy(policy())
}

fn client(server: &Hostile) -> Client {
    builder(&server.base_url)
        .api_key(unknown_key())
        .build()
        .unwrap()
}

fn admin(server: &Hostile) -> AdminClient {
    builder(&server.base_url)
        .admin_token(AdminToken::new(ADMIN_TOKEN).unwrap())
        .build_admin()
        .unwrap()
}

/// The transport error kind of `error`, or a failure naming what it was.
fn transport_kind(error: &Error) -> TransportErrorKind {
    match error {
        Error::Transport(transport) => transport.kind,
        other => panic!("not a transport error: {other:?}"),
    }
}

#[tokio::test]
async fn absurd_retry_after_values_end_at_once_with_the_cap() {
    let absurd = [
        "18446744073709551615",            // u64::MAX
        "1000000000000000000000000000000", // 10^30, past u64
        "Thu, 30 Dec 9999 12:00:00 GMT",   // an HTTP-date at the end of time
    ];
    for (status, code, expected) in [
        (
            "429 Too Many Requests",
            "RATE_LIMIT_EXCEEDED",
            ErrorCode::RateLimitExceeded,
        ),
        (
            "503 Service Unavailable",
            "AUTH_UNAVAILABLE",
            ErrorCode::AuthUnavailable,
        ),
    ] {
        for value in absurd {
            let server = Hostile::answering(http(
                status,
                &[("retry-after", value)],
                &error_body(code, "{}"),
            ))
            .await;
            let started = Instant::now();
            let error = client(&server).whoami().await.unwrap_err();
            assert_eq!(error.code(), Some(expected), "{value}: {error}");
            // Far past the retry budget: handed back, not slept.
            let wait = error
                .retry_after()
                .unwrap_or_else(|| panic!("{value}: {error:?}"));
            assert_eq!(wait, MAX_SERVER_DELAY, "{value}");
            assert_eq!(error.api_error().unwrap().attempts, 1);
            assert_eq!(server.requests(), 1);
            assert!(started.elapsed() < Duration::from_secs(1), "{value}");
            // What the caller gets is safe to add to a clock.
            assert!(Instant::now().checked_add(wait).is_some());
            assert!(
                cloro_client::cli::advice(&error).contains("wait"),
                "{}",
                cloro_client::cli::advice(&error)
            );
        }
    }

    // The same number in the body only (a proxy dropped the header).
    let server = Hostile::answering(http(
        "503 Service Unavailable",
        &[],
        &error_body(
            "AUTH_UNAVAILABLE",
            &format!(r#"{{"retry_after": {}}}"#, u64::MAX),
        ),
    ))
    .await;
    let error = client(&server).whoami().await.unwrap_err();
    assert_eq!(error.retry_after(), Some(MAX_SERVER_DELAY));
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn nonsense_retry_after_values_fall_back_to_the_backoff() {
    for value in ["-1", "garbage", "1.5", "+3", "0x10"] {
        let server = Hostile::answering(http(
            "503 Service Unavailable",
            &[("retry-after", value)],
            &error_body("AUTH_UNAVAILABLE", "{}"),
        ))
        .await;
        let started = Instant::now();
        let error = client(&server).whoami().await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::AuthUnavailable), "{value}");
        assert_eq!(error.retry_after(), None, "{value}");
        // Retried with the (quick) backoff up to the cap, then given up.
        assert_eq!(server.requests(), policy().max_attempts as usize, "{value}");
        assert!(started.elapsed() < BOUND, "{value}");
    }
}

#[tokio::test]
async fn a_huge_body_ends_in_response_too_large() {
    // Declared: refused from the head, without reading or waiting.
    let server = Hostile::start(|mut stream| async move {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1099511627776\r\n\r\n{";
        let _ = stream.write_all(head.as_bytes()).await;
        hold(stream).await;
    })
    .await;
    let started = Instant::now();
    let error = client(&server).whoami().await.unwrap_err();
    assert_eq!(
        transport_kind(&error),
        TransportErrorKind::BodyTooLarge,
        "{error}"
    );
    assert_eq!(error.label(), "RESPONSE_TOO_LARGE");
    assert!(error.to_string().contains("1099511627776"), "{error}");
    // Refused from the head: a timeout would be TransportErrorKind::Timeout.
    assert!(started.elapsed() < BOUND);

    // Undeclared (chunked, endless): reading stops at the cap.
    let server = Hostile::start(|mut stream| async move {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
        // 16 MiB at most; the client hangs up after 4.
        for _ in 0..256 {
            if stream.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
        hold(stream).await;
    })
    .await;
    let started = Instant::now();
    let error = client(&server).whoami().await.unwrap_err();
    assert_eq!(
        transport_kind(&error),
        TransportErrorKind::BodyTooLarge,
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains(&cloro_client::MAX_RESPONSE_BODY.to_string()),
        "{error}"
    );
    assert!(started.elapsed() < BOUND);
}

#[tokio::test]
async fn a_dripped_answer_times_out() {
    // The head at once, then the body a byte every 50 ms.
    let body_drip = Hostile::start(|mut stream| async move {
        let head =
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n";
        let _ = stream.write_all(head.as_bytes()).await;
        for _ in 0..1000 {
            if stream.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // The head itself, a byte every 50 ms, a header line that never ends.
    let head_drip = Hostile::start(|mut stream| async move {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nx-slow: ").await;
        for _ in 0..1000 {
            if stream.write_all(b"a").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    for server in [&body_drip, &head_drip] {
        let started = Instant::now();
        let error = client(server).whoami().await.unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(
            transport_kind(&error),
            TransportErrorKind::Timeout,
            "{error}"
        );
        assert_eq!(error.label(), "TIMEOUT");
        assert!(
            elapsed >= REQUEST_TIMEOUT && elapsed < REQUEST_TIMEOUT + Duration::from_secs(1),
            "{elapsed:?}"
        );
        // A timed-out request may have been acted on: not repeated.
        assert_eq!(server.requests(), 1);
    }
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let server = Hostile::start(hold).await;
    let started = Instant::now();
    let error = client(&server).whoami().await.unwrap_err();
    assert_eq!(
        transport_kind(&error),
        TransportErrorKind::Timeout,
        "{error}"
    );
    assert!(started.elapsed() < REQUEST_TIMEOUT + Duration::from_secs(1));

    let request = CreateKeyRequest::new(AccountId::new("acct_h").unwrap(), "h");
    let error = admin(&server).create_key(&request).await.unwrap_err();
    assert_eq!(
        transport_kind(&error),
        TransportErrorKind::Timeout,
        "{error}"
    );
    assert_eq!(server.requests(), 2, "one each, neither repeated");
}

#[tokio::test]
async fn a_tls_handshake_that_never_comes_ends_at_the_connect_timeout() {
    // Accepts TCP, then says nothing: the client's ClientHello is never
    // answered. The request timeout is long here, so only the connect
    // deadline (TCP and TLS together) can end it this soon.
    let server = Hostile::start(hold).await;
    let https = server.base_url.replace("http://", "https://");
    let started = Instant::now();
    let error = ClientBuilder::new()
        .base_url(https)
        .connect_timeout(CONNECT_TIMEOUT)
        .request_timeout(Duration::from_secs(30))
        .retry_policy(RetryPolicy::none())
        .api_key(unknown_key())
        .build()
        .unwrap()
        .whoami()
        .await
        .unwrap_err();
    assert_eq!(
        transport_kind(&error),
        TransportErrorKind::Connect,
        "{error}"
    );
    assert!(error.to_string().contains("took longer than"), "{error}");
    assert!(started.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(1));
}

#[tokio::test]
async fn garbage_instead_of_http_is_a_protocol_error() {
    let header_of = |size: usize| {
        format!(
            "HTTP/1.1 200 OK\r\nx-huge: {}\r\ncontent-length: 0\r\n\r\n",
            "a".repeat(size)
        )
    };
    let many_headers = format!(
        "HTTP/1.1 200 OK\r\n{}content-length: 0\r\n\r\n",
        (0..200)
            .map(|i| format!("x-h{i}: v\r\n"))
            .collect::<String>()
    );
    // What, the bytes, and whether hyper itself refuses them (and so is
    // the kept cause) or the SDK's own check does.
    let cases: [(&str, Vec<u8>, bool); 6] = [
        (
            "another protocol",
            b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(),
            true,
        ),
        // A TLS alert record, as from a TLS port spoken to in clear.
        (
            "binary",
            vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28],
            true,
        ),
        // Over the 64 KiB head limit, yet small enough to reach the SDK.
        (
            "a header over the limit",
            header_of(100 * 1024).into_bytes(),
            false,
        ),
        // Past what hyper buffers for a head at all.
        (
            "a header of a MiB",
            header_of(1024 * 1024).into_bytes(),
            true,
        ),
        ("too many headers", many_headers.into_bytes(), true),
        (
            "bad chunk framing",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_vec(),
            true,
        ),
    ];
    for (what, bytes, from_hyper) in cases {
        let server = Hostile::answering(bytes).await;
        let started = Instant::now();
        let error = client(&server).whoami().await.unwrap_err();
        assert_eq!(
            transport_kind(&error),
            TransportErrorKind::Protocol,
            "{what}: {error}"
        );
        assert_eq!(error.label(), "PROTOCOL_ERROR");
        assert_eq!(
            std::error::Error::source(&error).is_some(),
            from_hyper,
            "{what}: the cause is kept"
        );
        assert!(started.elapsed() < BOUND, "{what}");
    }
}

#[tokio::test]
async fn a_200_of_the_wrong_shape_is_a_decode_error() {
    let deep = "[".repeat(100_000);
    for body in [r#"{"id": 5}"#, "[]", "null", "{", deep.as_str()] {
        let server = Hostile::answering(http("200 OK", &[], body)).await;
        let error = client(&server).whoami().await.unwrap_err();
        assert!(matches!(error, Error::Decode(_)), "{error:?}");
        assert_eq!(error.label(), "UNEXPECTED_RESPONSE");
        assert_eq!(error.status(), Some(http::StatusCode::OK));
    }
}

#[tokio::test]
async fn a_mangled_create_answer_never_shows_the_key() {
    let key = ApiKey::from_random_bytes(Environment::Live, [0x3c; 16]);
    let secret = key.expose_secret();
    let request = CreateKeyRequest::new(AccountId::new("acct_h").unwrap(), "h");
    // The key where a record should be: a JSON error would quote it.
    let misplaced = format!(r#"{{"key": "{secret}", "key_info": "{secret}"}}"#);
    // Not a Cloro key at all.
    let malformed = format!(r#"{{"key": "sk_live_short", "key_info": {KEY_INFO}}}"#);
    for body in [misplaced, malformed] {
        let server = Hostile::answering(http("201 Created", &[], &body)).await;
        let error = admin(&server).create_key(&request).await.unwrap_err();
        assert!(matches!(error, Error::Decode(_)), "{error:?}");
        for text in [
            format!("{error:?}"),
            error.to_string(),
            cloro_client::cli::advice(&error),
        ] {
            assert!(!text.contains(&secret[12..]), "secret in {text}");
        }
    }
}

#[tokio::test]
async fn a_cursor_that_never_moves_stops_the_pager() {
    let server = Hostile::answering(http(
        "200 OK",
        &[],
        r#"{"keys": [], "next_cursor": "again"}"#,
    ))
    .await;
    let query = KeyListQuery::new(AccountId::new("acct_h").unwrap());
    let started = Instant::now();
    let error = admin(&server).keys(query).collect_all().await.unwrap_err();
    assert!(matches!(error, Error::Decode(_)), "{error:?}");
    assert!(error.to_string().contains("never end"), "{error}");
    assert_eq!(server.requests(), 2, "the first page, then the repeat");
    assert!(started.elapsed() < BOUND);
}

/// Runs the CLI in-process with `builder` (short timeouts) and `args`.
async fn cloro(builder: ClientBuilder, args: &[&str]) -> (u8, String) {
    let cli = Cli::try_parse_from(std::iter::once("cloro").chain(args.iter().copied())).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut stdin = std::io::empty();
    let input = cloro_client::cli::Input::new(&mut stdin, false);
    let code = cloro_client::cli::run(cli, builder, input, &mut out, &mut err).await;
    (code, String::from_utf8(err).unwrap())
}

#[tokio::test]
async fn the_cli_turns_hostile_answers_into_a_label_and_exit_3() {
    let silent = Hostile::start(hold).await;
    let garbage = Hostile::answering(b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()).await;
    let huge =
        Hostile::answering(b"HTTP/1.1 200 OK\r\ncontent-length: 1099511627776\r\n\r\n".to_vec())
            .await;
    let stuck = Hostile::answering(http(
        "200 OK",
        &[],
        r#"{"keys": [], "next_cursor": "again"}"#,
    ))
    .await;
    let with_token = |server: &Hostile| {
        builder(&server.base_url).admin_token(AdminToken::new(ADMIN_TOKEN).unwrap())
    };
    let cases = [
        (&silent, vec!["plans"], "TIMEOUT: "),
        (&garbage, vec!["plans"], "PROTOCOL_ERROR: "),
        (&huge, vec!["plans"], "RESPONSE_TOO_LARGE: "),
        (
            &stuck,
            vec!["keys", "list", "--account", "acct_h", "--all"],
            "UNEXPECTED_RESPONSE: ",
        ),
    ];
    for (server, args, label) in cases {
        let started = Instant::now();
        let (code, stderr) = cloro(with_token(server), &args).await;
        assert_eq!(code, EXIT_UNREACHABLE, "{args:?}: {stderr}");
        assert!(stderr.starts_with(label), "{args:?}: {stderr}");
        assert!(started.elapsed() < BOUND, "{args:?}");
    }
}
