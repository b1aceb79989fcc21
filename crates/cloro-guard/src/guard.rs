//! The request-level check every protected route runs, and the tower layer
//! reuses: key in URL → header → verifier (format, failed-attempt guard,
//! lookup, status, scope, rate limit, concurrency), then the headers that
//! go on the answer.
//!
//! The route scope is chosen from a [`Target`], which only exists in its
//! normalised form (SPEC §9), so no caller can match scopes against a path
//! as the client spelled it.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloro_auth_core::{AuthError, Malformed, query_carries_key};
use cloro_keystore::{Refused, Verified, Verifier, VerifyRequest};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use ipnet::IpNet;

use crate::client_addr::client_address;
use crate::request_target::Target;
use crate::responses::{ApiError, Body, add_concurrency_headers, add_rate_headers};
use crate::route_scope::{RouteCosts, RouteScopes};

/// What a protected request is checked against.
#[derive(Clone)]
pub struct Guard {
    verifier: Arc<Verifier>,
    route_scopes: RouteScopes,
    route_costs: RouteCosts,
    trusted_proxies: Vec<IpNet>,
    /// Told how long each check took (the server's latency histogram).
    observe: Option<Arc<dyn Fn(Duration) + Send + Sync>>,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("route_scopes", &self.route_scopes)
            .field("route_costs", &self.route_costs)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("observed", &self.observe.is_some())
            .finish_non_exhaustive()
    }
}

/// The parts of a request the check reads.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The (normalised) request whose route scope applies; `None` for a
    /// verify sub-request that names no original request: no scope then.
    pub target: Option<&'a Target<'a>>,
    /// The query string, checked for keys in the URL.
    pub query: Option<&'a str>,
    /// The request headers (`Authorization`, `X-Forwarded-For`).
    pub headers: &'a HeaderMap,
    /// The TCP peer.
    pub peer: IpAddr,
    /// Whether the key's concurrency limit applies.
    pub limit_concurrency: bool,
}

impl<'a> RequestFacts<'a> {
    /// The facts of a request as it arrived, its target normalised.
    pub fn of<B>(
        target: &'a Target<'a>,
        request: &'a http::Request<B>,
        peer: IpAddr,
        limit_concurrency: bool,
    ) -> Self {
        RequestFacts {
            target: Some(target),
            query: target.query(),
            headers: request.headers(),
            peer,
            limit_concurrency,
        }
    }
}

impl Guard {
    /// A guard over `verifier`.
    pub fn new(
        verifier: Arc<Verifier>,
        route_scopes: RouteScopes,
        trusted_proxies: Vec<IpNet>,
    ) -> Self {
        Guard {
            verifier,
            route_scopes,
            route_costs: RouteCosts::default(),
            trusted_proxies,
            observe: None,
        }
    }

    /// Charges each route's cost from `route_costs` (SPEC §11) instead of 1.
    /// The cost comes from the (normalised) route only: nothing a client
    /// sends, such as an `X-Cloro-Cost` header, can change it.
    pub fn with_route_costs(mut self, route_costs: RouteCosts) -> Self {
        self.route_costs = route_costs;
        self
    }

    /// Calls `observe` with the duration of every check (for a latency metric).
    pub fn with_check_observer(mut self, observe: Arc<dyn Fn(Duration) + Send + Sync>) -> Self {
        self.observe = Some(observe);
        self
    }

    /// The verifier behind the guard.
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// The client address of a request (SPEC §3).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_address(peer, headers, &self.trusted_proxies)
    }

    /// Authenticates one request.
    ///
    /// # Errors
    /// The refusal, with limit state where the limiter ran.
    // `Refused` is returned by value on purpose: see `Verifier::verify`.
    #[allow(clippy::result_large_err)]
    pub async fn check(&self, facts: RequestFacts<'_>) -> Result<Verified, Refused> {
        if facts
            .query
            .is_some_and(|query| query_carries_key(query.as_bytes()))
        {
            return Err(AuthError::MalformedAuthorization(Malformed::KeyInUrl).into());
        }
        let request = VerifyRequest {
            client: self.client(facts.peer, facts.headers),
            required_scope: facts
                .target
                .and_then(|target| self.route_scopes.required(target.method(), target.path())),
            limit_concurrency: facts.limit_concurrency,
            cost: facts.target.map_or(1, |target| {
                self.route_costs.cost(target.method(), target.path())
            }),
            now: self.verifier.clock().now(),
        };
        let started = Instant::now();
        let fields = facts
            .headers
            .get_all(AUTHORIZATION)
            .iter()
            .map(HeaderValue::as_bytes);
        let outcome = self.verifier.verify(fields, &request).await;
        if let Some(observe) = &self.observe {
            observe(started.elapsed());
        }
        outcome
    }
}

/// The error answer for a refusal, with the limit headers of SPEC §5 (and
/// the quota's, §11) on 429s (the limiter ran), and none on 401/403.
pub fn refusal_response(refused: &Refused, request_id: &str) -> Response<Body> {
    let mut response = ApiError::from_auth(&refused.error).into_response(request_id);
    if response.status() == StatusCode::TOO_MANY_REQUESTS {
        let headers = response.headers_mut();
        if let Some(rate) = &refused.rate {
            add_rate_headers(headers, rate, refused.quota.as_ref());
        }
        if let Some(state) = &refused.concurrency {
            add_concurrency_headers(headers, state);
        }
    }
    response
}

/// The identity headers sent upstream and answered by `/auth/verify`.
/// Their values were rendered when the key was cached and are shared, not
/// copied, by every answer.
pub fn add_identity_headers(headers: &mut HeaderMap, verified: &Verified) {
    let key = &verified.key;
    let shared = [
        (&crate::responses::X_CLORO_KEY_ID, &key.id_header),
        (&crate::responses::X_CLORO_ACCOUNT_ID, &key.account_header),
        (&crate::responses::X_CLORO_SCOPES, &key.scopes_header),
    ];
    for (name, value) in shared {
        // Ids and scopes are validated ASCII, so this never fails.
        if let Ok(value) = HeaderValue::from_maybe_shared(value.clone()) {
            headers.insert(name.clone(), value);
        }
    }
    headers.insert(
        crate::responses::X_CLORO_ENVIRONMENT.clone(),
        HeaderValue::from_static(key.record.environment.as_str()),
    );
}

/// The limit headers of an accepted request.
pub fn add_limit_headers(headers: &mut HeaderMap, verified: &Verified) {
    add_rate_headers(headers, &verified.rate, verified.quota.as_ref());
    if let Some(permit) = &verified.concurrency {
        add_concurrency_headers(headers, &permit.state);
    }
}
