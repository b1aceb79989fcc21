//! The request target as the guard sees it (SPEC §9): the method and the
//! normalised path that route scopes match, that the upstream receives and
//! that logs show, plus the query checked for keys in the URL.
//!
//! A [`Target`] can only be made by normalising (`Target::of`) or by
//! resolving a verify sub-request's original request
//! ([`Target::original_of`]), and [`crate::Guard::check`] takes nothing
//! else: no entry point can match scopes against a path as the client
//! spelled it.

use std::borrow::Cow;

use cloro_auth_core::{PathError, normalise_path, split_origin_form};
use http::{HeaderMap, Method, Uri};

use crate::responses::{ApiError, Body};

/// The prefix of the verify endpoint; a path below it carries the original
/// request's path (Envoy's `path_prefix` style).
const VERIFY_PREFIX: &str = "/auth/verify";

/// Why a request target was refused: 400 `INVALID_REQUEST` naming the field
/// at fault (`path`, `original_uri` or `original_method`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetError {
    field: &'static str,
    message: String,
}

impl TargetError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        TargetError {
            field,
            message: message.into(),
        }
    }

    /// A normal path that still does not make a URI (cannot happen for a
    /// path that parsed before; answered rather than assumed).
    pub fn invalid_uri() -> Self {
        TargetError::new("path", "the request target is not a valid URI")
    }

    /// The field at fault.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The SPEC §4 answer.
    pub fn into_response(self, request_id: &str) -> http::Response<Body> {
        ApiError::invalid_field(self.field, self.message).into_response(request_id)
    }
}

impl std::fmt::Display for TargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for TargetError {}

/// A request's method and normalised path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    method: Method,
    path: Cow<'a, str>,
    query: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// The target of a request as it arrived: its path normalised.
    ///
    /// # Errors
    /// 400 `INVALID_REQUEST` (`details.field` = `path`) for a path SPEC §9
    /// refuses.
    pub fn of(method: &Method, uri: &'a Uri) -> Result<Self, TargetError> {
        let path = normalise_path(uri.path()).map_err(path_refusal)?;
        Ok(Target {
            method: method.clone(),
            path,
            query: uri.query(),
        })
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The normalised path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query, as sent (it is never logged).
    pub fn query(&self) -> Option<&'a str> {
        self.query
    }

    /// Whether normalising changed the path, so the request must be sent on
    /// with the normal form.
    pub fn rewritten(&self) -> bool {
        matches!(self.path, Cow::Owned(_))
    }

    /// The normalised path with the query, as a request target.
    pub fn path_and_query(&self) -> String {
        match self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.to_string(),
        }
    }

    /// The original request of a verify sub-request (SPEC §6, §9): from the
    /// path below `/auth/verify`, `X-Original-Method`/`-URI` and
    /// `X-Forwarded-Method`/`-Uri`. Every source that is present must be
    /// readable, and all of them must agree after normalisation; a less
    /// trusted source is never consulted instead of an unreadable one.
    /// `None` when no source names a URI: then no route scope applies.
    ///
    /// `own` is the sub-request's own target (already normalised).
    ///
    /// # Errors
    /// 400 `INVALID_REQUEST` naming `original_uri`, `original_method` or
    /// (for a path SPEC §9 refuses) `path`.
    pub fn original_of(
        own: &Target<'a>,
        headers: &'a HeaderMap,
    ) -> Result<Option<Target<'a>>, TargetError> {
        let mut uris: Vec<(&'static str, Cow<'a, str>, Option<&'a str>)> = Vec::new();
        let mut methods: Vec<(&'static str, Method)> = Vec::new();
        if let Some(rest) = own.path.strip_prefix(VERIFY_PREFIX)
            && rest.starts_with('/')
        {
            let rest = match &own.path {
                Cow::Borrowed(path) => Cow::Borrowed(&path[VERIFY_PREFIX.len()..]),
                Cow::Owned(_) => Cow::Owned(rest.to_owned()),
            };
            uris.push(("the path below /auth/verify", rest, own.query));
            // The path suffix comes with the original method (Envoy keeps it).
            methods.push(("the request method", own.method.clone()));
        }
        for (name, label) in [
            ("x-original-uri", "X-Original-URI"),
            ("x-forwarded-uri", "X-Forwarded-Uri"),
        ] {
            if let Some(value) = single_field(headers, name, label, "original_uri")? {
                let Some((path, query)) = split_origin_form(value) else {
                    return Err(TargetError::new(
                        "original_uri",
                        format!(
                            "{label} is not an origin-form URI of visible ASCII (`/path?query`); send the original request target unchanged"
                        ),
                    ));
                };
                let path = normalise_path(path).map_err(path_refusal)?;
                uris.push((label, path, query));
            }
        }
        for (name, label) in [
            ("x-original-method", "X-Original-Method"),
            ("x-forwarded-method", "X-Forwarded-Method"),
        ] {
            if let Some(value) = single_field(headers, name, label, "original_method")? {
                let method = Method::from_bytes(value).map_err(|_| {
                    TargetError::new(
                        "original_method",
                        format!("{label} is not an HTTP method token"),
                    )
                })?;
                methods.push((label, method));
            }
        }

        if let Some(((first, _), (other, _))) = methods
            .first()
            .zip(methods.iter().find(|(_, m)| *m != methods[0].1))
        {
            return Err(TargetError::new(
                "original_method",
                format!("{first} and {other} name different methods; send one original method"),
            ));
        }
        let Some((_, path, query)) = uris.first().cloned() else {
            return Ok(None);
        };
        let same = |(_, other_path, other_query): &(&str, Cow<'a, str>, Option<&'a str>)| {
            *other_path == path && nonempty(*other_query) == nonempty(query)
        };
        if let Some((other, _, _)) = uris.iter().find(|source| !same(source)) {
            return Err(TargetError::new(
                "original_uri",
                format!(
                    "{} and {other} name different requests; a gateway must send one original URI",
                    uris[0].0
                ),
            ));
        }
        let method = methods
            .into_iter()
            .next()
            .map_or_else(|| own.method.clone(), |(_, method)| method);
        Ok(Some(Target {
            method,
            path,
            query,
        }))
    }
}

/// `Some(query)` unless it is empty: `/x?` and `/x` are the same request.
fn nonempty(query: Option<&str>) -> Option<&str> {
    query.filter(|query| !query.is_empty())
}

/// The value of a header that may appear at most once.
fn single_field<'a>(
    headers: &'a HeaderMap,
    name: &str,
    label: &str,
    field: &'static str,
) -> Result<Option<&'a [u8]>, TargetError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(TargetError::new(
            field,
            format!("{label} appears more than once; send it once"),
        ));
    }
    Ok(Some(first.as_bytes()))
}

/// The answer for a path SPEC §9 refuses.
pub fn path_refusal(error: PathError) -> TargetError {
    TargetError::new(
        "path",
        format!("{error}; send the path normalised, as RFC 3986 §6.2.2 describes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(method: Method, uri: &Uri) -> Target<'_> {
        Target::of(&method, uri).unwrap()
    }

    fn field(error: TargetError) -> String {
        error.field().to_owned()
    }

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn targets_are_normalised() {
        let uri: Uri = "/v1/%6Donitor?x=1".parse().unwrap();
        let normal = target(Method::POST, &uri);
        assert_eq!(normal.path(), "/v1/monitor");
        assert_eq!(normal.path_and_query(), "/v1/monitor?x=1");
        assert!(normal.rewritten());
        let uri: Uri = "/v1/monitor;x=1".parse().unwrap();
        assert_eq!(field(Target::of(&Method::POST, &uri).unwrap_err()), "path");
    }

    #[test]
    fn the_original_request_from_each_source() {
        let own_uri: Uri = "/auth/verify/v1/%6Donitor?a=b".parse().unwrap();
        let own = target(Method::POST, &own_uri);
        let none = HeaderMap::new();
        let original = Target::original_of(&own, &none).unwrap().unwrap();
        assert_eq!(
            (
                original.method().as_str(),
                original.path(),
                original.query()
            ),
            ("POST", "/v1/monitor", Some("a=b"))
        );

        let bare_uri: Uri = "/auth/verify".parse().unwrap();
        let bare = target(Method::GET, &bare_uri);
        let nginx = headers(&[
            ("x-original-uri", b"/v1/run?x=1"),
            ("x-original-method", b"POST"),
        ]);
        let original = Target::original_of(&bare, &nginx).unwrap().unwrap();
        assert_eq!(
            (original.method().as_str(), original.path()),
            ("POST", "/v1/run")
        );

        let caddy = headers(&[
            ("x-forwarded-uri", b"/v1/%72un"),
            ("x-forwarded-method", b"PUT"),
        ]);
        let original = Target::original_of(&bare, &caddy).unwrap().unwrap();
        assert_eq!(
            (original.method().as_str(), original.path()),
            ("PUT", "/v1/run")
        );

        assert!(Target::original_of(&bare, &none).unwrap().is_none());

        // nginx passes bytes RFC 3986 forbids but that are still readable:
        // they are taken as sent, never skipped for a weaker source.
        let odd = headers(&[("x-original-uri", b"/v1/x?a=<")]);
        let original = Target::original_of(&bare, &odd).unwrap().unwrap();
        assert_eq!(original.query(), Some("a=<"));
    }

    #[test]
    fn sources_that_agree_after_normalisation_pass() {
        let bare_uri: Uri = "/auth/verify".parse().unwrap();
        let bare = target(Method::GET, &bare_uri);
        let both = headers(&[
            ("x-original-uri", b"/v1/%6Donitor?"),
            ("x-forwarded-uri", b"/v1/monitor"),
            ("x-original-method", b"POST"),
            ("x-forwarded-method", b"POST"),
        ]);
        let original = Target::original_of(&bare, &both).unwrap().unwrap();
        assert_eq!(
            (original.method().as_str(), original.path()),
            ("POST", "/v1/monitor")
        );
    }

    #[test]
    fn unreadable_or_disagreeing_sources_fail_closed() {
        let bare_uri: Uri = "/auth/verify".parse().unwrap();
        let bare = target(Method::GET, &bare_uri);
        let suffix_uri: Uri = "/auth/verify/v1/monitor".parse().unwrap();
        let suffix = target(Method::POST, &suffix_uri);
        type Case<'a> = (&'a Target<'a>, &'a [(&'a str, &'a [u8])], &'a str);
        let cases: [Case; 10] = [
            // Unreadable: never treated as absent.
            (&bare, &[("x-original-uri", b"/v1/x?a=b c")], "original_uri"),
            (
                &bare,
                &[("x-original-uri", b"/v1/\xc3\xa9")],
                "original_uri",
            ),
            (&bare, &[("x-original-uri", b"v1/x")], "original_uri"),
            (
                &bare,
                &[("x-original-uri", b"/a"), ("x-original-uri", b"/a")],
                "original_uri",
            ),
            (&bare, &[("x-original-method", b"PO ST")], "original_method"),
            // Disagreeing: a client's own header beside the proxy's.
            (
                &bare,
                &[
                    ("x-original-uri", b"/v1/other"),
                    ("x-forwarded-uri", b"/v1/monitor"),
                ],
                "original_uri",
            ),
            (&suffix, &[("x-original-uri", b"/v1/other")], "original_uri"),
            (
                &suffix,
                &[("x-forwarded-method", b"GET")],
                "original_method",
            ),
            (
                &bare,
                &[
                    ("x-original-method", b"GET"),
                    ("x-forwarded-method", b"POST"),
                ],
                "original_method",
            ),
            // The path rules apply to the original URI.
            (&bare, &[("x-forwarded-uri", b"/v1/monitor;x=1")], "path"),
        ];
        for (own, pairs, expected) in cases {
            let map = headers(pairs);
            let error = Target::original_of(own, &map).unwrap_err();
            assert_eq!(field(error), expected, "{pairs:?}");
        }
    }
}
