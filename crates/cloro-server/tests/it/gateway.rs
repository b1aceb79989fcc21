//! The gateway (SPEC §6, any other `/v1/*`): what reaches the upstream and
//! what comes back, bodies streamed both ways, the concurrency permit held
//! for the whole answer, and the refusals that never reach the upstream.

use std::convert::Infallible;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

use crate::support::{TestServer, TestUpstream};

/// How long a step that should be immediate may take before the test fails
/// (a gateway that buffers would hang here instead of answering).
const STEP: Duration = Duration::from_secs(5);

/// A request body the test writes chunk by chunk; it ends when the sender
/// is dropped.
struct Chunks(mpsc::Receiver<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

fn chunk_client() -> Client<HttpConnector, Chunks> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Starts `POST path` with a body that stays open; returns its sender and
/// the response head.
async fn open(
    client: &Client<HttpConnector, Chunks>,
    server: &TestServer,
    path: &str,
    key: &str,
) -> (mpsc::Sender<Bytes>, Response<Incoming>) {
    let (sender, receiver) = mpsc::channel(1);
    let request = Request::post(server.url(path))
        .header("authorization", format!("Bearer {key}"))
        .body(Chunks(receiver))
        .unwrap();
    let response = tokio::time::timeout(STEP, client.request(request))
        .await
        .expect("the response head arrives while the request body is still open")
        .unwrap();
    (sender, response)
}

/// Reads exactly `len` bytes of a response body.
async fn read_exactly(body: &mut Incoming, len: usize) -> Bytes {
    let mut buffer = BytesMut::new();
    while buffer.len() < len {
        let frame = tokio::time::timeout(STEP, body.frame())
            .await
            .expect("the echoed chunk arrives before the request ends")
            .expect("the body ended early")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            buffer.extend_from_slice(&data);
        }
    }
    buffer.freeze()
}

/// Reads a response body to its end.
async fn read_to_end(body: Incoming) -> Bytes {
    tokio::time::timeout(STEP, body.collect())
        .await
        .expect("the body ends")
        .unwrap()
        .to_bytes()
}

#[tokio::test]
async fn forwards_path_and_query_with_rewritten_headers() {
    let upstream = TestUpstream::start().await;
    let server = TestServer::with_upstream(&upstream.url(), "").await;
    let key = server.create_key(|_| {}).await;
    let whoami = server.get_with_key("/v1/whoami", &key).await;
    let key_id = whoami.json()["id"].as_str().unwrap().to_owned();

    let auth = format!("Bearer {key}");
    let answer = server
        .send(
            Method::POST,
            "/v1/monitor/run?x=1&y=two",
            &[
                ("authorization", &auth),
                ("x-cloro-key-id", "key_forged"),
                ("x-cloro-scopes", "admin:everything"),
                ("x-cloro-made-up", "1"),
                ("connection", "x-secret-hop"),
                ("x-secret-hop", "do not pass"),
                ("forwarded", "for=6.6.6.6"),
                ("keep-alive", "timeout=1"),
                ("proxy-authorization", "Basic c2VjcmV0"),
                ("x-forwarded-for", "198.51.100.7"),
                ("x-request-id", "trace-7"),
                ("x-kept", "yes"),
            ],
            "hello upstream",
        )
        .await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(&answer.body[..], b"hello upstream");
    assert_eq!(answer.header("x-upstream"), Some("echo"));
    assert_eq!(answer.header("x-upstream-hop"), None, "named in Connection");
    assert_eq!(answer.header("keep-alive"), None);
    assert_eq!(answer.header("x-ratelimit-limit"), Some("1000"));
    assert_eq!(answer.header("x-ratelimit-remaining"), Some("998"));
    assert_eq!(
        answer.header("ratelimit-policy"),
        Some("\"default\";q=1000;w=3600")
    );
    assert!(answer.header("ratelimit").is_some());
    assert_eq!(answer.header("x-request-id"), Some("trace-7"));

    let seen = upstream.only();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(
        seen.uri.path_and_query().unwrap().as_str(),
        "/v1/monitor/run?x=1&y=two"
    );
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.header("x-cloro-key-id"), Some(key_id.as_str()));
    assert_eq!(seen.header("x-cloro-account-id"), Some("acct_test"));
    assert_eq!(seen.header("x-cloro-environment"), Some("live"));
    assert_eq!(seen.header("x-cloro-scopes"), Some("*"));
    assert_eq!(seen.header("x-cloro-made-up"), None);
    assert_eq!(seen.header("x-secret-hop"), None);
    assert_eq!(
        seen.header("forwarded"),
        None,
        "a client-claimed Forwarded is dropped"
    );
    assert_eq!(seen.header("keep-alive"), None);
    assert_eq!(seen.header("proxy-authorization"), None);
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-request-id"), Some("trace-7"));
    assert_eq!(seen.header("x-kept"), Some("yes"));
    assert_eq!(
        seen.header("host"),
        Some(upstream.address.to_string().as_str())
    );

    let refused = server.get_with_key("/v1/monitor", "sk_live_nope").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        upstream.seen().len(),
        1,
        "a refused request is not forwarded"
    );
    server.stop().await;
}

#[tokio::test]
async fn forwarded_for_is_the_right_most_untrusted_address_behind_trusted_proxies() {
    let upstream = TestUpstream::start().await;
    let toml = "trusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]\n";
    let server = TestServer::with_upstream(&upstream.url(), toml).await;
    let key = server.create_key(|_| {}).await;
    let auth = format!("Bearer {key}");
    let answer = server
        .send(
            Method::GET,
            "/v1/monitor",
            &[
                ("authorization", &auth),
                ("x-forwarded-for", "198.51.100.7, 203.0.113.9, 10.1.2.3"),
            ],
            "",
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        upstream.only().header("x-forwarded-for"),
        Some("203.0.113.9")
    );
    server.stop().await;
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    let upstream = TestUpstream::start().await;
    let server = TestServer::with_upstream(&upstream.url(), "").await;
    let key = server.create_key(|_| {}).await;
    let client = chunk_client();
    let (sender, mut response) = open(&client, &server, "/v1/echo", &key).await;
    assert_eq!(response.status(), StatusCode::OK);
    // Each chunk must make the round trip client → gateway → upstream →
    // gateway → client while the request is still open: a gateway that
    // buffered either body would never answer.
    for chunk in ["ping", "pong", "a longer third chunk"] {
        sender.send(Bytes::from(chunk)).await.unwrap();
        let echoed = read_exactly(response.body_mut(), chunk.len()).await;
        assert_eq!(&echoed[..], chunk.as_bytes());
    }
    drop(sender);
    assert!(read_to_end(response.into_body()).await.is_empty());

    // And a large body arrives whole, both ways.
    let big: String = (0..4 * 1024 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let auth = format!("Bearer {key}");
    let answer = server
        .send(Method::PUT, "/v1/blob", &[("authorization", &auth)], &big)
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body.len(), big.len());
    assert!(answer.body == big.as_bytes(), "the 4 MiB echo differs");
    server.stop().await;
}

#[tokio::test]
async fn confusing_paths_are_refused_before_authentication() {
    let upstream = TestUpstream::start().await;
    // One unknown key per hour: a store lookup by any refused path would
    // use it up.
    let server = TestServer::with_upstream(&upstream.url(), "max_failed_auth = \"1/hour\"\n").await;
    let key = server.create_key(|_| {}).await;
    let stranger = cloro_auth_core::ApiKey::generate(cloro_auth_core::Environment::Live).unwrap();
    let paths = [
        "/v1/../admin/v1/keys",
        "/v1/a/./b",
        "/v1/%2e%2e/admin",
        "/v1/a%2Fb",
        "/v1/a%5cb",
        "/v1/%2E",
    ];
    for path in paths {
        for token in [None, Some(stranger.expose_secret()), Some(key.as_str())] {
            let answer = match token {
                Some(token) => server.get_with_key(path, token).await,
                None => server.send(Method::GET, path, &[], "").await,
            };
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}");
            assert_eq!(answer.code(), "INVALID_REQUEST", "{path}");
            assert_eq!(answer.json()["error"]["details"]["field"], "path", "{path}");
        }
    }
    assert!(upstream.seen().is_empty());

    // Neither the key's rate limit nor the failed-attempt allowance was used.
    // (The valid key goes first: once the guard trips, only keys already
    // cached as valid pass.)
    let valid = server.get_with_key("/v1/monitor", &key).await;
    assert_eq!(valid.status, StatusCode::OK);
    assert_eq!(valid.header("x-ratelimit-remaining"), Some("999"));
    let unknown = server
        .get_with_key("/v1/monitor", stranger.expose_secret())
        .await;
    assert_eq!(unknown.code(), "INVALID_API_KEY");
    let again = server
        .get_with_key("/v1/monitor", stranger.expose_secret())
        .await;
    assert_eq!(
        again.code(),
        "TOO_MANY_FAILED_ATTEMPTS",
        "the guard is armed"
    );
    server.stop().await;
}

#[tokio::test]
async fn without_an_upstream_v1_routes_are_not_found_after_authentication() {
    let server = TestServer::embedded("").await;
    let key = server.create_key(|_| {}).await;
    let anonymous = server.send(Method::GET, "/v1/monitor", &[], "").await;
    assert_eq!(
        (anonymous.status, anonymous.code()),
        (StatusCode::UNAUTHORIZED, "MISSING_API_KEY".into())
    );
    let known = server.get_with_key("/v1/monitor", &key).await;
    assert_eq!(
        (known.status, known.code()),
        (StatusCode::NOT_FOUND, "NOT_FOUND".into())
    );
    let confusing = server.get_with_key("/v1/../x", &key).await;
    assert_eq!(confusing.status, StatusCode::BAD_REQUEST);
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_upstream_is_502() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = TestServer::with_upstream(&format!("http://127.0.0.1:{port}"), "").await;
    let key = server.create_key(|_| {}).await;
    let answer = server.get_with_key("/v1/monitor", &key).await;
    assert_eq!(
        (answer.status, answer.code()),
        (StatusCode::BAD_GATEWAY, "UPSTREAM_UNAVAILABLE".into())
    );
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!message.contains(&port.to_string()), "{message}");
    server.stop().await;
}

#[tokio::test]
async fn the_concurrency_permit_is_held_until_the_answer_is_sent() {
    let upstream = TestUpstream::start().await;
    let server = TestServer::with_upstream(&upstream.url(), "").await;
    let key = server
        .create_key(|r| r.concurrency_limit = NonZeroU32::new(1))
        .await;
    let client = chunk_client();
    let (sender, mut first) = open(&client, &server, "/v1/stream", &key).await;
    assert_eq!(first.status(), StatusCode::OK);
    let header = |name: &str| first.headers().get(name).and_then(|v| v.to_str().ok());
    assert_eq!(header("x-concurrent-limit"), Some("1"));
    assert_eq!(header("x-concurrent-current"), Some("1"));
    assert_eq!(header("x-concurrent-remaining"), Some("0"));
    sender.send(Bytes::from_static(b"part")).await.unwrap();
    read_exactly(first.body_mut(), 4).await;

    // The first answer is still streaming: its permit is still taken.
    let second = server.get_with_key("/v1/stream", &key).await;
    assert_eq!(
        (second.status, second.code()),
        (
            StatusCode::TOO_MANY_REQUESTS,
            "CONCURRENT_LIMIT_EXCEEDED".into()
        )
    );
    assert_eq!(second.header("retry-after"), Some("1"));
    assert_eq!(second.header("x-concurrent-limit"), Some("1"));
    assert_eq!(
        second.header("x-concurrent-current"),
        Some("2"),
        "counts the refused request itself"
    );
    assert_eq!(second.header("x-concurrent-remaining"), Some("0"));

    drop(sender);
    read_to_end(first.into_body()).await;
    let third = server.get_with_key("/v1/stream", &key).await;
    assert_eq!(third.status, StatusCode::OK, "the permit was released");
    assert_eq!(
        upstream.seen().len(),
        2,
        "the refused one was not forwarded"
    );
    server.stop().await;
}
