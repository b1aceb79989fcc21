//! Plan quotas on Redis through the verifier, and what a Redis outage does
//! to them (SPEC §11): while the private redis-server is paused, a node
//! spends only its share of the last remaining count it saw (all of it with
//! one live node, half each with two), is refused `QUOTA_EXCEEDED` once
//! that is spent (never unlimited), and answers `AUTH_UNAVAILABLE` for a
//! quota it never saw; once Redis is back, the shared count is used again.
//!
//! Request times are chosen (`VerifyRequest::now`), never read from a
//! clock, so the quota's month is fixed; the rate limit is far above what
//! the tests send, so only the quota refuses.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use cloro_auth_core::wire::{CreateKeyRequest, QuotaPeriod, QuotaPolicy, RateLimitPolicy};
use cloro_auth_core::{AccountId, ApiKey, AuthError, ErrorCode, PlanName, QuotaLimit};
use cloro_keystore::{
    KeyAdmin, Ledger, LocalNotifier, Plan, Plans, QuotaSubject, RedisLedger, RedisOptions,
    RedisRateLimiter, RedisStore, SharedRateLimiter, Verified, Verifier, VerifierConfig,
    VerifyRequest, Window,
};
use cloro_test_support::RedisServer;
use jiff::{SignedDuration, Timestamp};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11));

/// The plan's quota per account and month.
const QUOTA: u64 = 10;

/// Ten seconds before July 2031: the tests cross into July on purpose.
fn june_end() -> Timestamp {
    "2031-06-30T23:59:50Z".parse().unwrap()
}

fn plan_name() -> PlanName {
    PlanName::new("metered").unwrap()
}

/// One plan, the default: a monthly quota of [`QUOTA`] per account and a
/// rate limit no test reaches.
fn plans(quota: u64) -> Arc<Plans> {
    let unlimited = RateLimitPolicy::new(
        NonZeroU32::new(1_000_000).unwrap(),
        NonZeroU32::new(1).unwrap(),
    );
    let plan = Plan {
        rate_limit: unlimited,
        concurrency_limit: None,
        quota: Some(QuotaPolicy {
            requests: quota,
            period: QuotaPeriod::Month,
            applies_to: None,
        }),
    };
    Arc::new(Plans::new(plan_name(), BTreeMap::from([(plan_name(), plan)])).unwrap())
}

/// One server node: its own connection, limiter, ledger and verifier.
struct Node {
    verifier: Arc<Verifier>,
    ledger: Arc<RedisLedger>,
    admin: KeyAdmin,
}

fn node(server: &RedisServer, plans: &Arc<Plans>) -> Node {
    let store = Arc::new(RedisStore::connect(&server.url(), RedisOptions::default()).unwrap());
    let limiter: Arc<dyn SharedRateLimiter> = Arc::new(RedisRateLimiter::new(store.connection()));
    let ledger = Arc::new(RedisLedger::new(store.connection()));
    let config = VerifierConfig {
        store_timeout: Duration::from_millis(250),
        // Long enough that no cached key expires during a test, also when
        // the chosen time moves into the next month.
        cache_ttl: Duration::from_secs(3600),
        ..Default::default()
    };
    let verifier = Verifier::with_ledger(
        store.clone(),
        plans.clone(),
        Some(limiter),
        ledger.clone(),
        &config,
    );
    let admin = KeyAdmin::new(store, plans.clone(), Arc::new(LocalNotifier::default()))
        .with_ledger(ledger.clone());
    Node {
        verifier,
        ledger,
        admin,
    }
}

async fn create(node: &Node, account: &str) -> ApiKey {
    let request = CreateKeyRequest::new(AccountId::new(account).unwrap(), "metered key");
    node.admin
        .create(request, "admin", Timestamp::now())
        .await
        .unwrap()
        .key
}

async fn verify(node: &Node, key: &ApiKey, now: Timestamp) -> Result<Verified, AuthError> {
    let header = format!("Bearer {}", key.expose_secret());
    let request = VerifyRequest {
        client: CLIENT,
        required_scope: None,
        limit_concurrency: false,
        cost: 1,
        now,
    };
    node.verifier
        .verify([header.as_bytes()], &request)
        .await
        .map_err(|refused| refused.error)
}

/// The quota left after an allowed request.
async fn quota_left(node: &Node, key: &ApiKey, now: Timestamp) -> u64 {
    verify(node, key, now)
        .await
        .unwrap()
        .quota
        .expect("the plan's quota ran")
        .remaining
}

fn fallbacks(node: &Node) -> u64 {
    node.verifier.stats().limiter_fallbacks.get()
}

/// What Redis has counted against `account`'s quota in June 2031.
async fn used_in_june(node: &Node, account: &str) -> u64 {
    node.ledger
        .quota_used(
            &AccountId::new(account).unwrap(),
            &QuotaSubject::Account,
            &Window::containing(QuotaPeriod::Month, june_end()),
        )
        .await
        .unwrap()
}

/// Asserts a plan quota refusal.
fn assert_quota_exceeded(result: Result<Verified, AuthError>) {
    match result {
        Err(AuthError::QuotaExceeded {
            limit,
            plan,
            resets_at,
            ..
        }) => {
            assert_eq!(limit, QuotaLimit::Quota);
            assert_eq!(plan, Some(plan_name()));
            assert_eq!(
                resets_at,
                Some(
                    "2031-07-01T00:00:00Z"
                        .parse::<Timestamp>()
                        .unwrap()
                        .as_second()
                )
            );
        }
        other => panic!("expected QUOTA_EXCEEDED, got {other:?}"),
    }
}

/// Spends `node`'s share of `key`'s quota during an outage: answers the
/// remaining counts of the requests allowed, until the first refusal,
/// which must be `QUOTA_EXCEEDED`.
async fn spend_share(node: &Node, key: &ApiKey, now: Timestamp, at_most: usize) -> Vec<u64> {
    let mut left = Vec::new();
    for _ in 0..at_most {
        match verify(node, key, now).await {
            Ok(verified) => left.push(verified.quota.unwrap().remaining),
            refused => {
                assert_quota_exceeded(refused);
                return left;
            }
        }
    }
    panic!("still allowed after {at_most} requests during the outage: {left:?}");
}

/// Waits until `node` answers from Redis again: a request that did not
/// fall back. Answers that request's result.
async fn until_redis_answers(
    node: &Node,
    key: &ApiKey,
    now: Timestamp,
) -> Result<Verified, AuthError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let before = fallbacks(node);
        let result = verify(node, key, now).await;
        if fallbacks(node) == before {
            return result;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "redis not used again 10 s after it resumed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_an_outage_one_node_spends_only_what_was_left_and_nothing_it_never_saw() {
    let server = RedisServer::start();
    let plans = plans(QUOTA);
    let a = node(&server, &plans);
    let key = create(&a, "acct_outage").await;
    let now = june_end();
    // Counts this node as the only live one while Redis answers.
    a.verifier.maintain(now).await.unwrap();
    for expected in [9, 8, 7] {
        assert_eq!(quota_left(&a, &key, now).await, expected);
    }
    assert_eq!(fallbacks(&a), 0, "answered by redis");
    assert_eq!(used_in_june(&a, "acct_outage").await, 3);

    server.pause();
    // The node's share is all 7 that were left: exactly those pass, with
    // counts that keep going down, then QUOTA_EXCEEDED, never unlimited.
    let during = spend_share(&a, &key, now, 20).await;
    assert_eq!(during, vec![6, 5, 4, 3, 2, 1, 0]);
    assert_quota_exceeded(verify(&a, &key, now).await);
    assert_eq!(
        fallbacks(&a),
        9,
        "every request during the outage fell back"
    );
    // July has started and this node never saw July's count: it cannot
    // know what is left, so it answers AUTH_UNAVAILABLE.
    let july = now + SignedDuration::from_secs(15);
    assert_eq!(
        verify(&a, &key, july).await.unwrap_err(),
        AuthError::AuthUnavailable { retry_after: 1 }
    );

    server.resume();
    // Redis answers again and counts for itself: whatever it had queued
    // from the outage has run by then (one connection, in order), and the
    // next request adds exactly one to its count.
    until_redis_answers(&a, &key, now).await.ok();
    let used = used_in_june(&a, "acct_outage").await;
    assert!((3..=QUOTA).contains(&used), "redis counted {used}");
    let after = verify(&a, &key, now).await;
    if used < QUOTA {
        assert_eq!(after.unwrap().quota.unwrap().remaining, QUOTA - used - 1);
        assert_eq!(used_in_june(&a, "acct_outage").await, used + 1);
    } else {
        assert_quota_exceeded(after);
        assert_eq!(used_in_june(&a, "acct_outage").await, QUOTA);
    }
    // July, which the node could not judge, is judged by Redis again.
    let fallbacks_before = fallbacks(&a);
    let in_july = verify(&a, &key, july).await.unwrap().quota.unwrap();
    assert!(in_july.remaining < QUOTA, "{in_july:?}");
    assert_eq!(fallbacks(&a), fallbacks_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_live_nodes_each_spends_half_of_what_it_last_saw() {
    let server = RedisServer::start();
    let plans = plans(20);
    let a = node(&server, &plans);
    let b = node(&server, &plans);
    let key = create(&a, "acct_two_nodes_quota").await;
    let now = june_end();
    // Both say they are alive; a counts again once b has.
    a.verifier.maintain(now).await.unwrap();
    b.verifier.maintain(now).await.unwrap();
    a.verifier.maintain(now).await.unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let live: u32 = redis::cmd("ZCARD")
        .arg("cloro:{nodes}")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(live, 2);

    // One shared count: the nodes' requests interleave in it.
    assert_eq!(quota_left(&a, &key, now).await, 19);
    assert_eq!(quota_left(&b, &key, now).await, 18);
    assert_eq!(quota_left(&a, &key, now).await, 17);
    assert_eq!(quota_left(&b, &key, now).await, 16);
    assert_eq!(quota_left(&a, &key, now).await, 15);

    server.pause();
    // a last saw 15 left, b 16: half each, rounded down, so both together
    // spend at most the 15 that were really left.
    let by_a = spend_share(&a, &key, now, 20).await;
    let by_b = spend_share(&b, &key, now, 20).await;
    assert_eq!(by_a, vec![6, 5, 4, 3, 2, 1, 0], "15 / 2 = 7 for a");
    assert_eq!(by_b, vec![7, 6, 5, 4, 3, 2, 1, 0], "16 / 2 = 8 for b");
    assert!(by_a.len() + by_b.len() <= 15);
    server.resume();
    until_redis_answers(&a, &key, now).await.ok();
    until_redis_answers(&b, &key, now).await.ok();
    assert!(used_in_june(&a, "acct_two_nodes_quota").await <= 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_quota_is_one_count_for_the_account_and_refuses_at_the_limit() {
    let server = RedisServer::start();
    let plans = plans(3);
    let a = node(&server, &plans);
    let b = node(&server, &plans);
    let first = create(&a, "acct_quota_shared").await;
    let second = create(&b, "acct_quota_shared").await;
    let elsewhere = create(&a, "acct_quota_elsewhere").await;
    let now = june_end();
    assert_eq!(quota_left(&a, &first, now).await, 2);
    assert_eq!(quota_left(&b, &second, now).await, 1);
    assert_eq!(quota_left(&a, &second, now).await, 0);
    assert_quota_exceeded(verify(&b, &first, now).await);
    assert_eq!(
        verify(&a, &first, now).await.unwrap_err().code(),
        ErrorCode::QuotaExceeded
    );
    // A refused request costs nothing: the count stays at the limit.
    assert_eq!(used_in_june(&a, "acct_quota_shared").await, 3);
    assert_eq!(quota_left(&b, &elsewhere, now).await, 2);
    // A new month starts from 0.
    let july = now + SignedDuration::from_secs(15);
    assert_eq!(quota_left(&a, &first, july).await, 2);
    assert_eq!((fallbacks(&a), fallbacks(&b)), (0, 0));
}
