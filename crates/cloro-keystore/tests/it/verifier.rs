//! The verifier end to end over the in-memory store: every refusal in
//! SPEC §5 order, limits, the failed-attempt guard, caching, invalidation
//! and store outages.

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cloro_auth_core::wire::{
    AppliesTo, AuditEvent, CreateKeyRequest, Patch, RateLimitPolicy, UpdateKeyRequest,
};
use cloro_auth_core::{
    AccountId, ApiKey, AuthError, Environment, ErrorCode, KeyHash, KeyId, PlanName, Scope,
};
use cloro_keystore::{
    AccountRecord, InvalidationSink, IssuedKey, KeyAdmin, KeyBatch, KeyLookup, KeyRecord, KeyStore,
    LocalNotifier, MemoryStore, Page, PageRequest, Plan, Plans, Readiness, StoreError, UsageBatch,
    Verifier, VerifierConfig, VerifyRequest,
};
use jiff::Timestamp;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

struct Fixture {
    store: Arc<MemoryStore>,
    verifier: Arc<Verifier>,
    admin: KeyAdmin,
}

fn plans() -> Plans {
    let policy =
        |n, s| RateLimitPolicy::new(NonZeroU32::new(n).unwrap(), NonZeroU32::new(s).unwrap());
    let free = Plan {
        rate_limit: policy(1000, 3600),
        concurrency_limit: None,
        quota: None,
    };
    let tiny = Plan {
        rate_limit: policy(2, 60),
        concurrency_limit: NonZeroU32::new(1),
        quota: None,
    };
    Plans::new(
        PlanName::new("free").unwrap(),
        [
            (PlanName::new("free").unwrap(), free),
            (PlanName::new("tiny").unwrap(), tiny),
        ]
        .into(),
    )
    .unwrap()
}

fn fixture_with(
    config: VerifierConfig,
    store: Arc<dyn KeyStore>,
    memory: Arc<MemoryStore>,
) -> Fixture {
    let plans = Arc::new(plans());
    let verifier = Verifier::new(store.clone(), plans.clone(), None, &config);
    let sink: Arc<dyn InvalidationSink> = verifier.cache().clone();
    let admin = KeyAdmin::new(store, plans, Arc::new(LocalNotifier::new(vec![sink])));
    Fixture {
        store: memory,
        verifier,
        admin,
    }
}

fn fixture(config: VerifierConfig) -> Fixture {
    let memory = Arc::new(MemoryStore::new());
    fixture_with(config, memory.clone(), memory)
}

fn request(now: Timestamp) -> VerifyRequest {
    VerifyRequest {
        client: CLIENT,
        required_scope: None,
        limit_concurrency: true,
        cost: 1,
        now,
    }
}

fn now() -> Timestamp {
    Timestamp::now()
}

async fn create(f: &Fixture, edit: impl FnOnce(&mut CreateKeyRequest)) -> IssuedKey {
    let mut request = CreateKeyRequest::new(AccountId::new("acct_v").unwrap(), "test key");
    edit(&mut request);
    f.admin.create(request, "admin", now()).await.unwrap()
}

fn header(key: &ApiKey) -> String {
    format!("Bearer {}", key.expose_secret())
}

async fn verify(
    f: &Fixture,
    value: &str,
    req: &VerifyRequest,
) -> Result<cloro_keystore::Verified, AuthError> {
    f.verifier
        .verify([value.as_bytes()], req)
        .await
        .map_err(|refused| refused.error)
}

#[tokio::test]
async fn valid_key_yields_identity_and_rate_state() {
    let f = fixture(VerifierConfig::default());
    let issued = create(&f, |r| {
        r.scopes = vec![
            Scope::new("monitor:write").unwrap(),
            Scope::new("run").unwrap(),
        ]
    })
    .await;
    let verified = verify(&f, &header(&issued.key), &request(now()))
        .await
        .unwrap();
    assert_eq!(verified.key.record.id, issued.record.id);
    assert_eq!(&verified.key.scopes_header[..], b"monitor:write run");
    assert_eq!(
        (
            verified.rate.limit,
            verified.rate.remaining,
            verified.rate.window_seconds
        ),
        (1000, 999, 3600)
    );
    assert!(
        verified.concurrency.is_none(),
        "the free plan has no concurrency limit"
    );
}

#[tokio::test]
async fn malformed_and_badly_formatted_keys_never_reach_the_store() {
    let f = fixture(VerifierConfig::default());
    let key = ApiKey::generate(Environment::Live).unwrap();
    let mut typo = key.expose_secret().to_owned();
    typo.replace_range(20..21, if &typo[20..21] == "a" { "b" } else { "a" });
    let cases: [(&[&[u8]], ErrorCode); 5] = [
        (&[], ErrorCode::MissingApiKey),
        (&[b"Basic abc"], ErrorCode::MissingBearerPrefix),
        (&[b"Bearer a b"], ErrorCode::MalformedAuthorization),
        (&[typo.as_bytes()], ErrorCode::MissingBearerPrefix),
        (&[b"Bearer sk_live_short"], ErrorCode::InvalidApiKeyFormat),
    ];
    for (fields, code) in cases {
        let refused = f
            .verifier
            .verify(fields.iter().copied(), &request(now()))
            .await
            .unwrap_err();
        assert_eq!(refused.error.code(), code);
    }
    let typo_header = format!("Bearer {typo}");
    assert_eq!(
        verify(&f, &typo_header, &request(now()))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::InvalidApiKeyFormat
    );
    assert_eq!(f.store.lookup_count(), 0, "no store call for any of these");
}

#[tokio::test]
async fn unknown_key_is_looked_up_once_then_cached_negative() {
    let f = fixture(VerifierConfig::default());
    let stranger = ApiKey::generate(Environment::Live).unwrap();
    for _ in 0..3 {
        assert_eq!(
            verify(&f, &header(&stranger), &request(now()))
                .await
                .unwrap_err(),
            AuthError::InvalidApiKey
        );
    }
    assert_eq!(f.store.lookup_count(), 1);
}

#[tokio::test]
async fn status_refusals_with_spec_precedence() {
    let f = fixture(VerifierConfig::default());
    let t0 = now();
    let expiring = create(&f, |r| {
        r.expires_at = Some(t0 + jiff::SignedDuration::from_secs(60))
    })
    .await;
    let later = request(t0 + jiff::SignedDuration::from_secs(61));
    assert_eq!(
        verify(&f, &header(&expiring.key), &later)
            .await
            .unwrap_err(),
        AuthError::ExpiredApiKey
    );

    let disabled = create(&f, |_| {}).await;
    let off = UpdateKeyRequest {
        enabled: Patch::Value(false),
        ..Default::default()
    };
    f.admin
        .update(&disabled.record.id, &off, "admin", now())
        .await
        .unwrap();
    let error = verify(&f, &header(&disabled.key), &request(now()))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        AuthError::RevokedApiKey(cloro_auth_core::RevocationReason::Disabled)
    );

    // Revoked wins over expired and disabled.
    f.admin
        .revoke(&expiring.record.id, None, "admin", now())
        .await
        .unwrap();
    let error = verify(&f, &header(&expiring.key), &later)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        AuthError::RevokedApiKey(cloro_auth_core::RevocationReason::Revoked)
    );
    // Expired wins over disabled.
    let both = create(&f, |r| {
        r.expires_at = Some(t0 + jiff::SignedDuration::from_secs(60))
    })
    .await;
    f.admin
        .update(&both.record.id, &off, "admin", now())
        .await
        .unwrap();
    assert_eq!(
        verify(&f, &header(&both.key), &later).await.unwrap_err(),
        AuthError::ExpiredApiKey
    );
}

#[tokio::test]
async fn missing_scope_is_403_and_costs_no_rate_limit() {
    let f = fixture(VerifierConfig::default());
    let issued = create(&f, |r| {
        r.scopes = vec![Scope::new("monitor:read").unwrap()];
        r.rate_limit = Some(RateLimitPolicy::new(
            NonZeroU32::new(5).unwrap(),
            NonZeroU32::new(60).unwrap(),
        ));
    })
    .await;
    let mut scoped = request(now());
    scoped.required_scope = Some(Scope::new("monitor:write").unwrap());
    for _ in 0..10 {
        let error = verify(&f, &header(&issued.key), &scoped).await.unwrap_err();
        assert_eq!(error.code(), ErrorCode::InsufficientPermissions);
    }
    scoped.required_scope = Some(Scope::new("monitor:read").unwrap());
    let verified = verify(&f, &header(&issued.key), &scoped).await.unwrap();
    assert_eq!(verified.rate.remaining, 4, "the ten 403s used nothing");
    // The wildcard grants every scope.
    let wildcard = create(&f, |_| {}).await;
    scoped.required_scope = Some(Scope::new("anything").unwrap());
    verify(&f, &header(&wildcard.key), &scoped).await.unwrap();
}

#[tokio::test]
async fn key_policy_and_plan_policy_limits() {
    let f = fixture(VerifierConfig::default());
    let t = now();
    let own = create(&f, |r| {
        r.rate_limit = Some(RateLimitPolicy::new(
            NonZeroU32::new(3).unwrap(),
            NonZeroU32::new(60).unwrap(),
        ))
    })
    .await;
    for remaining in [2, 1, 0] {
        assert_eq!(
            verify(&f, &header(&own.key), &request(t))
                .await
                .unwrap()
                .rate
                .remaining,
            remaining
        );
    }
    let refused = f
        .verifier
        .verify([header(&own.key).as_bytes()], &request(t))
        .await
        .unwrap_err();
    assert_eq!(
        refused.error,
        AuthError::RateLimitExceeded {
            retry_after: 20,
            plan: None
        }
    );
    assert_eq!(refused.rate.unwrap().reset_seconds, 60);

    // An account on the `tiny` plan: 2 per 60 s, and the 429 names the plan.
    let account = AccountId::new("acct_tiny").unwrap();
    f.admin
        .set_plan(&account, PlanName::new("tiny").unwrap(), "admin", t)
        .await
        .unwrap();
    let mut request_tiny = CreateKeyRequest::new(account, "tiny key");
    request_tiny.name = "tiny".into();
    let tiny = f.admin.create(request_tiny, "admin", t).await.unwrap();
    let mut no_concurrency = request(t);
    no_concurrency.limit_concurrency = false;
    verify(&f, &header(&tiny.key), &no_concurrency)
        .await
        .unwrap();
    verify(&f, &header(&tiny.key), &no_concurrency)
        .await
        .unwrap();
    let error = verify(&f, &header(&tiny.key), &no_concurrency)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        AuthError::RateLimitExceeded {
            retry_after: 30,
            plan: Some(PlanName::new("tiny").unwrap())
        }
    );
}

#[tokio::test]
async fn account_wide_policy_is_shared_by_the_accounts_keys() {
    let f = fixture(VerifierConfig::default());
    let mut policy =
        RateLimitPolicy::new(NonZeroU32::new(3).unwrap(), NonZeroU32::new(60).unwrap());
    policy.applies_to = AppliesTo::Account;
    let a = create(&f, |r| r.rate_limit = Some(policy)).await;
    let b = create(&f, |r| r.rate_limit = Some(policy)).await;
    let t = now();
    verify(&f, &header(&a.key), &request(t)).await.unwrap();
    verify(&f, &header(&b.key), &request(t)).await.unwrap();
    verify(&f, &header(&a.key), &request(t)).await.unwrap();
    assert_eq!(
        verify(&f, &header(&b.key), &request(t))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::RateLimitExceeded
    );
}

#[tokio::test]
async fn concurrency_limit_counts_in_flight_requests() {
    let f = fixture(VerifierConfig::default());
    let issued = create(&f, |r| r.concurrency_limit = NonZeroU32::new(2)).await;
    let first = verify(&f, &header(&issued.key), &request(now()))
        .await
        .unwrap();
    let second = verify(&f, &header(&issued.key), &request(now()))
        .await
        .unwrap();
    assert_eq!(second.concurrency.as_ref().unwrap().state.current, 2);
    let refused = f
        .verifier
        .verify([header(&issued.key).as_bytes()], &request(now()))
        .await
        .unwrap_err();
    assert_eq!(
        refused.error,
        AuthError::ConcurrentLimitExceeded { limit: 2 }
    );
    assert_eq!(refused.error.retry_after(), Some(1));
    assert!(refused.rate.is_some(), "the limiter ran before concurrency");
    drop(first);
    let third = verify(&f, &header(&issued.key), &request(now()))
        .await
        .unwrap();
    assert_eq!(third.concurrency.unwrap().state.remaining, 0);
    // Routes that don't limit concurrency (the verify endpoint) hold no slot.
    let mut unlimited = request(now());
    unlimited.limit_concurrency = false;
    assert!(
        verify(&f, &header(&issued.key), &unlimited)
            .await
            .unwrap()
            .concurrency
            .is_none()
    );
    drop(second);
}

#[tokio::test]
async fn failed_attempt_guard_refuses_before_lookup_but_lets_cached_keys_pass() {
    let config = VerifierConfig {
        max_failed_auth: RateLimitPolicy::new(
            NonZeroU32::new(3).unwrap(),
            NonZeroU32::new(60).unwrap(),
        ),
        ..Default::default()
    };
    let f = fixture(config);
    let good = create(&f, |_| {}).await;
    let t = now();
    verify(&f, &header(&good.key), &request(t)).await.unwrap();
    for _ in 0..3 {
        let stranger = ApiKey::generate(Environment::Live).unwrap();
        assert_eq!(
            verify(&f, &header(&stranger), &request(t))
                .await
                .unwrap_err(),
            AuthError::InvalidApiKey
        );
    }
    let lookups = f.store.lookup_count();
    let stranger = ApiKey::generate(Environment::Live).unwrap();
    let error = verify(&f, &header(&stranger), &request(t))
        .await
        .unwrap_err();
    assert_eq!(error, AuthError::TooManyFailedAttempts { retry_after: 20 });
    assert_eq!(f.store.lookup_count(), lookups, "refused before any lookup");
    verify(&f, &header(&good.key), &request(t))
        .await
        .expect("a cached valid key still passes");
    let mut elsewhere = request(t);
    elsewhere.client = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    assert_eq!(
        verify(&f, &header(&stranger), &elsewhere)
            .await
            .unwrap_err(),
        AuthError::InvalidApiKey
    );
    // After the allowance refills (one per 20 s), one more attempt is allowed.
    let later = request(t + jiff::SignedDuration::from_secs(20));
    assert_eq!(
        verify(&f, &header(&stranger), &later).await.unwrap_err(),
        AuthError::InvalidApiKey
    );
}

#[tokio::test]
async fn revocation_through_admin_is_seen_immediately() {
    let f = fixture(VerifierConfig::default());
    let issued = create(&f, |_| {}).await;
    verify(&f, &header(&issued.key), &request(now()))
        .await
        .unwrap();
    f.admin
        .revoke(&issued.record.id, None, "admin", now())
        .await
        .unwrap();
    assert_eq!(
        verify(&f, &header(&issued.key), &request(now()))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::RevokedApiKey
    );
    // And an account's plan change reaches its cached keys.
    let t = now();
    let key = create(&f, |_| {}).await;
    assert_eq!(
        verify(&f, &header(&key.key), &request(t))
            .await
            .unwrap()
            .rate
            .limit,
        1000
    );
    f.admin
        .set_plan(
            &AccountId::new("acct_v").unwrap(),
            PlanName::new("tiny").unwrap(),
            "admin",
            t,
        )
        .await
        .unwrap();
    let mut plain = request(t);
    plain.limit_concurrency = false;
    assert_eq!(
        verify(&f, &header(&key.key), &plain)
            .await
            .unwrap()
            .rate
            .limit,
        2
    );
}

#[tokio::test]
async fn without_invalidation_a_change_shows_within_the_ttl() {
    let config = VerifierConfig {
        cache_ttl: Duration::from_secs(30),
        ..Default::default()
    };
    let memory = Arc::new(MemoryStore::new());
    let f = fixture_with(config, memory.clone(), memory.clone());
    // An admin on "another node": same store, no way to reach this cache.
    let remote = KeyAdmin::new(
        memory,
        Arc::new(plans()),
        Arc::new(LocalNotifier::default()),
    );
    let issued = create(&f, |_| {}).await;
    let t = now();
    verify(&f, &header(&issued.key), &request(t)).await.unwrap();
    remote
        .revoke(&issued.record.id, None, "admin", now())
        .await
        .unwrap();
    // The request's time is the verifier's "now": move it instead of
    // sleeping through the TTL.
    let later = |seconds| request(t + jiff::SignedDuration::from_secs(seconds));
    verify(&f, &header(&issued.key), &later(29))
        .await
        .expect("still cached (bounded staleness)");
    assert_eq!(
        verify(&f, &header(&issued.key), &later(30))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::RevokedApiKey
    );
}

#[tokio::test]
async fn store_outage_serves_cached_keys_and_refuses_the_rest_with_503() {
    let f = fixture(VerifierConfig::default());
    let known = create(&f, |_| {}).await;
    verify(&f, &header(&known.key), &request(now()))
        .await
        .unwrap();
    assert_eq!(f.verifier.health().readiness(), Readiness::Ready);
    f.store.set_down(true);
    verify(&f, &header(&known.key), &request(now()))
        .await
        .expect("cached key keeps working");
    let uncached = create_while_down(&f).await;
    let refused = f
        .verifier
        .verify([header(&uncached).as_bytes()], &request(now()))
        .await
        .unwrap_err();
    assert_eq!(refused.error, AuthError::AuthUnavailable { retry_after: 1 });
    assert_eq!(f.verifier.health().readiness(), Readiness::Degraded);
    f.store.set_down(false);
    assert_eq!(
        verify(&f, &header(&uncached), &request(now()))
            .await
            .unwrap_err(),
        AuthError::InvalidApiKey
    );
    assert_eq!(f.verifier.health().readiness(), Readiness::Ready);
}

/// A key the store has never seen (creating one needs the store, which is down).
async fn create_while_down(_f: &Fixture) -> ApiKey {
    ApiKey::generate(Environment::Live).unwrap()
}

/// A store that answers `lookup` after a delay, to make calls overlap or hang.
#[derive(Debug)]
struct SlowStore {
    inner: Arc<MemoryStore>,
    delay: Duration,
    lookups: AtomicU64,
    /// When set, every lookup (after reading) also waits for a permit, so
    /// a test can hold reads in flight for exactly as long as it needs.
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

#[async_trait]
impl KeyStore for SlowStore {
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<KeyLookup>, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        // Read first, then wait: the answer is as of the start of the call.
        let answer = self.inner.lookup(hash).await;
        tokio::time::sleep(self.delay).await;
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        answer
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
        self.inner.record_usage(batches).await
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

fn slow_fixture(delay: Duration) -> (Fixture, Arc<SlowStore>) {
    let memory = Arc::new(MemoryStore::new());
    let slow = Arc::new(SlowStore {
        inner: memory.clone(),
        delay,
        lookups: AtomicU64::new(0),
        gate: None,
    });
    (
        fixture_with(VerifierConfig::default(), slow.clone(), memory),
        slow,
    )
}

/// A fixture whose store holds every read until `gate` gets a permit.
fn held_fixture(config: VerifierConfig) -> (Fixture, Arc<SlowStore>, Arc<tokio::sync::Semaphore>) {
    let memory = Arc::new(MemoryStore::new());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = Arc::new(SlowStore {
        inner: memory.clone(),
        delay: Duration::ZERO,
        lookups: AtomicU64::new(0),
        gate: Some(gate.clone()),
    });
    (fixture_with(config, held.clone(), memory), held, gate)
}

/// Yields until `store` has started `n` lookups.
async fn until_lookups(store: &SlowStore, n: u64) {
    while store.lookups.load(Ordering::SeqCst) < n {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_revocation_while_a_read_is_held_wins_over_the_read() {
    let config = VerifierConfig {
        store_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let (f, held, gate) = held_fixture(config);
    let issued = create(&f, |_| {}).await;
    let value = header(&issued.key);
    let verifier = f.verifier.clone();
    let before = {
        let value = value.clone();
        tokio::spawn(async move {
            verifier
                .verify([value.as_bytes()], &request(now()))
                .await
                .is_ok()
        })
    };
    // The read has taken the pre-revocation record and is held there.
    until_lookups(&held, 1).await;
    f.admin
        .revoke(&issued.record.id, None, "admin", now())
        .await
        .unwrap();
    // A request that starts after the revocation finds the held fill, but
    // must not take its older answer.
    let verifier = f.verifier.clone();
    let after = {
        let value = value.clone();
        tokio::spawn(async move {
            verifier
                .verify([value.as_bytes()], &request(now()))
                .await
                .map_err(|refused| refused.error.code())
        })
    };
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
    gate.add_permits(1);
    assert!(
        before.await.unwrap(),
        "the request in flight saw the old record"
    );
    until_lookups(&held, 2).await;
    gate.add_permits(1);
    assert_eq!(
        after.await.unwrap().unwrap_err(),
        ErrorCode::RevokedApiKey,
        "a request after the revocation looked again"
    );
    gate.add_permits(16);
    assert_eq!(
        verify(&f, &value, &request(now()))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::RevokedApiKey,
        "the held read was not cached"
    );
}

#[tokio::test]
async fn a_change_to_another_key_while_a_read_is_held_leaves_the_read_good() {
    let config = VerifierConfig {
        store_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let (f, held, gate) = held_fixture(config);
    let issued = create(&f, |_| {}).await;
    // Another key in another of the cache's 64 epoch stripes (a hash's
    // first byte picks it).
    let stripe = |hash: &KeyHash| hash.as_bytes()[0] % 64;
    let other = loop {
        let other = create(&f, |_| {}).await;
        if stripe(&other.record.hash) != stripe(&issued.record.hash) {
            break other;
        }
    };
    let value = header(&issued.key);
    let spawn_verify = |value: String| {
        let verifier = f.verifier.clone();
        tokio::spawn(async move {
            verifier
                .verify([value.as_bytes()], &request(now()))
                .await
                .is_ok()
        })
    };
    let first = spawn_verify(value.clone());
    until_lookups(&held, 1).await;
    // An operator changes the other key while the read is held.
    f.admin
        .revoke(&other.record.id, None, "admin", now())
        .await
        .unwrap();
    let joiner = spawn_verify(value.clone());
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
    gate.add_permits(16);
    assert!(first.await.unwrap());
    assert!(joiner.await.unwrap());
    assert_eq!(
        held.lookups.load(Ordering::SeqCst),
        1,
        "the request that joined the read took its answer: the change was to another key"
    );
}

#[tokio::test]
async fn abandoned_and_concurrent_unknown_keys_cost_no_more_lookups_than_the_allowance() {
    let config = VerifierConfig {
        max_failed_auth: RateLimitPolicy::new(
            NonZeroU32::new(5).unwrap(),
            NonZeroU32::new(60).unwrap(),
        ),
        store_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let (f, held, gate) = held_fixture(config);
    // 200 unknown keys at once from one address, every read held; then the
    // clients give up.
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let verifier = f.verifier.clone();
            let value = header(&ApiKey::generate(Environment::Live).unwrap());
            tokio::spawn(async move {
                verifier
                    .verify([value.as_bytes()], &request(now()))
                    .await
                    .map_err(|refused| refused.error.code())
            })
        })
        .collect();
    until_lookups(&held, 5).await;
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        held.lookups.load(Ordering::SeqCst),
        5,
        "only the allowance reached the store"
    );
    let mut refused = 0;
    for task in &tasks {
        if task.is_finished() {
            refused += 1;
        }
    }
    assert_eq!(refused, 195, "the rest were refused without waiting");
    for task in tasks {
        task.abort();
        if let Ok(Ok(_)) = task.await {
            panic!("an unknown key passed");
        }
    }
    assert_eq!(
        f.verifier.cache().pending_count(),
        0,
        "abandoned lookups left nothing behind"
    );
    // The abandoned five were still charged: the next unknown key is refused
    // before any lookup.
    gate.add_permits(1000);
    let stranger = ApiKey::generate(Environment::Live).unwrap();
    assert_eq!(
        verify(&f, &header(&stranger), &request(now()))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::TooManyFailedAttempts
    );
    assert_eq!(held.lookups.load(Ordering::SeqCst), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_for_one_key_make_one_store_call() {
    let (f, slow) = slow_fixture(Duration::from_millis(100));
    let issued = create(&f, |_| {}).await;
    let value = header(&issued.key);
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let verifier = f.verifier.clone();
            let value = value.clone();
            tokio::spawn(async move {
                verifier
                    .verify([value.as_bytes()], &request(now()))
                    .await
                    .is_ok()
            })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap());
    }
    assert_eq!(slow.lookups.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn hung_store_is_answered_within_the_store_timeout() {
    let (f, _slow) = slow_fixture(Duration::from_secs(30));
    let stranger = ApiKey::generate(Environment::Live).unwrap();
    let started = Instant::now();
    let error = verify(&f, &header(&stranger), &request(now()))
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::AuthUnavailable);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_during_a_lookup_is_not_undone_by_its_result() {
    let (f, _slow) = slow_fixture(Duration::from_millis(150));
    let issued = create(&f, |_| {}).await;
    let verifier = f.verifier.clone();
    let value = header(&issued.key);
    // This lookup reads the record before the revocation and answers after it.
    let in_flight = tokio::spawn(async move {
        verifier
            .verify([value.as_bytes()], &request(now()))
            .await
            .is_ok()
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    f.admin
        .revoke(&issued.record.id, None, "admin", now())
        .await
        .unwrap();
    assert!(
        in_flight.await.unwrap(),
        "the racing request itself saw the old record"
    );
    let error = verify(&f, &header(&issued.key), &request(now()))
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        ErrorCode::RevokedApiKey,
        "the stale read was not cached"
    );
}

/// Whoever builds a verifier (the server, an embedding service through the
/// tower layer) gets its housekeeping without starting anything: the first
/// request starts the task, and it stops with the verifier.
#[tokio::test(start_paused = true)]
async fn the_verifier_flushes_usage_by_itself() {
    let f = fixture(VerifierConfig::default());
    let issued = create(&f, |_| {}).await;
    verify(&f, &header(&issued.key), &request(now()))
        .await
        .unwrap();
    let count = async || {
        f.store
            .key(&issued.record.id)
            .await
            .unwrap()
            .unwrap()
            .usage
            .count
    };
    assert_eq!(count().await, 0);
    // Paused time: this sleep advances the clock through one interval.
    tokio::time::sleep(cloro_keystore::MAINTENANCE_INTERVAL * 2).await;
    assert_eq!(count().await, 1, "flushed by the verifier's own task");
    let weak = Arc::downgrade(&f.verifier);
    drop(f);
    tokio::time::sleep(cloro_keystore::MAINTENANCE_INTERVAL * 2).await;
    assert!(
        weak.upgrade().is_none(),
        "the task does not keep the verifier alive"
    );
}

#[tokio::test]
async fn usage_is_flushed_in_batches() {
    let f = fixture(VerifierConfig::default());
    let issued = create(&f, |_| {}).await;
    for _ in 0..5 {
        verify(&f, &header(&issued.key), &request(now()))
            .await
            .unwrap();
    }
    assert_eq!(
        f.store
            .key(&issued.record.id)
            .await
            .unwrap()
            .unwrap()
            .usage
            .count,
        0,
        "nothing written per request"
    );
    f.verifier.maintain(now()).await.unwrap();
    let usage = f.store.key(&issued.record.id).await.unwrap().unwrap().usage;
    assert_eq!(usage.count, 5);
    assert!(usage.last_used_at.is_some());
    f.verifier.maintain(now()).await.unwrap();
    assert_eq!(
        f.store
            .key(&issued.record.id)
            .await
            .unwrap()
            .unwrap()
            .usage
            .count,
        5,
        "no double counting"
    );
}

#[tokio::test]
async fn an_invalidation_does_not_reset_a_keys_rate_limit() {
    let f = fixture(VerifierConfig::default());
    let policy = RateLimitPolicy::new(NonZeroU32::new(2).unwrap(), NonZeroU32::new(60).unwrap());
    let issued = create(&f, |r| r.rate_limit = Some(policy)).await;
    let t = now();
    verify(&f, &header(&issued.key), &request(t)).await.unwrap();
    verify(&f, &header(&issued.key), &request(t)).await.unwrap();
    // A change re-reads the record, but the allowance already spent stays spent.
    let rename = UpdateKeyRequest {
        name: Patch::Value("renamed".into()),
        ..Default::default()
    };
    f.admin
        .update(&issued.record.id, &rename, "admin", t)
        .await
        .unwrap();
    let lookups = f.store.lookup_count();
    let error = verify(&f, &header(&issued.key), &request(t))
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::RateLimitExceeded);
    assert_eq!(
        f.store.lookup_count(),
        lookups + 1,
        "the invalidated record was read again"
    );
}

#[tokio::test]
async fn idle_cache_slots_are_forgotten_but_busy_ones_kept() {
    let config = VerifierConfig {
        cache_ttl: Duration::from_secs(10),
        ..Default::default()
    };
    let f = fixture(config);
    let policy = RateLimitPolicy::new(NonZeroU32::new(1).unwrap(), NonZeroU32::new(3600).unwrap());
    let limited = create(&f, |r| r.rate_limit = Some(policy)).await;
    let free = create(&f, |_| {}).await;
    let t = now();
    verify(&f, &header(&limited.key), &request(t))
        .await
        .unwrap();
    verify(&f, &header(&free.key), &request(t)).await.unwrap();
    f.verifier.maintain(t).await.unwrap();
    assert_eq!(f.verifier.cache().known_count(), 2);
    // Past the TTL: the free key's slot goes; the limited key still owes an
    // hour of allowance, so its slot (and that debt) stays.
    let later = t + jiff::SignedDuration::from_secs(60);
    f.verifier.maintain(later).await.unwrap();
    assert_eq!(f.verifier.cache().known_count(), 1);
    let error = verify(&f, &header(&limited.key), &request(later))
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::RateLimitExceeded);
}
