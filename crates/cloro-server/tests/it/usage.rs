//! Usage analytics end to end (SPEC §10): real requests answered with each
//! outcome, counted per key and minute, read back over the admin API for
//! a key and for its account, exact as the sum over two Redis nodes.

use std::num::NonZeroU32;

use cloro_auth_core::Scope;
use cloro_auth_core::wire::RateLimitPolicy;
use cloro_test_support::RedisServer;
use http::{Method, StatusCode};

use crate::support::{ADMIN_TOKEN, Answer, TestServer};

/// `POST /v1/monitor` needs `monitor:write` (asked through the verify
/// endpoint, as a proxy would).
const SCOPED: &str = "[route_scopes]\n\"POST /v1/monitor\" = \"monitor:write\"\n";

async fn admin(server: &TestServer, path: &str) -> Answer {
    server
        .send(
            Method::GET,
            path,
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            "",
        )
        .await
}

/// A key of `acct_test` with `usage:read` and at most 3 requests a minute.
async fn limited_key(server: &TestServer) -> (String, String) {
    let key = server
        .create_key(|request| {
            request.scopes = vec![Scope::new("monitor:write").unwrap()];
            let three = NonZeroU32::new(3).unwrap();
            request.rate_limit = Some(RateLimitPolicy {
                burst: Some(three),
                ..RateLimitPolicy::new(three, NonZeroU32::new(60).unwrap())
            });
        })
        .await;
    let id = server.get_with_key("/v1/whoami", &key).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (key, id)
}

#[tokio::test]
async fn every_outcome_is_counted_per_key_and_summed_per_account() {
    let server = TestServer::embedded(SCOPED).await;
    let (limited, limited_id) = limited_key(&server).await;
    let unscoped = server
        .create_key(|request| request.scopes = vec![Scope::new("monitor:read").unwrap()])
        .await;
    let revoked = server
        .create_key(|request| request.scopes = vec![Scope::new("monitor:write").unwrap()])
        .await;
    let revoked_id = server.get_with_key("/v1/whoami", &revoked).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .send(
            Method::POST,
            &format!("/admin/v1/keys/{revoked_id}/revoke"),
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            "",
        )
        .await;

    // 3 let through in all (one above), then 2 rate limited.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(server.get_with_key("/v1/whoami", &limited).await.status);
    }
    assert_eq!(statuses[..2], [StatusCode::OK, StatusCode::OK]);
    assert_eq!(statuses[2..], [StatusCode::TOO_MANY_REQUESTS; 2]);
    let forbidden = server
        .send(
            Method::POST,
            "/auth/verify/v1/monitor",
            &[("authorization", &format!("Bearer {unscoped}"))],
            "",
        )
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    for _ in 0..2 {
        assert_eq!(
            server.get_with_key("/v1/whoami", &revoked).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // Unknown keys belong to no key.
    server
        .get_with_key(
            "/v1/whoami",
            "sk_live_0000000000000000000000000000000000000000ffffffff",
        )
        .await;
    server.app.flush_usage().await;

    let usage = admin(
        &server,
        &format!("/admin/v1/keys/{limited_id}/usage?granularity=minute"),
    )
    .await;
    assert_eq!(usage.status, StatusCode::OK, "{}", usage.json());
    let usage = usage.json();
    assert_eq!(usage["granularity"], "minute");
    // The last 24 hours: from the minute holding "24 h ago" to the one
    // holding now (1,441 buckets, or 1,440 on the dot).
    let buckets = usage["buckets"].as_array().unwrap().len();
    assert!((1440..=1441).contains(&buckets), "{buckets}");
    assert_eq!(usage["totals"]["valid"], 3);
    assert_eq!(usage["totals"]["rate_limited"], 2);
    assert_eq!(usage["totals"]["forbidden"], 0);
    let busy: Vec<&serde_json::Value> = usage["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|bucket| {
            bucket["valid"].as_u64() > Some(0) || bucket["rate_limited"].as_u64() > Some(0)
        })
        .collect();
    assert!(
        (1..=2).contains(&busy.len()),
        "the counts are in this minute (or the last): {busy:?}"
    );

    let account = admin(&server, "/admin/v1/accounts/acct_test/usage")
        .await
        .json();
    assert_eq!(account["granularity"], "hour");
    // The revoked key's first call, and the unscoped key's none.
    assert_eq!(account["totals"]["valid"], 4, "{account}");
    assert_eq!(account["totals"]["rate_limited"], 2);
    assert_eq!(account["totals"]["forbidden"], 1);
    assert_eq!(account["totals"]["revoked"], 2);
    let keys = account["keys"].as_array().unwrap();
    assert_eq!(keys[0]["key_id"], limited_id.as_str(), "busiest first");
    assert_eq!(keys.len(), 3);

    // Bad input: a 400 naming the field.
    for (query, field) in [
        ("granularity=week", "granularity"),
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("granularity=minute&from=2020-01-01T00:00:00Z", "from"),
        ("limit=3", "limit"),
        ("granularity=Minute", "granularity"),
        ("granularity=minute&granularity=day", "granularity"),
        ("from=2026-12-03T10:00:00Z&to=2026-12-03T09:00:00Z", "from"),
    ] {
        let answer = admin(
            &server,
            &format!("/admin/v1/keys/{limited_id}/usage?{query}"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(answer.json()["error"]["details"]["field"], field, "{query}");
    }
    let missing = admin(&server, "/admin/v1/keys/key_missing/usage").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let nobody = admin(&server, "/admin/v1/accounts/acct_nobody/usage").await;
    assert_eq!(nobody.status, StatusCode::NOT_FOUND);
    server.stop().await;
}

/// Two nodes on one Redis: the stored counts are the exact sum of both.
#[tokio::test]
async fn two_redis_nodes_add_up_exactly() {
    let redis = RedisServer::start();
    let nodes = [
        TestServer::redis(&redis.url(), "").await,
        TestServer::redis(&redis.url(), "").await,
    ];
    let key = nodes[0].create_key(|_| {}).await;
    let id = nodes[0].get_with_key("/v1/whoami", &key).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for n in 0..9 {
        nodes[n % 2].get_with_key("/v1/whoami", &key).await;
    }
    for node in &nodes {
        node.app.flush_usage().await;
    }
    // A second flush has nothing new: nothing is counted twice.
    for node in &nodes {
        node.app.flush_usage().await;
    }
    let usage = admin(
        &nodes[1],
        &format!("/admin/v1/keys/{id}/usage?granularity=day"),
    )
    .await;
    assert_eq!(usage.json()["totals"]["valid"], 10, "{}", usage.json());
    for node in nodes {
        node.stop().await;
    }
}
