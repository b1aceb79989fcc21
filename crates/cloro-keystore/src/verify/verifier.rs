//! The hot path: from a request's `Authorization` fields to the caller's
//! identity and limit state, or exactly one SPEC §4 error.
//!
//! Order (SPEC §5): parse → format and checksum (no store call) →
//! failed-attempt guard → cache or store → revoked/expired/disabled →
//! scope → rate limit → quota and credits (SPEC §11) → concurrency. A request refused early uses none of
//! the later allowances. Keys already cached as valid pass the failed-attempt
//! guard: a client address that sent bad keys can still use its good one.
//!
//! Whoever builds a verifier gets its housekeeping too: the first request
//! starts a task (holding only a weak reference) that makes the quota
//! ledger durable every second, flushes usage and sweeps idle state every
//! few seconds, and ends with the verifier.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use cloro_auth_core::wire::{AppliesTo, RateLimitPolicy, UsageOutcome};
use cloro_auth_core::{
    ApiKey, AuthError, KeyHash, QuotaLimit, RevocationReason, Scope, bearer_token,
};
use jiff::Timestamp;

use super::cache::{CacheBounds, CacheEntry, CachedKey, FillRefused, Filled, KeyCache};
use super::health::StoreHealth;
use super::striped::StripedCounter;
use super::usage::UsageRecorder;
use crate::clock::Clock;
use crate::limits::{
    ConcurrencyPermit, ConcurrencyState, FailedAttempts, GcraParams, LocalRateLimiter, Plans,
    RateDecision, RateState, SharedRateLimiter, gcra_step,
};
use crate::log_limit::LogLimit;
use crate::quota::{
    FallbackShares, Ledger, LocalLedger, Meter, MeterOutcome, QuotaEvents, crossings, lines_crossed,
};
use crate::store::{KeyBatch, KeyStore, StoreError, within};

/// `Retry-After` for `AUTH_UNAVAILABLE`: the store is retried on the next
/// request anyway, so a short wait is right.
const UNAVAILABLE_RETRY_SECONDS: u64 = 1;

/// How often usage is flushed and idle state forgotten.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(5);

/// How often the quota ledger is made durable (SPEC §11: at least every
/// second, so `kill -9` forgets at most a second of use).
pub const LEDGER_PERSIST_INTERVAL: Duration = Duration::from_secs(1);

/// How the verifier behaves; the server fills this from its flags.
#[derive(Clone, Debug)]
pub struct VerifierConfig {
    /// How long a store read is trusted (SPEC §7 `--cache-ttl`, default 30 s).
    pub cache_ttl: Duration,
    /// `INVALID_API_KEY` answers allowed per client address (`--max-failed-auth`,
    /// default 100 per minute, burst 100).
    pub max_failed_auth: RateLimitPolicy,
    /// IPv6 client addresses share an allowance per prefix of this many
    /// bits (`--failed-auth-ipv6-prefix`, default 64).
    pub failed_auth_ipv6_prefix: u8,
    /// How long a store or shared-limiter call may take before the request
    /// is answered without it (default 250 ms).
    pub store_timeout: Duration,
    /// Bytes for negative cache entries (`--unknown-key-cache-size`, default 16 MiB).
    pub unknown_key_cache_bytes: usize,
    /// Bytes for the per-address failed-attempt table
    /// (`--failed-auth-table-size`, default 8 MiB).
    pub failed_auth_table_bytes: usize,
    /// Bytes for store lookups in flight (`--pending-lookups-size`, default 4 MiB).
    pub pending_lookup_bytes: usize,
    /// Where "now" comes from (the system clock; tests move a manual one).
    pub clock: Clock,
    /// Whether answers are counted per key: use counts, `last_used_at` and
    /// usage by outcome (SPEC §10). Always on in the server; off only for
    /// the benchmark's baseline, which measures what counting costs.
    pub count_usage: bool,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        let cache = CacheBounds::default();
        VerifierConfig {
            cache_ttl: Duration::from_secs(30),
            max_failed_auth: RateLimitPolicy::new(nonzero(100), nonzero(60)),
            failed_auth_ipv6_prefix: 64,
            store_timeout: Duration::from_millis(250),
            unknown_key_cache_bytes: cache.unknown_keys,
            failed_auth_table_bytes: 8 << 20,
            pending_lookup_bytes: cache.pending_lookups,
            clock: Clock::system(),
            count_usage: true,
        }
    }
}

fn nonzero(n: u32) -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN)
}

/// What a route asks of the verifier besides the key.
#[derive(Clone, Copy, Debug)]
pub struct VerifyRequest {
    /// The client address (SPEC §3), for the failed-attempt guard.
    pub client: IpAddr,
    /// The scope the route needs, if any.
    pub required_scope: Option<Scope>,
    /// Whether the key's concurrency limit applies (not on `/auth/verify`).
    pub limit_concurrency: bool,
    /// The route's cost in quota and credit units (SPEC §11
    /// `[route_costs]`; 1 by default).
    pub cost: u64,
    /// The time of the request.
    pub now: Timestamp,
}

/// An authenticated request.
#[derive(Debug)]
pub struct Verified {
    /// The caller's key.
    pub key: Arc<CachedKey>,
    /// The rate-limit state after this request, for the headers (the
    /// request was allowed, so there is no wait).
    pub rate: RateState,
    /// The in-flight slot, held until the request ends; `None` when the key
    /// has no concurrency limit or the route does not apply one.
    pub concurrency: Option<ConcurrencyPermit>,
    /// The quota after this request, when one applies (for the headers).
    pub quota: Option<QuotaState>,
    /// The key's credits left after this request, when they are limited.
    pub credits: Option<u64>,
}

/// What [`Verifier::grant`] lets a request have: [`Verified`] without the
/// key, which the caller still owns (so the hot path moves it, never
/// counts a reference more).
struct Granted {
    rate: RateState,
    concurrency: Option<ConcurrencyPermit>,
    quota: Option<QuotaState>,
    credits: Option<u64>,
}

/// The values of the quota's IETF policy (SPEC §11): `"quota";q=…;w=…` and
/// `"quota";r=…;t=…`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaState {
    /// Units per period (`q`).
    pub limit: u64,
    /// The period's length in seconds (`w`).
    pub window_seconds: u64,
    /// Units left (`r`).
    pub remaining: u64,
    /// Seconds until the next period (`t`).
    pub reset_seconds: u64,
}

/// A refused request: the error, and limit state where the limiter ran.
#[derive(Debug)]
pub struct Refused {
    /// The one error.
    pub error: AuthError,
    /// Rate-limit state, when the limiter ran (429 and later refusals);
    /// the wait of a 429 is in `error`.
    pub rate: Option<RateState>,
    /// Concurrency state, for `CONCURRENT_LIMIT_EXCEEDED`.
    pub concurrency: Option<ConcurrencyState>,
    /// Quota state, when the quota ran (`QUOTA_EXCEEDED` and later refusals).
    pub quota: Option<QuotaState>,
}

impl From<AuthError> for Refused {
    fn from(error: AuthError) -> Self {
        Refused {
            error,
            rate: None,
            concurrency: None,
            quota: None,
        }
    }
}

/// Counters for `/metrics`, striped so the hot path shares no cache line.
#[derive(Debug, Default)]
pub struct VerifierStats {
    /// Requests answered from the cache.
    pub cache_hits: StripedCounter,
    /// Requests that needed a store read (coalesced or not).
    pub cache_misses: StripedCounter,
    /// Lookups sent to the store.
    pub store_lookups: StripedCounter,
    /// Store reads that failed or timed out.
    pub store_errors: StripedCounter,
    /// Shared-limiter calls that failed, answered by the local limiter.
    pub limiter_fallbacks: StripedCounter,
    /// Requests refused for quota or credits.
    pub quota_refusals: StripedCounter,
    /// Requests answered 503 because too many lookups were in flight.
    pub lookups_refused: StripedCounter,
}

/// Verifies API keys. One per process, shared behind an `Arc`.
#[derive(Debug)]
pub struct Verifier {
    store: Arc<dyn KeyStore>,
    cache: Arc<KeyCache>,
    plans: Arc<Plans>,
    /// Per-account allowances on this node (per-key ones live in cache slots).
    account_limiter: LocalRateLimiter,
    shared_limiter: Option<Arc<dyn SharedRateLimiter>>,
    /// Quotas and credits: the store's ledger (or, with a shared limiter,
    /// the Redis one, which the limiter's script charges directly).
    ledger: Arc<dyn Ledger>,
    /// What this node may spend of shared quotas while Redis is out.
    fallback: FallbackShares,
    /// Quota lines crossed, waiting to be written as events (SPEC §12).
    quota_events: QuotaEvents,
    failed_attempts: FailedAttempts,
    usage: UsageRecorder,
    /// [`VerifierConfig::count_usage`].
    count_usage: bool,
    health: StoreHealth,
    stats: VerifierStats,
    store_timeout: Duration,
    clock: Clock,
    /// Itself, for the maintenance task, which must not keep it alive.
    this: Weak<Verifier>,
    maintenance_started: AtomicBool,
    maintenance: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Verifier {
    fn drop(&mut self) {
        if let Ok(mut task) = self.maintenance.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
    }
}

impl Verifier {
    /// A verifier over `store`. `shared_limiter` makes rate limits exact
    /// across nodes; without it they are per process. Quotas and credits
    /// are kept in this process only (see [`Verifier::with_ledger`]).
    pub fn new(
        store: Arc<dyn KeyStore>,
        plans: Arc<Plans>,
        shared_limiter: Option<Arc<dyn SharedRateLimiter>>,
        config: &VerifierConfig,
    ) -> Arc<Self> {
        Self::with_ledger(
            store,
            plans,
            shared_limiter,
            Arc::new(LocalLedger::in_memory()),
            config,
        )
    }

    /// [`Verifier::new`] with quotas and credits kept in `ledger`: the
    /// store's (durable for the embedded store, shared for Redis). With a
    /// shared limiter the quota is charged in the limiter's own round trip
    /// and `ledger` must be the one that limiter's store holds.
    pub fn with_ledger(
        store: Arc<dyn KeyStore>,
        plans: Arc<Plans>,
        shared_limiter: Option<Arc<dyn SharedRateLimiter>>,
        ledger: Arc<dyn Ledger>,
        config: &VerifierConfig,
    ) -> Arc<Self> {
        let bounds = CacheBounds {
            unknown_keys: config.unknown_key_cache_bytes,
            pending_lookups: config.pending_lookup_bytes,
        };
        Arc::new_cyclic(|this| Verifier {
            store,
            cache: Arc::new(KeyCache::new(bounds, config.cache_ttl)),
            plans,
            account_limiter: LocalRateLimiter::new(),
            shared_limiter,
            ledger,
            fallback: FallbackShares::default(),
            quota_events: QuotaEvents::default(),
            failed_attempts: FailedAttempts::new(
                &config.max_failed_auth,
                config.failed_auth_ipv6_prefix,
                config.failed_auth_table_bytes,
            ),
            usage: UsageRecorder::default(),
            count_usage: config.count_usage,
            health: StoreHealth::default(),
            stats: VerifierStats::default(),
            store_timeout: config.store_timeout,
            clock: config.clock.clone(),
            this: this.clone(),
            maintenance_started: AtomicBool::new(false),
            maintenance: Mutex::new(None),
        })
    }

    /// Starts the housekeeping task once, from inside the runtime that
    /// serves requests. It holds a weak reference, so it ends (within one
    /// interval) when the verifier is dropped, and is aborted then anyway.
    fn start_maintenance(&self) {
        if self.maintenance_started.load(Ordering::Relaxed)
            || self.maintenance_started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Not in a runtime (the caller polls with another executor):
            // try again on the next request.
            self.maintenance_started.store(false, Ordering::Release);
            return;
        };
        let this = self.this.clone();
        let task = runtime.spawn(async move {
            let mut ticks = tokio::time::interval(LEDGER_PERSIST_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let per_maintenance =
                (MAINTENANCE_INTERVAL.as_secs() / LEDGER_PERSIST_INTERVAL.as_secs()).max(1);
            ticks.tick().await;
            let mut tick: u64 = 0;
            loop {
                ticks.tick().await;
                tick += 1;
                let Some(verifier) = this.upgrade() else {
                    break;
                };
                verifier.persist_ledger().await;
                verifier.send_quota_events().await;
                if tick.is_multiple_of(per_maintenance)
                    && let Err(error) = verifier.maintain(verifier.clock.now()).await
                {
                    tracing::warn!(%error, "usage flush failed; counts are kept for the next one");
                }
            }
        });
        if let Ok(mut slot) = self.maintenance.lock() {
            *slot = Some(task);
        }
    }

    /// The per-address failed-attempt guard, which the admin API also
    /// charges for wrong admin tokens (SPEC §9).
    pub fn failed_attempts(&self) -> &FailedAttempts {
        &self.failed_attempts
    }

    /// The clock the verifier, and whoever builds on it, reads "now" from.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The cache, to register as an invalidation sink.
    pub fn cache(&self) -> &Arc<KeyCache> {
        &self.cache
    }

    /// The quota ledger (the admin API reads and adjusts it).
    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.ledger
    }

    /// The store's health as the verifier has seen it.
    pub fn health(&self) -> &StoreHealth {
        &self.health
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &VerifierStats {
        &self.stats
    }

    /// Verifies the `Authorization` field(s) of one request.
    ///
    /// # Errors
    /// [`Refused`] with the one SPEC §4 error the request earns.
    // `Refused` is returned by value on purpose: boxing it would allocate on
    // the refusal path, which is exactly the path a flood of bad keys takes.
    #[allow(clippy::result_large_err)]
    pub async fn verify<'a, I>(
        &self,
        authorization: I,
        request: &VerifyRequest,
    ) -> Result<Verified, Refused>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        self.start_maintenance();
        let token = bearer_token(authorization)?;
        ApiKey::check_format(token.as_bytes()).map_err(AuthError::InvalidApiKeyFormat)?;
        let hash = KeyHash::of(token.as_bytes());
        let key = self.known_key(&hash, request).await?;
        self.authorize(key, request).await
    }

    /// The cached or stored key, after the failed-attempt guard.
    ///
    /// The guard is charged when this request is about to cause a store
    /// lookup, before it starts (so abandoning the request does not undo
    /// it), and given back if the key is valid. A request that joins a
    /// lookup already under way causes none, and pays only if the answer is
    /// "no such key". A cached valid key never touches the guard.
    async fn known_key(
        &self,
        hash: &KeyHash,
        request: &VerifyRequest,
    ) -> Result<Arc<CachedKey>, AuthError> {
        let now = nanos(request.now);
        let subject = || self.failed_attempts.subject(request.client);
        match self.cache.get(hash, request.now) {
            Some(CacheEntry::Known(key)) => {
                self.stats.cache_hits.increment();
                return Ok(key);
            }
            Some(CacheEntry::Unknown) => {
                self.stats.cache_hits.increment();
                let _ = self.failed_attempts.charge(&subject(), now)?;
                return Err(AuthError::InvalidApiKey);
            }
            None => self.stats.cache_misses.increment(),
        }
        let subject = subject();
        let store = &self.store;
        let timeout = self.store_timeout;
        let lookups = &self.stats.store_lookups;
        let filled = self
            .cache
            .get_or_load(
                hash,
                request.now,
                || self.failed_attempts.charge(&subject, now),
                || async move {
                    lookups.increment();
                    within(timeout, store.lookup(hash), || no_answer_within(timeout)).await
                },
            )
            .await;
        let Filled { result, paid } = match filled {
            Ok(filled) => filled,
            Err(FillRefused::Refused(error)) => return Err(error),
            Err(FillRefused::Busy) => {
                self.stats.lookups_refused.increment();
                static LOOKUPS_FULL: LogLimit = LogLimit::per_second();
                if let Some(suppressed) = LOOKUPS_FULL.admit() {
                    tracing::warn!(
                        suppressed,
                        "too many key lookups in flight; answering AUTH_UNAVAILABLE (raise --pending-lookups-size?)"
                    );
                }
                return Err(AuthError::AuthUnavailable {
                    retry_after: UNAVAILABLE_RETRY_SECONDS,
                });
            }
        };
        match result {
            Ok(CacheEntry::Known(key)) => {
                self.health.record_success();
                if let Some(charge) = paid {
                    self.failed_attempts.refund(&subject, charge);
                }
                Ok(key)
            }
            Ok(CacheEntry::Unknown) => {
                self.health.record_success();
                if paid.is_none() {
                    let _ = self.failed_attempts.charge(&subject, now)?;
                }
                Err(AuthError::InvalidApiKey)
            }
            Err(error) => {
                // Not an unknown key: the attempt is not held against the client.
                if let Some(charge) = paid {
                    self.failed_attempts.refund(&subject, charge);
                }
                self.health.record_failure();
                self.stats.store_errors.increment();
                // Every request with an uncached key lands here while the
                // store is down (SPEC §9: logs can't be flooded).
                static LOOKUP_FAILED: LogLimit = LogLimit::per_second();
                if let Some(suppressed) = LOOKUP_FAILED.admit() {
                    tracing::warn!(%error, suppressed, "key lookup failed; answering AUTH_UNAVAILABLE");
                }
                Err(AuthError::AuthUnavailable {
                    retry_after: UNAVAILABLE_RETRY_SECONDS,
                })
            }
        }
    }

    /// [`Verifier::grant`], and the answer counted for the key by outcome
    /// (SPEC §10), here and only here: a valid one once it is let through
    /// (so a refused concurrency permit is not counted as valid first).
    #[allow(clippy::result_large_err)] // see `verify`
    async fn authorize(
        &self,
        key: Arc<CachedKey>,
        request: &VerifyRequest,
    ) -> Result<Verified, Refused> {
        let now = nanos(request.now);
        match self.grant(&key, request).await {
            Ok(granted) => {
                if self.count_usage {
                    self.usage.record(&key, now);
                }
                Ok(Verified {
                    key,
                    rate: granted.rate,
                    concurrency: granted.concurrency,
                    quota: granted.quota,
                    credits: granted.credits,
                })
            }
            Err(refused) => {
                if let Some(outcome) = usage_outcome(&refused.error)
                    && self.count_usage
                {
                    self.usage.record_refusal(&key, outcome, now);
                }
                Err(refused)
            }
        }
    }

    /// Status, scope, rate limit, concurrency: everything after the lookup.
    #[allow(clippy::result_large_err)] // see `verify`
    async fn grant(
        &self,
        key: &Arc<CachedKey>,
        request: &VerifyRequest,
    ) -> Result<Granted, Refused> {
        let record = &key.record;
        if let Some(refusal) = record.status(request.now).refusal() {
            return Err(refusal.into());
        }
        if let Some(required) = &request.required_scope
            && !record.scopes.iter().any(|held| held.grants(required))
        {
            return Err(AuthError::InsufficientPermissions {
                required: *required,
            }
            .into());
        }

        let (plan_name, plan) = self.plans.resolve(key.account_plan);
        let (policy, plan_hit) = match record.rate_limit {
            Some(own) => (own, None),
            None => (plan.rate_limit, Some(plan_name)),
        };
        let meter = Meter::for_key(
            record,
            (plan_name, plan.quota.as_ref()),
            request.cost,
            request.now,
        );
        let (decision, outcome) = self
            .rate_and_quota(key, &policy, meter.as_ref(), request.now)
            .await?;
        let rate = match decision {
            RateDecision::Allowed { state } => state,
            RateDecision::Refused { state, retry_after } => {
                return Err(Refused {
                    error: AuthError::RateLimitExceeded {
                        retry_after: retry_after.get(),
                        plan: plan_hit,
                    },
                    rate: Some(state),
                    concurrency: None,
                    quota: None,
                });
            }
        };
        let quota = meter
            .as_ref()
            .zip(outcome.as_ref())
            .and_then(|(meter, outcome)| quota_state(meter, outcome, request.now));
        if let (Some(meter), Some(outcome)) = (&meter, &outcome)
            && let Some(limit) = outcome.refused_by
        {
            self.stats.quota_refusals.increment();
            return Err(Refused {
                error: quota_exceeded(meter, limit, request.now),
                rate: Some(rate),
                concurrency: None,
                quota,
            });
        }

        let concurrency_limit = record.concurrency_limit.or(plan.concurrency_limit);
        let concurrency = match concurrency_limit {
            Some(limit) if request.limit_concurrency => {
                match ConcurrencyPermit::acquire(&key.counters.in_flight, limit.get()) {
                    Ok(permit) => Some(permit),
                    Err(state) => {
                        return Err(Refused {
                            error: AuthError::ConcurrentLimitExceeded { limit: state.limit },
                            rate: Some(rate),
                            concurrency: Some(state),
                            quota,
                        });
                    }
                }
            }
            _ => None,
        };

        Ok(Granted {
            rate,
            concurrency,
            quota,
            credits: outcome.and_then(|outcome| outcome.credits_left),
        })
    }

    /// The rate limit and then, if the request has a meter and the rate
    /// limit let it through, its quota and credits: in one round trip on
    /// the shared limiter when there is one and it answers in time, else on
    /// this node (SPEC §5: during an outage each node limits locally; §11:
    /// and spends only its share of what was left).
    #[allow(clippy::result_large_err)] // see `verify`
    async fn rate_and_quota(
        &self,
        key: &CachedKey,
        policy: &RateLimitPolicy,
        meter: Option<&Meter>,
        now: Timestamp,
    ) -> Result<(RateDecision, Option<MeterOutcome>), Refused> {
        let per_account = policy.applies_to == AppliesTo::Account;
        let subject = if per_account {
            &key.account_subject
        } else {
            &key.record.hash
        };
        let timeout = self.store_timeout;
        if let Some(shared) = &self.shared_limiter {
            let checked = within(
                timeout,
                shared.check(&key.record.account_id, subject, policy, meter),
                || no_answer_within(timeout),
            )
            .await;
            match checked {
                Ok((decision, outcome)) => {
                    if let (Some(meter), Some(outcome)) = (meter, &outcome) {
                        self.fallback.learn(meter, outcome);
                        self.note_crossings(meter, outcome, now);
                    }
                    return Ok((decision, outcome));
                }
                Err(error) => {
                    // Every rate-limited request lands here while Redis fails.
                    static SHARED_LIMITER_FAILED: LogLimit = LogLimit::per_second();
                    if let Some(suppressed) = SHARED_LIMITER_FAILED.admit() {
                        tracing::warn!(%error, suppressed, "shared rate limiter failed; limiting on this node");
                    }
                }
            }
            self.stats.limiter_fallbacks.increment();
        }
        let params = GcraParams::of(policy);
        let decision = if per_account {
            self.account_limiter.check(subject, &params, nanos(now))
        } else {
            gcra_step(&key.counters.tat, &params, nanos(now))
        };
        let Some(meter) = meter.filter(|_| decision.is_allowed()) else {
            return Ok((decision, None));
        };
        let outcome = if self.shared_limiter.is_some() {
            // Redis is out: this node's share of what it last saw, and
            // nothing for what it never saw. Only roughly counted, so it
            // raises no quota events.
            self.fallback.charge(meter)
        } else {
            let exact = match self.ledger.charge_in_process_hinted(meter, &key.quota_hint) {
                Some(outcome) => Some(outcome),
                None => within(timeout, self.ledger.charge(meter), || {
                    no_answer_within(timeout)
                })
                .await
                .ok(),
            };
            if let Some(outcome) = &exact {
                self.note_crossings(meter, outcome, now);
            }
            exact
        };
        match outcome {
            Some(outcome) => Ok((decision, Some(outcome))),
            None => Err(AuthError::AuthUnavailable {
                retry_after: UNAVAILABLE_RETRY_SECONDS,
            }
            .into()),
        }
    }

    /// Queues the quota events an exact charge raised (rarely any: a
    /// branch or two per request).
    fn note_crossings(&self, meter: &Meter, outcome: &MeterOutcome, now: Timestamp) {
        if lines_crossed(meter, outcome) == (false, false) {
            return;
        }
        for crossing in crossings(meter, outcome, now) {
            if !self.quota_events.push(crossing) {
                static QUEUE_FULL: LogLimit = LogLimit::per_second();
                if let Some(suppressed) = QUEUE_FULL.admit() {
                    tracing::warn!(
                        suppressed,
                        "too many quota events wait to be written; one was dropped"
                    );
                }
            }
        }
    }

    /// Writes the queued quota events as audit (and so outbox) events,
    /// each in a commit of its own; what fails is kept for the next call.
    /// The verifier's housekeeping calls it every second and at shutdown.
    pub async fn send_quota_events(&self) {
        let queued = self.quota_events.take();
        if queued.is_empty() {
            return;
        }
        let mut unsent = Vec::new();
        let mut failure = None;
        for crossing in queued {
            if failure.is_some() {
                unsent.push(crossing);
                continue;
            }
            let batch = KeyBatch {
                account_id: crossing.account,
                writes: Vec::new(),
                audit: vec![crossing.audit_event()],
            };
            if let Err(error) = self.store.commit(batch).await {
                failure = Some(error);
                unsent.push(crossing);
            }
        }
        if let Some(error) = failure {
            static SEND_FAILED: LogLimit = LogLimit::per_second();
            if let Some(suppressed) = SEND_FAILED.admit() {
                tracing::warn!(%error, suppressed, waiting = unsent.len(), "quota events could not be written; tried again in a second");
            }
            self.quota_events.put_back(unsent);
        }
    }

    /// Makes the quota ledger durable (every second, and at shutdown).
    async fn persist_ledger(&self) {
        if let Err(error) = self.ledger.persist().await {
            static PERSIST_FAILED: LogLimit = LogLimit::per_second();
            if let Some(suppressed) = PERSIST_FAILED.admit() {
                tracing::warn!(%error, suppressed, "writing quota counters failed; they are written again next second");
            }
        }
    }

    /// Housekeeping: flushes usage and forgets idle limiter state. The
    /// verifier's own task calls this every [`MAINTENANCE_INTERVAL`]; tests
    /// call it with the time they choose.
    ///
    /// # Errors
    /// The store's error from the usage flush (counts are kept for next time).
    pub async fn maintain(&self, now: Timestamp) -> Result<(), StoreError> {
        self.ledger.forget_ended(now);
        self.fallback.forget_ended(now);
        if let Some(shared) = &self.shared_limiter {
            match shared.live_nodes(self.usage.node_id()).await {
                Ok(nodes) => self.fallback.set_nodes(nodes),
                Err(error) => {
                    tracing::debug!(%error, "cannot count live nodes; keeping the last count")
                }
            }
        }
        self.account_limiter.forget_idle(nanos(now));
        self.failed_attempts.forget_idle(nanos(now));
        self.cache.forget_idle(now);
        self.flush_usage().await
    }

    /// Writes the usage counted so far and the quota ledger, e.g. at
    /// shutdown.
    ///
    /// # Errors
    /// The store's error (counts are kept for the next flush).
    pub async fn flush_usage(&self) -> Result<(), StoreError> {
        let ledger = self.ledger.persist().await;
        self.send_quota_events().await;
        self.usage.flush(self.store.as_ref()).await.map(drop)?;
        ledger
    }
}

/// The usage outcome (SPEC §10) of a refusal of an issued key; `None` for
/// one that is no outcome of the key (the store could not be reached).
fn usage_outcome(error: &AuthError) -> Option<UsageOutcome> {
    Some(match error {
        AuthError::ExpiredApiKey => UsageOutcome::Expired,
        AuthError::RevokedApiKey(RevocationReason::Revoked) => UsageOutcome::Revoked,
        AuthError::RevokedApiKey(RevocationReason::Disabled) => UsageOutcome::Disabled,
        AuthError::InsufficientPermissions { .. } => UsageOutcome::Forbidden,
        AuthError::RateLimitExceeded { .. } => UsageOutcome::RateLimited,
        AuthError::QuotaExceeded { .. } => UsageOutcome::QuotaExceeded,
        AuthError::ConcurrentLimitExceeded { .. } => UsageOutcome::ConcurrencyLimited,
        _ => return None,
    })
}

/// The quota's header values after `outcome`, when the meter has a quota.
fn quota_state(meter: &Meter, outcome: &MeterOutcome, now: Timestamp) -> Option<QuotaState> {
    let quota = meter.quota.as_ref()?;
    Some(QuotaState {
        limit: quota.limit,
        window_seconds: quota.window.seconds(),
        remaining: outcome.quota_left.unwrap_or(0),
        reset_seconds: quota.window.seconds_left(now),
    })
}

/// The `QUOTA_EXCEEDED` of a request `limit` refused: it resets at the
/// quota's next period, or at the credits' next refill, or never.
fn quota_exceeded(meter: &Meter, limit: QuotaLimit, now: Timestamp) -> AuthError {
    let (plan, window) = match limit {
        QuotaLimit::Quota => {
            let quota = meter.quota.as_ref();
            (quota.and_then(|q| q.plan), quota.map(|q| q.window))
        }
        QuotaLimit::Credits => (
            None,
            meter
                .credits
                .as_ref()
                .and_then(|credits| credits.refill)
                .map(|refill| refill.window),
        ),
    };
    AuthError::QuotaExceeded {
        limit,
        plan,
        resets_at: window.map(|window| window.end),
        retry_after: window.map(|window| window.seconds_left(now)),
    }
}

/// What a store or shared-limiter call that took longer than `timeout`
/// gives instead.
fn no_answer_within(timeout: Duration) -> StoreError {
    StoreError::unavailable(format!("no answer within {} ms", timeout.as_millis()))
}

fn nanos(at: Timestamp) -> i64 {
    i64::try_from(at.as_nanosecond()).unwrap_or(i64::MAX)
}
