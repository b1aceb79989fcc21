//! SPEC §9 over real TCP against the in-process server: paths mean one
//! thing on the gateway and `/auth/verify`, sub-requests fail closed,
//! connections are bounded in time, the failed-attempt guard cannot be
//! dodged (abandoned lookups, concurrent bursts, IPv6 /64s) and wrong admin
//! tokens lock an address out. Timeouts are set short through the TOML so
//! each bound is seen in about a second.

use std::time::{Duration, Instant};

use cloro_auth_core::{ApiKey, Environment, Scope};
use cloro_test_support::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{ADMIN_TOKEN, Raw, TestServer, TestUpstream, raw_request};

const SCOPES: &str = r#"
[route_scopes]
"POST /v1/monitor" = "monitor:write"
"GET /v1/report" = "report:read"
"#;

fn bearer(key: &str) -> Vec<u8> {
    format!("Authorization: Bearer {key}").into_bytes()
}

fn stranger() -> String {
    ApiKey::generate(Environment::Live)
        .unwrap()
        .expose_secret()
        .to_owned()
}

async fn send(server: &TestServer, method: &str, target: &str, lines: &[&[u8]]) -> Raw {
    raw_request(server.address, method, target, lines, b"").await
}

fn assert_refused(answer: &Raw, status: u16, code: &str, field: Option<&str>, what: &str) {
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (status, code),
        "{what}: {}",
        answer.body
    );
    if let Some(field) = field {
        assert_eq!(answer.field(), field, "{what}: {}", answer.body);
    }
}

#[tokio::test]
async fn every_spelling_of_a_scoped_route_is_scoped_and_the_upstream_gets_the_normal_form() {
    let upstream = TestUpstream::start().await;
    let server = TestServer::with_upstream(&upstream.url(), SCOPES).await;
    let reader = server
        .create_key(|r| r.scopes = vec![Scope::new("read").unwrap()])
        .await;
    let writer = server
        .create_key(|r| r.scopes = vec![Scope::new("monitor:write").unwrap()])
        .await;
    let read = bearer(&reader);

    for (method, target) in [
        ("POST", "/v1/%6Donitor"),
        ("POST", "/v1/%6donitor"),
        ("POST", "/v1/MONITOR"),
        ("POST", "/v1//monitor"),
        ("HEAD", "/v1/report"),
        ("GET", "/v1/%72eport"),
    ] {
        let answer = send(&server, method, target, &[&read]).await;
        // HEAD answers carry no body: the status tells.
        assert_eq!(answer.status, 403, "{method} {target}: {}", answer.body);
        if method != "HEAD" {
            assert_eq!(
                answer.code(),
                "INSUFFICIENT_PERMISSIONS",
                "{method} {target}"
            );
        }
    }
    for target in [
        "/v1/monitor;x=1",
        "/v1/monitor%3Bx",
        "/v1/%2e%2e/admin",
        "/v1/a%2Fb",
        "/v1/a%5cb",
        "/v1/%00",
        "/v1/%0A",
        "/v1/%256Donitor",
        "/v1/./monitor",
        "/v1/%zz",
    ] {
        let answer = send(&server, "POST", target, &[&read]).await;
        assert_refused(&answer, 400, "INVALID_REQUEST", Some("path"), target);
    }
    assert!(upstream.seen().is_empty(), "nothing reached the upstream");

    let write = bearer(&writer);
    let ok = send(&server, "POST", "/v1/%6Donitor?q=%6D", &[&write]).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let ok = send(&server, "GET", "/v1/caf%c3%a9", &[&write]).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let seen: Vec<String> = upstream
        .seen()
        .iter()
        .map(|seen| seen.uri.path_and_query().unwrap().to_string())
        .collect();
    // The path normalised, the query as the client sent it.
    assert_eq!(seen, ["/v1/monitor?q=%6D", "/v1/caf%C3%A9"]);
    server.stop().await;
}

#[tokio::test]
async fn verify_sub_requests_fail_closed() {
    let server = TestServer::embedded(SCOPES).await;
    let reader = server
        .create_key(|r| r.scopes = vec![Scope::new("read").unwrap()])
        .await;
    let read = bearer(&reader);
    /// Target, extra header lines, status, code, `details.field`.
    type Case<'a> = (&'a str, &'a [&'a [u8]], u16, &'a str, &'a str);
    let cases: [Case; 11] = [
        // Unreadable sources are refused, never skipped for the next one.
        (
            "/auth/verify",
            &[b"X-Original-URI: /v1/\xff"],
            400,
            "INVALID_REQUEST",
            "original_uri",
        ),
        (
            "/auth/verify",
            &[b"X-Original-URI: v1/monitor"],
            400,
            "INVALID_REQUEST",
            "original_uri",
        ),
        (
            "/auth/verify",
            &[b"X-Original-URI: /v1/a", b"X-Original-URI: /v1/a"],
            400,
            "INVALID_REQUEST",
            "original_uri",
        ),
        (
            "/auth/verify",
            &[b"X-Forwarded-Method: PO\"ST", b"X-Forwarded-Uri: /v1/a"],
            400,
            "INVALID_REQUEST",
            "original_method",
        ),
        // Present sources must agree.
        (
            "/auth/verify",
            &[
                b"X-Original-URI: /v1/other",
                b"X-Forwarded-Uri: /v1/monitor",
            ],
            400,
            "INVALID_REQUEST",
            "original_uri",
        ),
        (
            "/auth/verify",
            &[
                b"X-Original-Method: GET",
                b"X-Forwarded-Method: POST",
                b"X-Original-URI: /v1/a",
            ],
            400,
            "INVALID_REQUEST",
            "original_method",
        ),
        (
            "/auth/verify/v1/monitor",
            &[b"X-Original-URI: /v1/other"],
            400,
            "INVALID_REQUEST",
            "original_uri",
        ),
        // The path rules apply to every source.
        (
            "/auth/verify/v1/monitor;x=1",
            &[],
            400,
            "INVALID_REQUEST",
            "path",
        ),
        (
            "/auth/verify",
            &[b"X-Forwarded-Uri: /v1/monitor;x=1"],
            400,
            "INVALID_REQUEST",
            "path",
        ),
        // Another spelling of a scoped route is that route.
        (
            "/auth/verify",
            &[b"X-Original-URI: /v1/%6Donitor", b"X-Original-Method: POST"],
            403,
            "INSUFFICIENT_PERMISSIONS",
            "",
        ),
        (
            "/auth/verify/v1/%6Donitor",
            &[],
            403,
            "INSUFFICIENT_PERMISSIONS",
            "",
        ),
    ];
    for (target, lines, status, code, field) in cases {
        let mut all: Vec<&[u8]> = vec![&read];
        all.extend_from_slice(lines);
        let method = if target.starts_with("/auth/verify/") {
            "POST"
        } else {
            "GET"
        };
        let answer = send(&server, method, target, &all).await;
        let what = format!("{target} {lines:?}");
        assert_refused(
            &answer,
            status,
            code,
            (!field.is_empty()).then_some(field),
            &what,
        );
    }
    // Bytes RFC 3986 forbids but nginx passes are still readable: the one
    // source is used, and the key's answer comes back.
    let odd = send(
        &server,
        "GET",
        "/auth/verify",
        &[&read, b"X-Original-URI: /v1/x?a=<b>"],
    )
    .await;
    assert_eq!(odd.status, 200, "{}", odd.body);
    assert!(odd.header("x-cloro-key-id").is_some());
    server.stop().await;
}

/// Reads until the server closes the connection (or `limit` passes), and
/// how long that took.
async fn closed_after(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + limit),
            stream.read(&mut buffer),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn half_sent_heads_and_silent_connections_are_cut_off_on_time() {
    let server = TestServer::embedded("header_timeout = \"1s\"\nidle_timeout = \"30s\"").await;
    let mut silent = TcpStream::connect(server.address).await.unwrap();
    let mut half = TcpStream::connect(server.address).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow:")
        .await
        .unwrap();
    for (name, stream) in [("silent", &mut silent), ("half a head", &mut half)] {
        let closed = closed_after(stream, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{name}: still open after 10 s"));
        assert!(
            closed >= Duration::from_millis(800),
            "{name}: closed after {closed:?}, before the header timeout"
        );
    }
    // The node serves as before.
    let health = send(&server, "GET", "/healthz", &[]).await;
    assert_eq!(health.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_close_and_busy_ones_stay() {
    let server = TestServer::embedded("idle_timeout = \"1s\"\nheader_timeout = \"10s\"").await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let read_answer = async |stream: &mut TcpStream| {
        let mut buffer = [0u8; 1024];
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(
            buffer[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            &buffer[..n]
        );
    };
    // A request every 300 ms keeps a connection open well past 1 s.
    let mut busy = TcpStream::connect(server.address).await.unwrap();
    for _ in 0..6 {
        busy.write_all(request).await.unwrap();
        read_answer(&mut busy).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Then it goes quiet, and is closed after the idle timeout.
    let closed = closed_after(&mut busy, Duration::from_secs(10))
        .await
        .expect("an idle keep-alive connection stayed open");
    assert!(
        closed >= Duration::from_millis(500),
        "closed {closed:?} after its last answer"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_body_is_refused_after_the_body_timeout() {
    let server = TestServer::embedded("body_timeout = \"1s\"").await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    let head = format!(
        "POST /admin/v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"account"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("no answer to a stalled body")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(800));
    let answer = crate::support::parse_raw(&response);
    assert_refused(
        &answer,
        400,
        "INVALID_REQUEST",
        Some("body"),
        "stalled body",
    );
    assert!(answer.body.contains("paused"), "{}", answer.body);
    server.stop().await;
}

#[tokio::test]
async fn a_hung_upstream_answers_504() {
    // Accepts and reads, never answers.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = hung.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = hung.accept().await {
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer).await;
            held.push(stream);
        }
    });
    let server =
        TestServer::with_upstream(&format!("http://{address}"), "upstream_timeout = \"1s\"").await;
    let key = server.create_key(|_| {}).await;
    let started = Instant::now();
    let answer = send(&server, "GET", "/v1/slow", &[&bearer(&key)]).await;
    assert_refused(&answer, 504, "UPSTREAM_TIMEOUT", None, "hung upstream");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(10),
        "{took:?}"
    );
    holder.abort();
    server.stop().await;
}

/// The value of one unlabelled series from `/metrics`.
async fn metric(server: &TestServer, name: &str) -> f64 {
    let scrape = send(server, "GET", "/metrics", &[]).await;
    scrape
        .body
        .lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|value| value.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[tokio::test]
async fn abandoned_unknown_keys_cost_no_more_lookups_than_the_allowance() {
    let redis = RedisServer::start();
    let server = TestServer::redis(
        &redis.url(),
        "max_failed_auth = \"5/minute\"\nstore_timeout = \"3s\"",
    )
    .await;
    let before = metric(&server, "cloro_key_lookups_total").await;
    redis.pause();
    // 100 unknown keys at once from one address, each on its own
    // connection; the clients give up while the lookups hang.
    let mut clients = Vec::new();
    for _ in 0..100 {
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        let request = format!(
            "GET /v1/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            stranger()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        clients.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(clients);
    let lookups = metric(&server, "cloro_key_lookups_total").await - before;
    assert!(
        lookups <= 5.0,
        "{lookups} store lookups for an allowance of 5"
    );
    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&server, "cloro_lookups_in_flight").await > 0.0 {
        assert!(Instant::now() < deadline, "lookups in flight never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The abandoned attempts were charged: the next unknown key is refused
    // before any lookup.
    let refused = send(&server, "GET", "/v1/whoami", &[&bearer(&stranger())]).await;
    assert_refused(
        &refused,
        429,
        "TOO_MANY_FAILED_ATTEMPTS",
        None,
        "after the burst",
    );
    let total = metric(&server, "cloro_key_lookups_total").await - before;
    assert!(total <= 5.0, "{total} store lookups in all");
    server.stop().await;
}

#[tokio::test]
async fn an_ipv6_slash_64_shares_one_allowance() {
    let server = TestServer::embedded(
        "max_failed_auth = \"3/minute\"\ntrusted_proxies = [\"127.0.0.1/32\"]",
    )
    .await;
    let from = |address: &str| format!("X-Forwarded-For: {address}").into_bytes();
    for n in 1..=3 {
        let answer = send(
            &server,
            "GET",
            "/v1/whoami",
            &[&bearer(&stranger()), &from(&format!("2001:db8:1:2::{n}"))],
        )
        .await;
        assert_refused(
            &answer,
            401,
            "INVALID_API_KEY",
            None,
            "within the allowance",
        );
    }
    let same_64 = send(
        &server,
        "GET",
        "/v1/whoami",
        &[&bearer(&stranger()), &from("2001:db8:1:2:ffff::9")],
    )
    .await;
    assert_refused(
        &same_64,
        429,
        "TOO_MANY_FAILED_ATTEMPTS",
        None,
        "the same /64",
    );
    let other_64 = send(
        &server,
        "GET",
        "/v1/whoami",
        &[&bearer(&stranger()), &from("2001:db8:1:3::1")],
    )
    .await;
    assert_refused(&other_64, 401, "INVALID_API_KEY", None, "another /64");
    // An unreadable entry does not hide the readable one to its right.
    let hidden = send(
        &server,
        "GET",
        "/v1/whoami",
        &[
            &bearer(&stranger()),
            b"X-Forwarded-For: \xff\xfe, 2001:db8:1:2::7",
        ],
    )
    .await;
    assert_refused(
        &hidden,
        429,
        "TOO_MANY_FAILED_ATTEMPTS",
        None,
        "behind an unreadable entry",
    );
    server.stop().await;
}

#[tokio::test]
async fn wrong_admin_tokens_lock_the_address_out_for_every_token() {
    let server = TestServer::embedded(
        "max_failed_auth = \"3/minute\"\ntrusted_proxies = [\"127.0.0.1/32\"]",
    )
    .await;
    let wrong = bearer("wrong_admin_token_0123456789abcdefghijklmn");
    let right = bearer(ADMIN_TOKEN);
    let from = |address: &str| format!("X-Forwarded-For: {address}").into_bytes();
    let guesser = from("203.0.113.9");
    for _ in 0..3 {
        let answer = send(&server, "GET", "/admin/v1/plans", &[&wrong, &guesser]).await;
        assert_refused(&answer, 401, "INVALID_ADMIN_TOKEN", None, "a wrong token");
    }
    let locked = send(&server, "GET", "/admin/v1/plans", &[&wrong, &guesser]).await;
    assert_refused(
        &locked,
        429,
        "TOO_MANY_FAILED_ATTEMPTS",
        None,
        "the fourth wrong token",
    );
    assert!(locked.header("retry-after").is_some());
    // The right token from the locked-out address is refused too, or the
    // lockout would tell the guesser when it guessed right.
    let right_but_locked = send(&server, "GET", "/admin/v1/plans", &[&right, &guesser]).await;
    assert_refused(
        &right_but_locked,
        429,
        "TOO_MANY_FAILED_ATTEMPTS",
        None,
        "right token, locked",
    );
    let elsewhere = send(
        &server,
        "GET",
        "/admin/v1/plans",
        &[&right, &from("198.51.100.4")],
    )
    .await;
    assert_eq!(elsewhere.status, 200, "{}", elsewhere.body);
    server.stop().await;
}
