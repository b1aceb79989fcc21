//! The nginx `auth_request` example (`examples/nginx/nginx.conf`) run
//! against a real nginx: the file itself, with only its ports and nginx's
//! writable paths rewritten, in front of a test upstream.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloro_auth_core::wire::RateLimitPolicy;
use cloro_auth_core::{KeyId, Scope};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::support::{Answer, TestServer, TestUpstream};

/// A running nginx; killed when dropped, also when the test panics.
struct Nginx {
    child: tokio::process::Child,
    address: SocketAddr,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts the example in front of `cloro` and `api`.
    async fn start(cloro: SocketAddr, api: SocketAddr) -> Nginx {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/nginx/nginx.conf");
        let text = std::fs::read_to_string(&example).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let address = free_address();
        let prefix = dir.path().display().to_string();
        // nginx's compiled-in log and temp paths need root; the test keeps
        // everything in its own directory instead.
        let writable = format!(
            "http {{\n    access_log {prefix}/access.log;\n    \
             client_body_temp_path {prefix}/client_body;\n    \
             proxy_temp_path {prefix}/proxy;\n    \
             fastcgi_temp_path {prefix}/fastcgi;\n    \
             uwsgi_temp_path {prefix}/uwsgi;\n    \
             scgi_temp_path {prefix}/scgi;\n"
        );
        let config = [
            ("server 127.0.0.1:8080;", format!("server {cloro};")),
            ("server 127.0.0.1:9000;", format!("server {api};")),
            ("listen 127.0.0.1:8000;", format!("listen {address};")),
            ("http {\n", writable),
        ]
        .into_iter()
        .fold(text, |text, (from, to)| {
            assert_eq!(
                text.matches(from).count(),
                1,
                "examples/nginx/nginx.conf must contain `{from}` exactly once"
            );
            text.replace(from, &to)
        });
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config).unwrap();

        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        // One process, in the foreground: nothing to daemonise, no worker
        // that could outlive a killed master.
        let globals = format!(
            "daemon off; master_process off; pid {prefix}/nginx.pid; error_log {prefix}/error.log;"
        );
        let child = tokio::process::Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf)
            .arg("-g")
            .arg(globals)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run `nginx` ({error}); this test needs a real nginx on PATH: \
                     apt-get install nginx"
                )
            });
        let mut nginx = Nginx {
            child,
            address,
            dir,
        };
        nginx.wait_until_listening().await;
        nginx
    }

    async fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::TcpStream::connect(self.address).await.is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("nginx exited with {status}:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {} within 10 s:\n{}",
                self.address,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn logs(&self) -> String {
        ["stderr.log", "error.log"]
            .iter()
            .map(|name| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
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

async fn get(address: SocketAddr, path: &str, authorization: Option<&str>) -> Answer {
    let headers: Vec<(&str, &str)> = authorization
        .map(|value| ("authorization", value))
        .into_iter()
        .collect();
    send(address, http::Method::GET, path, &headers).await
}

async fn send(
    address: SocketAddr,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{address}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

#[tokio::test]
async fn nginx_auth_request_example_lets_valid_keys_through_and_answers_our_errors() {
    let upstream = TestUpstream::start().await;
    let server = TestServer::embedded("").await;
    let valid = server.create_key(|_| {}).await;
    let revoked = server.create_key(|_| {}).await;
    let limited = server
        .create_key(|r| {
            r.rate_limit = Some(RateLimitPolicy::new(
                1.try_into().unwrap(),
                3600.try_into().unwrap(),
            ));
        })
        .await;
    let id_of = async |key: &str| {
        let info = server.get_with_key("/v1/whoami", key).await.json();
        info["id"].as_str().unwrap().to_owned()
    };
    let valid_id = id_of(&valid).await;
    let revoked_id = id_of(&revoked).await;
    server
        .app
        .admin()
        .revoke(
            &KeyId::new(&revoked_id).unwrap(),
            None,
            "test",
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
    let nginx = Nginx::start(server.address, upstream.address).await;
    let bearer = |key: &str| format!("Bearer {key}");

    let allowed = get(nginx.address, "/v1/monitor?page=2", Some(&bearer(&valid))).await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", nginx.logs());
    assert_eq!(allowed.header("x-upstream"), Some("echo"));
    assert_eq!(allowed.header("x-ratelimit-limit"), Some("1000"));
    let seen = upstream.only();
    assert_eq!(
        seen.uri.path_and_query().unwrap().as_str(),
        "/v1/monitor?page=2"
    );
    assert_eq!(seen.header("x-cloro-key-id"), Some(valid_id.as_str()));
    assert_eq!(seen.header("x-cloro-account-id"), Some("acct_test"));
    assert_eq!(seen.header("x-cloro-scopes"), Some("*"));
    assert_eq!(seen.header("authorization"), None, "the key stops at nginx");

    let missing = get(nginx.address, "/v1/monitor", None).await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::UNAUTHORIZED, "MISSING_API_KEY".into())
    );
    assert_eq!(missing.header("content-type"), Some("application/json"));
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"cloro\"")
    );

    let refused = get(nginx.address, "/v1/monitor", Some(&bearer(&revoked))).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::UNAUTHORIZED, "REVOKED_API_KEY".into())
    );

    // A 400 reaches nginx's auth_request as an "unexpected" status (500):
    // the example still gives the client ours.
    let malformed = get(nginx.address, "/v1/monitor", Some("Bearer")).await;
    assert_eq!(
        (malformed.status, malformed.code()),
        (StatusCode::BAD_REQUEST, "MALFORMED_AUTHORIZATION".into())
    );

    // So does a 429: answered from the refusing check's headers.
    let first = get(nginx.address, "/v1/monitor", Some(&bearer(&limited))).await;
    assert_eq!(first.status, StatusCode::OK);
    let over = get(nginx.address, "/v1/monitor", Some(&bearer(&limited))).await;
    assert_eq!(
        (over.status, over.code()),
        (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED".into())
    );
    let retry_after: u64 = over.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(over.json()["error"]["details"]["retry_after"], retry_after);
    assert_eq!(over.header("x-ratelimit-remaining"), Some("0"));

    assert_eq!(
        upstream.seen().len(),
        2,
        "only allowed requests reach the API"
    );
    nginx.stop().await;
    server.stop().await;
}

/// SPEC §9 through the example: another spelling of a scoped route is
/// scoped all the same, a confusing path never reaches the API, and a
/// client's own claim about the original request is not believed.
#[tokio::test]
async fn nginx_example_scopes_every_spelling_and_ignores_client_sent_original_uris() {
    let upstream = TestUpstream::start().await;
    let server =
        TestServer::embedded("[route_scopes]\n\"POST /v1/monitor\" = \"monitor:write\"\n").await;
    let reader = server
        .create_key(|r| r.scopes = vec![Scope::new("read").unwrap()])
        .await;
    let nginx = Nginx::start(server.address, upstream.address).await;
    let auth = format!("Bearer {reader}");
    let post = async |path: &str, extra: Option<(&str, &str)>| {
        let mut headers = vec![("authorization", auth.as_str())];
        headers.extend(extra);
        send(nginx.address, http::Method::POST, path, &headers).await
    };

    let encoded = post("/v1/%6Donitor", None).await;
    assert_eq!(
        (encoded.status, encoded.code()),
        (StatusCode::FORBIDDEN, "INSUFFICIENT_PERMISSIONS".into()),
        "{}",
        nginx.logs()
    );
    let semicolon = post("/v1/monitor;x=1", None).await;
    assert_eq!(
        (semicolon.status, semicolon.code()),
        (StatusCode::BAD_REQUEST, "INVALID_REQUEST".into())
    );
    assert_eq!(semicolon.json()["error"]["details"]["field"], "path");
    // nginx sets X-Original-URI itself and the example clears the other
    // pair, so the client's claim changes nothing.
    let claimed = post("/v1/monitor", Some(("x-forwarded-uri", "/v1/other"))).await;
    assert_eq!(
        (claimed.status, claimed.code()),
        (StatusCode::FORBIDDEN, "INSUFFICIENT_PERMISSIONS".into())
    );
    let claimed = post("/v1/monitor", Some(("x-original-uri", "/v1/other"))).await;
    assert_eq!(
        (claimed.status, claimed.code()),
        (StatusCode::FORBIDDEN, "INSUFFICIENT_PERMISSIONS".into())
    );
    assert!(upstream.seen().is_empty(), "nothing reached the API");

    let allowed = post("/v1/other", None).await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(upstream.seen().len(), 1);
    nginx.stop().await;
    server.stop().await;
}
