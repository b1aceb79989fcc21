//! The route table of SPEC §6 in one place: the router answers 405 from it
//! for a known path with the wrong method, and the tests hold the OpenAPI
//! document (`openapi.json`, served at `GET /openapi.json`) to it, so the
//! document cannot drift from what the server serves.

use cloro_auth_core::ErrorCode;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderValue, Method, Response};

use crate::responses::{ApiError, Body, full};

/// Every route of SPEC §6 as `(method, path template)`; `*` is any method.
/// A `{path}` parameter at the end spans one or more segments; any other
/// `{…}` parameter is exactly one segment.
pub const ROUTES: &[(&str, &str)] = &[
    // Public, with an API key.
    ("GET", "/v1/whoami"),
    ("*", "/auth/verify"),
    ("*", "/auth/verify/{path}"),
    ("*", "/v1/{path}"),
    // Admin, with the admin token.
    ("POST", "/admin/v1/keys"),
    ("GET", "/admin/v1/keys"),
    ("GET", "/admin/v1/keys/{id}"),
    ("PATCH", "/admin/v1/keys/{id}"),
    ("POST", "/admin/v1/keys/{id}/revoke"),
    ("POST", "/admin/v1/keys/{id}/rotate"),
    ("GET", "/admin/v1/audit"),
    ("GET", "/admin/v1/plans"),
    ("GET", "/admin/v1/accounts/{account_id}"),
    ("PUT", "/admin/v1/accounts/{account_id}"),
    // Operational.
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

/// The OpenAPI 3.1 document of every route above.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Whether `path` is an instance of `template`.
pub fn template_matches(template: &str, path: &str) -> bool {
    let mut wanted = template.split('/');
    let mut given = path.split('/');
    loop {
        match (wanted.next(), given.next()) {
            (None, None) => return true,
            (Some("{path}"), Some(segment)) => {
                // The rest of the path, at least one non-empty segment.
                return wanted.next().is_none()
                    && (!segment.is_empty() || given.any(|s| !s.is_empty()));
            }
            (Some(param), Some(segment)) if param.starts_with('{') && param.ends_with('}') => {
                if segment.is_empty() {
                    return false;
                }
            }
            (Some(literal), Some(segment)) if literal == segment => {}
            _ => return false,
        }
    }
}

/// The methods SPEC §6 defines for `path`: `None` when no route has its
/// shape, `Some(["*"])`-like when any method goes.
pub fn methods_for(path: &str) -> Option<Vec<&'static str>> {
    let methods: Vec<&'static str> = ROUTES
        .iter()
        .filter(|(_, template)| template_matches(template, path))
        .map(|(method, _)| *method)
        .collect();
    (!methods.is_empty()).then_some(methods)
}

/// The answer for a request no handler took: 405 with `Allow` when the path
/// is a route of SPEC §6 but the method is not, else 404.
pub(crate) fn unrouted(method: &Method, path: &str, request_id: &str) -> Response<Body> {
    let allowed = methods_for(path).filter(|methods| {
        !methods
            .iter()
            .any(|m| *m == "*" || *m == method.as_str() || (*m == "GET" && method == Method::HEAD))
    });
    match allowed {
        Some(methods) => {
            let allow = methods.join(", ");
            let mut response = ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!("use {allow}; {method} is not allowed here"),
            )
            .into_response(request_id);
            if let Ok(value) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(ALLOW, value);
            }
            response
        }
        // A route of a method that exists but whose handler is not in this
        // build is as absent as any other.
        None => ApiError::new(
            ErrorCode::NotFound,
            format!("no route {path}; see GET /openapi.json for the API"),
        )
        .into_response(request_id),
    }
}

/// `GET /openapi.json`.
pub(crate) fn openapi_response() -> Response<Body> {
    let mut response = Response::new(full(OPENAPI_JSON));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_whole_segments() {
        assert!(template_matches("/v1/whoami", "/v1/whoami"));
        assert!(!template_matches("/v1/whoami", "/v1/whoami/x"));
        assert!(template_matches("/v1/{path}", "/v1/monitor"));
        assert!(template_matches("/v1/{path}", "/v1/a/b/c"));
        assert!(!template_matches("/v1/{path}", "/v1"));
        assert!(!template_matches("/v1/{path}", "/v1/"));
        assert!(!template_matches("/v1/{path}", "/v10/x"));
        assert!(template_matches(
            "/admin/v1/keys/{id}",
            "/admin/v1/keys/key_1"
        ));
        assert!(!template_matches("/admin/v1/keys/{id}", "/admin/v1/keys/"));
        assert!(!template_matches(
            "/admin/v1/keys/{id}",
            "/admin/v1/keys/a/revoke"
        ));
        assert!(template_matches(
            "/admin/v1/keys/{id}/revoke",
            "/admin/v1/keys/a/revoke"
        ));
    }

    #[test]
    fn methods_of_a_path() {
        assert_eq!(
            methods_for("/admin/v1/keys/key_1"),
            Some(vec!["GET", "PATCH"])
        );
        assert_eq!(methods_for("/v1/run"), Some(vec!["*"]));
        assert_eq!(methods_for("/v1/whoami"), Some(vec!["GET", "*"]));
        assert_eq!(methods_for("/nope"), None);
    }

    #[test]
    fn unrouted_answers_405_with_allow_or_404() {
        let wrong = unrouted(&Method::DELETE, "/admin/v1/keys/key_1", "r");
        assert_eq!(wrong.status(), http::StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(wrong.headers()[ALLOW], "GET, PATCH");
        let unknown = unrouted(&Method::GET, "/nope", "r");
        assert_eq!(unknown.status(), http::StatusCode::NOT_FOUND);
        let no_upstream = unrouted(&Method::POST, "/v1/run", "r");
        assert_eq!(no_upstream.status(), http::StatusCode::NOT_FOUND);
    }
}
