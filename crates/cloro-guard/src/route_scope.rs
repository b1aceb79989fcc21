//! Which scope a route needs (SPEC §5 `[route_scopes]`) and what it costs
//! (SPEC §11 `[route_costs]`): one table type, [`RouteTable`], so both are
//! matched by exactly the same rules. Keys are `"METHOD /path"` or
//! `"/path"` (any method), matched on whole path segments, longest prefix
//! first; a route not listed needs no scope and costs the default.
//!
//! Requests are matched on their normalised path (SPEC §9, see
//! [`crate::Target`]), and the keys are normalised by the same rules when
//! the table is built, so `/v1/%6Donitor` in either place is `/v1/monitor`.
//! Segments compare without ASCII case: some upstream frameworks route
//! case-insensitively, and a scope that applies to more spellings can only
//! refuse more, never less. A `GET` entry also guards `HEAD` (RFC 9110
//! §9.3.2: HEAD runs the GET handler).

use std::collections::BTreeMap;

use cloro_auth_core::{Scope, normalise_path};
use http::Method;

/// One entry of a route table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route<T> {
    method: Option<Method>,
    segments: Vec<String>,
    scope: T,
}

/// A route table, sorted so the first match is the most specific one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTable<T> {
    routes: Vec<Route<T>>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        RouteTable { routes: Vec::new() }
    }
}

/// `[route_scopes]`: the scope each route needs.
pub type RouteScopes = RouteTable<Scope>;

/// `[route_costs]`: each route's cost in quota and credit units.
pub type RouteCosts = RouteTable<u64>;

impl RouteTable<Scope> {
    /// The scope `method path` needs, if any; `path` is normalised.
    pub fn required(&self, method: &Method, path: &str) -> Option<Scope> {
        self.value_for(method, path)
    }
}

impl RouteTable<u64> {
    /// What `method path` costs: its entry, else 1 (SPEC §11).
    pub fn cost(&self, method: &Method, path: &str) -> u64 {
        self.value_for(method, path).unwrap_or(1)
    }
}

impl<T: Copy> RouteTable<T> {
    /// Parses the config table.
    ///
    /// # Errors
    /// A key that is not `"/path"` or `"METHOD /path"`, naming it.
    pub fn new(table: &BTreeMap<String, T>) -> Result<Self, String> {
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
                let path = normalise_path(path).map_err(|why| format!("`{key}`: {why}"))?;
                Ok(Route {
                    method,
                    segments: segments(&path).map(str::to_owned).collect(),
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
        Ok(RouteTable { routes })
    }

    /// The value of the most specific entry for `method path`, if any;
    /// `path` is normalised.
    fn value_for(&self, method: &Method, path: &str) -> Option<T> {
        // Methods compare without ASCII case too: RFC 9110 makes them
        // case-sensitive, but some frameworks upper-case what they receive
        // and would run the POST handler for `post`.
        let same = |a: &Method, b: &Method| a.as_str().eq_ignore_ascii_case(b.as_str());
        let is_head = same(method, &Method::HEAD);
        let applies = |route: &Route<T>| match &route.method {
            None => true,
            Some(wanted) => same(wanted, method) || (is_head && *wanted == Method::GET),
        };
        let mut candidates = self.routes.iter().filter(|route| {
            applies(route) && {
                let mut request = segments(path);
                route.segments.iter().all(|segment| {
                    request
                        .next()
                        .is_some_and(|given| given.eq_ignore_ascii_case(segment))
                })
            }
        });
        let first = candidates.next()?;
        // At equal length a `HEAD` entry beats the `GET` one it would
        // otherwise borrow (the table is sorted method-specific first).
        if is_head && first.method.as_ref() == Some(&Method::GET) {
            let same_length = candidates
                .take_while(|route| route.segments.len() == first.segments.len())
                .find(|route| route.method.as_ref() == Some(&Method::HEAD));
            if let Some(head) = same_length {
                return Some(head.scope);
            }
        }
        Some(first.scope)
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
    fn get_scopes_guard_head() {
        let routes = table(&[("GET /v1/report", "report:read"), ("/v1", "read")]);
        let scope = |m: Method, p| routes.required(&m, p).map(|s| s.to_string());
        assert_eq!(
            scope(Method::HEAD, "/v1/report"),
            Some("report:read".into())
        );
        assert_eq!(scope(Method::GET, "/v1/report"), Some("report:read".into()));
        assert_eq!(scope(Method::POST, "/v1/report"), Some("read".into()));
        let with_head = table(&[("GET /v1/r", "get"), ("HEAD /v1/r", "head")]);
        assert_eq!(
            with_head.required(&Method::HEAD, "/v1/r").unwrap().as_str(),
            "head"
        );
    }

    #[test]
    fn methods_ignore_case() {
        let routes = table(&[("POST /v1/monitor", "monitor:write"), ("GET /v1/r", "r")]);
        for method in ["post", "Post", "pOST"] {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(
                routes.required(&method, "/v1/monitor").unwrap().as_str(),
                "monitor:write"
            );
        }
        let head = Method::from_bytes(b"head").unwrap();
        assert_eq!(routes.required(&head, "/v1/r").unwrap().as_str(), "r");
    }

    #[test]
    fn keys_are_normalised_and_segments_ignore_case() {
        let routes = table(&[("POST /v1/%6Donitor", "monitor:write")]);
        assert_eq!(
            routes
                .required(&Method::POST, "/v1/monitor")
                .unwrap()
                .as_str(),
            "monitor:write"
        );
        assert_eq!(
            routes
                .required(&Method::POST, "/V1/MONITOR")
                .unwrap()
                .as_str(),
            "monitor:write"
        );
    }

    #[test]
    fn bad_keys_are_refused() {
        let bad = |key: &str| {
            RouteScopes::new(&[(key.to_owned(), Scope::wildcard())].into()).unwrap_err()
        };
        assert!(bad("v1/x").contains("must start with `/`"));
        assert!(bad("GE(T /v1").contains("not an HTTP method"));
        assert!(bad("POST /v1/a;b").contains("`;`"));
    }
}
