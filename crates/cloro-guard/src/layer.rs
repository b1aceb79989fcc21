//! The server's API-key check as a tower [`Layer`], so a hyper or axum
//! service can embed it (SPEC §1): the same [`Guard::check`], the same SPEC
//! §4 refusals and §5 limit headers as `/v1/*` on the server.
//!
//! Body design: the wrapped service keeps its own response body type, and a
//! refusal (a small JSON document, always in one piece) is a [`Full`] in the
//! other arm of an [`http_body_util::Either`]. The service's response is
//! therefore `Response<Either<ResBody, Full<Bytes>>>` ([`ApiKeyBody`]) for
//! any inner `ResBody` whose data is [`Bytes`]: no other bound on the inner
//! body, and no boxing of it on the success path. The refusal arm cannot
//! fail, so the pair is a `Body` whenever `ResBody` is; hyper serves it as
//! it is, and axum users map it with `axum::body::Body::new`.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use cloro_auth_core::{AccountId, Environment, KeyId, Scope};
use cloro_keystore::CachedKey;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Either, Full};
use tower_layer::Layer;
use tower_service::Service;

use crate::guard::{Guard, RequestFacts, add_limit_headers, refusal_response};
use crate::request_id::request_id;
use crate::request_target::Target;
use crate::responses::Body;

/// The TCP peer of a request, put in the request's extensions by whatever
/// accepts the connection; the failed-attempt guard and `X-Forwarded-For`
/// handling (SPEC §3) key on it.
///
/// Without it (and without a bare [`SocketAddr`] extension) the layer uses
/// `0.0.0.0`: every such caller then shares one failed-attempt allowance, so
/// one client sending bad keys can make unknown keys of others wait. Insert
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Who called: put in the request's extensions for the inner service once
/// the key passed. Never holds the secret.
#[derive(Clone, Debug)]
pub struct Identity {
    key: Arc<CachedKey>,
}

impl Identity {
    /// The key's id, `key_…`.
    pub fn key_id(&self) -> &KeyId {
        &self.key.record.id
    }

    /// The key's account.
    pub fn account_id(&self) -> &AccountId {
        &self.key.record.account_id
    }

    /// `live` or `test`.
    pub fn environment(&self) -> Environment {
        self.key.record.environment
    }

    /// The scopes the key holds.
    pub fn scopes(&self) -> &[Scope] {
        &self.key.record.scopes
    }

    /// Everything the verifier knows about the key.
    pub fn key(&self) -> &Arc<CachedKey> {
        &self.key
    }
}

/// Wraps a service in the API-key check.
#[derive(Clone, Debug)]
pub struct ApiKeyLayer {
    guard: Guard,
}

impl ApiKeyLayer {
    /// A layer that checks every request with `guard`, concurrency limits
    /// included: the layer sees the request end, unlike `/auth/verify`.
    pub fn new(guard: Guard) -> Self {
        ApiKeyLayer { guard }
    }
}

impl<S> Layer<S> for ApiKeyLayer {
    type Service = ApiKeyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiKeyService {
            inner,
            guard: self.guard.clone(),
        }
    }
}

/// A service that lets through only requests with an acceptable API key.
#[derive(Clone, Debug)]
pub struct ApiKeyService<S> {
    inner: S,
    guard: Guard,
}

/// The response body of [`ApiKeyService`]: the inner service's, or a refusal.
pub type ApiKeyBody<ResBody> = Either<ResBody, Full<Bytes>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ApiKeyService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = Bytes>,
{
    type Response = Response<ApiKeyBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The instance `poll_ready` readied is the one to call; leave a
        // clone behind for the next request (the usual tower pattern).
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let guard = self.guard.clone();
        Box::pin(async move {
            let request_id = request_id(request.headers());
            // Scopes are matched on the normalised path (SPEC §9), and the
            // inner service is handed that same path, so it cannot route
            // another spelling somewhere the scope did not cover.
            let target = match Target::of(request.method(), request.uri()) {
                Ok(target) => target,
                Err(refusal) => {
                    let refusal = refusal.into_response(&request_id);
                    return Ok(refusal_of(refusal, &request_id).await);
                }
            };
            let peer = peer_of(&request);
            let facts = RequestFacts::of(&target, &request, peer, true);
            let verified = match guard.check(facts).await {
                Ok(verified) => verified,
                Err(refused) => {
                    let refusal = refusal_response(&refused, &request_id);
                    return Ok(refusal_of(refusal, &request_id).await);
                }
            };
            let normal_uri = target
                .rewritten()
                .then(|| normal_uri(request.uri(), &target))
                .flatten();
            drop(target);
            if let Some(uri) = normal_uri {
                *request.uri_mut() = uri;
            }
            request.extensions_mut().insert(Identity {
                key: verified.key.clone(),
            });
            // `verified` holds the concurrency permit: it lives until the
            // inner future has resolved, so the slot counts the whole
            // handling (a body streamed after that is no longer counted).
            let mut response = inner.call(request).await?;
            add_limit_headers(response.headers_mut(), &verified);
            drop(verified);
            Ok(response.map(Either::Left))
        })
    }
}

/// `uri` with the target's normal path and query, keeping any scheme and
/// authority.
fn normal_uri(uri: &http::Uri, target: &Target<'_>) -> Option<http::Uri> {
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(target.path_and_query().parse().ok()?);
    http::Uri::from_parts(parts).ok()
}

/// The peer from the request's extensions, else `0.0.0.0` (see [`PeerAddr`]).
fn peer_of<B>(request: &Request<B>) -> IpAddr {
    let extensions = request.extensions();
    extensions
        .get::<PeerAddr>()
        .map(|peer| peer.0.ip())
        .or_else(|| extensions.get::<SocketAddr>().map(SocketAddr::ip))
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// A server refusal as the layer's body, with the request id the server
/// would have added.
async fn refusal_of<ResBody>(
    response: Response<Body>,
    request_id: &str,
) -> Response<ApiKeyBody<ResBody>> {
    let (mut parts, body) = response.into_parts();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        parts.headers.insert("x-request-id", value);
    }
    // Error bodies are built in one piece (`responses::json`), so this
    // completes at once and cannot fail; an empty body is the safe answer
    // should that ever change.
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    Response::from_parts(parts, Either::Right(Full::new(bytes)))
}
