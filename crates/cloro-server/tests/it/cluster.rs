//! Several server nodes on one private Redis Cluster: keys, revocations and
//! rate limits shared across nodes, and a master failover survived without
//! restarting any node.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use cloro_auth_core::wire::{CreateKeyRequest, RateLimitPolicy};
use cloro_auth_core::{AccountId, ApiKey, KeyId};
use cloro_server::config::{Flags, Settings};
use cloro_test_support::RedisCluster;
use http::StatusCode;

use crate::support::{Answer, TestServer};

/// Bound on waits that only a broken build exceeds.
const DEADLINE: Duration = Duration::from_secs(15);

async fn node(seeds: &str) -> TestServer {
    let flags = Flags {
        redis_url: Some(seeds.to_owned()),
        redis_cluster: Some(true),
        ..Flags::default()
    };
    TestServer::start(Settings::from_toml(flags, "").unwrap(), None).await
}

async fn start_cluster(masters: usize, replicas: usize) -> RedisCluster {
    tokio::task::spawn_blocking(move || RedisCluster::start(masters, replicas))
        .await
        .unwrap()
}

/// Creates a key of `account` on `server`; its plaintext and id.
async fn create(
    server: &TestServer,
    account: &str,
    rate_limit: Option<RateLimitPolicy>,
) -> (ApiKey, KeyId) {
    let mut request = CreateKeyRequest::new(AccountId::new(account).unwrap(), "cluster key");
    request.rate_limit = rate_limit;
    let issued = server
        .app
        .admin()
        .create(request, "test", jiff::Timestamp::now())
        .await
        .unwrap();
    (issued.key, issued.record.id)
}

async fn whoami(server: &TestServer, key: &ApiKey) -> Answer {
    server.get_with_key("/v1/whoami", key.expose_secret()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_keys_revocations_and_exact_limits() {
    let cluster = start_cluster(3, 0).await;
    let seeds = cluster.seeds();
    let nodes = [node(&seeds).await, node(&seeds).await, node(&seeds).await];
    let [a, b, c] = &nodes;

    let (key, id) = create(a, "acct_cluster", None).await;
    for server in [a, b, c] {
        assert_eq!(whoami(server, &key).await.status, StatusCode::OK);
    }

    b.app
        .admin()
        .revoke(&id, None, "test", jiff::Timestamp::now())
        .await
        .unwrap();
    let revoked = Instant::now();
    for server in [a, c] {
        loop {
            let answer = whoami(server, &key).await;
            if answer.status == StatusCode::UNAUTHORIZED {
                assert_eq!(answer.code(), "REVOKED_API_KEY");
                break;
            }
            assert_eq!(answer.status, StatusCode::OK);
            assert!(
                revoked.elapsed() < Duration::from_secs(1),
                "a revoked key still works after a second"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let metrics = a.send(http::Method::GET, "/metrics", &[], "").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.lines().any(
            |line| line.starts_with("cloro_invalidation_delay_seconds_count ")
                && !line.ends_with(" 0")
        ),
        "{text}"
    );

    let ten = RateLimitPolicy::new(NonZeroU32::new(10).unwrap(), NonZeroU32::new(3600).unwrap());
    let (limited, _) = create(c, "acct_cluster_limit", Some(ten)).await;
    let mut allowed = 0;
    for round in 0..30 {
        let answer = whoami(&nodes[round % 3], &limited).await;
        match answer.status {
            StatusCode::OK => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}: {}", answer.code()),
        }
    }
    assert_eq!(allowed, 10, "a limit of 10 across three nodes");

    for server in nodes {
        server.stop().await;
    }
}

/// The slots a lookup of `key` reads: its hash index, then its account.
fn slots_of(cluster: &RedisCluster, key: &ApiKey, account: &str) -> [u16; 2] {
    let hex = String::from_utf8(key.hash().to_hex().to_vec()).unwrap();
    [
        cluster.slot_of(&format!("cloro:{{h:{hex}}}")),
        cluster.slot_of(&format!("cloro:{{a:{account}}}")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_failover_keeps_cached_keys_and_heals_by_itself() {
    let mut cluster = start_cluster(3, 1).await;
    let seeds = cluster.seeds();
    let server = node(&seeds).await;

    // Keys in many accounts, so their slots spread over every master.
    let mut keys = Vec::new();
    for n in 0..24 {
        let account = format!("acct_fail_{n}");
        let (key, _) = create(&server, &account, None).await;
        keys.push((key, account));
    }
    let (cached, uncached) = keys.split_at(8);
    for (key, _) in cached {
        assert_eq!(whoami(&server, key).await.status, StatusCode::OK);
    }
    // The victim: the master of the first uncached key's hash index.
    let victim = cluster
        .master_of_slot(slots_of(&cluster, &uncached[0].0, &uncached[0].1)[0])
        .unwrap();
    let (dead, alive): (Vec<_>, Vec<_>) = uncached.iter().partition(|(key, account)| {
        slots_of(&cluster, key, account)
            .iter()
            .any(|slot| cluster.master_of_slot(*slot) == Some(victim))
    });
    assert!(!alive.is_empty(), "some keys live on other masters");

    cluster.kill(victim);
    let killed = Instant::now();
    // Before a replica can take over (at least the 1 s node timeout):
    // the dead slots are unavailable, never allowed, never refused.
    let answer = whoami(&server, &dead[0].0).await;
    assert!(
        killed.elapsed() < Duration::from_secs(1),
        "answered in time"
    );
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.code(), "AUTH_UNAVAILABLE");
    for (key, _) in cached {
        assert_eq!(whoami(&server, key).await.status, StatusCode::OK);
    }
    for (key, _) in &alive {
        assert_eq!(whoami(&server, key).await.status, StatusCode::OK);
    }
    // Until the replica is promoted, a dead-slot key is 503 or (once it is)
    // 200; never 401.
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_for_failover();
        cluster
    })
    .await
    .unwrap();
    for (key, _) in &dead {
        let started = Instant::now();
        loop {
            let answer = whoami(&server, key).await;
            if answer.status == StatusCode::OK {
                break;
            }
            assert_eq!(answer.code(), "AUTH_UNAVAILABLE");
            assert!(
                started.elapsed() < DEADLINE,
                "the dead slots never came back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Writes work again too, on every slot.
    for n in 0..6 {
        let (key, _) = create(&server, &format!("acct_after_{n}"), None).await;
        assert_eq!(whoami(&server, &key).await.status, StatusCode::OK);
    }
    server.stop().await;
    drop(cluster);
}
