//! The gateway (SPEC §6, "any other `/v1/*`"): authenticates a request,
//! rewrites its headers so the upstream can trust the identity it is given,
//! and forwards it to `--upstream`, streaming the bodies both ways.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use cloro_auth_core::ErrorCode;
use cloro_keystore::{LogLimit, mask_url};
use http::header::{AUTHORIZATION, CONNECTION, EXPECT, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::held_body::HeldUntilEnd;
use cloro_guard::Target;
use cloro_guard::{ApiError, Body, BoxError};
use cloro_guard::{Guard, RequestFacts, add_identity_headers, add_limit_headers, refusal_response};

/// How long connecting to the upstream may take before the request is
/// answered 502: long enough for a loaded host, short enough that a dead
/// upstream does not pile up waiting clients.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle upstream connections are closed after this so they do not pile up;
/// one the upstream closed first is retried by the client as long as the
/// request had not been sent on it.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Hop-by-hop fields (RFC 9110 §7.6.1, plus the legacy `Keep-Alive` and
/// `Proxy-Connection`): they describe one connection, never the next one.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Forwards authenticated `/v1/*` requests to the configured upstream.
pub(crate) struct Gateway {
    /// Scheme and authority of `--upstream`; `None` when none is set.
    upstream: Option<(Scheme, Authority)>,
    /// One pooled client for the life of the server, so connections to the
    /// upstream are reused across requests.
    client: Client<HttpConnector, Body>,
    /// How long the upstream may take to send its response head (SPEC §9
    /// `--upstream-timeout`).
    response_timeout: Duration,
}

// Hand-written: an authority may hold `user:password@`, and `App`'s `Debug`
// prints the gateway, so it goes through the one URL masker.
impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let upstream = self
            .upstream
            .as_ref()
            .map(|(scheme, authority)| mask_url(&format!("{scheme}://{authority}")));
        f.debug_struct("Gateway")
            .field("upstream", &upstream)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway to `upstream` (only its scheme and authority are used)
    /// that waits at most `response_timeout` for the upstream's answer.
    pub(crate) fn new(upstream: Option<&Uri>, response_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        let upstream =
            upstream.and_then(|uri| Some((uri.scheme()?.clone(), uri.authority()?.clone())));
        Gateway {
            upstream,
            client,
            response_timeout,
        }
    }

    /// Checks and forwards one request; every failure is a SPEC §4 answer.
    ///
    /// The path is normalised before authentication (SPEC §9): a confusing
    /// path is refused whoever sends it and costs no store lookup, and the
    /// normal form is what scopes match and what the upstream receives.
    /// Authentication comes before the "no upstream" 404, so a caller
    /// without a valid key learns nothing about how the server is deployed
    /// and gets the same 401 as on every other protected route.
    pub(crate) async fn forward<B>(
        &self,
        guard: &Guard,
        request: Request<B>,
        peer: IpAddr,
        request_id: &str,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let target = match Target::of(request.method(), request.uri()) {
            Ok(target) => target,
            Err(refusal) => return refusal.into_response(request_id),
        };
        let facts = RequestFacts::of(&target, &request, peer, true);
        let mut verified = match guard.check(facts).await {
            Ok(verified) => verified,
            Err(refused) => return refusal_response(&refused, request_id),
        };
        let Some((scheme, authority)) = &self.upstream else {
            let mut response = ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "no route {}: this server has no upstream to forward it to",
                    target.path()
                ),
            )
            .into_response(request_id);
            add_limit_headers(response.headers_mut(), &verified);
            return response;
        };
        // The upstream gets the normal form: the one our scopes matched.
        let path_and_query = if target.rewritten() {
            PathAndQuery::try_from(target.path_and_query()).ok()
        } else {
            request.uri().path_and_query().cloned()
        };
        let path_and_query = path_and_query.unwrap_or_else(|| PathAndQuery::from_static("/"));
        drop(target);

        let client = guard.client(peer, request.headers());
        let (mut parts, body) = request.into_parts();
        parts.uri = match Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query(path_and_query)
            .build()
        {
            Ok(uri) => uri,
            Err(_) => {
                return ApiError::invalid_field("path", "the request target is not a valid URI")
                    .into_response(request_id);
            }
        };
        // The upstream connection is HTTP/1.1 whatever the client spoke
        // (the client refuses an HTTP/2 request on an HTTP/1 connection).
        parts.version = Version::HTTP_11;
        sanitise_request_headers(&mut parts.headers);
        add_identity_headers(&mut parts.headers, &verified);
        // Whatever the client claimed was removed above: the upstream sees
        // only the address we vouch for (SPEC §3).
        if let Ok(value) = HeaderValue::from_str(&client.to_string()) {
            parts.headers.insert("x-forwarded-for", value);
        }
        if let Ok(value) = HeaderValue::from_str(request_id) {
            parts.headers.insert("x-request-id", value);
        }
        // Streamed as it arrives: nothing here waits for the whole body.
        let outbound = Request::from_parts(parts, body.map_err(Into::into).boxed());

        let sent = tokio::time::timeout(self.response_timeout, self.client.request(outbound));
        let upstream_response = match sent.await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                // The upstream address is the operator's business, not the
                // client's: it goes to the log only. Every request can fail
                // this way while the upstream is down, so the log gets one
                // line a second (SPEC §9).
                static UPSTREAM_FAILED: LogLimit = LogLimit::per_second();
                if let Some(suppressed) = UPSTREAM_FAILED.admit() {
                    tracing::warn!(
                        error = %error_chain(&error),
                        suppressed,
                        "the upstream request failed"
                    );
                }
                return ApiError::new(
                    ErrorCode::UpstreamUnavailable,
                    "the upstream service could not be reached; try again later",
                )
                .into_response(request_id);
            }
            Err(_) => {
                static UPSTREAM_TIMED_OUT: LogLimit = LogLimit::per_second();
                if let Some(suppressed) = UPSTREAM_TIMED_OUT.admit() {
                    tracing::warn!(
                        timeout_ms = self.response_timeout.as_millis() as u64,
                        suppressed,
                        "the upstream sent no response head in time"
                    );
                }
                return ApiError::new(
                    ErrorCode::UpstreamTimeout,
                    format!(
                        "the upstream service did not answer within {} s; try again later",
                        self.response_timeout.as_secs_f64()
                    ),
                )
                .into_response(request_id);
            }
        };
        let (mut parts, body) = upstream_response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        add_limit_headers(&mut parts.headers, &verified);
        let body = body.map_err(BoxError::from).boxed();
        let body = match verified.concurrency.take() {
            // The request stays in flight, for the concurrency limit, until
            // its answer has been sent in full or the client went away.
            Some(permit) => HeldUntilEnd::new(body, permit).boxed(),
            None => body,
        };
        Response::from_parts(parts, body)
    }
}

/// Removes what must not reach the upstream: the key, any identity or
/// address the client claims for itself (`X-Cloro-*`, `X-Forwarded-For`,
/// `Forwarded`), hop-by-hop fields, and the
/// client's `Host` and `Expect` (the upstream gets its own authority, as
/// with nginx's `proxy_pass`; `100-continue` was already answered by our
/// server when it started reading the body).
fn sanitise_request_headers(headers: &mut HeaderMap) {
    remove_hop_by_hop(headers);
    for name in [AUTHORIZATION, HOST, EXPECT] {
        headers.remove(name);
    }
    headers.remove("x-forwarded-for");
    // Method overrides would let a request checked as GET run as POST in
    // frameworks with method-override middleware: the method our scopes
    // matched is the only one the upstream gets.
    for name in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        headers.remove(name);
    }
    // RFC 7239 `Forwarded` would let a client claim another address than the
    // `X-Forwarded-For` we set; the upstream gets only ours.
    headers.remove("forwarded");
    let claimed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-cloro-"))
        .cloned()
        .collect();
    for name in claimed {
        headers.remove(name);
    }
}

/// Removes the hop-by-hop fields and every field `Connection` names
/// (RFC 9110 §7.6.1), in either direction.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// An error and its causes on one line, for the log.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
