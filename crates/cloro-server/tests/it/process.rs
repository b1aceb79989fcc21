//! The real `cloro-server` binary as a child process: restart after
//! SIGKILL, drain on SIGTERM, and logs that never hold a secret (keys,
//! tokens, and the Redis password in every URL form redis-rs accepts).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloro_auth_core::{ApiKey, Environment};
use cloro_test_support::RedisServer;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use crate::support::ADMIN_TOKEN;

/// A running server process and the port it listens on.
pub(crate) struct ServerProcess {
    child: Child,
    port: u16,
}

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: serde_json::Value,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl ServerProcess {
    /// Starts the binary on the embedded store in `data_dir`; with
    /// `admin_token` unset it generates its own. Returns once `/readyz`
    /// answers 200.
    pub(crate) async fn start(
        data_dir: &Path,
        admin_token: Option<&str>,
        extra: &[&str],
    ) -> ServerProcess {
        let server = ServerProcess::spawn(data_dir, admin_token, extra);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(reply) = tokio::time::timeout(
                Duration::from_secs(1),
                server.request(Method::GET, "/readyz", None, ""),
            )
            .await
                && reply.is_some_and(|r| r.status == StatusCode::OK)
            {
                return server;
            }
            assert!(Instant::now() < deadline, "the server did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the binary as [`Self::start`] does, without waiting for it.
    fn spawn(data_dir: &Path, admin_token: Option<&str>, extra: &[&str]) -> ServerProcess {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_cloro-server"));
        command
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("CLORO_LOG", "debug")
            .env_remove("CLORO_ADMIN_TOKEN")
            .env_remove("MALLOC_ARENA_MAX")
            .env_remove("CLORO_MALLOC_ARENAS_SET")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(token) = admin_token {
            command.env("CLORO_ADMIN_TOKEN", token);
        }
        ServerProcess {
            child: command.spawn().unwrap(),
            port,
        }
    }

    /// Waits until the server serves (`/healthz` answers: true) or exits
    /// (false), whichever comes first.
    async fn serves_or_exits(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            if let Ok(Some(reply)) = tokio::time::timeout(
                Duration::from_secs(1),
                self.request(Method::GET, "/healthz", None, ""),
            )
            .await
                && reply.status == StatusCode::OK
            {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "the server neither served nor exited"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: &str,
    ) -> Option<Reply> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{}{path}", self.port));
        if let Some(token) = bearer {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let response = client.request(request).await.ok()?;
        let status = response.status();
        let bytes = response.into_body().collect().await.ok()?.to_bytes();
        Some(Reply {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        })
    }

    pub(crate) async fn admin(&self, method: Method, path: &str, token: &str, body: &str) -> Reply {
        self.request(method, path, Some(token), body).await.unwrap()
    }

    pub(crate) async fn create_key(&self, token: &str) -> (String, String) {
        let reply = self
            .admin(
                Method::POST,
                "/admin/v1/keys",
                token,
                r#"{"account_id":"acct_proc","name":"p"}"#,
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        (
            reply.body["key"].as_str().unwrap().to_owned(),
            reply.body["key_info"]["id"].as_str().unwrap().to_owned(),
        )
    }

    async fn whoami(&self, key: &str) -> Reply {
        self.request(Method::GET, "/v1/whoami", Some(key), "")
            .await
            .unwrap()
    }

    /// Reads the child's output as it comes, so a chatty run never fills
    /// the pipe and blocks the server on a log write.
    pub(crate) fn drain_output(&mut self) {
        if let Some(mut stdout) = self.child.stdout.take() {
            tokio::spawn(async move { tokio::io::copy(&mut stdout, &mut tokio::io::sink()).await });
        }
        if let Some(mut stderr) = self.child.stderr.take() {
            tokio::spawn(async move { tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await });
        }
    }

    pub(crate) fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for exit; returns whether it exited 0, and everything it printed.
    pub(crate) async fn wait_with_output(mut self) -> (bool, String) {
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        let mut text = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            stdout.read_to_string(&mut text).await.unwrap();
        }
        if let Some(mut stderr) = self.child.stderr.take() {
            stderr.read_to_string(&mut text).await.unwrap();
        }
        (status.success(), text)
    }
}

#[tokio::test]
async fn restart_after_sigkill_keeps_keys_and_revocations() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), Some(ADMIN_TOKEN), &[]).await;
    let (kept, _) = server.create_key(ADMIN_TOKEN).await;
    let (revoked, revoked_id) = server.create_key(ADMIN_TOKEN).await;
    let reply = server
        .admin(
            Method::POST,
            &format!("/admin/v1/keys/{revoked_id}/revoke"),
            ADMIN_TOKEN,
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    server.signal("KILL");
    let _ = server.wait_with_output().await;

    let server = ServerProcess::start(data.path(), Some(ADMIN_TOKEN), &[]).await;
    assert_eq!(server.whoami(&kept).await.status, StatusCode::OK);
    let refused = server.whoami(&revoked).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.body["error"]["code"], "REVOKED_API_KEY");
    server.signal("TERM");
    assert!(server.wait_with_output().await.0);
}

/// The environment of process `pid`, as `NAME=value` entries.
fn environment_of(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|byte| *byte == 0)
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect()
}

#[tokio::test]
async fn the_binary_caps_malloc_arenas_in_the_same_process_and_refuses_a_thread_count_out_of_range()
{
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), Some(ADMIN_TOKEN), &["--workers", "1"]).await;
    // The server ran itself again with the cap set: same process, new
    // environment (glibc reads it only at start-up).
    let pid = server.child.id().unwrap();
    let cores = std::thread::available_parallelism().unwrap().get().max(2);
    assert!(
        environment_of(pid).contains(&format!("MALLOC_ARENA_MAX={cores}")),
        "one arena per core"
    );
    assert!(environment_of(pid).contains(&"CLORO_MALLOC_ARENAS_SET=1".to_owned()));
    let (key, _) = server.create_key(ADMIN_TOKEN).await;
    assert_eq!(server.whoami(&key).await.status, StatusCode::OK);
    server.signal("TERM");
    assert!(server.wait_with_output().await.0);

    // An operator's own value is left alone.
    let mut command = Command::new(env!("CARGO_BIN_EXE_cloro-server"));
    let port = free_port();
    command
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data.path())
        .env("CLORO_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("MALLOC_ARENA_MAX", "7")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut own = ServerProcess {
        child: command.spawn().unwrap(),
        port,
    };
    assert!(own.serves_or_exits().await, "it serves");
    let environment = environment_of(own.child.id().unwrap());
    assert!(environment.contains(&"MALLOC_ARENA_MAX=7".to_owned()));
    own.signal("TERM");
    assert!(own.wait_with_output().await.0);

    // A thread count out of range stops it before it serves, naming it.
    let mut refused = ServerProcess::spawn(data.path(), Some(ADMIN_TOKEN), &["--workers", "0"]);
    assert!(
        !refused.serves_or_exits().await,
        "--workers 0 must not start"
    );
    let (ok, output) = refused.wait_with_output().await;
    assert!(!ok);
    assert!(output.contains("workers"), "{output}");
}

/// SPEC §11: the embedded store writes quota counters and balances at
/// least every second, so a `kill -9` forgets at most the last second of
/// use, and never invents use. Requests run for about three seconds, so at
/// least two writes happen before the kill, and the kill comes right after
/// the last request: what survives must lie between the count minus the
/// requests of the last second (plus the write's own time) and the count.
#[tokio::test]
async fn kill_9_forgets_at_most_the_last_second_of_quota_use() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("cloro.toml");
    std::fs::write(
        &config,
        "default_plan = \"metered\"\n[plans.metered]\nrate_limit = { requests = 100000, per_seconds = 1 }\nquota = { requests = 1000000, period = \"month\" }\n",
    )
    .unwrap();
    let store = data.path().join("store");
    let config_flag = ["--config", config.to_str().unwrap()];
    let mut server = ServerProcess::start(&store, Some(ADMIN_TOKEN), &config_flag).await;
    // Thousands of requests log more than a pipe holds: keep reading.
    server.drain_output();
    let (key, _) = server.create_key(ADMIN_TOKEN).await;
    let started = Instant::now();
    let mut sent_at = Vec::new();
    while started.elapsed() < Duration::from_secs(3) {
        assert_eq!(server.whoami(&key).await.status, StatusCode::OK);
        sent_at.push(Instant::now());
    }
    server.signal("KILL");
    let killed = Instant::now();
    let _ = server.wait_with_output().await;

    let server = ServerProcess::start(&store, Some(ADMIN_TOKEN), &config_flag).await;
    let quota = server
        .admin(
            Method::GET,
            "/admin/v1/accounts/acct_proc/quota",
            ADMIN_TOKEN,
            "",
        )
        .await;
    assert_eq!(quota.status, StatusCode::OK, "{:?}", quota.body);
    let used = quota.body["used"].as_u64().unwrap();
    let made = sent_at.len() as u64;
    // A write takes a few milliseconds on top of its one-second interval.
    let last_second = sent_at
        .iter()
        .filter(|at| killed.duration_since(**at) <= Duration::from_millis(1250))
        .count() as u64;
    assert!(used <= made, "never invents use: {used} > {made}");
    assert!(
        used + last_second >= made,
        "lost more than the last second: {used} of {made} kept, {last_second} in the last second"
    );
    server.signal("TERM");
    assert!(server.wait_with_output().await.0);
}

/// A test upstream that answers only once `release` is notified, and
/// notifies `arrived` when a request has reached it: the test then knows a
/// request is in flight, without hoping a sleep was long enough.
async fn held_upstream(
    arrived: std::sync::Arc<tokio::sync::Notify>,
    release: std::sync::Arc<tokio::sync::Notify>,
) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (arrived, release) = (arrived.clone(), release.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    let (arrived, release) = (arrived.clone(), release.clone());
                    async move {
                        arrived.notify_one();
                        release.notified().await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"slow done"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

#[tokio::test]
async fn sigterm_finishes_requests_in_flight_then_exits_zero() {
    let data = tempfile::tempdir().unwrap();
    let arrived = std::sync::Arc::new(tokio::sync::Notify::new());
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let upstream = held_upstream(arrived.clone(), release.clone()).await;
    let upstream_url = format!("http://127.0.0.1:{upstream}");
    let server = ServerProcess::start(
        data.path(),
        Some(ADMIN_TOKEN),
        &["--upstream", &upstream_url],
    )
    .await;
    let (key, _) = server.create_key(ADMIN_TOKEN).await;
    let port = server.port;
    let in_flight = tokio::spawn(async move {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let request = Request::get(format!("http://127.0.0.1:{port}/v1/slow"))
            .header("authorization", format!("Bearer {key}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let status = response.status();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    });
    // The request is at the upstream: in flight for certain.
    arrived.notified().await;
    server.signal("TERM");
    // Once the server has stopped accepting, the request still held
    // upstream must be finished, not cut off.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
    {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    release.notify_one();
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(
        (status, &body[..]),
        (StatusCode::OK, &b"slow done"[..]),
        "the request in flight finished"
    );
    let (clean, _) = server.wait_with_output().await;
    assert!(clean, "exit status 0 after SIGTERM");
}

#[tokio::test]
async fn logs_never_hold_a_key_or_the_admin_token() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), None, &[]).await;
    let token_file = data.path().join("admin-token");
    let admin_token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    let (key, id) = server.create_key(&admin_token).await;
    assert_eq!(server.whoami(&key).await.status, StatusCode::OK);
    let mut typo = key.clone();
    typo.replace_range(30..31, if &key[30..31] == "0" { "1" } else { "0" });
    assert_eq!(server.whoami(&typo).await.status, StatusCode::UNAUTHORIZED);
    let in_url = server
        .request(Method::GET, &format!("/v1/whoami?api_key={key}"), None, "")
        .await
        .unwrap();
    assert_eq!(in_url.status, StatusCode::BAD_REQUEST);
    let rotated = server
        .admin(
            Method::POST,
            &format!("/admin/v1/keys/{id}/rotate"),
            &admin_token,
            "",
        )
        .await;
    let new_key = rotated.body["key"].as_str().unwrap().to_owned();
    assert_eq!(server.whoami(&new_key).await.status, StatusCode::OK);
    assert_eq!(
        server
            .admin(
                Method::GET,
                "/admin/v1/plans",
                "wrong-token-wrong-token-wrong-token",
                ""
            )
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    server.signal("TERM");
    let (clean, logs) = server.wait_with_output().await;
    assert!(clean);

    assert!(
        logs.contains(&token_file.display().to_string()),
        "the admin token's path is logged"
    );
    assert!(logs.contains("answered"), "requests were logged: {logs}");
    for secret in [
        key.as_str(),
        typo.as_str(),
        new_key.as_str(),
        admin_token.as_str(),
        "wrong-token-wrong-token",
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
    for random_part in [&key[8..40], &new_key[8..40], &admin_token[12..]] {
        assert!(
            !logs.contains(random_part),
            "part of a secret reached the logs"
        );
    }
}

/// The password of the private Redis below. Its `@` must be percent-encoded
/// in userinfo and may stay raw in a query, so both spellings are tried;
/// every spelling starts with [`PASSWORD_MARK`].
const REDIS_PASSWORD: &str = "hunter2@Mask";
const REDIS_PASSWORD_ENCODED: &str = "hunter2%40Mask";
const PASSWORD_MARK: &str = "hunter2";

/// How one `--redis-url` should go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Connects and authenticates: `/readyz` answers 200.
    Ready,
    /// Starts, but Redis refuses it (no password sent, or not a cluster).
    Refused,
    /// Does not start: the URL cannot be used.
    Exits,
}

/// Runs the binary with `args`, sends what makes it talk to Redis and log
/// warnings (an admin write, a key lookup, a wrong admin token), stops it,
/// and returns everything it printed.
async fn run_against_redis(args: Vec<String>, expected: Outcome) -> String {
    let data = tempfile::tempdir().unwrap();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = ServerProcess::spawn(data.path(), Some(ADMIN_TOKEN), &args);
    let serves = server.serves_or_exits().await;
    assert_eq!(serves, expected != Outcome::Exits, "{args:?}");
    if serves {
        let ready = server
            .request(Method::GET, "/readyz", None, "")
            .await
            .unwrap();
        assert_eq!(
            ready.status == StatusCode::OK,
            expected == Outcome::Ready,
            "{args:?}: {:?}",
            ready.body
        );
        let created = server
            .admin(
                Method::POST,
                "/admin/v1/keys",
                ADMIN_TOKEN,
                r#"{"account_id":"acct_mask","name":"m"}"#,
            )
            .await;
        let key = match created.body["key"].as_str() {
            Some(key) => key.to_owned(),
            None => ApiKey::generate(Environment::Live)
                .unwrap()
                .expose_secret()
                .to_owned(),
        };
        let whoami = server.whoami(&key).await;
        let expected_status = match expected {
            Outcome::Ready => StatusCode::OK,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        assert_eq!(
            whoami.status, expected_status,
            "{args:?}: {:?}",
            whoami.body
        );
        let wrong = server
            .admin(
                Method::GET,
                "/admin/v1/plans",
                "wrong-admin-token-0123456789abcdef",
                "",
            )
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        server.signal("TERM");
    }
    let (clean, logs) = server.wait_with_output().await;
    assert_eq!(clean, serves, "{args:?}: {logs}");
    logs
}

#[tokio::test]
async fn the_redis_password_never_reaches_the_output_in_any_url_form() {
    let redis = RedisServer::start_with_password(REDIS_PASSWORD);
    let port = redis.port();
    let socket = redis.unix_socket().display().to_string();
    // Nothing listens there: the seed list only has to be read and tried.
    let other_port = free_port();
    let url = |url: String| vec!["--redis-url".to_owned(), url];
    let forms = [
        (
            url(format!(
                "redis://:{REDIS_PASSWORD_ENCODED}@127.0.0.1:{port}"
            )),
            Outcome::Ready,
        ),
        // The authority ends at the last `@`: the raw `@` stays in the password.
        (
            url(format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0")),
            Outcome::Ready,
        ),
        (
            url(format!(
                "redis://default:{REDIS_PASSWORD_ENCODED}@127.0.0.1:{port}"
            )),
            Outcome::Ready,
        ),
        (
            url(format!("redis+unix://{socket}?pass={REDIS_PASSWORD}")),
            Outcome::Ready,
        ),
        (
            url(format!(
                "unix://{socket}?db=0&pass={REDIS_PASSWORD_ENCODED}"
            )),
            Outcome::Ready,
        ),
        // redis-rs reads no password from a TCP URL's query, nor from a
        // lone user name: the server starts and Redis refuses it.
        (
            url(format!(
                "redis://127.0.0.1:{port}/?password={REDIS_PASSWORD_ENCODED}"
            )),
            Outcome::Refused,
        ),
        (
            url(format!("redis://{REDIS_PASSWORD_ENCODED}@127.0.0.1:{port}")),
            Outcome::Refused,
        ),
        (
            vec![
                "--redis-cluster".to_owned(),
                "--redis-url".to_owned(),
                format!(
                    "redis://:{REDIS_PASSWORD_ENCODED}@127.0.0.1:{port}, redis://:{REDIS_PASSWORD_ENCODED}@127.0.0.1:{other_port}"
                ),
            ],
            Outcome::Refused,
        ),
        (
            url(format!("redis://:{REDIS_PASSWORD}@[::1:{port}")),
            Outcome::Exits,
        ),
        (url(REDIS_PASSWORD.to_owned()), Outcome::Exits),
        // The upstream URL goes through the same masker (and is refused
        // with credentials, which the gateway would never send).
        (
            vec![
                "--upstream".to_owned(),
                format!("http://user:{REDIS_PASSWORD_ENCODED}@127.0.0.1:{other_port}"),
            ],
            Outcome::Exits,
        ),
    ];
    let mut runs = tokio::task::JoinSet::new();
    for (args, expected) in forms {
        runs.spawn(async move { (args.clone(), run_against_redis(args, expected).await) });
    }
    while let Some(run) = runs.join_next().await {
        let (args, logs) = run.unwrap();
        assert!(
            !logs.contains(PASSWORD_MARK),
            "the Redis password reached the output of {args:?}:\n{logs}"
        );
        // The URL was shown, masked, so the check above is not vacuous.
        assert!(logs.contains("***"), "{args:?}:\n{logs}");
    }
}

#[tokio::test]
async fn a_flood_of_upstream_failures_logs_one_line_a_second() {
    let data = tempfile::tempdir().unwrap();
    // Nothing listens there: every forwarded request fails to connect.
    let upstream = format!("http://127.0.0.1:{}", free_port());
    let server =
        ServerProcess::start(data.path(), Some(ADMIN_TOKEN), &["--upstream", &upstream]).await;
    let (key, _) = server.create_key(ADMIN_TOKEN).await;
    let started = Instant::now();
    let mut sent = 0;
    while sent < 50 {
        let reply = server
            .request(Method::GET, "/v1/anything", Some(&key), "")
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{:?}", reply.body);
        sent += 1;
    }
    let seconds = started.elapsed().as_secs();
    server.signal("TERM");
    let (clean, logs) = server.wait_with_output().await;
    assert!(clean);
    let lines: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("the upstream request failed"))
        .collect();
    assert!(
        !lines.is_empty() && lines.len() as u64 <= seconds + 1,
        "{sent} failures in {seconds}s gave {} lines:\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert!(lines[0].contains("suppressed=0"), "{}", lines[0]);
}
