//! The Redis store, limiter and invalidations on a private Redis Cluster:
//! the contract unchanged, and pub/sub across the cluster's nodes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloro_auth_core::{ApiKey, Environment};
use cloro_keystore::{
    ChangeNotifier, IdempotencyStore, Invalidation, InvalidationSink, KeyStore,
    RedisIdempotencyStore, RedisNotifier, RedisOptions, RedisStore,
    spawn_cluster_invalidation_listener,
};
use cloro_test_support::RedisCluster;
use tokio::sync::mpsc;

/// Generous, so a loaded 2-core machine turns no slow answer into a failure.
fn patient() -> RedisOptions {
    let mut options = RedisOptions::default();
    options.command_timeout = Duration::from_secs(2);
    options
}

/// A sink that hands every invalidation, with its measured delay, to the test.
#[derive(Debug)]
struct DelaySink(mpsc::UnboundedSender<(Invalidation, Option<Duration>)>);

impl InvalidationSink for DelaySink {
    fn invalidate(&self, change: Invalidation) {
        let _ = self.0.send((change, None));
    }

    fn invalidate_published(&self, change: Invalidation, delay: Option<Duration>) {
        let _ = self.0.send((change, delay));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_keeps_the_contract_and_carries_invalidations() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 0))
        .await
        .unwrap();
    let seeds = cluster.seeds();
    crate::contract::run_contract(|| {
        Arc::new(RedisStore::connect_cluster(&seeds, patient()).unwrap()) as Arc<dyn KeyStore>
    })
    .await;
    crate::webhooks::run_webhook_contract(|| {
        Arc::new(RedisStore::connect_cluster(&seeds, patient()).unwrap())
    })
    .await;
    crate::admin_tokens::run_admin_token_contract(Arc::new(
        RedisStore::connect_cluster(&seeds, patient()).unwrap(),
    ))
    .await;
    crate::sessions::run_session_contract(Arc::new(
        RedisStore::connect_cluster(&seeds, patient()).unwrap(),
    ))
    .await;
    crate::idempotency::run_idempotency_contract(|| {
        let store = RedisStore::connect_cluster(&seeds, patient()).unwrap();
        Arc::new(RedisIdempotencyStore::new(store.connection())) as Arc<dyn IdempotencyStore>
    })
    .await;

    // The listener hears on one node what the notifier publishes through
    // the cluster client, wherever that lands.
    let (tx, mut received) = mpsc::unbounded_channel();
    let listener =
        spawn_cluster_invalidation_listener(&seeds, patient(), Arc::new(DelaySink(tx))).unwrap();
    tokio::time::timeout(Duration::from_secs(10), listener.wait_subscribed(1))
        .await
        .unwrap()
        .unwrap();
    let store = RedisStore::connect_cluster(&seeds, patient()).unwrap();
    let notifier = RedisNotifier::new(store.connection(), Vec::new());
    for _ in 0..5 {
        let hash = ApiKey::generate(Environment::Test).unwrap().hash();
        let started = Instant::now();
        notifier.publish(Invalidation::Key(hash)).await;
        let (change, delay) = tokio::time::timeout(Duration::from_secs(1), received.recv())
            .await
            .expect("an invalidation within a second")
            .unwrap();
        assert_eq!(change, Invalidation::Key(hash));
        let delay = delay.expect("messages carry their publication time");
        assert!(
            delay <= started.elapsed() + Duration::from_millis(5),
            "{delay:?}"
        );
    }
}
