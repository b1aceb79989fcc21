//! The Caddy `forward_auth` example (`examples/caddy/Caddyfile`) run against
//! a real Caddy: the file itself, with only its ports rewritten and test-only
//! global options in front, between a client and a test upstream.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloro_auth_core::Scope;
use cloro_auth_core::wire::RateLimitPolicy;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::support::{Answer, TestServer, TestUpstream};

/// The route scope every test here configures.
const ROUTE_SCOPES: &str = "[route_scopes]\n\"POST /v1/monitor\" = \"monitor:write\"\n";

/// The lines of the example that keep a client's `X-Original-*` from
/// reaching cloro-server; [`Caddy::start_without_original_strip`] removes
/// them to show that cloro-server fails closed on its own.
const ORIGINAL_STRIP: [&str; 2] = [
    "header_up -X-Original-Method\n",
    "header_up -X-Original-URI\n",
];

/// A running Caddy; killed when dropped, also when the test panics.
struct Caddy {
    child: tokio::process::Child,
    address: SocketAddr,
    dir: tempfile::TempDir,
}

impl Caddy {
    /// Starts the example in front of `cloro` and `api`.
    async fn start(cloro: SocketAddr, api: SocketAddr) -> Caddy {
        Self::start_edited(cloro, api, &[]).await
    }

    /// Starts the example without the lines that strip a client's
    /// `X-Original-Method`/`-URI` from the check, as an operator who
    /// dropped them would run it.
    async fn start_without_original_strip(cloro: SocketAddr, api: SocketAddr) -> Caddy {
        Self::start_edited(cloro, api, &ORIGINAL_STRIP).await
    }

    /// Starts the example with each of `removed` (which it must contain
    /// once) taken out.
    async fn start_edited(cloro: SocketAddr, api: SocketAddr, removed: &[&str]) -> Caddy {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/caddy/Caddyfile");
        let text = std::fs::read_to_string(&example).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let address = free_address();
        let edits = [
            ("http://:8000 {", format!("http://:{} {{", address.port())),
            (
                "forward_auth 127.0.0.1:8080 {",
                format!("forward_auth {cloro} {{"),
            ),
            (
                "reverse_proxy 127.0.0.1:9000 {",
                format!("reverse_proxy {api} {{"),
            ),
        ]
        .into_iter()
        .chain(removed.iter().map(|line| (*line, String::new())));
        let config = edits.fold(text, |text, (from, to)| {
            assert_eq!(
                text.matches(from).count(),
                1,
                "examples/caddy/Caddyfile must contain `{from}` exactly once"
            );
            text.replace(from, &to)
        });
        // Test-only global options (the first block of a Caddyfile): no
        // admin endpoint to collide with another Caddy on :2019, and no
        // certificate management, which would reach for the network.
        let config = format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{config}");
        let file = dir.path().join("Caddyfile");
        std::fs::write(&file, config).unwrap();

        let log = std::fs::File::create(dir.path().join("caddy.log")).unwrap();
        // Caddy keeps its autosaved config and data (certificates, locks)
        // under the XDG directories, or HOME: all in the test's own.
        let child = tokio::process::Command::new("caddy")
            .arg("run")
            .arg("--config")
            .arg(&file)
            .arg("--adapter")
            .arg("caddyfile")
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run `caddy` ({error}); this test needs a real Caddy on PATH: \
                     apt-get install caddy"
                )
            });
        let mut caddy = Caddy {
            child,
            address,
            dir,
        };
        caddy.wait_until_listening().await;
        caddy
    }

    async fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::TcpStream::connect(self.address).await.is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("caddy exited with {status}:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "caddy did not listen on {} within 10 s:\n{}",
                self.address,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("caddy.log")).unwrap_or_default()
    }

    async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// A loopback address nothing listens on right now.
fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Sends one request to `address`; `target` goes on the request line as
/// it is, escapes and all.
async fn send(
    address: SocketAddr,
    method: Method,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{address}{target}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(
            request
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap(),
        )
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// Asserts that `through` (Caddy's answer) is `direct` (cloro-server's own
/// answer to the same check): status, challenge, content type, and the
/// error body but for the fields that differ per request.
fn assert_same_error(through: &Answer, direct: &Answer) {
    assert_eq!(through.status, direct.status, "{through:?}");
    for name in ["content-type", "www-authenticate", "retry-after"] {
        assert_eq!(through.header(name), direct.header(name), "{name}");
    }
    let mut through_body = through.json();
    let mut direct_body = direct.json();
    for body in [&mut through_body, &mut direct_body] {
        let error = body["error"].as_object_mut().unwrap();
        assert!(error.remove("timestamp").is_some());
        assert!(error.remove("request_id").is_some());
    }
    assert_eq!(through_body, direct_body);
}

/// A key with every scope, one with `monitor:read` only, and everything
/// started around them.
struct Setup {
    upstream: TestUpstream,
    server: TestServer,
    caddy: Caddy,
    /// Scopes `*`.
    writer: String,
    /// Scopes `monitor:read`: no `monitor:write` for `POST /v1/monitor`.
    reader: String,
}

impl Setup {
    async fn start() -> Setup {
        Self::start_with(Caddy::start).await
    }

    async fn start_with<F>(start_caddy: impl FnOnce(SocketAddr, SocketAddr) -> F) -> Setup
    where
        F: Future<Output = Caddy>,
    {
        let upstream = TestUpstream::start().await;
        let server = TestServer::embedded(ROUTE_SCOPES).await;
        let writer = server.create_key(|_| {}).await;
        let reader = server
            .create_key(|r| r.scopes = vec![Scope::new("monitor:read").unwrap()])
            .await;
        let caddy = start_caddy(server.address, upstream.address).await;
        Setup {
            upstream,
            server,
            caddy,
            writer,
            reader,
        }
    }

    async fn stop(self) {
        self.caddy.stop().await;
        self.server.stop().await;
    }
}

#[tokio::test]
async fn caddy_example_passes_a_valid_key_with_our_identity_and_not_a_forged_one() {
    let setup = Setup::start().await;
    let key_id = setup
        .server
        .get_with_key("/v1/whoami", &setup.writer)
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let auth = bearer(&setup.writer);
    let allowed = send(
        setup.caddy.address,
        Method::POST,
        "/v1/monitor?page=2",
        &[
            ("authorization", &auth),
            // An identity of the client's own making, one that copy_headers
            // lists and one it does not.
            ("x-cloro-key-id", "key_forged"),
            ("x-cloro-plan", "enterprise"),
        ],
        "{\"url\":\"https://example.com\"}",
    )
    .await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", setup.caddy.logs());
    assert_eq!(allowed.header("x-upstream"), Some("echo"));
    assert_eq!(
        allowed.body, "{\"url\":\"https://example.com\"}",
        "the check took no body: the API got all of it"
    );
    // The key's limits, from the check, on the API's answer.
    assert_eq!(allowed.header("x-ratelimit-limit"), Some("1000"));
    assert_eq!(allowed.header("x-ratelimit-remaining"), Some("998"));
    assert!(allowed.header("x-ratelimit-reset").is_some());
    assert_eq!(
        allowed.header("ratelimit-policy"),
        Some("\"default\";q=1000;w=3600")
    );
    assert!(
        allowed
            .header("ratelimit")
            .unwrap()
            .starts_with("\"default\";r=998;")
    );

    let seen = setup.upstream.only();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(
        seen.uri.path_and_query().unwrap().as_str(),
        "/v1/monitor?page=2"
    );
    let all = |name: &str| {
        seen.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(all("x-cloro-key-id"), [key_id], "ours, and only ours");
    assert_eq!(all("x-cloro-account-id"), ["acct_test"]);
    assert_eq!(all("x-cloro-environment"), ["live"]);
    assert_eq!(all("x-cloro-scopes"), ["*"]);
    assert_eq!(
        seen.header("x-cloro-plan"),
        None,
        "no client X-Cloro-* passes"
    );
    assert_eq!(seen.header("authorization"), None, "the key stops at Caddy");
    setup.stop().await;
}

#[tokio::test]
async fn caddy_example_answers_our_exact_errors_for_missing_and_bad_keys() {
    let setup = Setup::start().await;
    let unknown = cloro_auth_core::ApiKey::generate(cloro_auth_core::Environment::Live).unwrap();
    let unknown = bearer(unknown.expose_secret());
    let cases: [(Option<&str>, StatusCode, &str); 5] = [
        (None, StatusCode::UNAUTHORIZED, "MISSING_API_KEY"),
        (Some(&unknown), StatusCode::UNAUTHORIZED, "INVALID_API_KEY"),
        (
            Some("Bearer sk_live_0123"),
            StatusCode::UNAUTHORIZED,
            "INVALID_API_KEY_FORMAT",
        ),
        (
            Some(&setup.writer),
            StatusCode::UNAUTHORIZED,
            "MISSING_BEARER_PREFIX",
        ),
        (
            Some("Bearer"),
            StatusCode::BAD_REQUEST,
            "MALFORMED_AUTHORIZATION",
        ),
    ];
    for (authorization, status, code) in cases {
        let mut headers = vec![];
        if let Some(value) = authorization {
            headers.push(("authorization", value));
        }
        let through = send(
            setup.caddy.address,
            Method::POST,
            "/v1/monitor",
            &headers,
            "{}",
        )
        .await;
        assert_eq!((through.status, through.code().as_str()), (status, code));
        // What cloro-server answers Caddy's check, asked directly.
        headers.extend([
            ("x-forwarded-method", "POST"),
            ("x-forwarded-uri", "/v1/monitor"),
        ]);
        let direct = setup
            .server
            .send(Method::GET, "/auth/verify", &headers, "")
            .await;
        assert_same_error(&through, &direct);
    }
    let missing = send(setup.caddy.address, Method::GET, "/v1/monitor", &[], "").await;
    assert_eq!(missing.header("content-type"), Some("application/json"));
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"cloro\"")
    );
    assert!(
        setup.upstream.seen().is_empty(),
        "nothing refused reaches the API"
    );
    setup.stop().await;
}

#[tokio::test]
async fn caddy_example_refuses_a_key_without_the_route_scope() {
    let setup = Setup::start().await;
    let auth = bearer(&setup.reader);
    let forbidden = send(
        setup.caddy.address,
        Method::POST,
        "/v1/monitor",
        &[("authorization", &auth)],
        "{}",
    )
    .await;
    assert_eq!(
        (forbidden.status, forbidden.code().as_str()),
        (StatusCode::FORBIDDEN, "INSUFFICIENT_PERMISSIONS")
    );
    assert!(
        forbidden
            .header("www-authenticate")
            .unwrap()
            .ends_with("scope=\"monitor:write\""),
        "{forbidden:?}"
    );
    let direct = setup
        .server
        .send(
            Method::GET,
            "/auth/verify",
            &[
                ("authorization", &auth),
                ("x-forwarded-method", "POST"),
                ("x-forwarded-uri", "/v1/monitor"),
            ],
            "",
        )
        .await;
    assert_same_error(&forbidden, &direct);
    assert_eq!(
        forbidden.header("x-ratelimit-limit"),
        None,
        "a 403 is decided before the limiter"
    );
    assert!(setup.upstream.seen().is_empty());

    // The scope is on POST only: the check saw the client's method, not
    // forward_auth's GET.
    let read = send(
        setup.caddy.address,
        Method::GET,
        "/v1/monitor",
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(setup.upstream.only().method, Method::GET);
    setup.stop().await;
}

#[tokio::test]
async fn caddy_example_passes_a_rate_limit_refusal_with_its_retry_after() {
    let setup = Setup::start().await;
    let limited = setup
        .server
        .create_key(|r| {
            r.rate_limit = Some(RateLimitPolicy::new(
                1.try_into().unwrap(),
                3600.try_into().unwrap(),
            ));
        })
        .await;
    let auth = bearer(&limited);
    let headers = [("authorization", auth.as_str())];
    let first = send(
        setup.caddy.address,
        Method::GET,
        "/v1/monitor",
        &headers,
        "",
    )
    .await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("x-ratelimit-remaining"), Some("0"));
    let over = send(
        setup.caddy.address,
        Method::GET,
        "/v1/monitor",
        &headers,
        "",
    )
    .await;
    assert_eq!(
        (over.status, over.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED")
    );
    let retry_after: u64 = over.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(over.json()["error"]["details"]["retry_after"], retry_after);
    assert_eq!(over.header("x-ratelimit-limit"), Some("1"));
    assert_eq!(over.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(setup.upstream.seen().len(), 1, "only the allowed request");
    setup.stop().await;
}

#[tokio::test]
async fn caddy_example_fails_closed_when_cloro_server_is_unreachable() {
    let upstream = TestUpstream::start().await;
    let caddy = Caddy::start(free_address(), upstream.address).await;
    let answer = send(
        caddy.address,
        Method::GET,
        "/v1/monitor",
        &[("authorization", "Bearer sk_live_whatever")],
        "",
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", caddy.logs());
    assert!(upstream.seen().is_empty(), "no check, no entry");
    caddy.stop().await;
}

// SPEC §9 attacks: a client that tries to make the check and the API see
// different requests.

#[tokio::test]
async fn caddy_example_does_not_let_a_client_name_another_route_in_headers() {
    let setup = Setup::start().await;
    let auth = bearer(&setup.reader);
    for (name, value) in [
        ("x-original-uri", "/v1/other"),
        ("x-original-method", "GET"),
        ("x-forwarded-uri", "/v1/other"),
        ("x-forwarded-method", "GET"),
    ] {
        let answer = send(
            setup.caddy.address,
            Method::POST,
            "/v1/monitor",
            &[("authorization", &auth), (name, value)],
            "{}",
        )
        .await;
        // Caddy strips the X-Original-* pair and overwrites the
        // X-Forwarded-* pair, so the check sees the real route.
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (StatusCode::FORBIDDEN, "INSUFFICIENT_PERMISSIONS"),
            "{name}: {value}"
        );
    }
    assert!(setup.upstream.seen().is_empty());
    setup.stop().await;
}

#[tokio::test]
async fn caddy_example_without_its_strip_lines_still_fails_closed_on_a_client_x_original_uri() {
    // An operator who drops `header_up -X-Original-*` lets the client's
    // header reach cloro-server beside Caddy's X-Forwarded-Uri: two
    // sources that disagree (SPEC §9), which must not pass.
    let setup = Setup::start_with(Caddy::start_without_original_strip).await;
    let auth = bearer(&setup.reader);
    let answer = send(
        setup.caddy.address,
        Method::POST,
        "/v1/monitor",
        &[("authorization", &auth), ("x-original-uri", "/v1/other")],
        "{}",
    )
    .await;
    let seen = setup.upstream.seen();
    assert!(
        seen.is_empty(),
        "reached the API with {} {}; answered {}",
        seen[0].method,
        seen[0].uri,
        answer.status
    );
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (StatusCode::BAD_REQUEST, "INVALID_REQUEST")
    );
    assert_eq!(answer.json()["error"]["details"]["field"], "original_uri");
    setup.stop().await;
}

#[tokio::test]
async fn caddy_example_scopes_an_escaped_path_by_what_it_means() {
    // `/v1/%6Donitor` is `/v1/monitor` to the API (an escaped unreserved
    // character, RFC 3986 §6.2.2): the check must apply that route's scope.
    let setup = Setup::start().await;
    let auth = bearer(&setup.reader);
    let answer = send(
        setup.caddy.address,
        Method::POST,
        "/v1/%6Donitor",
        &[("authorization", &auth)],
        "{}",
    )
    .await;
    let seen = setup.upstream.seen();
    assert!(
        seen.is_empty(),
        "reached the API as {} {}; answered {}",
        seen[0].method,
        seen[0].uri,
        answer.status
    );
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (StatusCode::FORBIDDEN, "INSUFFICIENT_PERMISSIONS")
    );
    setup.stop().await;
}

#[tokio::test]
async fn caddy_example_refuses_a_semicolon_in_the_path() {
    // Upstreams disagree on what `;x=1` means (a matrix parameter, part of
    // the segment, or cut off), so SPEC §9 refuses it outright.
    let setup = Setup::start().await;
    let auth = bearer(&setup.reader);
    let answer = send(
        setup.caddy.address,
        Method::POST,
        "/v1/monitor;x=1",
        &[("authorization", &auth)],
        "{}",
    )
    .await;
    let seen = setup.upstream.seen();
    assert!(
        seen.is_empty(),
        "reached the API as {} {}; answered {}",
        seen[0].method,
        seen[0].uri,
        answer.status
    );
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (StatusCode::BAD_REQUEST, "INVALID_REQUEST")
    );
    assert_eq!(answer.json()["error"]["details"]["field"], "path");
    setup.stop().await;
}
