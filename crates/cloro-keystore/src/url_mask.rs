//! The one masker for URLs that may carry a secret (SPEC §9, "Logs can't be
//! flooded"): every Redis URL, cluster seed list and upstream URL that
//! reaches a log line, an error message or `Debug` output goes through
//! [`mask_url`] or [`mask_url_list`], so a new entry point cannot forget a
//! form the others handle.
//!
//! # What is hidden
//!
//! The masker shows what helps an operator find the server (scheme, host,
//! port, socket path, database) and replaces every part that is, or may be,
//! a secret with `***`:
//!
//! - the password in `user:password@`, for any scheme; the user name stays
//!   when a password follows it (an ACL user is not a secret, and seeing it
//!   tells which user failed), but a lone `secret@` is hidden: redis-rs reads
//!   it as a user name without password, so it is almost always a password
//!   written without its leading `:`;
//! - in the query, which redis-rs reads for `unix://` and `redis+unix://`
//!   (`user`, `pass`, `db`, `protocol`, names percent-decoded and compared
//!   exactly), every value except a well-formed `db` or `protocol`; the
//!   names of `pass`/`password` (any case, any encoding) stay so the reader
//!   sees a password was given, and any other parameter is hidden whole,
//!   since it may be the tail of a password cut at an `&`;
//! - any fragment but `#insecure` (the only one redis-rs reads);
//! - everything after the scheme when the text is no URL at all, when an
//!   `@` shows up after the authority of a URL with a host (or in the path
//!   or fragment of a socket URL), or when a TCP URL has no host: the
//!   authority then ended early, inside a password holding `/`, `?` or
//!   `#`, and where that password ends is unknown. Text with no `scheme://`
//!   is hidden whole: it may be a secret pasted in the wrong place.
//!
//! The output is built from the parsed parts, never by cutting the input,
//! so percent-encoding and `@` inside a password cannot shift what is cut.

use url::Url;
use url::form_urlencoded;

/// What stands in for a hidden part.
const HIDDEN: &str = "***";
/// The schemes redis-rs reads as a Unix socket path, without a host.
const SOCKET_SCHEMES: [&str; 3] = ["unix", "redis+unix", "valkey+unix"];

/// `url` with every secret replaced by `***`: the only form of a URL that
/// may be logged or shown (see the module docs for the rules).
///
/// One URL: a comma is part of it (a password may hold one). For the
/// comma-separated seed list of a Redis Cluster use [`mask_url_list`].
pub fn mask_url(url: &str) -> String {
    mask(url).shown
}

/// A comma-separated list of URLs (`--redis-url` with `--redis-cluster`),
/// split exactly as the cluster store splits it, each URL masked on its own
/// by [`mask_url`] and joined by commas.
///
/// When a piece is no URL, a comma inside a password has cut the list in
/// the wrong place, and the piece before the cut may show the start of
/// that password as a host: the whole text is then masked as one URL.
pub fn mask_url_list(urls: &str) -> String {
    let seeds: Vec<Masked> = split_url_list(urls).into_iter().map(mask).collect();
    if seeds.iter().any(|seed| seed.is_whole) {
        return mask_url(urls.trim());
    }
    seeds
        .into_iter()
        .map(|seed| seed.shown)
        .collect::<Vec<_>>()
        .join(",")
}

/// The URLs in a comma-separated list, trimmed, blanks dropped: how the
/// cluster store reads `--redis-url`, and so how [`mask_url_list`] masks it.
pub(crate) fn split_url_list(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect()
}

/// Every text [`mask_url`] hides from `url`, as written and percent-decoded,
/// longest first: to strip them from error texts of libraries that may
/// echo them.
pub(crate) fn url_secrets(url: &str) -> Vec<String> {
    let mut secrets: Vec<String> = mask(url)
        .hidden
        .into_iter()
        .flat_map(|hidden| {
            let decoded = percent_encoding::percent_decode_str(&hidden)
                .decode_utf8_lossy()
                .into_owned();
            [hidden, decoded]
        })
        .filter(|secret| !secret.is_empty())
        .collect();
    // Longest first, so that a secret is never cut by a shorter one inside it.
    secrets.sort_by_key(|secret| core::cmp::Reverse(secret.len()));
    secrets.dedup();
    secrets
}

/// A masked URL and the parts it hid.
struct Masked {
    shown: String,
    hidden: Vec<String>,
    /// Whether everything after the scheme is hidden: the text was no
    /// usable URL.
    is_whole: bool,
}

impl Masked {
    /// Everything after the scheme hidden.
    fn all_but_scheme(text: &str) -> Masked {
        let shown = match text.trim().split_once("://") {
            Some((scheme, _)) if is_scheme(scheme) => {
                format!("{}://{HIDDEN}", scheme.to_ascii_lowercase())
            }
            _ => HIDDEN.to_owned(),
        };
        Masked {
            shown,
            hidden: vec![text.trim().to_owned()],
            is_whole: true,
        }
    }
}

/// RFC 3986 §3.1: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn mask(text: &str) -> Masked {
    let Ok(url) = Url::parse(text) else {
        return Masked::all_but_scheme(text);
    };
    // `redis:secret`: no authority, the rest is opaque and may be anything.
    if url.cannot_be_a_base() || !url.has_authority() {
        return Masked::all_but_scheme(text);
    }
    let host = url.host_str().unwrap_or_default();
    let confused = if host.is_empty() {
        // Only a socket URL goes without a host; a TCP one without is a
        // password that begins with `/` (`redis:///pw@host`). A socket URL's
        // query values are judged one by one below, and may hold an `@`.
        !SOCKET_SCHEMES.contains(&url.scheme())
            || url[url::Position::BeforePath..url::Position::AfterPath].contains('@')
            || url
                .fragment()
                .is_some_and(|fragment| fragment.contains('@'))
    } else {
        url[url::Position::BeforePath..].contains('@')
    };
    if confused {
        return Masked::all_but_scheme(text);
    }

    let mut hidden = Vec::new();
    let mut shown = format!("{}://", url.scheme());
    match url.password() {
        Some(password) => {
            shown.push_str(url.username());
            shown.push(':');
            shown.push_str(HIDDEN);
            shown.push('@');
            hidden.push(password.to_owned());
        }
        None if !url.username().is_empty() => {
            shown.push_str(HIDDEN);
            shown.push('@');
            hidden.push(url.username().to_owned());
        }
        None => {}
    }
    shown.push_str(host);
    if let Some(port) = url.port() {
        shown.push(':');
        shown.push_str(&port.to_string());
    }
    shown.push_str(url.path());
    if let Some(query) = url.query() {
        shown.push('?');
        shown.push_str(&mask_query(query, &mut hidden));
    }
    if let Some(fragment) = url.fragment() {
        shown.push('#');
        if fragment == "insecure" {
            shown.push_str(fragment);
        } else {
            shown.push_str(HIDDEN);
            hidden.push(fragment.to_owned());
        }
    }
    Masked {
        shown,
        hidden,
        is_whole: false,
    }
}

/// The query with each `&`-separated pair judged on its own, by its name
/// decoded the way redis-rs decodes it (`form_urlencoded`).
fn mask_query(query: &str, hidden: &mut Vec<String>) -> String {
    query
        .split('&')
        .map(|pair| {
            let Some((name, value)) = form_urlencoded::parse(pair.as_bytes()).next() else {
                return String::new();
            };
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            match classify(&name, &value) {
                Parameter::Shown => pair.to_owned(),
                Parameter::ValueHidden => {
                    hidden.push(value.into_owned());
                    hidden.push(raw_value.to_owned());
                    format!("{raw_name}={HIDDEN}")
                }
                Parameter::Hidden => {
                    hidden.push(pair.to_owned());
                    HIDDEN.to_owned()
                }
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

enum Parameter {
    /// A setting that is never a secret, with a value of its own grammar.
    Shown,
    /// A known name whose value is (or may be) a secret.
    ValueHidden,
    /// Unknown: the whole pair may be a piece of a password.
    Hidden,
}

fn classify(name: &str, value: &str) -> Parameter {
    let name = name.to_ascii_lowercase();
    match name.as_str() {
        "db" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => Parameter::Shown,
        "protocol" if matches!(value, "2" | "3" | "resp2" | "resp3") => Parameter::Shown,
        "db" | "protocol" | "pass" | "password" | "user" | "username" => Parameter::ValueHidden,
        _ => Parameter::Hidden,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn masks(url: &str, expected: &str) {
        assert_eq!(mask_url(url), expected, "{url}");
    }

    #[test]
    fn userinfo_passwords_are_masked_for_every_scheme() {
        masks(
            "redis://user:hunter2@db.example:6380/1",
            "redis://user:***@db.example:6380/1",
        );
        masks("redis://:hunter2@127.0.0.1", "redis://:***@127.0.0.1");
        masks(
            "rediss://:hunter2@db.example:6380/#insecure",
            "rediss://:***@db.example:6380/#insecure",
        );
        masks(
            "valkey://user:hunter2@[::1]:7000",
            "valkey://user:***@[::1]:7000",
        );
        masks("valkeys://:hunter2@db.example", "valkeys://:***@db.example");
        masks(
            "http://user:hunter2@upstream.internal:8080/api",
            "http://user:***@upstream.internal:8080/api",
        );
        masks(
            "https://user:hunter2@upstream.internal/",
            "https://user:***@upstream.internal/",
        );
        masks("REDIS://:hunter2@DB.example", "redis://:***@DB.example");
        masks("redis://127.0.0.1:6380", "redis://127.0.0.1:6380");
        masks(
            "redis://127.0.0.1:6380/?protocol=resp3",
            "redis://127.0.0.1:6380/?protocol=resp3",
        );
    }

    #[test]
    fn a_lone_user_name_is_taken_for_a_misplaced_password() {
        masks("redis://hunter2@127.0.0.1", "redis://***@127.0.0.1");
        masks("redis://user:@127.0.0.1", "redis://***@127.0.0.1");
    }

    #[test]
    fn at_signs_and_percent_encoding_inside_passwords_stay_hidden() {
        // The authority ends at the last `@`, as in redis-rs's parser.
        masks(
            "redis://user:hun@ter2@db.example:6380",
            "redis://user:***@db.example:6380",
        );
        masks(
            "redis://:p%40ss%3Aw%2Ford@db.example",
            "redis://:***@db.example",
        );
        masks(
            "redis://us%40er:p%40ss@db.example",
            "redis://us%40er:***@db.example",
        );
        masks("redis://:p,ss@db.example", "redis://:***@db.example");
        masks("redis://:hunter 2@db.example", "redis://:***@db.example");
        // A `/`, `?` or `#` in the password ends the authority early.
        for url in [
            "redis://user:12/hunter2@db.example",
            "redis://user:12?hunter2@db.example",
            "redis://user:12#hunter2@db.example",
            "redis://:hun/ter2@db.example",
            "redis://db.example/?password=hunter2@x",
        ] {
            masks(url, "redis://***");
        }
    }

    #[test]
    fn password_query_parameters_are_masked_in_any_spelling() {
        masks(
            "redis+unix:///run/redis.sock?db=1&pass=hunter2",
            "redis+unix:///run/redis.sock?db=1&pass=***",
        );
        masks(
            "unix:///run/redis.sock?pass=hunter2",
            "unix:///run/redis.sock?pass=***",
        );
        masks(
            "valkey+unix:///run/v.sock?pass=hunter2",
            "valkey+unix:///run/v.sock?pass=***",
        );
        masks(
            "redis://db.example/?password=hunter2",
            "redis://db.example/?password=***",
        );
        masks(
            "redis://db.example/?PASSWORD=hunter2&Pass=hunter3",
            "redis://db.example/?PASSWORD=***&Pass=***",
        );
        // redis-rs decodes names before it looks them up: `p%61ss` is `pass`.
        masks(
            "unix:///run/redis.sock?p%61ss=hunter2",
            "unix:///run/redis.sock?p%61ss=***",
        );
        masks(
            "unix:///run/redis.sock?pass=hunter%202&pass=x+y",
            "unix:///run/redis.sock?pass=***&pass=***",
        );
        masks(
            "unix:///run/redis.sock?pass",
            "unix:///run/redis.sock?pass=***",
        );
        // redis-rs's own example of an encoded user and password.
        masks(
            "unix:///example.sock?user=%25johndoe%25&pass=%23%40%3C%3E%24&db=2",
            "unix:///example.sock?user=***&pass=***&db=2",
        );
        // An `@` in a query value is no authority confusion without a host.
        masks(
            "unix:///run/redis.sock?pass=hun@ter2",
            "unix:///run/redis.sock?pass=***",
        );
    }

    #[test]
    fn only_known_harmless_parameters_are_shown() {
        // A password cut at `&` leaves its tail as a parameter of its own.
        masks(
            "unix:///r.sock?pass=hun&ter2&db=2",
            "unix:///r.sock?pass=***&***&db=2",
        );
        masks(
            "unix:///r.sock?user=admin&pass=x",
            "unix:///r.sock?user=***&pass=***",
        );
        masks(
            "unix:///r.sock?db=hunter2&protocol=hunter2",
            "unix:///r.sock?db=***&protocol=***",
        );
        masks(
            "unix:///r.sock?protocol=2&DB=3",
            "unix:///r.sock?protocol=2&DB=3",
        );
        masks("redis://h/#hunter2", "redis://h/#***");
    }

    #[test]
    fn what_does_not_parse_is_hidden_after_the_scheme() {
        masks("redis://user:hunter2@[::1", "redis://***");
        masks("redis://:hunter2@", "redis://***");
        masks("redis://:hunter2", "redis://***");
        masks("Redis+Unix://:hunter2@/x", "redis+unix://***");
        masks("hunter2", "***");
        masks("", "***");
        // No `//`: the text after the scheme is opaque, and the "scheme" may
        // be the secret itself.
        masks("redis:hunter2", "***");
        masks("hunter2:hunter3", "***");
        masks("unix:hunter2@x", "***");
        masks("1redis://:hunter2@h", "***");
        // An `@` in a socket path may end a password; hidden whole.
        masks("unix:///run/hunter2@x", "unix://***");
        // A TCP URL without a host: the password began with `/`.
        masks("redis:///hunter2#@db.example", "redis://***");
        masks("redis:///hunter2?x@db.example", "redis://***");
        masks("redis:///0", "redis://***");
    }

    #[test]
    fn cluster_seed_lists_are_masked_seed_by_seed() {
        assert_eq!(
            mask_url_list(
                " redis://:hunter2@n1:7000 , redis://user:hunter3@n2:7001,,redis://n3:7002"
            ),
            "redis://:***@n1:7000,redis://user:***@n2:7001,redis://n3:7002"
        );
        assert_eq!(mask_url_list(""), "");
    }

    #[test]
    fn a_list_cut_inside_a_password_is_masked_as_one_url() {
        // Seed by seed, `redis://0A00$` would show the password's start as
        // a host (found by `no_password_survives`).
        assert_eq!(
            mask_url_list("redis://0A00$,@db.example"),
            "redis://***@db.example"
        );
        assert_eq!(
            mask_url_list("redis://:hunter2@n1:7000,hunter3"),
            "redis://***"
        );
        assert_eq!(mask_url_list("redis://:12,redis://n2"), "redis://***");
    }

    #[test]
    fn a_list_masked_as_one_url_leaks_nothing() {
        // Where it is unknown whether a list is meant, one URL is assumed.
        for list in [
            "redis://:hunter2@n1,redis://:hunter3@n2",
            "redis://n1:1,redis://:hunter3@n2",
            "unix:///s,redis://:hunter3@n2",
            "unix:///s?db=0,redis://:hunter3@n2",
            "redis://:hunter2@n1,redis://n2",
        ] {
            let masked = mask_url(list);
            assert!(!masked.contains("hunter"), "{list} -> {masked}");
        }
    }

    #[test]
    fn secrets_are_listed_as_written_and_decoded_longest_first() {
        let secrets = url_secrets("redis://user:p%40ss@h/?password=a+b&x=%41");
        for secret in ["p%40ss", "p@ss", "a b", "a+b", "x=%41", "x=A"] {
            assert!(
                secrets.iter().any(|s| s == secret),
                "{secret} in {secrets:?}"
            );
        }
        assert!(
            secrets.windows(2).all(|w| w[0].len() >= w[1].len()),
            "{secrets:?}"
        );
        assert_eq!(url_secrets("hunter2"), ["hunter2"]);
        assert!(url_secrets("redis://127.0.0.1:6380/0").is_empty());
    }

    proptest::proptest! {
        /// Whatever the password, written raw or encoded, it never shows
        /// whole, in any form redis-rs accepts and as a one-URL or a list.
        /// (`*` is left out of the alphabet only because `***` would match.)
        #[test]
        fn no_password_survives(password in "[ -)+-~]{6,24}") {
            let encoded: String = form_urlencoded::byte_serialize(password.as_bytes()).collect();
            // Bare `secret@` with a `:` in it is a user and a password, and
            // the user shows by design.
            let lone = if password.contains(':') { encoded.clone() } else { password.clone() };
            for url in [
                format!("redis://user:{password}@db.example:6380/0"),
                format!("redis://:{password}@db.example"),
                format!("redis://{lone}@db.example"),
                format!("redis+unix:///run/redis.sock?pass={password}"),
                format!("unix:///run/redis.sock?db=1&pass={encoded}"),
                format!("redis://db.example/?password={password}"),
                format!("redis://:{password}@n1:7000,redis://:{password}@n2:7001"),
            ] {
                for masked in [mask_url(&url), mask_url_list(&url)] {
                    for secret in [&password, &encoded] {
                        proptest::prop_assert!(
                            !masked.contains(secret.as_str()),
                            "{} -> {}", url, masked
                        );
                    }
                }
            }
        }
    }
}
