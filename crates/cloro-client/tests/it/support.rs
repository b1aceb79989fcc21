//! Test harness: a real cloro-server on a free port (plain or TLS), and a
//! scripted HTTP server that answers from a list, to test retries.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloro_client::{AdminClient, AdminToken, ClientBuilder, RetryPolicy};
use cloro_server::App;
use cloro_server::config::{Flags, Settings};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

/// The admin token of every test server.
pub(crate) const ADMIN_TOKEN: &str = "test_admin_token_0123456789abcdefghijklmnop";

/// The usual default plan, a second one to move accounts to, and one with
/// a tiny daily quota (SPEC §11) to run out of.
const PLANS: &str = r#"
default_plan = "free"
[plans.free]
rate_limit = { requests = 1000, per_seconds = 3600 }
[plans.pro]
rate_limit = { requests = 500, per_seconds = 1, burst = 500 }
concurrency_limit = 10
[plans.metered]
rate_limit = { requests = 1000, per_seconds = 3600 }
quota = { requests = 2, period = "day" }
"#;

/// Retries fast enough for tests, still several of them.
pub(crate) fn quick_retries() -> RetryPolicy {
    let mut policy = RetryPolicy::default();
    policy.initial_backoff = Duration::from_millis(20);
    policy.max_backoff = Duration::from_millis(100);
    policy
}

/// A running cloro-server.
pub(crate) struct Server {
    pub(crate) base_url: String,
    /// The server itself, for what tests do without HTTP (flush usage).
    pub(crate) app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    _background: cloro_server::Background,
    _data_dir: tempfile::TempDir,
}

impl Server {
    /// Plain HTTP on 127.0.0.1.
    pub(crate) async fn start() -> Server {
        Self::start_with(None, "").await
    }

    /// [`Server::start`] delivering webhooks to loopback receivers too.
    pub(crate) async fn start_allowing_private_webhooks() -> Server {
        Self::start_with(None, "allow_private_webhooks = true\n").await
    }

    /// HTTPS on 127.0.0.1 with `acceptor`.
    pub(crate) async fn start_tls(acceptor: TlsAcceptor) -> Server {
        Self::start_with(Some(acceptor), "").await
    }

    async fn start_with(tls: Option<TlsAcceptor>, top_level: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let flags = Flags {
            data_dir: Some(dir.path().to_owned()),
            ..Flags::default()
        };
        let settings = Settings::from_toml(flags, &format!("{top_level}{PLANS}")).unwrap();
        let (app, background) = App::build(settings, Some(ADMIN_TOKEN)).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(cloro_server::serve(
            app.clone(),
            listener,
            tls,
            async move {
                let _ = stopped.await;
            },
        ));
        Server {
            base_url: format!("{scheme}://{address}"),
            app,
            stop: Some(stop),
            _background: background,
            _data_dir: dir,
        }
    }

    /// A builder pointed at this server, with quick retries.
    pub(crate) fn builder(&self) -> ClientBuilder {
        ClientBuilder::new()
            .base_url(&self.base_url)
            .retry_policy(quick_retries())
    }

    /// An admin client with the right token.
    pub(crate) fn admin(&self) -> AdminClient {
        self.builder()
            .admin_token(AdminToken::new(ADMIN_TOKEN).unwrap())
            .build_admin()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// One canned answer.
#[derive(Clone)]
pub(crate) struct Canned {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: String,
}

impl Canned {
    /// A SPEC §4 error body with `code`.
    pub(crate) fn error(status: u16, code: &str) -> Canned {
        Canned {
            status: StatusCode::from_u16(status).unwrap(),
            headers: vec![("content-type", "application/json".into())],
            body: format!(
                r#"{{"error": {{"code": "{code}", "message": "scripted {code}", "details": {{}}, "timestamp": "2026-01-15T12:00:00Z", "request_id": "req_scripted"}}}}"#
            ),
        }
    }

    /// A SPEC §4 error body with `code` and `details` (a JSON object).
    pub(crate) fn error_with(status: u16, code: &str, details: &str) -> Canned {
        let mut canned = Canned::error(status, code);
        canned.body = canned
            .body
            .replace(r#""details": {}"#, &format!(r#""details": {details}"#));
        canned
    }

    /// 200 with `body`.
    pub(crate) fn ok(body: &str) -> Canned {
        Canned {
            status: StatusCode::OK,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_owned(),
        }
    }

    /// With one more header.
    pub(crate) fn with(mut self, name: &'static str, value: &str) -> Canned {
        self.headers.push((name, value.to_owned()));
        self
    }
}

/// A `KeyInfo` document, for scripted whoami answers.
pub(crate) const KEY_INFO: &str = r#"{
    "id": "key_scripted", "account_id": "acct_scripted", "name": "scripted",
    "purpose": "ci", "environment": "test", "start": "sk_test_0000...",
    "scopes": ["*"], "metadata": {}, "rate_limit": null, "concurrency_limit": null,
    "enabled": true, "created_at": "2026-01-01T00:00:00Z", "expires_at": null,
    "revoked_at": null, "revoked_reason": null, "last_used_at": null, "status": "active"
}"#;

/// What a scripted server was sent.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) at: Instant,
    pub(crate) method: http::Method,
    /// Path and query.
    pub(crate) path: String,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Bytes,
}

impl Seen {
    /// The `Idempotency-Key` it carried.
    pub(crate) fn idempotency_key(&self) -> Option<&str> {
        self.headers
            .get("idempotency-key")
            .map(|value| value.to_str().unwrap())
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A server that answers the n-th request with the n-th canned answer
/// (the last one again once the list runs out) and records what came when.
pub(crate) struct Scripted {
    pub(crate) base_url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Scripted {
    pub(crate) async fn start(answers: Vec<Canned>) -> Scripted {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        let seen_all = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(answers);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let seen = Arc::clone(&seen_all);
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => accepted.unwrap().0,
                    _ = &mut stopped => return,
                };
                let answers = Arc::clone(&answers);
                let seen = Arc::clone(&seen);
                let service = service_fn(move |request: Request<Incoming>| {
                    let at = Instant::now();
                    let answers = Arc::clone(&answers);
                    let seen = Arc::clone(&seen);
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let index = {
                            let mut seen = seen.lock().unwrap();
                            seen.push(Seen {
                                at,
                                method: parts.method,
                                path: parts
                                    .uri
                                    .path_and_query()
                                    .map_or_else(String::new, ToString::to_string),
                                headers: parts.headers,
                                body,
                            });
                            seen.len() - 1
                        };
                        let canned = answers[index.min(answers.len() - 1)].clone();
                        let mut response = Response::new(Full::new(Bytes::from(canned.body)));
                        *response.status_mut() = canned.status;
                        for (name, value) in canned.headers {
                            response.headers_mut().insert(name, value.parse().unwrap());
                        }
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Scripted {
            base_url: format!("http://{address}"),
            seen: seen_all,
            stop: Some(stop),
        }
    }

    /// When each request arrived.
    pub(crate) fn arrivals(&self) -> Vec<Instant> {
        self.seen().iter().map(|seen| seen.at).collect()
    }

    /// Every request, in the order they came.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A port on which nothing listens: bound, then released.
pub(crate) async fn refused_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}

/// A syntactically valid key that no server issued.
pub(crate) fn unknown_key() -> cloro_client::ApiKey {
    cloro_client::ApiKey::from_random_bytes(cloro_auth_core::Environment::Test, [0x5a; 16])
}

/// An admin client of a scripted server, with quick retries.
pub(crate) fn admin(base_url: &str) -> AdminClient {
    ClientBuilder::new()
        .base_url(base_url)
        .retry_policy(quick_retries())
        .admin_token(AdminToken::new(ADMIN_TOKEN).unwrap())
        .build_admin()
        .unwrap()
}

/// A well-formed key for scripted create and rotate answers.
pub(crate) fn issued_key() -> cloro_client::ApiKey {
    cloro_client::ApiKey::from_random_bytes(cloro_auth_core::Environment::Test, [0x11; 16])
}

/// 201 to a create, with `key` and [`KEY_INFO`].
pub(crate) fn created(key: &cloro_client::ApiKey) -> Canned {
    let mut canned = Canned::ok(&format!(
        r#"{{"key": "{}", "key_info": {KEY_INFO}}}"#,
        key.expose_secret()
    ));
    canned.status = StatusCode::CREATED;
    canned
}

/// 201 to a repeated create: the first answer, without its plaintext
/// (SPEC §11).
pub(crate) fn replayed_create() -> Canned {
    let mut canned = Canned::ok(&format!(r#"{{"key": null, "key_info": {KEY_INFO}}}"#))
        .with("idempotent-replayed", "true");
    canned.status = StatusCode::CREATED;
    canned
}
