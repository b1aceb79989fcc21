//! Webhooks (SPEC §12) end to end: endpoints registered over the admin
//! API, events written with the changes that cause them, delivered to a
//! receiver on loopback that checks every Standard Webhooks signature,
//! retried with backoff on a manual clock, refused for private targets,
//! kept over a `kill -9`, and sent once by three nodes on one Redis.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloro_auth_core::webhook::WebhookSecret;
use cloro_auth_core::wire::WebhookPayload;
use cloro_keystore::Clock;
use cloro_test_support::RedisServer;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use jiff::{SignedDuration, Timestamp};

use crate::support::{ADMIN_TOKEN, Answer, TestServer};

/// One delivery as the receiver saw it.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: Bytes,
}

impl Received {
    pub(crate) fn payload(&self) -> WebhookPayload {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Checks the signature against `secret` at `now`.
    fn verify(&self, secret: &WebhookSecret, now: Timestamp) {
        let now = u64::try_from(now.as_second()).unwrap();
        secret
            .verify(
                &self.id,
                &self.timestamp,
                &self.body,
                &self.signature,
                now,
                300,
            )
            .unwrap_or_else(|error| panic!("a delivery's signature does not verify: {error}"));
    }
}

/// A webhook receiver on loopback: records every request and answers the
/// statuses it was given, then 204.
pub(crate) struct Receiver {
    pub(crate) url: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub(crate) async fn start(statuses: &[u16]) -> Receiver {
        Self::on(
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            statuses,
        )
    }

    fn on(listener: tokio::net::TcpListener, statuses: &[u16]) -> Receiver {
        let url = format!("http://{}/hooks/in", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(
            statuses.iter().copied().collect::<VecDeque<u16>>(),
        ));
        let seen = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (seen, script) = (seen.clone(), script.clone());
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (seen, script) = (seen.clone(), script.clone());
                    async move {
                        let header = |name: &str| {
                            request
                                .headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        let (id, timestamp, signature) = (
                            header("webhook-id"),
                            header("webhook-timestamp"),
                            header("webhook-signature"),
                        );
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        seen.lock().unwrap().push(Received {
                            id,
                            timestamp,
                            signature,
                            body,
                        });
                        let status = script.lock().unwrap().pop_front().unwrap_or(204);
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(b"ok")))
                                .unwrap(),
                        )
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            url,
            received,
            task,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until at least `count` deliveries arrived.
    pub(crate) async fn wait_for(&self, count: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "{count} deliveries expected, {} arrived",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Settings of a server on the embedded store in `dir` that delivers to
/// loopback receivers: two servers in turn on one directory are a restart.
fn private_webhooks_in(dir: &std::path::Path) -> cloro_server::config::Settings {
    let flags = cloro_server::config::Flags {
        data_dir: Some(dir.to_owned()),
        ..cloro_server::config::Flags::default()
    };
    cloro_server::config::Settings::from_toml(flags, "allow_private_webhooks = true").unwrap()
}

const ADMIN: &str = "Bearer test_admin_token_0123456789abcdefghijklmnop";

async fn admin(server: &TestServer, method: Method, path: &str, body: &str) -> Answer {
    server
        .send(
            method,
            path,
            &[
                ("authorization", ADMIN),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
}

/// Registers an endpoint; its id and secret.
async fn register(server: &TestServer, body: serde_json::Value) -> (String, WebhookSecret) {
    let created = admin(
        server,
        Method::POST,
        "/admin/v1/webhooks",
        &body.to_string(),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.json());
    let json = created.json();
    let secret = json["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (
        json["webhook"]["id"].as_str().unwrap().to_owned(),
        WebhookSecret::parse(&secret).unwrap(),
    )
}

/// Waits until the endpoint's newest delivery has made `attempts` attempts.
async fn attempts_reach(server: &TestServer, webhook: &str, attempts: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = admin(
            server,
            Method::GET,
            &format!("/admin/v1/webhooks/{webhook}/deliveries"),
            "",
        )
        .await
        .json();
        if let Some(first) = listed["deliveries"].get(0)
            && first["attempts"].as_u64() >= Some(attempts)
        {
            return first.clone();
        }
        assert!(Instant::now() < deadline, "no attempt {attempts}: {listed}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The whole life of a delivery on a manual clock: signed, retried after
/// each 500 once its backoff has passed (never before), delivered by the
/// 2xx, then never sent again; the secret is in the creating answer only,
/// and no body holds a key.
#[tokio::test]
async fn a_delivery_is_signed_and_retried_until_a_2xx_then_never_again() {
    let clock = Clock::manual(Timestamp::now());
    let server =
        TestServer::embedded_with_clock("allow_private_webhooks = true", clock.clone()).await;
    let receiver = Receiver::start(&[500, 500, 500]).await;
    let (webhook, secret) = register(
        &server,
        serde_json::json!({"url": receiver.url, "events": ["key.revoked"]}),
    )
    .await;

    let shown = admin(&server, Method::GET, "/admin/v1/webhooks", "").await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.json()["webhooks"][0]["id"], webhook.as_str());
    let one = admin(
        &server,
        Method::GET,
        &format!("/admin/v1/webhooks/{webhook}"),
        "",
    )
    .await;
    assert_eq!(one.json()["url"], receiver.url.as_str());
    for answer in [&shown, &one] {
        let text = String::from_utf8_lossy(&answer.body);
        assert!(
            !text.contains("whsec_") && !text.contains("secret"),
            "{text}"
        );
    }

    let key = server.create_key(|_| {}).await;
    let id = server.get_with_key("/v1/whoami", &key).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = admin(
        &server,
        Method::POST,
        &format!("/admin/v1/keys/{id}/revoke"),
        "{}",
    )
    .await;
    assert_eq!(revoked.status, StatusCode::OK);

    // The first attempt is due at once; each later one only once its
    // backoff (5 s, 30 s, 2 min, each ±20 %) has passed on the clock.
    let first = receiver.wait_for(1).await;
    assert_eq!(
        attempts_reach(&server, &webhook, 1).await["status"],
        "pending"
    );
    for (attempt, wait_secs) in [(2, 6), (3, 36), (4, 144)] {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            receiver.received().len(),
            attempt - 1,
            "tried before its backoff"
        );
        clock.advance(SignedDuration::from_secs(wait_secs));
        receiver.wait_for(attempt).await;
    }
    let delivered = attempts_reach(&server, &webhook, 4).await;
    assert_eq!(delivered["status"], "delivered", "{delivered}");
    assert_eq!(delivered["last_status"], 204);
    assert_eq!(delivered["next_attempt_at"], serde_json::Value::Null);
    clock.advance(SignedDuration::from_hours(30));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let all = receiver.received();
    assert_eq!(all.len(), 4, "sent again after a 2xx");

    for delivery in &all {
        assert_eq!(
            delivery.id, first[0].id,
            "webhook-id is the same on every attempt"
        );
        let sent_at = Timestamp::from_second(delivery.timestamp.parse().unwrap()).unwrap();
        delivery.verify(&secret, sent_at);
        assert!(!String::from_utf8_lossy(&delivery.body).contains(&key));
    }
    let payload = all[0].payload();
    assert_eq!(payload.event_type.as_str(), "key.revoked");
    assert_eq!(payload.data.key.unwrap().id.as_str(), id);
    // Another secret does not verify it.
    let other = WebhookSecret::from_bytes(&[3; 32]).unwrap();
    let now = u64::try_from(clock.now().as_second()).unwrap();
    assert!(
        other
            .verify(
                &all[0].id,
                &all[0].timestamp,
                &all[0].body,
                &all[0].signature,
                now,
                u64::MAX
            )
            .is_err()
    );

    let deleted = admin(
        &server,
        Method::DELETE,
        &format!("/admin/v1/webhooks/{webhook}"),
        "",
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = admin(
        &server,
        Method::GET,
        &format!("/admin/v1/webhooks/{webhook}"),
        "",
    )
    .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.code(), "NOT_FOUND");
    // Other spellings of an id are not ids: 404 without touching the
    // store, and never echoed.
    // An escaped `/` is refused for every route by the one SPEC §9 rule.
    for (path, status) in [
        ("/admin/v1/webhooks/WH_0", StatusCode::NOT_FOUND),
        ("/admin/v1/webhooks/wh_%7Bx%7D", StatusCode::NOT_FOUND),
        ("/admin/v1/webhooks/wh_..%2Fkeys", StatusCode::BAD_REQUEST),
        (
            "/admin/v1/webhooks/wh_0123456789abcdef0123456789/deliveries",
            StatusCode::NOT_FOUND,
        ),
    ] {
        let answer = admin(&server, Method::GET, path, "").await;
        assert_eq!(answer.status, status, "{path}");
        assert!(
            !String::from_utf8_lossy(&answer.body).contains("%7B"),
            "{path}"
        );
    }
    let head = admin(&server, Method::HEAD, "/admin/v1/webhooks", "").await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    let put = admin(&server, Method::PUT, "/admin/v1/webhooks", "{}").await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);
    let huge = format!(
        r#"{{"url": "https://hooks.example.com/{}", "events": ["key.created"]}}"#,
        "a".repeat(70 * 1024)
    );
    let refused = admin(&server, Method::POST, "/admin/v1/webhooks", &huge).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    server.stop().await;
}

/// A stop while a send hangs (the worker then holds the store) waits for
/// the worker to let go: the same process opens the same data directory
/// straight after (a restart in one process, as tests and embedders do).
/// The cut-off send was never recorded, so once its claim's lease lapses
/// the restarted server sends it again.
#[tokio::test]
async fn a_stop_during_a_send_lets_go_of_the_store_and_the_send_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(Timestamp::now());
    let settings = || private_webhooks_in(dir.path());
    // A receiver that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/in", listener.local_addr().unwrap());
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let held = accepted.clone();
    let hang = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            held.lock().unwrap().push(stream);
        }
    });
    let connections = |count: usize| {
        let accepted = accepted.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while accepted.lock().unwrap().len() < count {
                assert!(Instant::now() < deadline, "no attempt {count}");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    };

    let server = TestServer::start_with_clock(settings(), None, clock.clone()).await;
    register(
        &server,
        serde_json::json!({"url": url, "events": ["key.created"]}),
    )
    .await;
    server.create_key(|_| {}).await;
    connections(1).await;
    server.stop().await;

    let server = TestServer::start_with_clock(settings(), None, clock.clone()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        accepted.lock().unwrap().len(),
        1,
        "sent again under its lease"
    );
    clock.advance(SignedDuration::from_secs(31));
    connections(2).await;
    server.stop().await;
    hang.abort();
}

/// SPEC §12 on a manual clock: `key.expiring` 7 days and a day ahead and
/// `key.expired` at the time, each delivered once, and not again after a
/// restart.
#[tokio::test]
async fn expiry_notices_are_delivered_once_each_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::manual(Timestamp::now());
    let settings = || private_webhooks_in(dir.path());
    let receiver = Receiver::start(&[]).await;
    let server = TestServer::start_with_clock(settings(), None, clock.clone()).await;
    let (webhook, secret) = register(
        &server,
        serde_json::json!({"url": receiver.url, "events": ["key.expiring", "key.expired"]}),
    )
    .await;
    let expires_at = clock
        .now()
        .checked_add(SignedDuration::from_hours(8 * 24))
        .unwrap();
    server
        .create_key(|request| request.expires_at = Some(expires_at))
        .await;
    // A tick or two: nothing is due yet.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(receiver.received().is_empty(), "a notice before its time");

    let expect = |received: &Received, event: &str, notice: Option<&str>| {
        received.verify(
            &secret,
            Timestamp::from_second(received.timestamp.parse().unwrap()).unwrap(),
        );
        let payload = received.payload();
        assert_eq!(payload.event_type.as_str(), event);
        assert_eq!(
            payload.data.details.get("notice").map(String::as_str),
            notice
        );
        assert_eq!(payload.data.details["expires_at"], expires_at.to_string());
        assert_eq!(payload.data.actor, "expiry-schedule");
        assert_eq!(
            payload.data.key.as_ref().unwrap().expires_at,
            Some(expires_at)
        );
    };
    clock.advance(SignedDuration::from_hours(24) + SignedDuration::from_secs(1));
    expect(&receiver.wait_for(1).await[0], "key.expiring", Some("7d"));
    server.stop().await;
    let server = TestServer::start_with_clock(settings(), None, clock.clone()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().len(), 1, "sent again after the restart");

    clock.advance(SignedDuration::from_hours(6 * 24));
    expect(&receiver.wait_for(2).await[1], "key.expiring", Some("1d"));
    clock.advance(SignedDuration::from_hours(24));
    expect(&receiver.wait_for(3).await[2], "key.expired", None);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().len(), 3, "a notice was sent twice");

    // Finished deliveries are kept 30 days, then pruned (on the worker's
    // first pass after this restart, and every minute after).
    let log = format!("/admin/v1/webhooks/{webhook}/deliveries");
    let listed = admin(&server, Method::GET, &log, "").await.json();
    assert_eq!(listed["deliveries"].as_array().unwrap().len(), 3);
    server.stop().await;
    clock.advance(SignedDuration::from_hours(31 * 24));
    let server = TestServer::start_with_clock(settings(), None, clock.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = admin(&server, Method::GET, &log, "").await.json();
        if listed["deliveries"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "not pruned: {listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

/// A plan with a daily quota of 5 (80 % is the 4th request).
const QUOTA_OF_FIVE: &str = r#"
allow_private_webhooks = true
default_plan = "metered"
[plans.metered]
rate_limit = { requests = 100000, per_seconds = 1 }
quota = { requests = 5, period = "day" }
"#;

/// Checks the quota events `received` holds: a warning at 4 of 5 and
/// exhaustion at 5 of 5, once each, for `account`.
fn assert_quota_events(received: &[Received], secret: &WebhookSecret, account: &str) {
    // Sent concurrently: in either order.
    let mut payloads: Vec<WebhookPayload> = received.iter().map(Received::payload).collect();
    payloads.sort_by(|a, b| a.data.details["used"].cmp(&b.data.details["used"]));
    let kinds: Vec<&str> = payloads.iter().map(|p| p.event_type.as_str()).collect();
    assert_eq!(kinds, ["quota.warning", "quota.exhausted"], "{payloads:?}");
    for (payload, used) in payloads.iter().zip(["4", "5"]) {
        let details = &payload.data.details;
        assert_eq!(details["used"], used);
        assert_eq!(details["limit"], "5");
        assert_eq!(details["subject"], "account");
        assert_eq!(details["period"], "day");
        assert_eq!(details["plan"], "metered");
        assert!(details["resets_at"].ends_with("T00:00:00Z"), "{details:?}");
        assert_eq!(payload.data.account_id.as_str(), account);
        assert_eq!(payload.data.actor, "quota");
    }
    for delivery in received {
        let sent_at = Timestamp::from_second(delivery.timestamp.parse().unwrap()).unwrap();
        delivery.verify(secret, sent_at);
    }
}

/// SPEC §12: `quota.warning` at 80 % of a period's quota and
/// `quota.exhausted` at all of it, once each, however many requests are
/// refused after.
#[tokio::test]
async fn quota_events_are_sent_once_per_period() {
    let server = TestServer::embedded(QUOTA_OF_FIVE).await;
    let receiver = Receiver::start(&[]).await;
    let (_, secret) = register(
        &server,
        serde_json::json!({"url": receiver.url, "events": ["quota.warning", "quota.exhausted"]}),
    )
    .await;
    let key = server.create_key(|_| {}).await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(
            server
                .get_with_key("/v1/whoami", &key)
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    receiver.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_quota_events(&receiver.received(), &secret, "acct_test");
    server.stop().await;
}

/// Two nodes on one Redis share the counter: each line is crossed by one
/// request on one node, so each event is sent once.
#[tokio::test]
async fn quota_events_on_two_redis_nodes_are_sent_once() {
    let redis = RedisServer::start();
    let nodes = [
        TestServer::redis(&redis.url(), QUOTA_OF_FIVE).await,
        TestServer::redis(&redis.url(), QUOTA_OF_FIVE).await,
    ];
    let receiver = Receiver::start(&[]).await;
    let (_, secret) = register(
        &nodes[0],
        serde_json::json!({"url": receiver.url, "events": ["quota.warning", "quota.exhausted"]}),
    )
    .await;
    let key = nodes[0].create_key(|_| {}).await;
    let mut passed = 0;
    for n in 0..10 {
        if nodes[n % 2].get_with_key("/v1/whoami", &key).await.status == StatusCode::OK {
            passed += 1;
        }
    }
    assert_eq!(passed, 5);
    receiver.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_quota_events(&receiver.received(), &secret, "acct_test");
    for node in nodes {
        node.stop().await;
    }
}

/// A create retried under its `Idempotency-Key` answers the same endpoint,
/// and never its secret again: the stored answer holds none.
#[tokio::test]
async fn a_replayed_create_never_shows_the_secret_again() {
    let server = TestServer::embedded("").await;
    let body = r#"{"url": "https://hooks.example.com/in", "events": ["key.created"]}"#;
    let send = || {
        server.send(
            Method::POST,
            "/admin/v1/webhooks",
            &[
                ("authorization", ADMIN),
                ("content-type", "application/json"),
                ("idempotency-key", "hook-once-1"),
            ],
            body,
        )
    };
    let first = send().await;
    assert_eq!(first.status, StatusCode::CREATED);
    let secret = first.json()["secret"].as_str().unwrap().to_owned();
    let again = send().await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json()["webhook"], first.json()["webhook"]);
    assert_eq!(again.json()["secret"], serde_json::Value::Null);
    assert!(!String::from_utf8_lossy(&again.body).contains(&secret));
    let listed = admin(&server, Method::GET, "/admin/v1/webhooks", "").await;
    assert_eq!(
        listed.json()["webhooks"].as_array().unwrap().len(),
        1,
        "made twice"
    );
    server.stop().await;
}

/// SPEC §12 server-side request forgery: without the flag, no endpoint on
/// a private address; a name that resolves to one is refused when the
/// delivery connects. Malformed requests name the field and never echo a
/// password.
#[tokio::test]
async fn private_and_malformed_targets_are_refused() {
    let server = TestServer::embedded("").await;
    let receiver = Receiver::start(&[]).await;
    for (body, field) in [
        (
            serde_json::json!({"url": receiver.url, "events": ["key.created"]}),
            "url",
        ),
        (
            serde_json::json!({"url": "http://169.254.169.254/latest/meta-data/", "events": ["key.created"]}),
            "url",
        ),
        (
            serde_json::json!({"url": "http://[::1]:9/", "events": ["key.created"]}),
            "url",
        ),
        (
            serde_json::json!({"url": "ftp://hooks.example.com/", "events": ["key.created"]}),
            "url",
        ),
        (
            serde_json::json!({"url": "https://ops:hunter2pw@hooks.example.com/", "events": ["key.created"]}),
            "url",
        ),
        (
            serde_json::json!({"url": "https://hooks.example.com/", "events": []}),
            "events",
        ),
        (
            serde_json::json!({"url": "https://hooks.example.com/", "events": ["key.created", "key.created"]}),
            "events",
        ),
        (
            serde_json::json!({"url": "https://hooks.example.com/", "events": ["key.exploded"]}),
            "events[0]",
        ),
        (
            serde_json::json!({"url": "https://hooks.example.com/", "events": ["key.created"], "secret": "x"}),
            "secret",
        ),
    ] {
        let refused = admin(
            &server,
            Method::POST,
            "/admin/v1/webhooks",
            &body.to_string(),
        )
        .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(refused.code(), "INVALID_REQUEST");
        assert_eq!(refused.json()["error"]["details"]["field"], field, "{body}");
        assert!(!String::from_utf8_lossy(&refused.body).contains("hunter2pw"));
    }

    // `localhost` is a name: accepted, then refused where it connects.
    let port = receiver
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let (webhook, _) = register(
        &server,
        serde_json::json!({"url": format!("http://localhost:{port}/hooks/in"), "events": ["key.created"]}),
    )
    .await;
    server.create_key(|_| {}).await;
    let attempt = attempts_reach(&server, &webhook, 1).await;
    assert_eq!(attempt["status"], "pending");
    let error = attempt["last_error"].as_str().unwrap();
    assert!(error.contains("--allow-private-webhooks"), "{error}");
    assert!(
        receiver.received().is_empty(),
        "a private address was reached"
    );
    server.stop().await;
}

/// SPEC §12: the event is written with the change, so a `kill -9` right
/// after a revoke loses nothing: the restarted server delivers it.
#[tokio::test]
async fn an_event_committed_before_kill_9_is_delivered_after_the_restart() {
    use crate::process::ServerProcess;
    let data = tempfile::tempdir().unwrap();
    // The receiver's port is taken now and listened on only after the
    // restart: the first life can only fail to deliver.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{address}/hooks/in");
    let flags = ["--allow-private-webhooks"];
    let server = ServerProcess::start(data.path(), Some(ADMIN_TOKEN), &flags).await;
    let created = server
        .admin(
            Method::POST,
            "/admin/v1/webhooks",
            ADMIN_TOKEN,
            &serde_json::json!({"url": url, "events": ["key.revoked"]}).to_string(),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let secret_text = created.body["secret"].as_str().unwrap().to_owned();
    let secret = WebhookSecret::parse(&secret_text).unwrap();
    let (_, id) = server.create_key(ADMIN_TOKEN).await;
    let revoked = server
        .admin(
            Method::POST,
            &format!("/admin/v1/keys/{id}/revoke"),
            ADMIN_TOKEN,
            "",
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    server.signal("KILL");
    let (_, output) = server.wait_with_output().await;
    assert!(output.contains("webhook created"), "{output}");
    assert!(
        !output.contains(&secret_text) && !output.contains(&secret_text[6..]),
        "the log holds the webhook secret"
    );
    let stored = std::fs::read(data.path().join("keys.redb")).unwrap();
    assert!(
        !stored.windows(32).any(|w| w == secret.as_bytes())
            && !stored
                .windows(20)
                .any(|w| w == &secret_text.as_bytes()[6..26]),
        "the webhook secret is at rest in plaintext"
    );

    let receiver = Receiver::on(tokio::net::TcpListener::bind(address).await.unwrap(), &[]);
    let mut server = ServerProcess::start(data.path(), Some(ADMIN_TOKEN), &flags).await;
    server.drain_output();
    let received = receiver.wait_for(1).await;
    let payload = received[0].payload();
    assert_eq!(payload.event_type.as_str(), "key.revoked");
    assert_eq!(payload.data.key_id.unwrap().as_str(), id);
    received[0].verify(&secret, Timestamp::now());
    server.signal("TERM");
    assert!(server.wait_with_output().await.0);
}

/// SPEC §12: with many nodes on one Redis, each event is sent by one node.
#[tokio::test]
async fn three_nodes_on_redis_deliver_each_event_once() {
    let redis = RedisServer::start();
    let toml = "allow_private_webhooks = true";
    let nodes = [
        TestServer::redis(&redis.url(), toml).await,
        TestServer::redis(&redis.url(), toml).await,
        TestServer::redis(&redis.url(), toml).await,
    ];
    let receiver = Receiver::start(&[]).await;
    let (_, secret) = register(
        &nodes[0],
        serde_json::json!({"url": receiver.url, "events": ["key.created", "key.expiring"], "account_id": "acct_test"}),
    )
    .await;
    const KEYS: usize = 12;
    for n in 0..KEYS - 1 {
        nodes[n % 3].create_key(|_| {}).await;
    }
    // Its 7-day notice comes two seconds from now, to every node at once.
    let expires_at = Timestamp::now()
        .checked_add(SignedDuration::from_hours(7 * 24) + SignedDuration::from_secs(2))
        .unwrap();
    nodes[2]
        .create_key(|request| request.expires_at = Some(expires_at))
        .await;
    // Another account's keys are not this endpoint's.
    nodes[1]
        .create_key(|request| {
            request.account_id = cloro_auth_core::AccountId::new("acct_other").unwrap()
        })
        .await;
    let received = receiver.wait_for(KEYS + 1).await;
    // Three more ticks of every node: nothing is sent twice.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let received_after = receiver.received();
    assert_eq!(
        received_after.len(),
        KEYS + 1,
        "an event was sent twice, or another account's was sent"
    );
    let mut ids: Vec<&str> = received.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), KEYS + 1);
    let expiring: Vec<WebhookPayload> = received_after
        .iter()
        .map(Received::payload)
        .filter(|payload| payload.event_type.as_str() == "key.expiring")
        .collect();
    assert_eq!(expiring.len(), 1, "the notice is sent once across nodes");
    assert_eq!(expiring[0].data.details["notice"], "7d");
    for delivery in &received_after {
        delivery.verify(&secret, Timestamp::now());
        assert_eq!(delivery.payload().data.account_id.as_str(), "acct_test");
    }
    for node in nodes {
        node.stop().await;
    }
}
