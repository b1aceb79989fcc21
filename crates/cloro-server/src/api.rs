//! The public routes that answer themselves: `GET /v1/whoami` and the verify
//! endpoint for other gateways' sub-requests (SPEC §6).

use http::{HeaderMap, Method, Response, StatusCode, Uri};

use crate::app::App;
use cloro_guard::Target;
use cloro_guard::{Body, empty, json};
use cloro_guard::{RequestFacts, add_identity_headers, add_limit_headers, refusal_response};

/// `GET /v1/whoami`: the calling key's `KeyInfo` (the route table answers
/// other methods).
pub(crate) async fn whoami(
    app: &App,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    peer: std::net::IpAddr,
    request_id: &str,
) -> Response<Body> {
    let target = match Target::of(method, uri) {
        Ok(target) => target,
        Err(refusal) => return refusal.into_response(request_id),
    };
    let facts = RequestFacts {
        target: Some(&target),
        query: target.query(),
        headers,
        peer,
        limit_concurrency: true,
    };
    match app.guard().check(facts).await {
        Ok(verified) => {
            let mut info = verified.key.record.to_info(app.clock().now());
            // The cached record holds no balance; this request's charge does.
            if info.credits.is_some() {
                info.credits = verified.credits;
            }
            let mut response = json(StatusCode::OK, &info);
            response.headers_mut().reserve(16);
            add_limit_headers(response.headers_mut(), &verified);
            response
        }
        Err(refused) => refusal_response(&refused, request_id),
    }
}

/// `/auth/verify[/{path}]`, any method: 200 with the identity and limit
/// headers, or the SPEC §4 error. The original method and URI come from
/// every source that is present (the path suffix, `X-Original-Method`/`-URI`
/// from nginx, `X-Forwarded-Method`/`-Uri` from Traefik and Caddy), which
/// must all be readable and agree (SPEC §9, [`Target::original_of`]); with
/// none of them no route scope applies. No concurrency limit here: the
/// gateway that asks cannot tell us when its request ends.
pub(crate) async fn verify(
    app: &App,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    peer: std::net::IpAddr,
    request_id: &str,
) -> Response<Body> {
    let own = match Target::of(method, uri) {
        Ok(target) => target,
        Err(refusal) => return refusal.into_response(request_id),
    };
    let original = match Target::original_of(&own, headers) {
        Ok(original) => original,
        Err(refusal) => return refusal.into_response(request_id),
    };
    let facts = RequestFacts {
        target: original.as_ref(),
        // Without an original request, the key-in-URL rule reads the
        // sub-request's own query.
        query: original.as_ref().map_or(own.query(), Target::query),
        headers,
        peer,
        limit_concurrency: false,
    };
    match app.guard().check(facts).await {
        Ok(verified) => {
            let mut response = Response::new(empty());
            // Room for every header this answer gets, allocated once.
            response.headers_mut().reserve(16);
            add_identity_headers(response.headers_mut(), &verified);
            add_limit_headers(response.headers_mut(), &verified);
            response
        }
        Err(refused) => refusal_response(&refused, request_id),
    }
}
