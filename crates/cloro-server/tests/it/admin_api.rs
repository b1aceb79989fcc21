//! The admin API over a real socket: the key lifecycle (create, disable,
//! revoke, expire, rotate), listings, audit, plans and accounts on both the
//! embedded store and a private Redis, then the admin token and request
//! validation.

use std::time::Duration;

use http::{Method, StatusCode};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Answer, TestServer};

/// Two plans: the usual default, and one that runs out after one request
/// so a test can see a plan's 429.
const PLANS: &str = r#"
default_plan = "free"
[plans.free]
rate_limit = { requests = 1000, per_seconds = 3600 }
[plans.tiny]
rate_limit = { requests = 1, per_seconds = 60 }
"#;

/// A request with the admin token.
async fn admin(server: &TestServer, method: Method, path: &str, body: &str) -> Answer {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    server
        .send(method, path, &[("authorization", &auth)], body)
        .await
}

/// `POST /admin/v1/keys`: the plaintext key and its `key_info`.
async fn create(server: &TestServer, body: Value) -> (String, Value) {
    let answer = admin(server, Method::POST, "/admin/v1/keys", &body.to_string()).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let created = answer.json();
    let key = created["key"].as_str().unwrap().to_owned();
    (key, created["key_info"].clone())
}

/// Asserts an error answer's status and code; returns its `details`.
fn refused(answer: &Answer, status: StatusCode, code: &str) -> Value {
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (status, code),
        "{:?}",
        answer.body
    );
    answer.json()["error"]["details"].clone()
}

/// `details.field` of a 400 `INVALID_REQUEST`.
fn bad_field(answer: &Answer) -> String {
    let details = refused(answer, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    details["field"].as_str().unwrap_or_default().to_owned()
}

fn in_seconds(seconds: i64) -> Timestamp {
    Timestamp::now()
        .checked_add(SignedDuration::from_secs(seconds))
        .unwrap()
}

#[tokio::test]
async fn lifecycle_on_the_embedded_store() {
    let server = TestServer::embedded(PLANS).await;
    lifecycle(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn lifecycle_on_redis() {
    let redis = cloro_test_support::RedisServer::start();
    let server = TestServer::redis(&redis.url(), PLANS).await;
    lifecycle(&server).await;
    server.stop().await;
    drop(redis);
}

/// Everything the admin API does, in the order an operator would meet it.
/// The short-lived key is created first and checked last, so its wait
/// overlaps the rest of the test.
async fn lifecycle(server: &TestServer) {
    let expires_at = in_seconds(2);
    let (short_lived, _) = create(
        server,
        json!({"account_id": "acct_life", "name": "short", "expires_at": expires_at.to_string()}),
    )
    .await;
    let works = server.get_with_key("/v1/whoami", &short_lived).await;
    assert_eq!(works.status, StatusCode::OK);

    let mut keys = vec![short_lived.clone()];
    keys.extend(key_states(server).await);
    keys.extend(rotation(server).await);
    keys.extend(listing(server).await);
    keys.extend(plans_and_accounts(server).await);

    let left = expires_at.duration_since(Timestamp::now());
    if left.is_positive() {
        tokio::time::sleep(Duration::try_from(left).unwrap() + Duration::from_millis(50)).await;
    }
    let expired = server.get_with_key("/v1/whoami", &short_lived).await;
    refused(&expired, StatusCode::UNAUTHORIZED, "EXPIRED_API_KEY");
    // Its `key.expired` notice comes within a second or so (SPEC §12);
    // once it has, the log holds still for the checks below.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let log = admin(
            server,
            Method::GET,
            "/admin/v1/audit?account_id=acct_life&limit=100",
            "",
        )
        .await
        .json();
        if log["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "key.expired")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no key.expired: {log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    audit_log(server, &keys).await;
}

/// Create, disable, enable, revoke; returns the plaintext key made.
async fn key_states(server: &TestServer) -> Vec<String> {
    let (key, info) = create(
        server,
        json!({
            "account_id": "acct_life",
            "name": "ci runner",
            "purpose": "ci",
            "environment": "test",
            "scopes": ["monitor:read"],
            "metadata": {"team": "core"},
        }),
    )
    .await;
    assert!(key.starts_with("sk_test_") && key.len() == 48, "key shape");
    let id = info["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("key_"));
    assert_eq!(info["account_id"], "acct_life");
    assert_eq!(info["name"], "ci runner");
    assert_eq!(info["purpose"], "ci");
    assert_eq!(info["environment"], "test");
    assert_eq!(info["start"], format!("{}...", &key[..12]));
    assert_eq!(info["scopes"], json!(["monitor:read"]));
    assert_eq!(info["metadata"], json!({"team": "core"}));
    assert_eq!(info["status"], "active");
    assert_eq!(info["enabled"], true);
    for empty in [
        "rate_limit",
        "concurrency_limit",
        "expires_at",
        "revoked_at",
    ] {
        assert!(info[empty].is_null(), "{empty}");
    }
    assert!(info["created_at"].as_str().is_some());

    let shown = admin(server, Method::GET, &format!("/admin/v1/keys/{id}"), "").await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.json()["id"], id.as_str());
    assert!(!contains(&shown.body, &key), "no plaintext outside create");

    let whoami = server.get_with_key("/v1/whoami", &key).await;
    assert_eq!(whoami.status, StatusCode::OK);
    assert_eq!(whoami.json()["id"], id.as_str());

    let path = format!("/admin/v1/keys/{id}");
    let disabled = admin(server, Method::PATCH, &path, r#"{"enabled": false}"#).await;
    assert_eq!(disabled.status, StatusCode::OK);
    assert_eq!(disabled.json()["status"], "disabled");
    let refused_now = server.get_with_key("/v1/whoami", &key).await;
    let details = refused(&refused_now, StatusCode::UNAUTHORIZED, "REVOKED_API_KEY");
    assert_eq!(details["reason"], "disabled");

    let enabled = admin(server, Method::PATCH, &path, r#"{"enabled": true}"#).await;
    assert_eq!(enabled.json()["status"], "active");
    assert_eq!(
        server.get_with_key("/v1/whoami", &key).await.status,
        StatusCode::OK
    );

    let past = json!({"expires_at": in_seconds(-60).to_string()}).to_string();
    assert_eq!(
        bad_field(&admin(server, Method::PATCH, &path, &past).await),
        "expires_at"
    );
    assert_eq!(
        bad_field(&admin(server, Method::PATCH, &path, r#"{"name": null}"#).await),
        "name"
    );
    let renamed = admin(server, Method::PATCH, &path, r#"{"metadata": null}"#).await;
    assert_eq!(renamed.json()["metadata"], json!({}));

    let revoke = format!("{path}/revoke");
    let revoked = admin(server, Method::POST, &revoke, r#"{"reason": "leaked"}"#).await;
    assert_eq!(revoked.status, StatusCode::OK);
    let revoked = revoked.json();
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoked_reason"], "leaked");
    let details = refused(
        &server.get_with_key("/v1/whoami", &key).await,
        StatusCode::UNAUTHORIZED,
        "REVOKED_API_KEY",
    );
    assert_eq!(details["reason"], "revoked");
    let again = admin(server, Method::POST, &revoke, "").await;
    assert_eq!(again.status, StatusCode::OK, "revoking twice is fine");
    assert_eq!(again.json()["revoked_at"], revoked["revoked_at"]);
    let patch = admin(server, Method::PATCH, &path, r#"{"enabled": true}"#).await;
    refused(&patch, StatusCode::CONFLICT, "KEY_REVOKED");
    let rotate = admin(server, Method::POST, &format!("{path}/rotate"), "").await;
    refused(&rotate, StatusCode::CONFLICT, "KEY_REVOKED");
    vec![key]
}

/// Rotation without and with grace; returns the plaintext keys made.
async fn rotation(server: &TestServer) -> Vec<String> {
    let (first, info) = create(server, json!({"account_id": "acct_life", "name": "app"})).await;
    let first_id = info["id"].as_str().unwrap().to_owned();

    let rotated = admin(
        server,
        Method::POST,
        &format!("/admin/v1/keys/{first_id}/rotate"),
        "",
    )
    .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{:?}", rotated.body);
    assert_eq!(rotated.header("cache-control"), Some("no-store"));
    let rotated = rotated.json();
    let second = rotated["key"].as_str().unwrap().to_owned();
    let second_id = rotated["key_info"]["id"].as_str().unwrap().to_owned();
    assert_ne!(second_id, first_id);
    assert_eq!(rotated["key_info"]["name"], "app", "settings are inherited");
    assert_eq!(rotated["previous"]["id"], first_id.as_str());
    assert!(rotated["previous"]["expires_at"].is_string());
    refused(
        &server.get_with_key("/v1/whoami", &first).await,
        StatusCode::UNAUTHORIZED,
        "EXPIRED_API_KEY",
    );
    let whoami = server.get_with_key("/v1/whoami", &second).await;
    assert_eq!(whoami.json()["id"], second_id.as_str());

    let graceful = admin(
        server,
        Method::POST,
        &format!("/admin/v1/keys/{second_id}/rotate"),
        r#"{"grace_period_seconds": 60}"#,
    )
    .await;
    assert_eq!(graceful.status, StatusCode::CREATED);
    let graceful = graceful.json();
    let third = graceful["key"].as_str().unwrap().to_owned();
    assert_eq!(graceful["previous"]["status"], "active");
    let end: Timestamp = graceful["previous"]["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        end > in_seconds(50) && end <= in_seconds(61),
        "grace end {end}"
    );
    for key in [&second, &third] {
        let answer = server.get_with_key("/v1/whoami", key).await;
        assert_eq!(answer.status, StatusCode::OK, "both work during the grace");
    }
    vec![first, second, third]
}

/// Paging newest first and `include_revoked`; returns the keys made.
async fn listing(server: &TestServer) -> Vec<String> {
    let mut keys = Vec::new();
    let mut ids = Vec::new();
    for n in 0..3 {
        let (key, info) = create(
            server,
            json!({"account_id": "acct_pages", "name": format!("k{n}")}),
        )
        .await;
        keys.push(key);
        ids.push(info["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    let list = |query: &str| {
        let path = format!("/admin/v1/keys?account_id=acct_pages{query}");
        async move { admin(server, Method::GET, &path, "").await }
    };

    let first = list("&limit=2").await;
    assert_eq!(first.status, StatusCode::OK);
    let first = first.json();
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let mut seen = listed_ids(&first["keys"]);
    assert_eq!(seen, ids[..2], "newest first");
    let mut cursor = Some(cursor);
    while let Some(at) = cursor {
        let page = list(&format!("&limit=2&cursor={at}")).await.json();
        seen.extend(listed_ids(&page["keys"]));
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, ids, "pages neither repeat nor skip");

    let revoked = admin(
        server,
        Method::POST,
        &format!("/admin/v1/keys/{}/revoke", ids[0]),
        "",
    )
    .await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert_eq!(
        listed_ids(&list("").await.json()["keys"]),
        ids[1..],
        "revoked keys are left out by default"
    );
    let all = list("&include_revoked=true").await.json();
    assert_eq!(listed_ids(&all["keys"]), ids);
    assert!(all["next_cursor"].is_null());

    assert_eq!(bad_field(&list("&limit=101").await), "limit");
    assert_eq!(bad_field(&list("&limit=0").await), "limit");
    assert_eq!(bad_field(&list("&cursor=nonsense").await), "cursor");
    let no_account = admin(server, Method::GET, "/admin/v1/keys?limit=5", "").await;
    assert_eq!(bad_field(&no_account), "account_id");
    let bad_account = admin(server, Method::GET, "/admin/v1/keys?account_id=a.b", "").await;
    assert_eq!(bad_field(&bad_account), "account_id");
    let encoded = admin(
        server,
        Method::GET,
        "/admin/v1/keys?account_id=acct%5Fpages&include_revoked=true",
        "",
    )
    .await;
    assert_eq!(listed_ids(&encoded.json()["keys"]), ids, "percent-decoded");
    keys
}

fn listed_ids(keys: &Value) -> Vec<String> {
    keys.as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The audit log of `acct_life`: newest first, paged, and free of `keys`.
async fn audit_log(server: &TestServer, keys: &[String]) {
    let answer = admin(
        server,
        Method::GET,
        "/admin/v1/audit?account_id=acct_life&limit=100",
        "",
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    for key in keys {
        assert!(!contains(&answer.body, key), "no plaintext key in audit");
        assert!(!contains(&answer.body, &key[12..40]), "no secret part");
    }
    let log = answer.json();
    let events = log["events"].as_array().unwrap();
    let times: Vec<Timestamp> = events
        .iter()
        .map(|e| e["at"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    assert!(events.iter().all(|e| e["account_id"] == "acct_life"));
    // The short-lived key's notices: `key.expired` once, and the 1-day
    // `key.expiring` at most once (created two seconds from its expiry,
    // the scan may first see it expired already).
    let notices: Vec<&str> = events
        .iter()
        .filter(|e| e["actor"] == "expiry-schedule")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(notices.first(), Some(&"key.expired"), "{notices:?}");
    assert!(
        notices == ["key.expired"] || notices == ["key.expired", "key.expiring"],
        "{notices:?}"
    );
    let actions: Vec<&str> = events
        .iter()
        .filter(|e| e["actor"] != "expiry-schedule")
        .inspect(|e| assert_eq!(e["actor"], "bootstrap"))
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    // key_states: created, 2 × enabled, metadata cleared, revoked; rotation:
    // created, 2 × rotated; and the short-lived key's creation.
    assert_eq!(actions.iter().filter(|a| **a == "key.created").count(), 3);
    assert_eq!(actions.iter().filter(|a| **a == "key.updated").count(), 3);
    assert_eq!(actions.iter().filter(|a| **a == "key.revoked").count(), 1);
    assert_eq!(actions.iter().filter(|a| **a == "key.rotated").count(), 2);
    assert_eq!(actions.first(), Some(&"key.rotated"), "the latest action");
    assert_eq!(actions.last(), Some(&"key.created"), "the first action");
    let revoked = events
        .iter()
        .find(|e| e["action"] == "key.revoked")
        .unwrap();
    assert_eq!(revoked["details"]["reason"], "leaked");

    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = admin(
            server,
            Method::GET,
            &format!("/admin/v1/audit?account_id=acct_life&limit=3{cursor}"),
            "",
        )
        .await
        .json();
        paged.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(&paged, events, "paging the audit log gives the same events");
    let too_many = admin(
        server,
        Method::GET,
        "/admin/v1/audit?account_id=acct_life&limit=101",
        "",
    )
    .await;
    assert_eq!(bad_field(&too_many), "limit");
    let none = admin(server, Method::GET, "/admin/v1/audit", "").await;
    assert_eq!(bad_field(&none), "account_id");
}

/// Plans, an account's plan and its 429; returns the key made.
async fn plans_and_accounts(server: &TestServer) -> Vec<String> {
    let plans = admin(server, Method::GET, "/admin/v1/plans", "").await;
    assert_eq!(plans.status, StatusCode::OK);
    let plans = plans.json();
    assert_eq!(plans["default_plan"], "free");
    let tiny = plans["plans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "tiny")
        .unwrap();
    assert_eq!(
        tiny["rate_limit"],
        json!({"requests": 1, "per_seconds": 60})
    );

    let path = "/admin/v1/accounts/acct_plan";
    let missing = admin(server, Method::GET, path, "").await;
    refused(&missing, StatusCode::NOT_FOUND, "ACCOUNT_NOT_FOUND");
    let unknown = admin(server, Method::PUT, path, r#"{"plan": "gold"}"#).await;
    assert_eq!(bad_field(&unknown), "plan");
    let invalid = admin(server, Method::PUT, path, r#"{"plan": "Gold!"}"#).await;
    assert_eq!(bad_field(&invalid), "plan");

    let (key, _) = create(server, json!({"account_id": "acct_plan", "name": "p"})).await;
    let account = admin(server, Method::GET, path, "").await.json();
    assert_eq!(
        account,
        json!({"account_id": "acct_plan", "plan": "free", "key_count": 1})
    );
    let first = server.get_with_key("/v1/whoami", &key).await;
    assert_eq!(first.status, StatusCode::OK);

    let set = admin(server, Method::PUT, path, r#"{"plan": "tiny"}"#).await;
    assert_eq!(set.status, StatusCode::OK);
    assert_eq!(
        set.json(),
        json!({"account_id": "acct_plan", "plan": "tiny", "key_count": 1})
    );
    assert_eq!(
        admin(server, Method::GET, path, "").await.json()["plan"],
        "tiny"
    );
    // The tiny plan allows one request a minute, so at most one more passes.
    let mut limited = None;
    for _ in 0..2 {
        let answer = server.get_with_key("/v1/whoami", &key).await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(answer);
            break;
        }
        assert_eq!(answer.status, StatusCode::OK);
    }
    let limited = limited.expect("the tiny plan's limit is hit");
    let details = refused(
        &limited,
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMIT_EXCEEDED",
    );
    assert_eq!(details["plan"], "tiny");
    assert_eq!(limited.header("x-ratelimit-limit"), Some("1"));

    let fresh = admin(
        server,
        Method::PUT,
        "/admin/v1/accounts/acct_empty",
        r#"{"plan": "tiny"}"#,
    )
    .await;
    assert_eq!(
        fresh.json()["key_count"],
        0,
        "a plan alone makes an account"
    );
    vec![key]
}

#[tokio::test]
async fn the_admin_api_needs_the_admin_token() {
    let server = TestServer::embedded("").await;
    let key = server.create_key(|_| {}).await;
    let challenge = "Bearer realm=\"cloro-admin\", error=\"invalid_token\"";
    let cases = [
        ("no token", None),
        (
            "wrong token",
            Some("Bearer not_the_admin_token_0123456789abcdef".to_owned()),
        ),
        ("API key", Some(format!("Bearer {key}"))),
        ("not bearer", Some(format!("Basic {ADMIN_TOKEN}"))),
        ("raw token", Some(ADMIN_TOKEN.to_owned())),
    ];
    for (case, authorization) in cases {
        let headers: Vec<(&str, &str)> = authorization
            .as_deref()
            .map(|value| ("authorization", value))
            .into_iter()
            .collect();
        for path in ["/admin/v1/plans", "/admin/v1/nowhere"] {
            let answer = server.send(Method::GET, path, &headers, "").await;
            refused(&answer, StatusCode::UNAUTHORIZED, "INVALID_ADMIN_TOKEN");
            let header = answer.header("www-authenticate").unwrap();
            assert!(header.starts_with(challenge), "{case}: {header}");
            if case == "API key" {
                let message = answer.json()["error"]["message"].clone();
                assert!(
                    message
                        .as_str()
                        .unwrap()
                        .contains("API keys are not admin tokens"),
                    "{message}"
                );
                assert!(!contains(&answer.body, &key));
            }
        }
    }
    let token_as_key = server.get_with_key("/v1/whoami", ADMIN_TOKEN).await;
    assert_eq!(token_as_key.status, StatusCode::UNAUTHORIZED);
    assert_eq!(token_as_key.code(), "INVALID_API_KEY_FORMAT");
    let lower = server
        .send(
            Method::GET,
            "/admin/v1/plans",
            &[("authorization", &format!("bearer {ADMIN_TOKEN}"))],
            "",
        )
        .await;
    assert_eq!(
        lower.status,
        StatusCode::OK,
        "the scheme is case-insensitive"
    );
    server.stop().await;
}

#[tokio::test]
async fn routes_paths_and_methods() {
    let server = TestServer::embedded("").await;
    let nowhere = admin(&server, Method::GET, "/admin/v1/nowhere", "").await;
    refused(&nowhere, StatusCode::NOT_FOUND, "NOT_FOUND");
    let slash = admin(&server, Method::GET, "/admin/v1/keys/", "").await;
    refused(&slash, StatusCode::NOT_FOUND, "NOT_FOUND");
    let delete = admin(&server, Method::DELETE, "/admin/v1/keys/key_x", "").await;
    refused(
        &delete,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
    );
    assert_eq!(delete.header("allow"), Some("GET, HEAD, PATCH"));
    let get_revoke = admin(&server, Method::GET, "/admin/v1/keys/key_x/revoke", "").await;
    refused(
        &get_revoke,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
    );
    for (method, path) in [
        (Method::GET, "/admin/v1/keys/key_0123456789abcdef01234567"),
        (Method::GET, "/admin/v1/keys/not.an.id"),
        (
            Method::POST,
            "/admin/v1/keys/key_0123456789abcdef01234567/revoke",
        ),
        (
            Method::POST,
            "/admin/v1/keys/key_0123456789abcdef01234567/rotate",
        ),
    ] {
        let answer = admin(&server, method, path, "").await;
        refused(&answer, StatusCode::NOT_FOUND, "KEY_NOT_FOUND");
    }
    let patch_missing = admin(
        &server,
        Method::PATCH,
        "/admin/v1/keys/key_0123456789abcdef01234567",
        "{}",
    )
    .await;
    refused(&patch_missing, StatusCode::NOT_FOUND, "KEY_NOT_FOUND");
    let bad_account = admin(&server, Method::GET, "/admin/v1/accounts/a.b", "").await;
    assert_eq!(bad_field(&bad_account), "account_id");
    let stray = admin(&server, Method::GET, "/admin/v1/plans?verbose=1", "").await;
    assert_eq!(bad_field(&stray), "verbose");
    let in_url = admin(&server, Method::GET, "/admin/v1/plans?token=abc", "").await;
    refused(&in_url, StatusCode::BAD_REQUEST, "MALFORMED_AUTHORIZATION");
    server.stop().await;
}

#[tokio::test]
async fn request_bodies_are_validated() {
    let server = TestServer::embedded("").await;
    let post = |body: String| {
        let server = &server;
        async move { admin(server, Method::POST, "/admin/v1/keys", &body).await }
    };
    let base = |extra: &str| format!(r#"{{"account_id": "acct_v", "name": "v"{extra}}}"#);

    assert_eq!(
        bad_field(&post(base(r#", "colour": "red""#)).await),
        "colour"
    );
    assert_eq!(
        bad_field(&post(base(r#", "scopes": ["monitor:read", "Bad Scope"]"#)).await),
        "scopes[1]"
    );
    assert_eq!(
        bad_field(
            &post(base(
                r#", "rate_limit": {"requests": 0, "per_seconds": 60}"#
            ))
            .await
        ),
        "rate_limit.requests"
    );
    assert_eq!(
        bad_field(&post(base(r#", "expires_at": "tomorrow""#)).await),
        "expires_at"
    );
    let past = format!(r#", "expires_at": "{}""#, in_seconds(-1));
    assert_eq!(bad_field(&post(base(&past)).await), "expires_at");
    assert_eq!(
        bad_field(&post(base(r#", "purpose": "fun""#)).await),
        "purpose"
    );
    assert_eq!(
        bad_field(&post(r#"{"name": "no account"}"#.to_owned()).await),
        "account_id"
    );
    assert_eq!(
        bad_field(&post(r#"{"account_id": "a b", "name": "x"}"#.to_owned()).await),
        "account_id"
    );
    assert_eq!(bad_field(&post(base("").replace('}', "")).await), "body");
    assert_eq!(bad_field(&post("not json".to_owned()).await), "body");
    assert_eq!(bad_field(&post(String::new()).await), "body");
    let huge = base(&format!(
        r#", "metadata": {{"x": "{}"}}"#,
        "y".repeat(70_000)
    ));
    assert_eq!(bad_field(&post(huge).await), "body");

    let (_, info) = create(&server, json!({"account_id": "acct_v", "name": "v"})).await;
    let id = info["id"].as_str().unwrap();
    let patch = |body: &'static str| {
        let path = format!("/admin/v1/keys/{id}");
        let server = &server;
        async move { admin(server, Method::PATCH, &path, body).await }
    };
    assert_eq!(bad_field(&patch(r#"{"enabld": false}"#).await), "enabld");
    assert_eq!(bad_field(&patch(r#"{"scopes": null}"#).await), "scopes");
    assert_eq!(bad_field(&patch("").await), "body");
    let rotate = admin(
        &server,
        Method::POST,
        &format!("/admin/v1/keys/{id}/rotate"),
        r#"{"grace_period_seconds": -5}"#,
    )
    .await;
    assert_eq!(bad_field(&rotate), "grace_period_seconds");
    let revoke = admin(
        &server,
        Method::POST,
        &format!("/admin/v1/keys/{id}/revoke"),
        r#"{"why": "x"}"#,
    )
    .await;
    assert_eq!(bad_field(&revoke), "why");
    server.stop().await;
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}
