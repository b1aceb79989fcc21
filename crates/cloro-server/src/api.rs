//! The public routes that answer themselves: `GET /v1/whoami` and the verify
//! endpoint for other gateways' sub-requests (SPEC §6).

use http::{HeaderMap, Method, Response, StatusCode, Uri};

use crate::app::App;
use crate::guard::{RequestFacts, add_identity_headers, add_limit_headers, refusal_response};
use crate::request_path::unsafe_path;
use crate::responses::{ApiError, Body, empty, json};

/// `GET /v1/whoami`: the calling key's `KeyInfo`.
pub(crate) async fn whoami(
    app: &App,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    peer: std::net::IpAddr,
    request_id: &str,
) -> Response<Body> {
    if method != Method::GET {
        return ApiError::new(
            cloro_auth_core::ErrorCode::MethodNotAllowed,
            "use GET /v1/whoami",
        )
        .into_response(request_id);
    }
    let facts = RequestFacts {
        method,
        path: uri.path(),
        query: uri.query(),
        headers,
        peer,
        limit_concurrency: true,
    };
    match app.guard().check(facts).await {
        Ok(verified) => {
            let info = verified.key.record.to_info(jiff::Timestamp::now());
            let mut response = json(StatusCode::OK, &info);
            add_limit_headers(response.headers_mut(), &verified);
            response
        }
        Err(refused) => refusal_response(&refused, request_id),
    }
}

/// `/auth/verify[/{path}]`, any method: 200 with the identity and limit
/// headers, or the SPEC §4 error. The original method and URI come from the
/// path suffix, else `X-Original-Method`/`X-Original-URI` (nginx), else
/// `X-Forwarded-Method`/`X-Forwarded-Uri` (Traefik, Caddy); with none of
/// them no route scope applies. No concurrency limit here: the gateway that
/// asks cannot tell us when its request ends.
pub(crate) async fn verify(
    app: &App,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    peer: std::net::IpAddr,
    request_id: &str,
) -> Response<Body> {
    let original = original_request(method, uri, headers);
    let (original_method, original_uri) = match &original {
        Some((method, uri)) => (method.clone(), Some(uri)),
        None => (method.clone(), None),
    };
    if let Some(uri) = original_uri
        && let Some(why) = unsafe_path(uri.path())
    {
        return ApiError::invalid_field(
            "path",
            format!("{why}; send the path as the client sent it, normalised"),
        )
        .into_response(request_id);
    }
    // Without an original URI there is no route, so no scope: match against
    // a path no `[route_scopes]` entry can name.
    let (path, query) = match original_uri {
        Some(uri) => (uri.path(), uri.query()),
        None => ("", uri.query()),
    };
    let facts = RequestFacts {
        method: &original_method,
        path,
        query,
        headers,
        peer,
        limit_concurrency: false,
    };
    match app.guard().check(facts).await {
        Ok(verified) => {
            let mut response = Response::new(empty());
            add_identity_headers(response.headers_mut(), &verified);
            add_limit_headers(response.headers_mut(), &verified);
            response
        }
        Err(refused) => refusal_response(&refused, request_id),
    }
}

/// The sub-request's original method and URI, by SPEC §6's order.
fn original_request(method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<(Method, Uri)> {
    let suffix = uri
        .path()
        .strip_prefix("/auth/verify")
        .filter(|rest| rest.starts_with('/'));
    if let Some(rest) = suffix {
        let text = match uri.query() {
            Some(query) => format!("{rest}?{query}"),
            None => rest.to_owned(),
        };
        return text.parse().ok().map(|uri| (method.clone(), uri));
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    for (method_header, uri_header) in [
        ("x-original-method", "x-original-uri"),
        ("x-forwarded-method", "x-forwarded-uri"),
    ] {
        if let Some(original) = header(uri_header).and_then(|text| text.parse::<Uri>().ok()) {
            let original_method = header(method_header)
                .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
                .unwrap_or_else(|| method.clone());
            return Some((original_method, original));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_request_sources_in_order() {
        let mut headers = HeaderMap::new();
        headers.insert("x-original-uri", "/v1/run?x=1".parse().unwrap());
        headers.insert("x-original-method", "POST".parse().unwrap());
        headers.insert("x-forwarded-uri", "/v1/other".parse().unwrap());
        let from_suffix = original_request(
            &Method::GET,
            &"/auth/verify/v1/monitor?a=b".parse().unwrap(),
            &headers,
        );
        assert_eq!(
            from_suffix.map(|(m, u)| (m, u.to_string())),
            Some((Method::GET, "/v1/monitor?a=b".into()))
        );
        let from_nginx = original_request(&Method::GET, &"/auth/verify".parse().unwrap(), &headers);
        assert_eq!(
            from_nginx.map(|(m, u)| (m, u.to_string())),
            Some((Method::POST, "/v1/run?x=1".into()))
        );
        headers.remove("x-original-uri");
        let from_traefik =
            original_request(&Method::GET, &"/auth/verify".parse().unwrap(), &headers);
        assert_eq!(
            from_traefik.map(|(_, u)| u.to_string()),
            Some("/v1/other".into())
        );
        assert!(
            original_request(
                &Method::GET,
                &"/auth/verify".parse().unwrap(),
                &HeaderMap::new()
            )
            .is_none()
        );
    }
}
