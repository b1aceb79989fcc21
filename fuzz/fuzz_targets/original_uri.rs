//! The original request of a verify sub-request (SPEC §6, §9) from every
//! header set: `Target::original_of` never panics; when it names a target,
//! every source that is present (the path suffix, `X-Original-URI`/
//! `-Method`, `X-Forwarded-Uri`/`-Method`) normalises to that very path,
//! query and method; when a present source is unreadable or two disagree it
//! refuses, naming a field that is really at fault. The sub-request's own
//! normalised target also always makes a valid request target again, as
//! the gateway needs when it forwards the normal form.
//!
//! Input, one item a line: first `METHOD request-target` (the verify
//! request itself), then `name: value` header lines, as on the wire.

#![no_main]

use cloro_auth_core::{normalise_path, split_origin_form};
use cloro_guard::Target;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;

const URI_SOURCES: [&str; 2] = ["x-original-uri", "x-forwarded-uri"];
const METHOD_SOURCES: [&str; 2] = ["x-original-method", "x-forwarded-method"];

fuzz_target!(|input: &[u8]| {
    let mut lines = input.split(|&c| c == b'\n');
    let request_line = lines.next().unwrap_or_default();
    let (method, target) = match request_line.iter().position(|&c| c == b' ') {
        Some(space) => (&request_line[..space], &request_line[space + 1..]),
        None => (&b"GET"[..], request_line),
    };
    // What hyper would refuse never reaches the guard.
    let (Ok(method), Ok(uri)) = (Method::from_bytes(method), Uri::try_from(target)) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }

    let Ok(own) = Target::of(&method, &uri) else {
        return;
    };
    assert_rebuilds(&own);

    let answer = Target::original_of(&own, &headers);
    let expected = model(&own, &headers);
    match (&answer, &expected) {
        (Ok(Some(original)), Ok(sources)) => {
            assert!(
                !sources.uris.is_empty(),
                "a target from no source: {original:?}"
            );
            for (path, query) in &sources.uris {
                assert_eq!(
                    original.path(),
                    path,
                    "{original:?} is not what a source says"
                );
                assert_eq!(nonempty(original.query()), nonempty(*query));
            }
            let method = sources.methods.first().unwrap_or(own.method());
            assert_eq!(original.method(), method);
            assert_eq!(
                normalise_path(original.path()).as_deref(),
                Ok(original.path())
            );
        }
        (Ok(None), Ok(sources)) => assert!(sources.uris.is_empty(), "{sources:?} ignored"),
        (Err(error), Err(faults)) => assert!(
            faults.contains(&error.field()),
            "refused for {error} but the faults are {faults:?}"
        ),
        _ => panic!("original_of answered {answer:?}, the model {expected:?}"),
    }
});

/// What every present source says, read independently of `original_of`.
#[derive(Debug)]
struct Sources<'a> {
    uris: Vec<(String, Option<&'a str>)>,
    methods: Vec<Method>,
}

/// The sources, or the fields of every fault among them.
fn model<'a>(
    own: &'a Target<'a>,
    headers: &'a HeaderMap,
) -> Result<Sources<'a>, Vec<&'static str>> {
    let mut faults = Vec::new();
    let mut sources = Sources {
        uris: Vec::new(),
        methods: Vec::new(),
    };
    if let Some(suffix) = own
        .path()
        .strip_prefix("/auth/verify")
        .filter(|s| s.starts_with('/'))
    {
        // The suffix of a normal path is normal already.
        assert_eq!(normalise_path(suffix).as_deref(), Ok(suffix));
        sources.uris.push((suffix.to_owned(), own.query()));
        sources.methods.push(own.method().clone());
    }
    for name in URI_SOURCES {
        match only_value(headers, name) {
            None => {}
            Some(None) => faults.push("original_uri"),
            Some(Some(value)) => match split_origin_form(value) {
                None => faults.push("original_uri"),
                Some((path, query)) => match normalise_path(path) {
                    Err(_) => faults.push("path"),
                    Ok(path) => sources.uris.push((path.into_owned(), query)),
                },
            },
        }
    }
    for name in METHOD_SOURCES {
        match only_value(headers, name).map(|value| value.and_then(|v| Method::from_bytes(v).ok()))
        {
            None => {}
            Some(None) => faults.push("original_method"),
            Some(Some(method)) => sources.methods.push(method),
        }
    }
    if sources.methods.iter().any(|m| *m != sources.methods[0]) {
        faults.push("original_method");
    }
    let disagree = sources.uris.iter().any(|(path, query)| {
        *path != sources.uris[0].0 || nonempty(*query) != nonempty(sources.uris[0].1)
    });
    if disagree {
        faults.push("original_uri");
    }
    if faults.is_empty() {
        Ok(sources)
    } else {
        Err(faults)
    }
}

/// `None` when absent, `Some(None)` when sent more than once.
fn only_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<Option<&'a [u8]>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    Some(values.next().is_none().then(|| first.as_bytes()))
}

fn nonempty(query: Option<&str>) -> Option<&str> {
    query.filter(|q| !q.is_empty())
}

/// The gateway forwards `path_and_query()` when normalising rewrote the
/// path; it must parse back to the same path and query.
fn assert_rebuilds(own: &Target<'_>) {
    let rebuilt = PathAndQuery::try_from(own.path_and_query())
        .unwrap_or_else(|e| panic!("{own:?} does not make a request target: {e}"));
    assert_eq!(rebuilt.path(), own.path());
    assert_eq!(rebuilt.query(), own.query());
}
