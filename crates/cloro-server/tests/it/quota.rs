//! Quotas, credits and route costs over real HTTP (SPEC §11): exact under
//! concurrency on one node and across three nodes on one Redis and on a
//! Redis Cluster, period edges on an injected clock, refills that set
//! rather than add, answers and headers, admin routes and bad values.

use std::time::Duration;

use cloro_auth_core::wire::CreateKeyRequest;
use cloro_auth_core::{AccountId, ApiKey};
use cloro_keystore::Clock;
use cloro_server::config::{Flags, Settings};
use cloro_test_support::{RedisCluster, RedisServer};
use futures_util::future::join_all;
use http::{Method, StatusCode};
use jiff::{SignedDuration, Timestamp};

use crate::support::{ADMIN_TOKEN, Answer, TestServer};

/// A plan with a monthly quota of 100 and a rate limit that never binds.
const METERED: &str = r#"
default_plan = "metered"
[plans.metered]
rate_limit = { requests = 100000, per_seconds = 1 }
quota = { requests = 100, period = "month" }
"#;

/// No quota on the plan; `GET /v1/whoami` costs 10.
const COSTLY: &str = r#"
default_plan = "free"
[plans.free]
rate_limit = { requests = 100000, per_seconds = 1 }
[route_costs]
"GET /v1/whoami" = 10
"#;

async fn admin(server: &TestServer, method: Method, path: &str, body: &str) -> Answer {
    admin_with(server, method, path, &[], body).await
}

async fn admin_with(
    server: &TestServer,
    method: Method,
    path: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> Answer {
    let authorization = format!("Bearer {ADMIN_TOKEN}");
    let mut headers = vec![
        ("authorization", authorization.as_str()),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    server.send(method, path, &headers, body).await
}

/// Creates a key of `account` through the admin API; its plaintext and id.
async fn create(server: &TestServer, account: &str, extra: &str) -> (String, String) {
    let body = format!(r#"{{"account_id":"{account}","name":"metered"{extra}}}"#);
    let answer = admin(server, Method::POST, "/admin/v1/keys", &body).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.json());
    let json = answer.json();
    (
        json["key"].as_str().unwrap().to_owned(),
        json["key_info"]["id"].as_str().unwrap().to_owned(),
    )
}

async fn whoami(server: &TestServer, key: &str) -> Answer {
    server.get_with_key("/v1/whoami", key).await
}

/// Sends `count` requests at once, spread round-robin over `servers`;
/// answers how many passed and how many were refused for quota.
async fn burst(servers: &[&TestServer], key: &str, count: usize) -> (usize, usize) {
    let answers = join_all((0..count).map(|i| whoami(servers[i % servers.len()], key))).await;
    let passed = answers
        .iter()
        .filter(|a| a.status == StatusCode::OK)
        .count();
    let refused = answers
        .iter()
        .filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS && a.code() == "QUOTA_EXCEEDED")
        .count();
    assert_eq!(
        passed + refused,
        count,
        "every answer is a pass or QUOTA_EXCEEDED"
    );
    (passed, refused)
}

async fn quota_used(server: &TestServer, account: &str) -> serde_json::Value {
    let answer = admin(
        server,
        Method::GET,
        &format!("/admin/v1/accounts/{account}/quota"),
        "",
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json());
    answer.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_of_100_lets_exactly_100_of_300_concurrent_requests_through_on_one_node() {
    let server = TestServer::embedded(METERED).await;
    let (key, _) = create(&server, "acct_q1", "").await;
    let first = whoami(&server, &key).await;
    assert_eq!(first.status, StatusCode::OK);
    let policy = first.header("ratelimit-policy").unwrap();
    assert!(policy.contains(r#""quota";q=100;w="#), "{policy}");
    let state = first.header("ratelimit").unwrap();
    assert!(state.contains(r#""quota";r=99;t="#), "{state}");
    let (passed, refused) = burst(&[&server], &key, 300).await;
    assert_eq!((passed, refused), (99, 201));
    let used = quota_used(&server, "acct_q1").await;
    assert_eq!(
        (used["used"].as_u64(), used["remaining"].as_u64()),
        (Some(100), Some(0))
    );
    assert_eq!(used["quota"]["requests"], 100);

    let refusal = whoami(&server, &key).await;
    let details = &refusal.json()["error"]["details"];
    assert_eq!(details["limit"], "quota");
    assert_eq!(details["plan"], "metered");
    let resets_at: Timestamp = details["resets_at"].as_str().unwrap().parse().unwrap();
    assert!(resets_at > Timestamp::now());
    let retry_after: i64 = refusal.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(details["retry_after"].as_i64(), Some(retry_after));
    assert!(
        refusal
            .header("ratelimit")
            .unwrap()
            .contains(r#""quota";r=0;"#)
    );
    server.stop().await;
}

async fn three_nodes_share_one_quota(nodes: [TestServer; 3], account: &str) {
    let [a, b, c] = &nodes;
    let (key, _) = create(a, account, "").await;
    let (passed, refused) = burst(&[a, b, c], &key, 300).await;
    assert_eq!(
        (passed, refused),
        (100, 200),
        "exactly the quota, across nodes"
    );
    let used = quota_used(c, account).await;
    assert_eq!(used["used"].as_u64(), Some(100));
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_one_redis_let_exactly_the_quota_through() {
    let redis = RedisServer::start();
    let url = redis.url();
    let nodes = [
        TestServer::redis(&url, METERED).await,
        TestServer::redis(&url, METERED).await,
        TestServer::redis(&url, METERED).await,
    ];
    three_nodes_share_one_quota(nodes, "acct_q3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_a_redis_cluster_let_exactly_the_quota_through() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 0))
        .await
        .unwrap();
    let seeds = cluster.seeds();
    let node = || async {
        let flags = Flags {
            redis_url: Some(seeds.clone()),
            redis_cluster: Some(true),
            ..Flags::default()
        };
        TestServer::start(Settings::from_toml(flags, METERED).unwrap(), None).await
    };
    let nodes = [node().await, node().await, node().await];
    three_nodes_share_one_quota(nodes, "acct_qc").await;
}

/// Credits of 95 at a cost of 10: nine requests, and the tenth refused
/// without being charged; refused for good (nothing refills).
async fn credits_pay_for_whole_requests_only(server: TestServer) {
    let (key, id) = create(&server, "acct_cr", r#","credits":95"#).await;
    let mut passed = 0u64;
    for _ in 0..10 {
        let answer = whoami(&server, &key).await;
        if answer.status == StatusCode::OK {
            passed += 1;
            assert_eq!(
                answer.json()["credits"].as_u64(),
                Some(95 - 10 * passed),
                "whoami shows the balance after the request"
            );
        } else {
            assert_eq!(answer.code(), "QUOTA_EXCEEDED");
            let details = &answer.json()["error"]["details"];
            assert_eq!(details["limit"], "credits");
            assert!(details["resets_at"].is_null(), "nothing refills: {details}");
            assert!(details.get("retry_after").is_none());
            assert_eq!(answer.header("retry-after"), None);
        }
    }
    assert_eq!(passed, 9);
    let info = admin(&server, Method::GET, &format!("/admin/v1/keys/{id}"), "").await;
    assert_eq!(
        info.json()["credits"].as_u64(),
        Some(5),
        "the refusal cost nothing"
    );
    server.stop().await;
}

#[tokio::test]
async fn credits_and_route_costs_on_the_embedded_store() {
    credits_pay_for_whole_requests_only(TestServer::embedded(COSTLY).await).await;
}

#[tokio::test]
async fn credits_and_route_costs_on_redis() {
    let redis = RedisServer::start();
    credits_pay_for_whole_requests_only(TestServer::redis(&redis.url(), COSTLY).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_are_exact_across_three_nodes_on_redis() {
    let redis = RedisServer::start();
    let url = redis.url();
    let nodes = [
        TestServer::redis(&url, COSTLY).await,
        TestServer::redis(&url, COSTLY).await,
        TestServer::redis(&url, COSTLY).await,
    ];
    let [a, b, c] = &nodes;
    let (key, id) = create(a, "acct_crn", r#","credits":995"#).await;
    let (passed, refused) = burst(&[a, b, c], &key, 150).await;
    assert_eq!((passed, refused), (99, 51));
    let info = admin(b, Method::GET, &format!("/admin/v1/keys/{id}"), "").await;
    assert_eq!(info.json()["credits"].as_u64(), Some(5));
    for node in nodes {
        node.stop().await;
    }
}

/// The last second of January, then February; leap day quotas per day.
async fn quotas_start_again_at_each_period(server: TestServer, clock: Clock) {
    let (key, id) = create(&server, "acct_edge", "").await;
    let quota = r#"{"quota":{"requests":2,"period":"month"}}"#;
    let patched = admin(
        &server,
        Method::PATCH,
        &format!("/admin/v1/keys/{id}"),
        quota,
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.json());
    assert_eq!(patched.json()["quota"]["period"], "month");
    // Changes reach the verifier's cache through the invalidation.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..2 {
        assert_eq!(whoami(&server, &key).await.status, StatusCode::OK);
    }
    let refused = whoami(&server, &key).await;
    assert_eq!(refused.code(), "QUOTA_EXCEEDED");
    assert_eq!(refused.header("retry-after"), Some("1"));
    let details = &refused.json()["error"]["details"];
    assert_eq!(details["resets_at"], "2027-01-01T00:00:00Z");
    assert!(
        details.get("plan").is_none(),
        "the key's own quota: {details}"
    );
    clock.advance(SignedDuration::from_secs(1));
    assert_eq!(
        whoami(&server, &key).await.status,
        StatusCode::OK,
        "1 January starts a new month"
    );

    // 29 February 2028: a day quota counts the leap day on its own.
    clock.advance(SignedDuration::from_hours(24 * 424));
    assert_eq!(clock.now().to_string(), "2028-02-29T00:00:00Z");
    let day = r#"{"quota":{"requests":1,"period":"day"}}"#;
    let patched = admin(&server, Method::PATCH, &format!("/admin/v1/keys/{id}"), day).await;
    assert_eq!(patched.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(whoami(&server, &key).await.status, StatusCode::OK);
    clock.advance(SignedDuration::from_secs(86_399));
    let refused = whoami(&server, &key).await;
    assert_eq!(
        refused.json()["error"]["details"]["resets_at"],
        "2028-03-01T00:00:00Z"
    );
    clock.advance(SignedDuration::from_secs(1));
    assert_eq!(whoami(&server, &key).await.status, StatusCode::OK);
    server.stop().await;
}

fn new_years_eve() -> Clock {
    Clock::manual("2026-12-31T23:59:59Z".parse().unwrap())
}

#[tokio::test]
async fn period_edges_on_the_embedded_store() {
    let clock = new_years_eve();
    let server =
        TestServer::embedded_with_clock(COSTLY.replace("= 10", "= 1").as_str(), clock.clone())
            .await;
    quotas_start_again_at_each_period(server, clock).await;
}

#[tokio::test]
async fn period_edges_on_redis() {
    let redis = RedisServer::start();
    let clock = new_years_eve();
    let server = TestServer::redis_with_clock(
        &redis.url(),
        COSTLY.replace("= 10", "= 1").as_str(),
        clock.clone(),
    )
    .await;
    quotas_start_again_at_each_period(server, clock).await;
}

/// A daily refill sets the balance at midnight, whatever was added.
async fn refills_set_rather_than_add(server: TestServer, clock: Clock) {
    let body = r#","credits":2,"refill":{"amount":3,"interval":"day"}"#;
    let (key, id) = create(&server, "acct_refill", body).await;
    for _ in 0..2 {
        assert_eq!(whoami(&server, &key).await.status, StatusCode::OK);
    }
    let refused = whoami(&server, &key).await;
    assert_eq!(refused.code(), "QUOTA_EXCEEDED");
    assert_eq!(refused.header("retry-after"), Some("1"), "until midnight");
    assert_eq!(
        refused.json()["error"]["details"]["resets_at"],
        "2027-01-01T00:00:00Z"
    );
    let added = admin(
        &server,
        Method::POST,
        &format!("/admin/v1/keys/{id}/credits"),
        r#"{"add":10}"#,
    )
    .await;
    assert_eq!(added.json()["credits"].as_u64(), Some(10));
    clock.advance(SignedDuration::from_secs(1));
    let info = admin(&server, Method::GET, &format!("/admin/v1/keys/{id}"), "").await;
    assert_eq!(
        info.json()["credits"].as_u64(),
        Some(3),
        "set to the refill, not added"
    );
    assert_eq!(whoami(&server, &key).await.status, StatusCode::OK);
    let info = admin(&server, Method::GET, &format!("/admin/v1/keys/{id}"), "").await;
    assert_eq!(info.json()["credits"].as_u64(), Some(2));
    server.stop().await;
}

#[tokio::test]
async fn refills_on_the_embedded_store() {
    let clock = new_years_eve();
    let server = TestServer::embedded_with_clock(METERED, clock.clone()).await;
    refills_set_rather_than_add(server, clock).await;
}

#[tokio::test]
async fn refills_on_redis() {
    let redis = RedisServer::start();
    let clock = new_years_eve();
    let server = TestServer::redis_with_clock(&redis.url(), METERED, clock.clone()).await;
    refills_set_rather_than_add(server, clock).await;
}

#[tokio::test]
async fn rotation_hands_on_the_balance_and_the_key_quota() {
    let server = TestServer::embedded(COSTLY).await;
    let quota = r#","credits":30,"quota":{"requests":50,"period":"day"}"#;
    let (old, id) = create(&server, "acct_rot", quota).await;
    assert_eq!(whoami(&server, &old).await.status, StatusCode::OK);
    let rotated = admin(
        &server,
        Method::POST,
        &format!("/admin/v1/keys/{id}/rotate"),
        r#"{"grace_period_seconds":3600}"#,
    )
    .await;
    assert_eq!(rotated.status, StatusCode::CREATED);
    let json = rotated.json();
    assert_eq!(json["key_info"]["credits"].as_u64(), Some(20));
    assert_eq!(json["key_info"]["quota"]["requests"], 50);
    let new = json["key"].as_str().unwrap();
    // One balance for both: 20 credits are two requests of 10, in total.
    assert_eq!(whoami(&server, new).await.status, StatusCode::OK);
    assert_eq!(whoami(&server, &old).await.status, StatusCode::OK);
    assert_eq!(whoami(&server, new).await.code(), "QUOTA_EXCEEDED");
    server.stop().await;
}

#[tokio::test]
async fn the_same_credits_add_sent_five_times_adds_once() {
    let server = TestServer::embedded("").await;
    let (_, id) = create(&server, "acct_idem", r#","credits":1"#).await;
    let path = format!("/admin/v1/keys/{id}/credits");
    let header = [("idempotency-key", "add-100-once")];
    for attempt in 0..5 {
        let answer = admin_with(&server, Method::POST, &path, &header, r#"{"add":100}"#).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json());
        assert_eq!(answer.json()["credits"].as_u64(), Some(101));
        assert_eq!(
            answer.header("idempotent-replayed").is_some(),
            attempt > 0,
            "attempt {attempt}"
        );
    }
    let info = admin(&server, Method::GET, &format!("/admin/v1/keys/{id}"), "").await;
    assert_eq!(info.json()["credits"].as_u64(), Some(101));
    let other = admin_with(&server, Method::POST, &path, &header, r#"{"add":5}"#).await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    assert_eq!(other.code(), "IDEMPOTENCY_KEY_REUSED");
    server.stop().await;
}

#[tokio::test]
async fn quota_and_credits_survive_a_restart_of_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let settings = || {
        let flags = Flags {
            data_dir: Some(dir.path().to_owned()),
            ..Flags::default()
        };
        Settings::from_toml(flags, METERED).unwrap()
    };
    let server = TestServer::start(settings(), None).await;
    let mut request = CreateKeyRequest::new(AccountId::new("acct_keep").unwrap(), "kept");
    request.credits = Some(50);
    let issued = server
        .app
        .admin()
        .create(request, "test", Timestamp::now())
        .await
        .unwrap();
    let key: ApiKey = issued.key;
    for _ in 0..7 {
        assert_eq!(
            whoami(&server, key.expose_secret()).await.status,
            StatusCode::OK
        );
    }
    // A graceful stop writes the ledger (SPEC §11: at shutdown).
    server.stop().await;
    let server = TestServer::start(settings(), None).await;
    assert_eq!(
        quota_used(&server, "acct_keep").await["used"].as_u64(),
        Some(7)
    );
    let info = admin(
        &server,
        Method::GET,
        &format!("/admin/v1/keys/{}", issued.record.id),
        "",
    )
    .await;
    assert_eq!(info.json()["credits"].as_u64(), Some(43));
    server.stop().await;
}

#[tokio::test]
async fn bad_quota_credit_and_refill_values_are_a_400_naming_the_field() {
    let server = TestServer::embedded("").await;
    let (_, id) = create(&server, "acct_bad", "").await;
    let creates = [
        (r#""quota":{"requests":0,"period":"month"}"#, "quota"),
        (r#""quota":{"requests":10,"period":"week"}"#, "quota"),
        (r#""quota":{"requests":10}"#, "quota"),
        (
            r#""quota":{"requests":10,"period":"day","per":"x"}"#,
            "quota",
        ),
        (r#""credits":-1"#, "credits"),
        (r#""credits":1.5"#, "credits"),
        (r#""credits":9007199254740992"#, "credits"),
        (r#""refill":{"amount":5,"interval":"year"}"#, "refill"),
        (r#""refill":{"amount":-5,"interval":"day"}"#, "refill"),
    ];
    for (extra, field) in creates {
        let body = format!(r#"{{"account_id":"acct_bad","name":"n",{extra}}}"#);
        let answer = admin(&server, Method::POST, "/admin/v1/keys", &body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{extra}");
        assert_eq!(answer.code(), "INVALID_REQUEST");
        let named = answer.json()["error"]["details"]["field"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(named.starts_with(field), "{extra}: field {named}");
    }
    let path = format!("/admin/v1/keys/{id}/credits");
    for (body, field) in [
        (r#"{"set":1,"add":1}"#, "add"),
        ("{}", "set"),
        (r#"{"add":5}"#, "add"),
        (r#"{"set":-1}"#, "set"),
        (r#"{"sett":1}"#, "sett"),
    ] {
        let answer = admin(&server, Method::POST, &path, body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        let named = answer.json()["error"]["details"]["field"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(named.starts_with(field), "{body}: field {named}");
    }
    let missing = admin(
        &server,
        Method::POST,
        "/admin/v1/keys/key_nope/credits",
        r#"{"set":1}"#,
    )
    .await;
    assert_eq!(missing.code(), "KEY_NOT_FOUND");
    let no_account = admin(
        &server,
        Method::GET,
        "/admin/v1/accounts/acct_none/quota",
        "",
    )
    .await;
    assert_eq!(no_account.code(), "ACCOUNT_NOT_FOUND");
    server.stop().await;

    for (toml, needle) in [
        (
            "[route_costs]\n\"GET /v1/x\" = 9007199254740992",
            "route_costs",
        ),
        ("[route_costs]\n\"GET v1\" = 2", "route_costs"),
        ("[route_costs]\n\"GET /v1/x\" = -2", "line 2"),
        (
            "[plans.p]\nrate_limit = { requests = 1, per_seconds = 1 }\nquota = { requests = 0, period = \"day\" }\ndefault_plan = \"p\"",
            "quota",
        ),
    ] {
        let error = Settings::from_toml(Flags::default(), toml)
            .unwrap_err()
            .to_string();
        assert!(error.contains(needle), "{toml}: {error}");
    }
}

#[tokio::test]
async fn a_plan_quota_per_key_counts_each_key_on_its_own() {
    let toml = METERED.replace(
        r#"quota = { requests = 100, period = "month" }"#,
        r#"quota = { requests = 2, period = "month", applies_to = "key" }"#,
    );
    let server = TestServer::embedded(&toml).await;
    let (first, _) = create(&server, "acct_pk", "").await;
    let (second, _) = create(&server, "acct_pk", "").await;
    for key in [&first, &second] {
        let (passed, _) = burst(&[&server], key, 4).await;
        assert_eq!(passed, 2);
    }
    let plans = admin(&server, Method::GET, "/admin/v1/plans", "").await;
    assert_eq!(plans.json()["plans"][0]["quota"]["applies_to"], "key");
    let quota = quota_used(&server, "acct_pk").await;
    assert!(quota["used"].is_null(), "no account-wide count: {quota}");
    server.stop().await;
}

/// A credit change retried after a timeout (the first run applied, the
/// answer was lost) must not add twice: the Redis ledger remembers the
/// operation, the request's `Idempotency-Key`.
#[tokio::test]
async fn a_credit_operation_applies_once_on_redis() {
    let redis = RedisServer::start();
    let server = TestServer::redis(&redis.url(), "").await;
    let (_, id) = create(&server, "acct_once", r#","credits":5"#).await;
    let ledger = server.app.guard().verifier().ledger().clone();
    let account = AccountId::new("acct_once").unwrap();
    let meter = cloro_auth_core::KeyId::new(&id).unwrap();
    for _ in 0..3 {
        let balance = ledger
            .adjust_credits_once(
                &account,
                &meter,
                cloro_keystore::CreditsChange::Add(10),
                None,
                "retry-me",
            )
            .await
            .unwrap();
        assert_eq!(balance, 15);
    }
    let other = ledger
        .adjust_credits_once(
            &account,
            &meter,
            cloro_keystore::CreditsChange::Add(1),
            None,
            "next",
        )
        .await
        .unwrap();
    assert_eq!(other, 16);
    server.stop().await;
}
