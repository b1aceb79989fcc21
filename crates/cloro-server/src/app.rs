//! The application: what the server is built from (store, verifier, admin,
//! tokens) and the router that sends each request to its handler.

use crate::background::StoppableTask;
use crate::secret_scanning::{KeySource, PartnerKeys, SecretScanning};
use crate::webhooks::{SealingKeyError, Webhooks, Worker};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use cloro_auth_core::wire::HealthResponse;
use cloro_auth_core::{ErrorCode, normalise_path};
use cloro_keystore::{
    AdminTokenStore, IdempotencyStore, RedisIdempotencyStore, SessionStore, WebhookStore,
};
use cloro_keystore::{
    ChangeNotifier, Clock, CounterStore, EmbeddedStore, InvalidationListener, InvalidationSink,
    KeyAdmin, KeyStore, Ledger, LocalLedger, LocalNotifier, Readiness, RedisLedger, RedisNotifier,
    RedisOptions, RedisRateLimiter, RedisStore, SharedRateLimiter, StoreError, Verifier,
    VerifierConfig, spawn_cluster_invalidation_listener, spawn_invalidation_listener,
};
use cloro_keystore::{LogLimit, mask_url, mask_url_list};
use http::{Request, Response, StatusCode};
use tracing::Instrument;

use crate::admin_token::{AdminToken, AdminTokenError};
use crate::config::{Settings, StoreChoice};
use crate::gateway::Gateway;
use crate::metrics::{MeasuredSink, Metrics, PropagationDelays};
use crate::routes::{Handler, Router};
use cloro_guard::AnsweredCode;
use cloro_guard::Guard;
use cloro_guard::request_id;
use cloro_guard::{ApiError, Body, json};
use cloro_guard::{TargetError, path_refusal};

/// Everything a request handler may need. Shared behind an `Arc`.
#[derive(Debug)]
pub struct App {
    settings: Settings,
    guard: Guard,
    admin: KeyAdmin,
    admin_token: AdminToken,
    store: Arc<dyn KeyStore>,
    /// Where admin `Idempotency-Key`s are remembered: the same store.
    idempotency: Arc<dyn IdempotencyStore>,
    metrics: Metrics,
    gateway: Gateway,
    router: Router,
    /// `GET /openapi.json`'s body, with this configuration's plan names
    /// (made once; each answer shares it).
    openapi: bytes::Bytes,
    /// Secret-scanning partners' keys and the leaked-key action.
    secret_scanning: SecretScanning,
    /// Webhook endpoints and their deliveries (SPEC §12).
    webhooks: Arc<Webhooks>,
    /// Named admin tokens (SPEC §13).
    admin_tokens: Arc<dyn AdminTokenStore>,
    /// Dashboard and portal sessions (SPEC §13).
    sessions: Arc<dyn SessionStore>,
}

/// Tasks the server runs beside requests; [`Background::stop`] ends them
/// and waits until they have let go of the store, dropping this ends them
/// without waiting. (The verifier runs its own housekeeping: see
/// [`Verifier`].)
#[derive(Debug)]
pub struct Background {
    _listener: Option<InvalidationListener>,
    webhook_worker: StoppableTask,
    expiry_notices: StoppableTask,
}

impl Background {
    /// Ends the background tasks and waits for them, so that the store
    /// can be opened again in this process straight after.
    pub async fn stop(self) {
        self.expiry_notices.stop().await;
        self.webhook_worker.stop().await;
    }
}

/// The store the settings chose, and what a shared store adds.
struct Backend {
    store: Arc<dyn KeyStore>,
    /// The limiter that holds rate limits exact across nodes (Redis only).
    shared_limiter: Option<Arc<dyn SharedRateLimiter>>,
    /// Where the embedded store keeps the quota ledger (embedded only).
    counters: Option<Arc<dyn CounterStore>>,
    redis: Option<RedisBackend>,
    idempotency: Arc<dyn IdempotencyStore>,
    webhooks: Arc<dyn WebhookStore>,
    admin_tokens: Arc<dyn AdminTokenStore>,
    sessions: Arc<dyn SessionStore>,
}

/// What Redis mode's invalidations need: the store to publish through,
/// and where and how the listener connects.
struct RedisBackend {
    store: Arc<RedisStore>,
    /// The URL, or the cluster's seed list; holds a password, never logged raw.
    url: String,
    cluster: bool,
    options: RedisOptions,
}

impl Backend {
    fn open(settings: &Settings) -> Result<Backend, StartError> {
        match &settings.store {
            StoreChoice::Embedded(dir) => {
                tracing::info!(data_dir = %dir.display(), "using the embedded key store");
                let store = Arc::new(EmbeddedStore::open_with_cache(
                    dir,
                    settings.memory.store_cache,
                )?);
                Ok(Backend {
                    store: store.clone(),
                    shared_limiter: None,
                    counters: Some(store.clone()),
                    redis: None,
                    idempotency: store.clone(),
                    webhooks: store.clone(),
                    admin_tokens: store.clone(),
                    sessions: store,
                })
            }
            StoreChoice::Redis { url, cluster } => {
                let mut options = RedisOptions::default();
                options.command_timeout = settings.store_timeout;
                let store = if *cluster {
                    tracing::info!(seeds = %mask_url_list(url), "using a Redis Cluster");
                    Arc::new(RedisStore::connect_cluster(url, options.clone())?)
                } else {
                    tracing::info!(redis = %mask_url(url), "using Redis");
                    Arc::new(RedisStore::connect(url, options.clone())?)
                };
                Ok(Backend {
                    store: store.clone(),
                    webhooks: store.clone(),
                    admin_tokens: store.clone(),
                    sessions: store.clone(),
                    idempotency: Arc::new(RedisIdempotencyStore::new(store.connection())),
                    shared_limiter: Some(Arc::new(RedisRateLimiter::new(store.connection()))),
                    counters: None,
                    redis: Some(RedisBackend {
                        store,
                        url: url.clone(),
                        cluster: *cluster,
                        options,
                    }),
                })
            }
        }
    }
}

/// Why the server cannot start; each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No usable admin token.
    #[error(transparent)]
    AdminToken(#[from] AdminTokenError),
    /// The store cannot be opened.
    #[error("cannot open the key store: {0}")]
    Store(#[from] StoreError),
    /// The webhook key file cannot be used.
    #[error(transparent)]
    WebhookKey(#[from] SealingKeyError),
    /// The route table has conflicting paths (a bug: its tests catch it).
    #[error("the route table is inconsistent: {0}")]
    Routes(String),
}

impl App {
    /// Builds the application from settings and `CLORO_ADMIN_TOKEN`'s value.
    ///
    /// # Errors
    /// No usable admin token, a store that cannot be opened, or an
    /// unsupported setting.
    pub async fn build(
        settings: Settings,
        admin_token: Option<&str>,
    ) -> Result<(Arc<App>, Background), StartError> {
        Self::build_with_clock(settings, admin_token, Clock::system()).await
    }

    /// [`App::build`] reading "now" from `clock`: tests move a manual clock
    /// through expiry and grace instead of sleeping.
    ///
    /// # Errors
    /// As [`App::build`].
    pub async fn build_with_clock(
        settings: Settings,
        admin_token: Option<&str>,
        clock: Clock,
    ) -> Result<(Arc<App>, Background), StartError> {
        let admin_token = match (admin_token, &settings.store) {
            (Some(value), _) => AdminToken::from_value(value)?,
            (None, StoreChoice::Embedded(dir)) => {
                let (token, path) = AdminToken::from_data_dir(dir)?;
                tracing::info!(path = %path.display(), "admin token is in this file (CLORO_ADMIN_TOKEN was not set)");
                token
            }
            (None, StoreChoice::Redis { .. }) => {
                return Err(AdminTokenError::RequiredWithRedis.into());
            }
        };
        let plans = Arc::new(settings.plans.clone());
        let plan_names: Vec<String> = plans
            .to_response()
            .plans
            .into_iter()
            .map(|plan| plan.name.as_str().to_owned())
            .collect();
        let openapi = bytes::Bytes::from(crate::routes::openapi_document(
            &plan_names.iter().map(String::as_str).collect::<Vec<_>>(),
        ));
        let config = VerifierConfig {
            cache_ttl: settings.cache_ttl,
            max_failed_auth: settings.max_failed_auth,
            failed_auth_ipv6_prefix: settings.failed_auth_ipv6_prefix,
            store_timeout: settings.store_timeout,
            unknown_key_cache_bytes: settings.memory.unknown_keys,
            failed_auth_table_bytes: settings.memory.failed_auth_table,
            pending_lookup_bytes: settings.memory.pending_lookups,
            clock,
            count_usage: true,
        };

        let Backend {
            store,
            shared_limiter,
            counters,
            redis,
            idempotency,
            webhooks,
            admin_tokens,
            sessions,
        } = Backend::open(&settings)?;
        let webhooks = Arc::new(Webhooks::open(
            webhooks,
            &settings.webhooks.key_file,
            settings.webhooks.allow_private,
        )?);
        // Quotas and credits (SPEC §11): in Redis beside the rate limits, or
        // in this process, written to the embedded store every second.
        let ledger: Arc<dyn Ledger> = match (&redis, counters) {
            (Some(redis), _) => Arc::new(RedisLedger::new(redis.store.connection())),
            (None, Some(counters)) => Arc::new(LocalLedger::durable(counters).await?),
            (None, None) => Arc::new(LocalLedger::in_memory()),
        };
        let verifier = Verifier::with_ledger(
            store.clone(),
            plans.clone(),
            shared_limiter,
            ledger.clone(),
            &config,
        );
        let cache: Arc<dyn InvalidationSink> = verifier.cache().clone();
        let propagation = Arc::new(PropagationDelays::default());
        let (notifier, listener): (Arc<dyn ChangeNotifier>, _) = match redis {
            Some(redis) => {
                let heard: Arc<dyn InvalidationSink> =
                    Arc::new(MeasuredSink::new(cache.clone(), propagation.clone()));
                let listener = if redis.cluster {
                    spawn_cluster_invalidation_listener(&redis.url, redis.options, heard)?
                } else {
                    spawn_invalidation_listener(&redis.url, redis.options, heard)?
                };
                (
                    Arc::new(RedisNotifier::new(redis.store.connection(), vec![cache])),
                    Some(listener),
                )
            }
            None => (Arc::new(LocalNotifier::new(vec![cache])), None),
        };
        let admin = KeyAdmin::new(store.clone(), plans, notifier)
            .with_ledger(ledger)
            .with_clock(verifier.clock().clone());
        let metrics = Metrics::new(verifier.clone(), propagation);
        let guard = Guard::new(
            verifier.clone(),
            settings.route_scopes.clone(),
            settings.trusted_proxies.clone(),
        )
        .with_route_costs(settings.route_costs.clone())
        .with_check_observer(metrics.check_observer());

        let gateway = Gateway::new(settings.upstream.as_ref(), settings.upstream_timeout);
        let clock = verifier.clock().clone();
        let partner_keys = |source: &KeySource| PartnerKeys::new(source.clone(), clock.clone());
        let secret_scanning = SecretScanning {
            action: settings.secret_scanning.leaked_key_action,
            github: Some(partner_keys(&settings.secret_scanning.github)),
            gitlab: settings.secret_scanning.gitlab.as_ref().map(partner_keys),
        };
        let webhook_worker = Worker::new(&webhooks, clock.clone()).spawn();
        let app = Arc::new(App {
            webhooks,
            admin_tokens,
            sessions,
            secret_scanning,
            settings,
            guard,
            admin,
            admin_token,
            store,
            idempotency,
            metrics,
            gateway,
            router: Router::new().map_err(|error| StartError::Routes(error.to_string()))?,
            openapi,
        });
        app.probe_store().await;
        let expiry_notices = crate::expiry_notices::spawn(Arc::downgrade(&app));
        Ok((
            app,
            Background {
                _listener: listener,
                webhook_worker,
                expiry_notices,
            },
        ))
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The clock every part of the server reads "now" from.
    pub fn clock(&self) -> &Clock {
        self.guard.verifier().clock()
    }

    /// The authentication check.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// The admin side of the store.
    pub fn admin(&self) -> &KeyAdmin {
        &self.admin
    }

    /// Webhook endpoints and deliveries (SPEC §12).
    /// Named admin tokens.
    pub(crate) fn admin_tokens(&self) -> &dyn AdminTokenStore {
        self.admin_tokens.as_ref()
    }

    /// Dashboard and portal sessions.
    pub(crate) fn sessions(&self) -> &dyn SessionStore {
        self.sessions.as_ref()
    }

    pub(crate) fn webhooks(&self) -> &Webhooks {
        &self.webhooks
    }

    /// Secret-scanning partners (SPEC §12).
    pub(crate) fn secret_scanning(&self) -> &SecretScanning {
        &self.secret_scanning
    }

    /// The admin token.
    pub fn admin_token(&self) -> &AdminToken {
        &self.admin_token
    }

    /// Where admin `Idempotency-Key`s are remembered.
    pub(crate) fn idempotency(&self) -> &dyn IdempotencyStore {
        &*self.idempotency
    }

    /// Pings the store within the store timeout and records the outcome in
    /// the verifier's health, so `/readyz` reflects the store even when no
    /// request needed it.
    pub async fn probe_store(&self) -> Readiness {
        let health = self.guard.verifier().health();
        // `/readyz` runs this for anyone who asks while the store is down.
        static PING_FAILED: LogLimit = LogLimit::per_second();
        match tokio::time::timeout(self.settings.store_timeout, self.store.ping()).await {
            Ok(Ok(())) => health.record_success(),
            Ok(Err(error)) => {
                if let Some(suppressed) = PING_FAILED.admit() {
                    tracing::warn!(%error, suppressed, "the key store did not answer a ping");
                }
                health.record_failure();
            }
            Err(_) => {
                if let Some(suppressed) = PING_FAILED.admit() {
                    tracing::warn!(suppressed, "the key store did not answer a ping in time");
                }
                health.record_failure();
            }
        }
        health.readiness()
    }

    /// Answers one request. `peer` is the TCP peer address.
    ///
    /// The path is normalised first (SPEC §9), for every route: routing,
    /// logs, metrics and the guard all see the one normal form, and a path
    /// that could mean two things is refused before anything else runs.
    pub async fn handle<B>(
        self: Arc<Self>,
        mut request: Request<B>,
        peer: SocketAddr,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
        B::Error: Into<cloro_guard::BoxError>,
    {
        let started = Instant::now();
        let request_id = request_id(request.headers());
        let method = request.method().clone();
        let refused = normalise_request(&mut request).err();
        // The query is never logged: it may carry a key (SPEC §3).
        let path = request.uri().path().to_owned();
        let route_label = self.router.label(&path);
        let span = tracing::info_span!("request", request_id = %request_id, %method, %path);
        let mut response = match refused {
            Some(refusal) => refusal.into_response(&request_id),
            None => {
                self.route(request, peer, &request_id)
                    .instrument(span.clone())
                    .await
            }
        };
        // Whatever answers a dashboard or portal path (a path refused before
        // routing too) carries the pages' security headers.
        if crate::dashboard::site_of(&path).is_some() {
            response = crate::dashboard::secure(response);
        }
        let code = response.extensions().get::<AnsweredCode>().map(|c| c.0);
        self.metrics.record_request(route_label, code);
        if let Ok(value) = http::HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-request-id", value);
        }
        span.in_scope(|| {
            tracing::info!(
                status = response.status().as_u16(),
                elapsed_us = started.elapsed().as_micros() as u64,
                "answered"
            );
        });
        response
    }

    /// Writes the usage counted so far to the store (at shutdown).
    pub async fn flush_usage(&self) {
        if let Err(error) = self.guard.verifier().flush_usage().await {
            tracing::warn!(%error, "the last usage flush failed; those counts are lost");
        }
    }

    async fn route<B>(
        &self,
        request: Request<B>,
        peer: SocketAddr,
        request_id: &str,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
        B::Error: Into<cloro_guard::BoxError>,
    {
        let path = request.uri().path();
        let method = request.method();
        let Some(matched) = self.router.at(method, path) else {
            return crate::routes::not_found(path, request_id);
        };
        let handler = match matched.handler {
            Some(handler) => handler,
            // Admin routes check the token before they tell anyone which
            // methods a path takes.
            None if path.starts_with("/admin/") => {
                let (id, refusal) = (
                    matched.id.map(str::to_owned),
                    matched.method_not_allowed(method, request_id),
                );
                return crate::admin_api::handle(
                    self,
                    request,
                    peer.ip(),
                    id.as_deref(),
                    Err(refusal),
                    request_id,
                )
                .await;
            }
            None => return matched.method_not_allowed(method, request_id),
        };
        match handler {
            Handler::Healthz => ok_status("ok"),
            Handler::Readyz => self.readiness(request_id).await,
            Handler::Metrics => self.metrics.render(request.headers(), request_id),
            Handler::OpenApi => crate::routes::openapi_response(self.openapi.clone()),
            Handler::Whoami => {
                crate::api::whoami(
                    self,
                    method,
                    request.uri(),
                    request.headers(),
                    peer.ip(),
                    request_id,
                )
                .await
            }
            Handler::Verify => {
                crate::api::verify(
                    self,
                    method,
                    request.uri(),
                    request.headers(),
                    peer.ip(),
                    request_id,
                )
                .await
            }
            Handler::Gateway => {
                self.gateway
                    .forward(&self.guard, request, peer.ip(), request_id)
                    .await
            }
            Handler::SecretScanning(partner) => {
                crate::secret_scanning::handle(self, partner, request, peer.ip(), request_id).await
            }
            Handler::Dashboard => match crate::dashboard::site_of(path) {
                Some(site) => crate::dashboard::handle(self, site, request, peer.ip()).await,
                None => crate::routes::not_found(path, request_id),
            },
            Handler::Admin(route) => {
                let id = matched.id.map(str::to_owned);
                crate::admin_api::handle(
                    self,
                    request,
                    peer.ip(),
                    id.as_deref(),
                    Ok(route),
                    request_id,
                )
                .await
            }
        }
    }

    /// `/readyz`: 200 `ok`, 200 `degraded` while the store fails but the
    /// cache serves, 503 before the store was ever reached.
    async fn readiness(&self, request_id: &str) -> Response<Body> {
        let readiness = match self.guard.verifier().health().readiness() {
            Readiness::Ready => Readiness::Ready,
            // Not (or no longer) reached: ask the store now rather than wait
            // for a request to.
            Readiness::NotReady | Readiness::Degraded => self.probe_store().await,
        };
        match readiness {
            Readiness::Ready => ok_status("ok"),
            Readiness::Degraded => ok_status("degraded"),
            Readiness::NotReady => ApiError::new(
                ErrorCode::AuthUnavailable,
                "the key store has not been reached yet",
            )
            .with_retry_after(1)
            .into_response(request_id),
        }
    }
}

fn ok_status(status: &str) -> Response<Body> {
    json(
        StatusCode::OK,
        &HealthResponse {
            status: status.to_owned(),
        },
    )
}

/// Rewrites the request's path to its normal form (SPEC §9), or refuses it.
/// The query is kept as sent.
fn normalise_request<B>(request: &mut Request<B>) -> Result<(), TargetError> {
    let normal = match normalise_path(request.uri().path()) {
        Ok(Cow::Borrowed(_)) => return Ok(()),
        Ok(Cow::Owned(normal)) => normal,
        Err(error) => return Err(path_refusal(error)),
    };
    let target = match request.uri().query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal,
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = target.parse().ok();
    match http::Uri::from_parts(parts) {
        Ok(uri) => {
            *request.uri_mut() = uri;
            Ok(())
        }
        Err(_) => Err(TargetError::invalid_uri()),
    }
}
