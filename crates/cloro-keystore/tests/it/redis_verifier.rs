//! Two verifier "nodes" over one private redis-server: revocation reaching
//! the other node, rate limits exact across nodes (per key and per account),
//! and what a hung or restarted Redis does to the hot path (SPEC §5, §8).

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloro_auth_core::wire::{AppliesTo, CreateKeyRequest, RateLimitPolicy};
use cloro_auth_core::{AccountId, ApiKey, AuthError, ErrorCode};
use cloro_keystore::{
    Invalidation, InvalidationListener, InvalidationSink, IssuedKey, KeyAdmin, Plans, Readiness,
    RedisNotifier, RedisOptions, RedisRateLimiter, RedisStore, SharedRateLimiter, Verified,
    Verifier, VerifierConfig, VerifyRequest, spawn_invalidation_listener,
};
use cloro_test_support::RedisServer;
use jiff::Timestamp;
use tokio::sync::mpsc;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));

/// Long enough for any bounded wait on a loaded 2-core CI machine; passing
/// tests finish far sooner.
const DEADLINE: Duration = Duration::from_secs(10);

/// SPEC §8: a revocation reaches every node within this.
const PROPAGATION_LIMIT: Duration = Duration::from_secs(1);

/// One server process's worth of Cloro over a shared Redis: its own
/// connection, limiter, cache, notifier and invalidation listener.
struct Node {
    store: Arc<RedisStore>,
    verifier: Arc<Verifier>,
    admin: KeyAdmin,
    listener: InvalidationListener,
    /// What the listener has delivered to the cache, in order.
    heard: mpsc::UnboundedReceiver<Invalidation>,
}

/// Passes the listener's invalidations to the cache, then to the test, so a
/// test can wait for an echo instead of racing it.
#[derive(Debug)]
struct Tap {
    cache: Arc<dyn InvalidationSink>,
    heard: mpsc::UnboundedSender<Invalidation>,
}

impl InvalidationSink for Tap {
    fn invalidate(&self, change: Invalidation) {
        self.cache.invalidate(change);
        let _ = self.heard.send(change);
    }
}

fn config() -> VerifierConfig {
    VerifierConfig {
        store_timeout: Duration::from_millis(250),
        cache_ttl: Duration::from_secs(30),
        ..Default::default()
    }
}

/// A node wired as the server wires it, once its listener has subscribed.
async fn node(server: &RedisServer) -> Node {
    let options = RedisOptions::default();
    let store = Arc::new(RedisStore::connect(&server.url(), options.clone()).unwrap());
    let limiter: Arc<dyn SharedRateLimiter> = Arc::new(RedisRateLimiter::new(store.connection()));
    let plans = Arc::new(Plans::builtin());
    let verifier = Verifier::new(store.clone(), plans.clone(), Some(limiter), &config());
    let sink: Arc<dyn InvalidationSink> = verifier.cache().clone();
    let notifier = RedisNotifier::new(store.connection(), vec![sink.clone()]);
    let admin = KeyAdmin::new(store.clone(), plans, Arc::new(notifier));
    let (heard_tx, heard) = mpsc::unbounded_channel();
    let tap = Arc::new(Tap {
        cache: sink,
        heard: heard_tx,
    });
    let listener = spawn_invalidation_listener(&server.url(), options, tap).unwrap();
    tokio::time::timeout(DEADLINE, listener.wait_subscribed(1))
        .await
        .expect("the listener subscribes")
        .unwrap();
    Node {
        store,
        verifier,
        admin,
        listener,
        heard,
    }
}

/// Waits until `node`'s listener has applied `change`: a node hears its
/// own admin actions back from Redis, and an echo that lands during a cache
/// fill keeps that fill out of the cache, which a test may rely on.
async fn hear(node: &mut Node, change: Invalidation) {
    let wait = async {
        while let Some(heard) = node.heard.recv().await {
            if heard == change {
                return;
            }
        }
        panic!("the listener stopped");
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .unwrap_or_else(|_| panic!("{change:?} not heard within {DEADLINE:?}"));
}

fn policy(requests: u32, per_seconds: u32) -> RateLimitPolicy {
    RateLimitPolicy::new(
        NonZeroU32::new(requests).unwrap(),
        NonZeroU32::new(per_seconds).unwrap(),
    )
}

async fn create(node: &Node, account: &str, rate_limit: Option<RateLimitPolicy>) -> IssuedKey {
    let mut request = CreateKeyRequest::new(AccountId::new(account).unwrap(), "node key");
    request.rate_limit = rate_limit;
    node.admin
        .create(request, "admin", Timestamp::now())
        .await
        .unwrap()
}

async fn verify(node: &Node, key: &ApiKey) -> Result<Verified, AuthError> {
    let header = format!("Bearer {}", key.expose_secret());
    let request = VerifyRequest {
        client: CLIENT,
        required_scope: None,
        limit_concurrency: false,
        cost: 1,
        now: Timestamp::now(),
    };
    node.verifier
        .verify([header.as_bytes()], &request)
        .await
        .map_err(|refused| refused.error)
}

fn fallbacks(node: &Node) -> u64 {
    node.verifier.stats().limiter_fallbacks.get()
}

#[tokio::test]
async fn a_revocation_on_one_node_reaches_the_other_within_a_second() {
    let server = RedisServer::start();
    let mut a = node(&server).await;
    let mut b = node(&server).await;
    let issued = create(&a, "acct_two_nodes", None).await;
    // Node a skips its own echo (it applied the change when publishing);
    // let node b hear the creation before it caches the key, so that only
    // pub/sub, not a store read, can bring it the revocation.
    hear(&mut b, Invalidation::Key(issued.key.hash())).await;
    // A marker published after it by node b: messages on the channel
    // arrive in order, so once node a hears the marker, its own echo would
    // have come first if it did not skip it.
    let marker = create(&b, "acct_marker", None).await;
    let wait = async {
        let mut before_marker = Vec::new();
        while let Some(heard) = a.heard.recv().await {
            if heard == Invalidation::Key(marker.key.hash()) {
                return before_marker;
            }
            before_marker.push(heard);
        }
        panic!("node a's listener stopped");
    };
    let before_marker = tokio::time::timeout(DEADLINE, wait)
        .await
        .expect("node a heard node b's marker");
    assert!(
        !before_marker.contains(&Invalidation::Key(issued.key.hash())),
        "node a skipped its own invalidation: {before_marker:?}"
    );
    verify(&a, &issued.key).await.expect("valid on node a");
    verify(&b, &issued.key).await.expect("valid on node b");
    assert!(
        a.verifier
            .cache()
            .get(&issued.key.hash(), Timestamp::now())
            .is_some(),
        "node a answers from its cache"
    );

    let started = Instant::now();
    b.admin
        .revoke(&issued.record.id, None, "admin", Timestamp::now())
        .await
        .unwrap();
    assert_eq!(
        verify(&b, &issued.key).await.unwrap_err().code(),
        ErrorCode::RevokedApiKey,
        "the revoking node sees it at once"
    );
    let delay = loop {
        match verify(&a, &issued.key).await {
            Err(error) => {
                assert_eq!(error.code(), ErrorCode::RevokedApiKey);
                break started.elapsed();
            }
            Ok(_) => {
                assert!(
                    started.elapsed() < PROPAGATION_LIMIT,
                    "node a still accepts the revoked key after {:?}",
                    started.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    println!("revocation reached the other node after {delay:?}");
    assert!(delay < PROPAGATION_LIMIT, "took {delay:?}");
}

/// Sends `count` requests alternating between the nodes, in order.
async fn alternate(nodes: [(&Node, &ApiKey); 2], count: usize) -> Vec<Result<Verified, AuthError>> {
    let mut results = Vec::with_capacity(count);
    for i in 0..count {
        let (node, key) = nodes[i % 2];
        results.push(verify(node, key).await);
    }
    results
}

#[tokio::test]
async fn a_key_limit_holds_exactly_across_nodes() {
    let server = RedisServer::start();
    let a = node(&server).await;
    let b = node(&server).await;
    let issued = create(&a, "acct_exact", Some(policy(10, 60))).await;

    let started = Instant::now();
    let results = alternate([(&a, &issued.key), (&b, &issued.key)], 30).await;
    let took = started.elapsed();
    let allowed: Vec<u32> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|v| v.rate.remaining))
        .collect();
    // One request per 6 s refills, so a run this short allows exactly 10.
    assert_eq!(
        allowed,
        (0..10).rev().collect::<Vec<u32>>(),
        "allowed requests and their remaining counts, in {took:?}"
    );
    assert!(
        results[..10].iter().all(Result::is_ok),
        "the first ten pass"
    );
    for refused in &results[10..] {
        match refused {
            Err(AuthError::RateLimitExceeded { retry_after, plan }) => {
                assert!((1..=6).contains(retry_after), "retry after {retry_after}");
                assert_eq!(*plan, None, "the key's own policy was hit");
            }
            other => panic!("expected RATE_LIMIT_EXCEEDED, got {other:?}"),
        }
    }
    assert_eq!(
        (fallbacks(&a), fallbacks(&b)),
        (0, 0),
        "every decision came from redis"
    );
}

#[tokio::test]
async fn an_account_limit_is_shared_by_its_keys_across_nodes() {
    let server = RedisServer::start();
    let a = node(&server).await;
    let b = node(&server).await;
    let mut shared = policy(3, 60);
    shared.applies_to = AppliesTo::Account;
    let first = create(&a, "acct_pooled", Some(shared)).await;
    let second = create(&b, "acct_pooled", Some(shared)).await;
    let elsewhere = create(&a, "acct_unrelated", Some(shared)).await;

    let results = alternate([(&a, &first.key), (&b, &second.key)], 8).await;
    let allowed: Vec<u32> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|v| v.rate.remaining))
        .collect();
    assert_eq!(allowed, vec![2, 1, 0], "one allowance for both keys");
    for refused in &results[3..] {
        assert_eq!(
            refused.as_ref().unwrap_err().code(),
            ErrorCode::RateLimitExceeded
        );
    }
    // Another account's allowance is untouched.
    assert_eq!(verify(&b, &elsewhere.key).await.unwrap().rate.remaining, 2);
    assert_eq!((fallbacks(&a), fallbacks(&b)), (0, 0));
}

#[tokio::test]
async fn a_hung_redis_serves_cached_keys_limited_locally_and_refuses_the_rest_in_time() {
    let server = RedisServer::start();
    let a = node(&server).await;
    let cached = create(&a, "acct_hung", Some(policy(3, 60))).await;
    // Exists in Redis, but this node has never looked it up.
    let uncached = create(&a, "acct_hung", None).await;
    // No echo to wait for: a node skips its own invalidations, so nothing
    // can drop the entry filled next (this race once made the test flaky).
    assert_eq!(verify(&a, &cached.key).await.unwrap().rate.remaining, 2);
    assert!(
        a.verifier
            .cache()
            .get(&cached.key.hash(), Timestamp::now())
            .is_some()
    );
    assert_eq!(a.verifier.health().readiness(), Readiness::Ready);

    server.pause();
    // The shared allowance cannot be asked, so this node limits on its own
    // (SPEC §5): its local allowance of 3 is fresh, and never more than 3.
    let mut slowest = Duration::ZERO;
    let mut remaining = Vec::new();
    for _ in 0..4 {
        let started = Instant::now();
        let result = verify(&a, &cached.key).await;
        slowest = slowest.max(started.elapsed());
        match result {
            Ok(verified) => remaining.push(verified.rate.remaining),
            Err(error) => assert_eq!(error.code(), ErrorCode::RateLimitExceeded),
        }
    }
    assert_eq!(
        remaining,
        vec![2, 1, 0],
        "limited locally while redis hangs"
    );
    assert_eq!(fallbacks(&a), 4);
    assert!(slowest < Duration::from_secs(1), "took {slowest:?}");

    let started = Instant::now();
    let refused = verify(&a, &uncached.key).await.unwrap_err();
    let answered = started.elapsed();
    assert_eq!(refused, AuthError::AuthUnavailable { retry_after: 1 });
    assert_eq!(refused.retry_after(), Some(1));
    assert!(answered < Duration::from_secs(1), "took {answered:?}");
    assert_eq!(a.verifier.health().readiness(), Readiness::Degraded);
    println!(
        "while redis hung: cached key answered within {slowest:?}, uncached key refused in {answered:?}"
    );

    server.resume();
    let started = Instant::now();
    loop {
        match verify(&a, &uncached.key).await {
            Ok(_) => break,
            Err(error) => {
                assert_eq!(error.code(), ErrorCode::AuthUnavailable);
                assert!(
                    started.elapsed() < DEADLINE,
                    "still unavailable {DEADLINE:?} after redis resumed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    println!("service resumed {:?} after redis did", started.elapsed());
    assert_eq!(a.verifier.health().readiness(), Readiness::Ready);
}

#[tokio::test]
async fn a_restarted_redis_is_used_again_without_intervention() {
    let mut server = RedisServer::start();
    let a = node(&server).await;
    let before = create(&a, "acct_restart", None).await;
    verify(&a, &before.key).await.unwrap();

    server.restart();
    tokio::time::timeout(DEADLINE, a.listener.wait_subscribed(2))
        .await
        .expect("the listener resubscribes by itself")
        .unwrap();
    let started = Instant::now();
    while let Err(error) = cloro_keystore::KeyStore::ping(a.store.as_ref()).await {
        assert!(
            started.elapsed() < DEADLINE,
            "redis unreachable {DEADLINE:?} after its restart: {error}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The new server is empty (no persistence in tests), and resubscribing
    // dropped the cache, so the old key is now unknown rather than stale.
    assert_eq!(
        verify(&a, &before.key).await.unwrap_err(),
        AuthError::InvalidApiKey
    );

    let after = create(&a, "acct_restart", Some(policy(3, 60))).await;
    let fallbacks_before = fallbacks(&a);
    let results = alternate([(&a, &after.key), (&a, &after.key)], 4).await;
    let allowed: Vec<u32> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|v| v.rate.remaining))
        .collect();
    assert_eq!(allowed, vec![2, 1, 0]);
    assert_eq!(
        results[3].as_ref().unwrap_err().code(),
        ErrorCode::RateLimitExceeded
    );
    assert_eq!(
        fallbacks(&a),
        fallbacks_before,
        "the shared limiter is back (its script reloaded)"
    );
    assert_eq!(a.verifier.health().readiness(), Readiness::Ready);
}

#[tokio::test]
async fn limiter_state_lives_under_the_account_tag_and_expires_when_full() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), RedisOptions::default()).unwrap();
    let limiter = RedisRateLimiter::new(store.connection());
    let subject = ApiKey::generate(cloro_auth_core::Environment::Test)
        .unwrap()
        .hash();
    let account = AccountId::new("acct_rl").unwrap();
    let (decision, metered) = limiter
        .check(&account, &subject, &policy(10, 60), None)
        .await
        .unwrap();
    assert_eq!(metered, None, "no meter, no outcome");
    let state = decision.state();
    assert_eq!((decision.is_allowed(), state.remaining), (true, 9));
    assert_eq!((state.limit, state.window_seconds), (10, 60));

    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let hex = String::from_utf8(subject.to_hex().to_vec()).unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("cloro:{{a:acct_rl}}:rl:{hex}"))
        .query_async(&mut connection)
        .await
        .unwrap();
    // Full again one emission interval (6 s) after a single request.
    assert!((1..=6_000).contains(&ttl), "pttl {ttl}");

    server.pause();
    let started = Instant::now();
    let hung = limiter
        .check(&account, &subject, &policy(10, 60), None)
        .await;
    assert!(
        matches!(hung, Err(cloro_keystore::StoreError::Unavailable(_))),
        "{hung:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    server.resume();
}
