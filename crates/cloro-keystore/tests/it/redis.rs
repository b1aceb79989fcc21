//! The Redis store and pub/sub invalidation against a private redis-server:
//! the contract, no plaintext at rest, a hung and a restarted Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloro_auth_core::wire::{CreateKeyRequest, Patch, RotateKeyRequest, UpdateKeyRequest};
use cloro_auth_core::{ApiKey, Environment, KeyId, PlanName};
use cloro_keystore::{
    AdminError, ClaimToken, IDEMPOTENCY_LEASE, IDEMPOTENCY_WINDOW, IdempotencySlot,
    IdempotencyStore, Invalidation, InvalidationSink, KeyBatch, KeyStore, RecordWrite,
    RedisIdempotencyStore, RedisNotifier, RedisOptions, RedisStore, RequestFingerprint, StoreError,
    StoredAnswer, UsageBatch, UsageDelta, spawn_invalidation_listener,
};
use cloro_test_support::RedisServer;
use jiff::Timestamp;
use tokio::sync::mpsc;

use crate::contract::{account, admin};

/// Long enough for any bounded wait in these tests on a loaded 2-core CI
/// machine; passing tests finish far sooner.
const DEADLINE: Duration = Duration::from_secs(10);

/// Generous timeouts for the checks that are about correctness, not time:
/// a busy CI machine must not turn a slow answer into a failed test.
fn patient() -> RedisOptions {
    let mut options = RedisOptions::default();
    options.command_timeout = Duration::from_secs(2);
    options
}

fn connect(server: &RedisServer, options: RedisOptions) -> Arc<RedisStore> {
    Arc::new(RedisStore::connect(&server.url(), options).unwrap())
}

/// Calls `probe` until it succeeds or `DEADLINE` passes; no fixed sleeps.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let started = Instant::now();
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(_) if started.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("{what} still failing after {DEADLINE:?}: {error}"),
        }
    }
}

#[tokio::test]
async fn redis_store_keeps_the_contract() {
    let server = RedisServer::start();
    crate::contract::run_contract(|| connect(&server, patient()) as Arc<dyn KeyStore>).await;
}

#[tokio::test]
async fn redis_keeps_the_webhook_contract() {
    let server = RedisServer::start();
    crate::webhooks::run_webhook_contract(|| connect(&server, patient())).await;
}

#[tokio::test]
async fn redis_keeps_the_idempotency_contract() {
    let server = RedisServer::start();
    crate::idempotency::run_idempotency_contract(|| {
        let store = connect(&server, patient());
        Arc::new(RedisIdempotencyStore::new(store.connection())) as Arc<dyn IdempotencyStore>
    })
    .await;
}

/// Records expire in Redis by themselves (a lease's TTL, then the
/// window's), and hold neither the key nor the request body.
#[tokio::test]
async fn idempotency_records_expire_in_redis_and_hold_no_key_or_body() {
    let server = RedisServer::start();
    let store = connect(&server, patient());
    let records = RedisIdempotencyStore::new(store.connection());
    let key = "idem-key-redis-4b1e";
    let slot = IdempotencySlot::new("admin", key.as_bytes());
    let fingerprint = RequestFingerprint::of(&[b"POST", b"/x", b"body-marker-77aa"]);
    let token = ClaimToken::generate().unwrap();
    let now = Timestamp::now();
    records
        .claim(&slot, &fingerprint, &token, now, IDEMPOTENCY_LEASE)
        .await
        .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let name = format!("cloro:{{idem:{}}}", slot.as_str());
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&name)
        .query_async(&mut connection)
        .await
        .unwrap();
    let lease = i64::try_from(IDEMPOTENCY_LEASE.as_millis()).unwrap();
    assert!((1..=lease).contains(&ttl), "lease TTL {ttl} ms");
    let answer = StoredAnswer {
        status: 201,
        content_type: Some("application/json".to_owned()),
        code: None,
        body: "{\"answer-marker-3c\":1}".to_owned(),
    };
    assert!(
        records
            .complete(&slot, &token, &answer, now, IDEMPOTENCY_WINDOW)
            .await
            .unwrap()
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&name)
        .query_async(&mut connection)
        .await
        .unwrap();
    let window = i64::try_from(IDEMPOTENCY_WINDOW.as_millis()).unwrap();
    assert!(
        (window - 60_000..=window).contains(&ttl),
        "window TTL {ttl} ms"
    );
    let dump = dump_everything(&server.url()).await;
    assert!(
        dump.contains("answer-marker-3c"),
        "the dump finds what is stored"
    );
    assert!(!dump.contains(key), "the idempotency key is in redis");
    assert!(
        !dump.contains("body-marker-77aa"),
        "the request body is in redis"
    );
}

#[tokio::test]
async fn no_plaintext_key_reaches_redis() {
    let server = RedisServer::start();
    let store = connect(&server, patient());
    let admin = admin(store.clone());
    let owner = account("acct_plaintext");
    let now = Timestamp::now();
    let mut secrets = Vec::new();
    let mut hashes = Vec::new();
    for i in 0..3 {
        let mut request = CreateKeyRequest::new(owner, format!("key {i}"));
        request.environment = if i == 0 {
            Environment::Test
        } else {
            Environment::Live
        };
        let issued = admin.create(request, "admin", now).await.unwrap();
        secrets.push(issued.key.expose_secret().to_owned());
        hashes.push(issued.key.hash());
        let grace = RotateKeyRequest {
            grace_period_seconds: 60,
            expires_at: Patch::Absent,
        };
        let rotation = admin
            .rotate(&issued.record.id, &grace, "admin", now)
            .await
            .unwrap();
        secrets.push(rotation.issued.key.expose_secret().to_owned());
        hashes.push(rotation.issued.key.hash());
        let rename = UpdateKeyRequest {
            name: Patch::Value(format!("renamed {i}")),
            ..Default::default()
        };
        admin
            .update(&rotation.issued.record.id, &rename, "admin", now)
            .await
            .unwrap();
        let written = store
            .record_usage(&[UsageBatch {
                account_id: owner,
                node_id: 1,
                sequence: i + 1,
                deltas: vec![UsageDelta {
                    key_id: rotation.issued.record.id,
                    last_used_at: now,
                    count: 2,
                    minute: now.as_second(),
                    refused: Default::default(),
                }],
            }])
            .await;
        assert!(matches!(written[..], [Ok(())]), "{written:?}");
    }
    admin
        .set_plan(&owner, PlanName::new("free").unwrap(), "admin", now)
        .await
        .unwrap();

    let dump = dump_everything(&server.url()).await;
    for hash in &hashes {
        let hex = String::from_utf8(hash.to_hex().to_vec()).unwrap();
        assert!(
            dump.contains(&format!("cloro:{{h:{hex}}}")),
            "the dump misses a hash index entry, so it proves nothing"
        );
    }
    for secret in &secrets {
        assert!(
            !dump.contains(secret.as_str()),
            "a plaintext key is in redis"
        );
        assert!(
            !dump.contains(&secret[8..40]),
            "the random part of a key is in redis"
        );
    }
}

/// Every key and value in the server, as text: `SCAN` plus a read by `TYPE`.
async fn dump_everything(url: &str) -> String {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(100)
            .query_async(&mut connection)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert!(!keys.is_empty(), "nothing was written");
    let mut dump = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap();
        let values: Vec<String> = match kind.as_str() {
            "string" => vec![
                redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await
                    .unwrap(),
            ],
            "hash" => redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut connection)
                .await
                .unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(&mut connection)
                .await
                .unwrap(),
            "list" => redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut connection)
                .await
                .unwrap(),
            "set" => redis::cmd("SMEMBERS")
                .arg(&key)
                .query_async(&mut connection)
                .await
                .unwrap(),
            other => panic!("unexpected redis type {other} at {key}"),
        };
        dump.push_str(&key);
        dump.push('\n');
        for value in values {
            dump.push_str(&value);
            dump.push('\n');
        }
    }
    dump
}

#[tokio::test]
async fn dangling_index_entries_read_as_no_such_key() {
    let server = RedisServer::start();
    let store = connect(&server, patient());
    let owner = account("acct_dangling");
    let issued = admin(store.clone())
        .create(
            CreateKeyRequest::new(owner, "real"),
            "admin",
            Timestamp::now(),
        )
        .await
        .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    // What a commit that failed after claiming its index entries leaves:
    // one entry to a record that never came, one to another key's record.
    let never = ApiKey::generate(Environment::Live).unwrap().hash();
    let other = ApiKey::generate(Environment::Live).unwrap().hash();
    for (hash, id) in [
        (never, "key_never_committed"),
        (other, issued.record.id.as_str()),
    ] {
        let hex = String::from_utf8(hash.to_hex().to_vec()).unwrap();
        let () = redis::cmd("SET")
            .arg(format!("cloro:{{h:{hex}}}"))
            .arg(format!("{owner} {id}"))
            .query_async(&mut connection)
            .await
            .unwrap();
    }
    let () = redis::cmd("SET")
        .arg("cloro:{i:key_never_committed}")
        .arg(owner.as_str())
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(store.lookup(&never).await.unwrap().is_none());
    assert!(store.lookup(&other).await.unwrap().is_none());
    let never_id = KeyId::new("key_never_committed").unwrap();
    assert!(store.key(&never_id).await.unwrap().is_none());
    assert!(store.lookup(&issued.key.hash()).await.unwrap().is_some());

    // A key id taken in another account is a conflict, and nothing is written.
    let mut copy = issued.record.clone();
    copy.account_id = account("acct_dangling_other");
    copy.hash = ApiKey::generate(Environment::Live).unwrap().hash();
    let batch = KeyBatch {
        account_id: copy.account_id,
        writes: vec![RecordWrite {
            record: copy.clone(),
            expected_version: None,
        }],
        audit: vec![],
    };
    assert!(matches!(
        store.commit(batch).await,
        Err(StoreError::Conflict)
    ));
    assert!(store.account(&copy.account_id).await.unwrap().is_none());
    assert_eq!(
        store.key(&issued.record.id).await.unwrap().unwrap(),
        issued.record
    );
}

#[tokio::test]
async fn long_listings_page_through_revoked_keys() {
    let server = RedisServer::start();
    let store = connect(&server, patient());
    let admin = admin(store.clone());
    let owner = account("acct_long_list");
    let base = Timestamp::from_second(1_800_000_000).unwrap();
    let mut active = Vec::new();
    for i in 0..40 {
        // Three keys share each second: ties are broken by id.
        let at = base + jiff::SignedDuration::from_secs(i / 3);
        let issued = admin
            .create(CreateKeyRequest::new(owner, format!("k{i}")), "admin", at)
            .await
            .unwrap();
        if i % 4 == 0 {
            active.push((issued.record.created_at, issued.record.id));
        } else {
            admin
                .revoke(&issued.record.id, None, "admin", at)
                .await
                .unwrap();
        }
    }
    active.sort_by(|a, b| (b.0, b.1.as_str()).cmp(&(a.0, a.1.as_str())));
    for (limit, include_revoked, expected) in [(3, false, 10), (7, true, 40), (10, false, 10)] {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = admin
                .list(&owner, limit, cursor.as_deref(), include_revoked)
                .await
                .unwrap();
            assert!(page.items.len() <= limit);
            seen.extend(page.items.iter().map(|r| (r.created_at, r.id)));
            match page.next {
                Some(next) => cursor = Some(next.encode()),
                None => break,
            }
        }
        assert_eq!(seen.len(), expected, "limit {limit}");
        if !include_revoked {
            assert_eq!(seen, active);
        }
    }
    let (record, _) = admin.account(&owner).await.unwrap();
    assert_eq!(record.key_count, 40);
}

#[tokio::test]
async fn a_hung_redis_answers_unavailable_in_time_and_recovers() {
    let server = RedisServer::start();
    let store = connect(&server, RedisOptions::default());
    let issued = admin(store.clone())
        .create(
            CreateKeyRequest::new(account("acct_hang"), "hang"),
            "admin",
            Timestamp::now(),
        )
        .await
        .unwrap();
    let hash = issued.key.hash();
    assert!(store.lookup(&hash).await.unwrap().is_some());

    server.pause();
    let started = Instant::now();
    let hung = store.lookup(&hash).await;
    let waited = started.elapsed();
    assert!(matches!(hung, Err(StoreError::Unavailable(_))), "{hung:?}");
    assert!(waited < Duration::from_secs(1), "took {waited:?}");
    let started = Instant::now();
    let hung = store.ping().await;
    assert!(matches!(hung, Err(StoreError::Unavailable(_))));
    assert!(started.elapsed() < Duration::from_secs(1));
    let started = Instant::now();
    let write = admin(store.clone())
        .create(
            CreateKeyRequest::new(account("acct_hang"), "during"),
            "admin",
            Timestamp::now(),
        )
        .await;
    assert!(
        matches!(write, Err(AdminError::Store(StoreError::Unavailable(_)))),
        "{write:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    server.resume();
    let found = eventually("lookup after resume", || store.lookup(&hash)).await;
    assert_eq!(found.unwrap().record.id, issued.record.id);
}

#[tokio::test]
async fn a_restarted_redis_is_reconnected_by_the_same_store() {
    let mut server = RedisServer::start();
    let store = connect(&server, RedisOptions::default());
    let admin = admin(store.clone());
    let before = admin
        .create(
            CreateKeyRequest::new(account("acct_restart"), "before"),
            "admin",
            Timestamp::now(),
        )
        .await
        .unwrap();
    assert!(store.lookup(&before.key.hash()).await.unwrap().is_some());

    server.restart();
    eventually("ping after restart", || store.ping()).await;
    // The new server starts empty (no persistence in tests).
    assert!(store.lookup(&before.key.hash()).await.unwrap().is_none());
    // Writes work too, scripts included (reloaded after NOSCRIPT).
    let after = admin
        .create(
            CreateKeyRequest::new(account("acct_restart"), "after"),
            "admin",
            Timestamp::now(),
        )
        .await
        .unwrap();
    let found = store.lookup(&after.key.hash()).await.unwrap().unwrap();
    assert_eq!(found.record.id, after.record.id);
}

#[tokio::test]
async fn unreachable_redis_is_unavailable_in_time() {
    // A port nobody listens on: start a server, note its port, stop it.
    let port = {
        let server = RedisServer::start();
        server.port()
    };
    let store = RedisStore::connect(
        &format!("redis://:hunter2@127.0.0.1:{port}"),
        RedisOptions::default(),
    )
    .unwrap();
    let started = Instant::now();
    let error = store.ping().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    let message = error.to_string();
    assert!(!message.contains("hunter2"), "{message}");
    assert!(!format!("{store:?}").contains("hunter2"));
}

/// A sink that hands every invalidation to the test.
#[derive(Debug)]
struct ChannelSink(mpsc::UnboundedSender<Invalidation>);

impl InvalidationSink for ChannelSink {
    fn invalidate(&self, change: Invalidation) {
        let _ = self.0.send(change);
    }
}

async fn next_within(
    received: &mut mpsc::UnboundedReceiver<Invalidation>,
    limit: Duration,
) -> Invalidation {
    tokio::time::timeout(limit, received.recv())
        .await
        .unwrap_or_else(|_| panic!("no invalidation within {limit:?}"))
        .unwrap()
}

#[tokio::test]
async fn invalidations_reach_other_nodes_and_survive_a_restart() {
    let mut server = RedisServer::start();
    let (remote_tx, mut remote) = mpsc::unbounded_channel();
    let listener = spawn_invalidation_listener(
        &server.url(),
        RedisOptions::default(),
        Arc::new(ChannelSink(remote_tx)),
    )
    .unwrap();
    tokio::time::timeout(DEADLINE, listener.wait_subscribed(1))
        .await
        .unwrap()
        .unwrap();

    let store = connect(&server, RedisOptions::default());
    let (local_tx, mut local) = mpsc::unbounded_channel();
    let notifier = RedisNotifier::new(store.connection(), vec![Arc::new(ChannelSink(local_tx))]);
    let hash = ApiKey::generate(Environment::Test).unwrap().hash();

    let started = Instant::now();
    cloro_keystore::ChangeNotifier::publish(&notifier, Invalidation::Key(hash)).await;
    assert_eq!(
        local.try_recv().unwrap(),
        Invalidation::Key(hash),
        "applied locally at once"
    );
    assert_eq!(
        next_within(&mut remote, Duration::from_secs(1)).await,
        Invalidation::Key(hash)
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    let owner = account("acct_pubsub");
    cloro_keystore::ChangeNotifier::publish(&notifier, Invalidation::Account(owner)).await;
    assert_eq!(
        next_within(&mut remote, Duration::from_secs(1)).await,
        Invalidation::Account(owner)
    );
    assert_eq!(listener.subscriptions(), 1);

    server.restart();
    tokio::time::timeout(DEADLINE, listener.wait_subscribed(2))
        .await
        .expect("the listener resubscribes by itself")
        .unwrap();
    // Sent before the subscription is announced, so it is already queued.
    assert_eq!(
        next_within(&mut remote, Duration::from_secs(1)).await,
        Invalidation::Everything
    );

    let started = Instant::now();
    cloro_keystore::ChangeNotifier::publish(&notifier, Invalidation::Key(hash)).await;
    assert_eq!(
        next_within(&mut remote, Duration::from_secs(1)).await,
        Invalidation::Key(hash)
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(remote.try_recv().is_err(), "nothing else arrived");
}
