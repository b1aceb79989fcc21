//! `Idempotency-Key` on the admin API's `POST`s (SPEC §11), over real HTTP on
//! both stores: repeats change things once and replay the first answer
//! (a create's or rotate's without its plaintext), another request with the
//! key is 409, concurrent duplicates run once, the key is forgotten after
//! 24 h by the server's clock, bad keys are 400, and nothing secret is at
//! rest.

use std::process::Command;
use std::sync::Arc;

use cloro_keystore::Clock;
use cloro_server::config::StoreChoice;
use http::{Method, StatusCode};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Answer, TestServer, raw};

/// An admin request with an `Idempotency-Key`.
async fn post(server: &TestServer, path: &str, key: &str, body: &str) -> Answer {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    server
        .send(
            Method::POST,
            path,
            &[("authorization", &auth), ("idempotency-key", key)],
            body,
        )
        .await
}

async fn get(server: &TestServer, path: &str) -> Value {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let answer = server
        .send(Method::GET, path, &[("authorization", &auth)], "")
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.json()
}

fn replayed(answer: &Answer) -> bool {
    answer.header("idempotent-replayed") == Some("true")
}

/// The ids of an account's keys, revoked ones included.
async fn key_ids(server: &TestServer, account: &str) -> Vec<String> {
    let listed = get(
        server,
        &format!("/admin/v1/keys?account_id={account}&include_revoked=true&limit=100"),
    )
    .await;
    listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The actions of an account's audit events.
async fn audit_actions(server: &TestServer, account: &str) -> Vec<String> {
    let audit = get(
        server,
        &format!("/admin/v1/audit?account_id={account}&limit=100"),
    )
    .await;
    audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["action"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_on_the_embedded_store() {
    let clock = Clock::manual(Timestamp::now());
    let server = TestServer::embedded_with_clock("", clock.clone()).await;
    let secrets = scenario(&server, &clock).await;
    let StoreChoice::Embedded(dir) = &server.app.settings().store else {
        unreachable!("an embedded server")
    };
    let bytes = std::fs::read(dir.join("keys.redb")).unwrap();
    assert_no_secret_at_rest(&bytes, &secrets);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_on_redis() {
    let redis = cloro_test_support::RedisServer::start();
    let clock = Clock::manual(Timestamp::now());
    let server = TestServer::redis_with_clock(&redis.url(), "", clock.clone()).await;
    let secrets = scenario(&server, &clock).await;
    let dump = redis_dump(redis.port());
    assert!(
        dump.contains("cloro:{idem:admin:"),
        "no idempotency record in the dump, so it proves nothing"
    );
    assert_no_secret_at_rest(dump.as_bytes(), &secrets);
    server.stop().await;
    drop(redis);
}

/// Everything the server stores must be free of the plaintext keys it
/// handed out; `at_rest` holds every byte it stored.
fn assert_no_secret_at_rest(at_rest: &[u8], secrets: &[String]) {
    let contains = |needle: &[u8]| at_rest.windows(needle.len()).any(|w| w == needle);
    assert!(!secrets.is_empty());
    for secret in secrets {
        assert!(!contains(secret.as_bytes()), "a plaintext key is at rest");
        assert!(
            !contains(&secret.as_bytes()[8..40]),
            "the random part of a key is at rest"
        );
    }
    assert!(
        !contains(b"idem-create-1"),
        "an Idempotency-Key itself is at rest"
    );
}

/// Every key and hash field of a private Redis, through `redis-cli`.
fn redis_dump(port: u16) -> String {
    let cli = |args: &[&str]| {
        let output = Command::new("redis-cli")
            .arg("-p")
            .arg(port.to_string())
            .args(args)
            .output()
            .expect("redis-cli runs (the Redis tests need it)");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let mut dump = String::new();
    for key in cli(&["--scan"]).lines() {
        dump.push_str(key);
        dump.push('\n');
        let kind = cli(&["TYPE", key]);
        let values = match kind.trim() {
            "string" => cli(&["GET", key]),
            "hash" => cli(&["HGETALL", key]),
            "zset" => cli(&["ZRANGE", key, "0", "-1"]),
            _ => String::new(),
        };
        dump.push_str(&values);
    }
    dump
}

/// The whole story on one server; returns every plaintext key handed out.
async fn scenario(server: &TestServer, clock: &Clock) -> Vec<String> {
    let mut secrets = Vec::new();
    secrets.extend(create_replays_without_the_key(server, clock).await);
    revoke_five_times_changes_once(server).await;
    secrets.extend(rotate_replays_without_the_key(server).await);
    client_errors_replay_and_auth_failures_do_not(server).await;
    secrets.extend(concurrent_duplicates_run_once(server).await);
    bad_keys_are_refused_naming_the_field(server).await;
    secrets
}

async fn create_replays_without_the_key(server: &TestServer, clock: &Clock) -> Vec<String> {
    let body = json!({"account_id": "acct_idem_create", "name": "ci"}).to_string();
    let first = post(server, "/admin/v1/keys", "idem-create-1", &body).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert!(!replayed(&first), "a first answer is no replay");
    let secret = first.json()["key"].as_str().unwrap().to_owned();
    let id = first.json()["key_info"]["id"].as_str().unwrap().to_owned();
    for _ in 0..4 {
        let again = post(server, "/admin/v1/keys", "idem-create-1", &body).await;
        assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
        assert!(replayed(&again));
        assert_eq!(again.header("content-type"), Some("application/json"));
        assert_eq!(again.header("cache-control"), Some("no-store"));
        let replay = again.json();
        assert_eq!(replay["key"], Value::Null, "a replay never holds the key");
        assert_eq!(replay["key_info"], first.json()["key_info"]);
        assert!(!String::from_utf8_lossy(&again.body).contains(&secret));
    }
    assert_eq!(key_ids(server, "acct_idem_create").await, [id.as_str()]);

    // Another body with the same key is refused, and creates nothing.
    let other = json!({"account_id": "acct_idem_create", "name": "other"}).to_string();
    let reused = post(server, "/admin/v1/keys", "idem-create-1", &other).await;
    assert_eq!(
        (reused.status, reused.code().as_str()),
        (StatusCode::CONFLICT, "IDEMPOTENCY_KEY_REUSED"),
        "{:?}",
        reused.body
    );
    assert!(!replayed(&reused));
    // So is the same body on another route.
    let elsewhere = post(
        server,
        &format!("/admin/v1/keys/{id}/revoke"),
        "idem-create-1",
        &body,
    )
    .await;
    assert_eq!(
        elsewhere.status,
        StatusCode::CONFLICT,
        "{:?}",
        elsewhere.body
    );
    assert_eq!(key_ids(server, "acct_idem_create").await.len(), 1);

    // 24 h and a second later, by the server's clock, the key is forgotten:
    // the same request runs again.
    assert!(clock.advance(SignedDuration::from_secs(24 * 60 * 60 + 1)));
    let later = post(server, "/admin/v1/keys", "idem-create-1", &body).await;
    assert_eq!(later.status, StatusCode::CREATED, "{:?}", later.body);
    assert!(!replayed(&later));
    let second = later.json()["key"].as_str().unwrap().to_owned();
    assert_ne!(later.json()["key_info"]["id"].as_str(), Some(id.as_str()));
    assert_eq!(key_ids(server, "acct_idem_create").await.len(), 2);
    vec![secret, second]
}

async fn revoke_five_times_changes_once(server: &TestServer) {
    let body = json!({"account_id": "acct_idem_revoke", "name": "r"}).to_string();
    let created = post(server, "/admin/v1/keys", "idem-revoke-create", &body).await;
    let id = created.json()["key_info"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/admin/v1/keys/{id}/revoke");
    let reason = json!({"reason": "leaked"}).to_string();
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(post(server, &path, "idem-revoke-1", &reason).await);
    }
    assert!(
        answers.iter().all(|a| a.status == StatusCode::OK),
        "{answers:?}"
    );
    assert!(!replayed(&answers[0]));
    assert!(answers[1..].iter().all(replayed));
    let first = answers[0].json();
    assert_eq!(first["status"], "revoked");
    for answer in &answers[1..] {
        assert_eq!(answer.json(), first);
    }
    // The clock stands still, so both events share a time: sort them.
    let mut actions = audit_actions(server, "acct_idem_revoke").await;
    actions.sort();
    assert_eq!(actions, ["key.created", "key.revoked"], "changed once");
}

async fn rotate_replays_without_the_key(server: &TestServer) -> Vec<String> {
    let body = json!({"account_id": "acct_idem_rotate", "name": "rot"}).to_string();
    let created = post(server, "/admin/v1/keys", "idem-rotate-create", &body).await;
    let old_secret = created.json()["key"].as_str().unwrap().to_owned();
    let id = created.json()["key_info"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/admin/v1/keys/{id}/rotate");
    let grace = json!({"grace_period_seconds": 60}).to_string();
    let first = post(server, &path, "idem-rotate-1", &grace).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let new_secret = first.json()["key"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let again = post(server, &path, "idem-rotate-1", &grace).await;
        assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
        assert!(replayed(&again));
        let replay = again.json();
        assert_eq!(replay["key"], Value::Null);
        assert_eq!(replay["key_info"], first.json()["key_info"]);
        assert_eq!(replay["previous"], first.json()["previous"]);
    }
    // One rotation: the old key and one new one.
    assert_eq!(key_ids(server, "acct_idem_rotate").await.len(), 2);
    vec![old_secret, new_secret]
}

async fn client_errors_replay_and_auth_failures_do_not(server: &TestServer) {
    // A 400 is remembered: its retry gets the same 400, request id and all.
    let bad = json!({"account_id": "acct_idem_400", "name": "x", "colour": 1}).to_string();
    let first = post(server, "/admin/v1/keys", "idem-400", &bad).await;
    assert_eq!(first.status, StatusCode::BAD_REQUEST, "{:?}", first.body);
    let again = post(server, "/admin/v1/keys", "idem-400", &bad).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(replayed(&again));
    assert_eq!(again.json(), first.json());

    // A 401 never reaches the key: the right token then runs the request.
    let body = json!({"account_id": "acct_idem_401", "name": "x"}).to_string();
    let unauthorised = server
        .send(
            Method::POST,
            "/admin/v1/keys",
            &[
                (
                    "authorization",
                    "Bearer wrong_token_0123456789abcdefghijklmnop",
                ),
                ("idempotency-key", "idem-401"),
            ],
            &body,
        )
        .await;
    assert_eq!(unauthorised.status, StatusCode::UNAUTHORIZED);
    let runs = post(server, "/admin/v1/keys", "idem-401", &body).await;
    assert_eq!(runs.status, StatusCode::CREATED, "{:?}", runs.body);
    assert!(!replayed(&runs));
    assert_eq!(key_ids(server, "acct_idem_401").await.len(), 1);
}

async fn concurrent_duplicates_run_once(server: &TestServer) -> Vec<String> {
    let body = json!({"account_id": "acct_idem_race", "name": "race"}).to_string();
    let body = Arc::new(body);
    let sends = (0..20).map(|_| {
        let body = body.clone();
        async move { post(server, "/admin/v1/keys", "idem-race-1", &body).await }
    });
    let answers = futures_util::future::join_all(sends).await;
    let mut secrets = Vec::new();
    let mut fresh = 0;
    for answer in &answers {
        match answer.status {
            StatusCode::CREATED if !replayed(answer) => {
                fresh += 1;
                secrets.push(answer.json()["key"].as_str().unwrap().to_owned());
            }
            StatusCode::CREATED => assert_eq!(answer.json()["key"], Value::Null),
            StatusCode::CONFLICT => {
                assert_eq!(answer.code(), "IDEMPOTENCY_KEY_REUSED");
                let message = answer.json()["error"]["message"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                assert!(message.contains("in progress"), "{message}");
            }
            other => panic!("unexpected {other}: {:?}", answer.body),
        }
    }
    assert_eq!(fresh, 1, "exactly one of 20 concurrent duplicates ran");
    assert_eq!(key_ids(server, "acct_idem_race").await.len(), 1);
    secrets
}

async fn bad_keys_are_refused_naming_the_field(server: &TestServer) {
    let body = json!({"account_id": "acct_idem_bad", "name": "x"}).to_string();
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let long = format!("Idempotency-Key: {}", "k".repeat(256));
    let cases: [&[&[u8]]; 5] = [
        &[b"Idempotency-Key:"],
        &[long.as_bytes()],
        &[b"Idempotency-Key: two words"],
        &[b"Idempotency-Key: caf\xc3\xa9"],
        &[b"Idempotency-Key: one", b"Idempotency-Key: one"],
    ];
    for lines in cases {
        let mut header_lines: Vec<&[u8]> = vec![auth.as_bytes(), b"Content-Type: application/json"];
        header_lines.extend_from_slice(lines);
        let answer = raw(
            server,
            "POST",
            "/admin/v1/keys",
            &header_lines,
            body.as_bytes(),
        )
        .await;
        assert_eq!(
            (
                answer.status,
                answer.code().as_str(),
                answer.field().as_str()
            ),
            (400, "INVALID_REQUEST", "Idempotency-Key"),
            "{lines:?}: {}",
            answer.body
        );
        let message = answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains("Idempotency-Key"), "{message}");
    }
    // The longest key there may be is fine.
    let longest = "k".repeat(255);
    let answer = post(server, "/admin/v1/keys", &longest, &body).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    assert_eq!(key_ids(server, "acct_idem_bad").await.len(), 1);
}

/// Every admin `POST` in the OpenAPI document, present and future, says
/// that it takes `Idempotency-Key`, may answer a replay, and may be 409.
#[test]
fn openapi_documents_idempotency_on_every_admin_post() {
    let doc: Value = serde_json::from_str(include_str!("../../openapi.json")).unwrap();
    let mut posts = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(operation) = item.get("post").filter(|_| path.starts_with("/admin/")) else {
            continue;
        };
        posts += 1;
        let parameters = operation["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            parameters
                .iter()
                .any(|p| p["$ref"] == "#/components/parameters/IdempotencyKey"),
            "POST {path}: no Idempotency-Key parameter"
        );
        let responses = operation["responses"].as_object().unwrap();
        assert!(responses.contains_key("409"), "POST {path}: no 409");
        for (status, response) in responses {
            if status.starts_with('2') {
                assert_eq!(
                    response["headers"]["Idempotent-Replayed"]["$ref"],
                    "#/components/headers/Idempotent-Replayed",
                    "POST {path} {status}: no Idempotent-Replayed"
                );
            }
        }
    }
    assert!(posts >= 3, "the admin POSTs are documented");
}
