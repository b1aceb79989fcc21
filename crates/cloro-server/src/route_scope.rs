//! Which scope a route needs (SPEC §5 `[route_scopes]`): keys are
//! `"METHOD /path"` or `"/path"` (any method), matched on whole path
//! segments, longest prefix first; a route not listed needs no scope.

use std::collections::BTreeMap;

use cloro_auth_core::Scope;
use http::Method;

/// One `[route_scopes]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RouteScope {
    method: Option<Method>,
    segments: Vec<String>,
    scope: Scope,
}

/// The route table, sorted so the first match is the most specific one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteScopes {
    routes: Vec<RouteScope>,
}

impl RouteScopes {
    /// Parses the config table.
    ///
    /// # Errors
    /// A key that is not `"/path"` or `"METHOD /path"`, naming it.
    pub fn new(table: &BTreeMap<String, Scope>) -> Result<Self, String> {
        let mut routes = table
            .iter()
            .map(|(key, scope)| {
                let (method, path) = match key.split_once(' ') {
                    Some((method, path)) => {
                        let method = Method::from_bytes(method.as_bytes())
                            .map_err(|_| format!("`{key}`: `{method}` is not an HTTP method"))?;
                        (Some(method), path.trim())
                    }
                    None => (None, key.as_str()),
                };
                if !path.starts_with('/') {
                    return Err(format!(
                        "`{key}`: the path must start with `/`, e.g. \"POST /v1/monitor\""
                    ));
                }
                Ok(RouteScope {
                    method,
                    segments: segments(path).map(str::to_owned).collect(),
                    scope: *scope,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        // Longest prefix first; at equal length a method-specific entry wins.
        routes.sort_by(|a, b| {
            b.segments
                .len()
                .cmp(&a.segments.len())
                .then(b.method.is_some().cmp(&a.method.is_some()))
        });
        Ok(RouteScopes { routes })
    }

    /// The scope `method path` needs, if any.
    pub fn required(&self, method: &Method, path: &str) -> Option<Scope> {
        self.routes
            .iter()
            .find(|route| {
                route.method.as_ref().is_none_or(|m| m == method) && {
                    let mut request = segments(path);
                    route
                        .segments
                        .iter()
                        .all(|segment| request.next() == Some(segment.as_str()))
                }
            })
            .map(|route| route.scope)
    }
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|segment| !segment.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, &str)]) -> RouteScopes {
        let map = entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Scope::new(v).unwrap()))
            .collect();
        RouteScopes::new(&map).unwrap()
    }

    #[test]
    fn longest_prefix_on_whole_segments() {
        let routes = table(&[
            ("/v1", "read"),
            ("POST /v1/monitor", "monitor:write"),
            ("/v1/monitor/admin", "admin"),
        ]);
        let scope = |m: Method, p| routes.required(&m, p).map(|s| s.to_string());
        assert_eq!(
            scope(Method::POST, "/v1/monitor"),
            Some("monitor:write".into())
        );
        assert_eq!(
            scope(Method::POST, "/v1/monitor/"),
            Some("monitor:write".into())
        );
        assert_eq!(
            scope(Method::POST, "/v1/monitor/x"),
            Some("monitor:write".into())
        );
        assert_eq!(scope(Method::GET, "/v1/monitor"), Some("read".into()));
        assert_eq!(
            scope(Method::POST, "/v1/monitoring"),
            Some("read".into()),
            "whole segments only"
        );
        assert_eq!(
            scope(Method::GET, "/v1/monitor/admin/1"),
            Some("admin".into())
        );
        assert_eq!(scope(Method::GET, "/other"), None);
    }

    #[test]
    fn method_specific_wins_at_equal_length() {
        let routes = table(&[("/v1/run", "run"), ("POST /v1/run", "run:write")]);
        assert_eq!(
            routes.required(&Method::POST, "/v1/run").unwrap().as_str(),
            "run:write"
        );
        assert_eq!(
            routes.required(&Method::GET, "/v1/run").unwrap().as_str(),
            "run"
        );
    }

    #[test]
    fn bad_keys_are_refused() {
        let bad = |key: &str| {
            RouteScopes::new(&[(key.to_owned(), Scope::wildcard())].into()).unwrap_err()
        };
        assert!(bad("v1/x").contains("must start with `/`"));
        assert!(bad("GE(T /v1").contains("not an HTTP method"));
    }
}
