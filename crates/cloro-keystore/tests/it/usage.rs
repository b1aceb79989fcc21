//! Usage flushes end to end, through the verifier: tens of thousands of
//! accounts in one flush on a real Redis, and flushes that fail (Redis
//! paused, a store that fails some accounts, or applies a write and then
//! reports an error) still count every use exactly once.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cloro_auth_core::wire::{AuditEvent, CreateKeyRequest};
use cloro_auth_core::{AccountId, ApiKey, Environment, KeyHash, KeyId, PlanName};
use cloro_keystore::{
    AccountRecord, EmbeddedStore, KeyBatch, KeyLookup, KeyRecord, KeyStore, MemoryStore, Page,
    PageRequest, Plans, RecordWrite, RedisOptions, RedisStore, StoreError, UsageBatch, Verifier,
    VerifierConfig, VerifyRequest,
};
use cloro_test_support::RedisServer;
use futures_util::{StreamExt, stream};
use jiff::Timestamp;

use crate::contract::{account, admin};

/// Store calls that tests make themselves (setup and checks) run this many
/// at once; the flush under test sets its own pace.
const SETUP_IN_FLIGHT: usize = 64;

/// Long enough for any bounded wait here on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(10);

/// For setup and checks: a busy machine must not fail them for slowness.
fn patient() -> RedisOptions {
    let mut options = RedisOptions::default();
    options.command_timeout = Duration::from_secs(5);
    options
}

fn verifier(store: Arc<dyn KeyStore>) -> Arc<Verifier> {
    Verifier::new(
        store,
        Arc::new(Plans::builtin()),
        None,
        &VerifierConfig::default(),
    )
}

/// Verifies `key` `times` times, each a counted use.
async fn use_key(verifier: &Verifier, key: &ApiKey, times: u64) {
    let header = format!("Bearer {}", key.expose_secret());
    let request = VerifyRequest {
        client: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        required_scope: None,
        limit_concurrency: false,
        cost: 1,
        now: Timestamp::now(),
    };
    for _ in 0..times {
        verifier
            .verify([header.as_bytes()], &request)
            .await
            .unwrap();
    }
}

async fn usage_count(store: &dyn KeyStore, id: &KeyId) -> u64 {
    store.key(id).await.unwrap().unwrap().usage.count
}

/// `count` keys, one per account, committed straight through the store (an
/// admin call each would only add audit events and invalidations).
async fn many_accounts(store: &dyn KeyStore, count: usize) -> Vec<(ApiKey, KeyRecord)> {
    let template = admin(Arc::new(MemoryStore::new()))
        .create(
            CreateKeyRequest::new(account("acct_template"), "load"),
            "admin",
            Timestamp::now(),
        )
        .await
        .unwrap()
        .record;
    let keys: Vec<(ApiKey, KeyRecord)> = (0..count)
        .map(|i| {
            let key = ApiKey::generate(Environment::Live).unwrap();
            let mut record = template.clone();
            record.id = KeyId::new(&format!("key_load_{i}")).unwrap();
            record.account_id = account(&format!("acct_load_{i}"));
            record.hash = key.hash();
            record.start = key.redacted().to_string();
            (key, record)
        })
        .collect();
    let mut commits = stream::iter(keys.iter().map(|(_, record)| {
        store.commit(KeyBatch {
            account_id: record.account_id,
            writes: vec![RecordWrite {
                record: record.clone(),
                expected_version: None,
            }],
            audit: vec![],
        })
    }))
    .buffer_unordered(SETUP_IN_FLIGHT);
    while let Some(outcome) = commits.next().await {
        outcome.unwrap();
    }
    drop(commits);
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_of_50000_accounts_is_written_by_one_flush() {
    const ACCOUNTS: usize = 50_000;
    let server = RedisServer::start();
    let checks = RedisStore::connect(&server.url(), patient()).unwrap();
    // The verifier's store has the production timeout: 250 ms per call.
    let store = Arc::new(RedisStore::connect(&server.url(), RedisOptions::default()).unwrap());
    let started = Instant::now();
    let keys = many_accounts(&checks, ACCOUNTS).await;
    let created = started.elapsed();

    let verifier = Arc::new(verifier(store));
    // Uses 1 to 3 per key, so a count that is off shows.
    let uses = |i: usize| (i % 3 + 1) as u64;
    let started = Instant::now();
    let mut verifies = stream::iter(keys.iter().enumerate().map(|(i, (key, _))| {
        let verifier = verifier.clone();
        async move { use_key(&verifier, key, uses(i)).await }
    }))
    .buffer_unordered(SETUP_IN_FLIGHT);
    while verifies.next().await.is_some() {}
    let verified = started.elapsed();

    let started = Instant::now();
    verifier.maintain(Timestamp::now()).await.unwrap();
    let flushed = started.elapsed();

    let started = Instant::now();
    let mut reads = stream::iter(keys.iter().map(|(_, record)| {
        let checks = &checks;
        async move { (record, checks.key(&record.id).await.unwrap().unwrap().usage) }
    }))
    .buffer_unordered(SETUP_IN_FLIGHT);
    let mut read = 0;
    while let Some((record, usage)) = reads.next().await {
        let i: usize = record.id.as_str()["key_load_".len()..].parse().unwrap();
        assert_eq!(usage.count, uses(i), "{}", record.id);
        assert!(usage.last_used_at.is_some(), "{}", record.id);
        read += 1;
    }
    assert_eq!(read, ACCOUNTS);
    eprintln!(
        "{ACCOUNTS} accounts: created in {created:?}, verified in {verified:?}, \
         flushed in {flushed:?}, read back in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_flushed_while_redis_is_paused_counts_once_after_it_resumes() {
    let server = RedisServer::start();
    let checks = RedisStore::connect(&server.url(), patient()).unwrap();
    let store = Arc::new(RedisStore::connect(&server.url(), RedisOptions::default()).unwrap());
    let admin = admin(store.clone());
    let mut keys = Vec::new();
    for i in 0..3 {
        let owner = account(&format!("acct_paused_{i}"));
        let issued = admin
            .create(CreateKeyRequest::new(owner, "k"), "admin", Timestamp::now())
            .await
            .unwrap();
        keys.push(issued);
    }
    let verifier = verifier(store);
    let expect = |counts: [u64; 3]| {
        let checks = &checks;
        let keys = &keys;
        async move {
            for (issued, count) in keys.iter().zip(counts) {
                assert_eq!(usage_count(checks, &issued.record.id).await, count);
            }
        }
    };
    // A first flush that works, which also loads the script: a frozen
    // EVALSHA of an unknown script would only fail when Redis wakes.
    for (i, issued) in keys.iter().enumerate() {
        use_key(&verifier, &issued.key, i as u64 + 1).await;
    }
    verifier.maintain(Timestamp::now()).await.unwrap();
    expect([1, 2, 3]).await;

    for issued in &keys {
        use_key(&verifier, &issued.key, 10).await;
    }
    server.pause();
    let started = Instant::now();
    let paused = verifier.maintain(Timestamp::now()).await;
    assert!(
        matches!(paused, Err(StoreError::Unavailable(_))),
        "{paused:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // Cached keys keep working meanwhile, and their uses are counted.
    for issued in &keys {
        use_key(&verifier, &issued.key, 100).await;
    }
    server.resume();

    // The writes sent while Redis was frozen sat in its socket: it runs them
    // when it wakes, though the flush that sent them gave up. This is the
    // unknown outcome that used to count twice.
    for (issued, count) in keys.iter().zip([11, 12, 13]) {
        let started = Instant::now();
        while usage_count(&checks, &issued.record.id).await != count {
            assert!(
                started.elapsed() < DEADLINE,
                "the frozen write never landed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let started = Instant::now();
    while verifier.maintain(Timestamp::now()).await.is_err() {
        assert!(started.elapsed() < DEADLINE, "flushes still fail");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The resent batches were skipped; the later uses waited behind them.
    expect([11, 12, 13]).await;
    verifier.maintain(Timestamp::now()).await.unwrap();
    expect([111, 112, 113]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_of_two_nodes_adds_up() {
    let server = RedisServer::start();
    let store = Arc::new(RedisStore::connect(&server.url(), patient()).unwrap());
    let issued = admin(store.clone())
        .create(
            CreateKeyRequest::new(account("acct_two_nodes"), "k"),
            "admin",
            Timestamp::now(),
        )
        .await
        .unwrap();
    let nodes = [verifier(store.clone()), verifier(store.clone())];
    for round in 1..=3 {
        for (n, node) in nodes.iter().enumerate() {
            use_key(node, &issued.key, n as u64 + round).await;
            node.maintain(Timestamp::now()).await.unwrap();
        }
    }
    // Node 0: 1 + 2 + 3, node 1: 2 + 3 + 4.
    assert_eq!(usage_count(store.as_ref(), &issued.record.id).await, 15);
}

/// What [`Flaky`] does with a failing account's usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// Writes nothing and says so: a refused connection.
    Before,
    /// Writes the batch, then reports an error: a timeout after Redis ran
    /// the script, so the writer cannot know it landed.
    After,
}

/// A store whose usage writes fail for chosen accounts while `failing` is
/// set; everything else goes straight to `inner`.
#[derive(Debug)]
struct Flaky {
    inner: Arc<dyn KeyStore>,
    accounts: Mutex<Vec<(AccountId, Failure)>>,
    failing: AtomicBool,
}

impl Flaky {
    fn failure_of(&self, account: &AccountId) -> Option<Failure> {
        if !self.failing.load(Ordering::SeqCst) {
            return None;
        }
        let accounts = self.accounts.lock().unwrap();
        accounts
            .iter()
            .find(|(failing, _)| failing == account)
            .map(|(_, failure)| *failure)
    }
}

fn injected() -> StoreError {
    StoreError::Unavailable("injected usage failure".into())
}

#[async_trait]
impl KeyStore for Flaky {
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<KeyLookup>, StoreError> {
        self.inner.lookup(hash).await
    }
    async fn key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.key(id).await
    }
    async fn keys_of_account(
        &self,
        a: &AccountId,
        p: &PageRequest,
        r: bool,
    ) -> Result<Page<KeyRecord>, StoreError> {
        self.inner.keys_of_account(a, p, r).await
    }
    async fn commit(&self, batch: KeyBatch) -> Result<(), StoreError> {
        self.inner.commit(batch).await
    }
    async fn audit_events(
        &self,
        a: &AccountId,
        p: &PageRequest,
    ) -> Result<Page<AuditEvent>, StoreError> {
        self.inner.audit_events(a, p).await
    }
    async fn account(&self, a: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        self.inner.account(a).await
    }
    async fn set_account_plan(
        &self,
        a: &AccountId,
        p: &PlanName,
        e: AuditEvent,
    ) -> Result<(), StoreError> {
        self.inner.set_account_plan(a, p, e).await
    }
    async fn record_usage(&self, batches: &[UsageBatch]) -> Vec<Result<(), StoreError>> {
        let failures: Vec<Option<Failure>> = batches
            .iter()
            .map(|batch| self.failure_of(&batch.account_id))
            .collect();
        let sent: Vec<UsageBatch> = batches
            .iter()
            .zip(&failures)
            .filter(|(_, failure)| **failure != Some(Failure::Before))
            .map(|(batch, _)| batch.clone())
            .collect();
        let mut written = self.inner.record_usage(&sent).await.into_iter();
        failures
            .iter()
            .map(|failure| match failure {
                Some(Failure::Before) => Err(injected()),
                Some(Failure::After) => {
                    written.next();
                    Err(injected())
                }
                None => written.next().unwrap(),
            })
            .collect()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn usage_series(
        &self,
        account: &AccountId,
        keys: &[KeyId],
        granularity: cloro_auth_core::wire::UsageGranularity,
        from: i64,
        to: i64,
    ) -> Result<Vec<cloro_keystore::SeriesPoint>, StoreError> {
        self.inner
            .usage_series(account, keys, granularity, from, to)
            .await
    }

    async fn expiry_notices_due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<cloro_keystore::ScheduledNotice>, StoreError> {
        self.inner.expiry_notices_due(now, limit).await
    }

    async fn finish_expiry_notice(
        &self,
        notice: &cloro_keystore::ScheduledNotice,
    ) -> Result<(), StoreError> {
        self.inner.finish_expiry_notice(notice).await
    }
}

/// Three accounts: one healthy, one whose writes fail, one whose writes land
/// but are reported failed. Every use must be counted once, and the healthy
/// account must never wait for the others.
async fn failed_usage_writes_count_once(inner: Arc<dyn KeyStore>) {
    let flaky = Arc::new(Flaky {
        inner: inner.clone(),
        accounts: Mutex::new(Vec::new()),
        failing: AtomicBool::new(true),
    });
    let admin = admin(inner.clone());
    let mut keys = Vec::new();
    for (name, failure) in [
        ("acct_flaky_healthy", None),
        ("acct_flaky_before", Some(Failure::Before)),
        ("acct_flaky_after", Some(Failure::After)),
    ] {
        let issued = admin
            .create(
                CreateKeyRequest::new(account(name), "k"),
                "admin",
                Timestamp::now(),
            )
            .await
            .unwrap();
        if let Some(failure) = failure {
            flaky
                .accounts
                .lock()
                .unwrap()
                .push((issued.record.account_id, failure));
        }
        keys.push(issued);
    }
    let verifier = verifier(flaky.clone());
    let counts = || async {
        let mut counts = Vec::new();
        for issued in &keys {
            counts.push(usage_count(inner.as_ref(), &issued.record.id).await);
        }
        counts
    };
    let use_all = |times: u64| {
        let verifier = &verifier;
        let keys = &keys;
        async move {
            for issued in keys {
                use_key(verifier, &issued.key, times).await;
            }
        }
    };

    use_all(3).await;
    assert!(verifier.maintain(Timestamp::now()).await.is_err());
    assert_eq!(counts().await, [3, 0, 3], "the healthy account was written");
    use_all(2).await;
    // Still failing: the two unconfirmed batches go again (the one that
    // landed is skipped), the uses since then wait behind them, and the
    // healthy account's go through.
    assert!(verifier.maintain(Timestamp::now()).await.is_err());
    assert_eq!(counts().await, [5, 0, 3]);

    flaky.failing.store(false, Ordering::SeqCst);
    verifier.maintain(Timestamp::now()).await.unwrap();
    assert_eq!(counts().await, [5, 3, 3], "the resent batches, each once");
    verifier.maintain(Timestamp::now()).await.unwrap();
    assert_eq!(counts().await, [5, 5, 5], "then what waited behind them");
    verifier.maintain(Timestamp::now()).await.unwrap();
    assert_eq!(counts().await, [5, 5, 5], "and nothing more");
}

#[tokio::test]
async fn failed_usage_writes_count_once_in_memory() {
    failed_usage_writes_count_once(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn failed_usage_writes_count_once_embedded() {
    let dir = tempfile::tempdir().unwrap();
    failed_usage_writes_count_once(Arc::new(EmbeddedStore::open(dir.path()).unwrap())).await;
}

#[tokio::test]
async fn failed_usage_writes_count_once_on_redis() {
    let server = RedisServer::start();
    failed_usage_writes_count_once(Arc::new(
        RedisStore::connect(&server.url(), patient()).unwrap(),
    ))
    .await;
}
