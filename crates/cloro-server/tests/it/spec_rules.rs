//! SPEC §3 and §4 end to end over a real socket: every header rule and every
//! error row, with exact status, code, challenge and headers. Odd bytes go
//! over a raw TCP connection so nothing in a client library tidies them.

use std::time::Duration;

use crate::support::{Raw, TestServer, raw};
use cloro_auth_core::wire::{Patch, RateLimitPolicy, UpdateKeyRequest};
use cloro_auth_core::{ApiKey, Environment, Scope};
use cloro_keystore::Clock;
use cloro_test_support::RedisServer;

/// `GET target` with these header lines, on a raw connection of its own.
async fn get(server: &TestServer, target: &str, header_lines: &[&[u8]]) -> Raw {
    raw(server, "GET", target, header_lines, b"").await
}

fn auth(value: &str) -> Vec<u8> {
    let mut line = b"Authorization: ".to_vec();
    line.extend_from_slice(value.as_bytes());
    line
}

const BARE: &str = r#"Bearer realm="cloro""#;

/// Header lines to send, the code and status expected, and the exact
/// challenge where it is fixed.
type Case = (Vec<Vec<u8>>, &'static str, u16, Option<&'static str>);

/// The store a test runs on; the Redis one keeps its private server alive.
enum Store {
    Embedded,
    Redis,
}

async fn server_on(store: Store, toml: &str) -> (TestServer, Option<RedisServer>) {
    server_with_clock(store, toml, Clock::system()).await
}

async fn server_with_clock(
    store: Store,
    toml: &str,
    clock: Clock,
) -> (TestServer, Option<RedisServer>) {
    match store {
        Store::Embedded => (TestServer::embedded_with_clock(toml, clock).await, None),
        Store::Redis => {
            let redis = RedisServer::start();
            let server = TestServer::redis_with_clock(&redis.url(), toml, clock).await;
            (server, Some(redis))
        }
    }
}

#[tokio::test]
async fn every_header_rule_of_spec_section_3_embedded() {
    every_header_rule_of_spec_section_3(Store::Embedded).await;
}

#[tokio::test]
async fn every_header_rule_of_spec_section_3_redis() {
    every_header_rule_of_spec_section_3(Store::Redis).await;
}

#[tokio::test]
async fn every_error_row_of_spec_section_4_embedded() {
    every_error_row_of_spec_section_4(Store::Embedded).await;
}

#[tokio::test]
async fn every_error_row_of_spec_section_4_redis() {
    every_error_row_of_spec_section_4(Store::Redis).await;
}

async fn every_header_rule_of_spec_section_3(store: Store) {
    let (server, _redis) = server_on(store, "").await;
    let key = server.create_key(|_| {}).await;
    let ok = |value: &str| auth(value);
    for value in [
        format!("Bearer {key}"),
        format!("bearer {key}"),
        format!("BEARER {key}"),
        format!("Bearer    {key}"),
        format!("  Bearer {key}  "),
    ] {
        let answer = get(&server, "/v1/whoami", &[&ok(&value)]).await;
        assert_eq!(answer.status, 200, "{value:?}: {}", answer.body);
    }

    let upper = format!("sk_live_{}", key[8..].to_ascii_uppercase());
    let mut typo = key.clone();
    typo.replace_range(20..21, if &key[20..21] == "a" { "b" } else { "a" });
    let huge = format!("Bearer {}", "a".repeat(64 * 1024));
    let cases: Vec<Case> = vec![
        (vec![], "MISSING_API_KEY", 401, Some(BARE)),
        (
            vec![b"Authorization: ".to_vec()],
            "MISSING_API_KEY",
            401,
            Some(BARE),
        ),
        (vec![auth(&key)], "MISSING_BEARER_PREFIX", 401, Some(BARE)),
        (
            vec![auth("Basic dXNlcjpwYXNz")],
            "MISSING_BEARER_PREFIX",
            401,
            Some(BARE),
        ),
        (
            vec![auth(&format!("Token {key}"))],
            "MISSING_BEARER_PREFIX",
            401,
            Some(BARE),
        ),
        (
            vec![auth(&format!("Bearer{key}"))],
            "MISSING_BEARER_PREFIX",
            401,
            Some(BARE),
        ),
        (vec![auth("Bearer")], "MALFORMED_AUTHORIZATION", 400, None),
        (
            vec![auth(&format!("Bearer\t{key}"))],
            "MALFORMED_AUTHORIZATION",
            400,
            None,
        ),
        (
            vec![[b"Authorization: Bearer\xc2\xa0".as_slice(), key.as_bytes()].concat()],
            "MALFORMED_AUTHORIZATION",
            400,
            None,
        ),
        (
            vec![auth(&format!("Bearer {key}, Basic eA=="))],
            "MALFORMED_AUTHORIZATION",
            400,
            None,
        ),
        (
            vec![auth("Bearer realm=\"cloro\"")],
            "MALFORMED_AUTHORIZATION",
            400,
            None,
        ),
        (
            vec![auth("Bearer =abc")],
            "MALFORMED_AUTHORIZATION",
            400,
            None,
        ),
        (
            vec![b"Authorization: Bearer \xff\xfe".to_vec()],
            "MALFORMED_AUTHORIZATION",
            400,
            None,
        ),
        (
            vec![
                auth(&format!("Bearer {key}")),
                auth(&format!("Bearer {key}")),
            ],
            "MALFORMED_AUTHORIZATION",
            400,
            None,
        ),
        (
            vec![auth(&format!("Bearer {upper}"))],
            "INVALID_API_KEY_FORMAT",
            401,
            None,
        ),
        (
            vec![auth("Bearer sk_live_short")],
            "INVALID_API_KEY_FORMAT",
            401,
            None,
        ),
        (
            vec![auth(&format!("Bearer {typo}"))],
            "INVALID_API_KEY_FORMAT",
            401,
            None,
        ),
        (vec![auth(&huge)], "INVALID_API_KEY_FORMAT", 401, None),
    ];
    for (lines, code, status, exact_challenge) in cases {
        let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        let answer = get(&server, "/v1/whoami", &refs).await;
        let shown: Vec<String> = lines
            .iter()
            .map(|l| String::from_utf8_lossy(&l[..l.len().min(60)]).into_owned())
            .collect();
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (status, code),
            "{shown:?}: {}",
            answer.body
        );
        let challenge = answer
            .header("www-authenticate")
            .unwrap_or_else(|| panic!("no challenge for {shown:?}"));
        match exact_challenge {
            Some(exact) => assert_eq!(challenge, exact),
            None if status == 400 => assert!(
                challenge.contains("error=\"invalid_request\""),
                "{challenge}"
            ),
            None => assert!(challenge.contains("error=\"invalid_token\""), "{challenge}"),
        }
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert!(
            answer.header("x-ratelimit-limit").is_none(),
            "no limit headers before the limiter ran"
        );
    }

    // Bytes the HTTP layer refuses get hyper's 400, not a 500.
    let nul = get(&server, "/v1/whoami", &[b"Authorization: Bearer a\x00b"]).await;
    assert_eq!(nul.status, 400);

    // A key in the URL is refused first, even next to a valid header.
    for query in [
        "access_token=x",
        "API_KEY=1",
        "apikey",
        "Key=2",
        "token=",
        &format!("q={key}"),
        "q=sk_test_abc",
    ] {
        let target = format!("/v1/whoami?{query}");
        let answer = get(&server, &target, &[&auth(&format!("Bearer {key}"))]).await;
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (400, "MALFORMED_AUTHORIZATION"),
            "{query}"
        );
    }
    let fine = get(
        &server,
        "/v1/whoami?limit=10",
        &[&auth(&format!("Bearer {key}"))],
    )
    .await;
    assert_eq!(fine.status, 200);
    server.stop().await;
}

async fn every_error_row_of_spec_section_4(store: Store) {
    let toml = "[route_scopes]\n\"/v1/whoami\" = \"whoami\"\n";
    // A manual clock: the expiry below is reached by moving it, not by
    // sleeping. (Rate limits on Redis keep Redis' own clock.)
    let clock = Clock::manual(jiff::Timestamp::now());
    let (server, _redis) = server_with_clock(store, toml, clock.clone()).await;
    let header = |key: &str| auth(&format!("Bearer {key}"));
    let whoami = Scope::new("whoami").unwrap();

    let stranger = ApiKey::generate(Environment::Live).unwrap();
    let unknown = get(&server, "/v1/whoami", &[&header(stranger.expose_secret())]).await;
    assert_eq!(
        (unknown.status, unknown.code().as_str()),
        (401, "INVALID_API_KEY")
    );
    assert!(
        unknown
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer realm=\"cloro\", error=\"invalid_token\"")
    );

    let expiring = server
        .create_key(|r| {
            r.scopes = vec![whoami];
            r.expires_at = Some(clock.now() + jiff::SignedDuration::from_secs(60));
        })
        .await;
    let disabled = server.create_key(|r| r.scopes = vec![whoami]).await;
    let revoked = server.create_key(|r| r.scopes = vec![whoami]).await;
    let unscoped = server
        .create_key(|r| r.scopes = vec![Scope::new("other").unwrap()])
        .await;
    let limited = server
        .create_key(|r| {
            r.scopes = vec![whoami];
            r.rate_limit = Some(RateLimitPolicy::new(
                2.try_into().unwrap(),
                60.try_into().unwrap(),
            ));
        })
        .await;
    let admin = server.app.admin();
    let page = admin
        .list(&"acct_test".parse().unwrap(), 100, None, true)
        .await
        .unwrap();
    let id_of = |key: &str| {
        let hash = ApiKey::parse_token(key).unwrap().hash();
        page.items.iter().find(|r| r.hash == hash).unwrap().id
    };
    let off = UpdateKeyRequest {
        enabled: Patch::Value(false),
        ..Default::default()
    };
    admin
        .update(&id_of(&disabled), &off, "test", jiff::Timestamp::now())
        .await
        .unwrap();
    admin
        .revoke(
            &id_of(&revoked),
            Some("leaked"),
            "test",
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();

    let disabled_answer = get(&server, "/v1/whoami", &[&header(&disabled)]).await;
    assert_eq!(
        (disabled_answer.status, disabled_answer.code().as_str()),
        (401, "REVOKED_API_KEY")
    );
    assert!(disabled_answer.body.contains(r#""reason":"disabled""#));
    let revoked_answer = get(&server, "/v1/whoami", &[&header(&revoked)]).await;
    assert!(
        revoked_answer.body.contains(r#""reason":"revoked""#),
        "{}",
        revoked_answer.body
    );

    let forbidden = get(&server, "/v1/whoami", &[&header(&unscoped)]).await;
    assert_eq!(
        (forbidden.status, forbidden.code().as_str()),
        (403, "INSUFFICIENT_PERMISSIONS")
    );
    assert_eq!(
        forbidden.header("www-authenticate"),
        Some(
            r#"Bearer realm="cloro", error="insufficient_scope", error_description="the API key lacks the scope this route needs", scope="whoami""#
        )
    );
    assert!(
        forbidden.header("x-ratelimit-limit").is_none(),
        "no limit headers on 403"
    );

    for remaining in ["1", "0"] {
        let allowed = get(&server, "/v1/whoami", &[&header(&limited)]).await;
        assert_eq!(
            (allowed.status, allowed.header("x-ratelimit-remaining")),
            (200, Some(remaining))
        );
        assert_eq!(allowed.header("x-ratelimit-limit"), Some("2"));
        assert_eq!(
            allowed.header("ratelimit-policy"),
            Some("\"default\";q=2;w=60")
        );
    }
    let limited_answer = get(&server, "/v1/whoami", &[&header(&limited)]).await;
    assert_eq!(
        (limited_answer.status, limited_answer.code().as_str()),
        (429, "RATE_LIMIT_EXCEEDED")
    );
    assert_eq!(limited_answer.header("retry-after"), Some("30"));
    assert_eq!(limited_answer.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(
        limited_answer.header("ratelimit"),
        Some("\"default\";r=0;t=60")
    );
    assert!(limited_answer.header("www-authenticate").is_none());
    assert!(
        limited_answer.body.contains(r#""retry_after":30"#),
        "{}",
        limited_answer.body
    );

    clock.advance(jiff::SignedDuration::from_secs(61));
    let expired = get(&server, "/v1/whoami", &[&header(&expiring)]).await;
    assert_eq!(
        (expired.status, expired.code().as_str()),
        (401, "EXPIRED_API_KEY")
    );

    // Every error body: code, message, details, timestamp, request_id = X-Request-Id.
    let body: serde_json::Value = serde_json::from_str(&expired.body).unwrap();
    let error = &body["error"];
    assert!(error["message"].as_str().unwrap().len() > 10);
    assert!(error["details"].is_object());
    assert!(
        error["timestamp"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );
    assert_eq!(error["request_id"].as_str(), expired.header("x-request-id"));
    server.stop().await;
}

#[tokio::test]
async fn too_many_failed_attempts_from_one_address() {
    let server = TestServer::embedded("max_failed_auth = \"2/minute\"").await;
    let good = server.create_key(|_| {}).await;
    assert_eq!(
        get(&server, "/v1/whoami", &[&auth(&format!("Bearer {good}"))])
            .await
            .status,
        200
    );
    for _ in 0..2 {
        let stranger = ApiKey::generate(Environment::Live).unwrap();
        let answer = get(
            &server,
            "/v1/whoami",
            &[&auth(&format!("Bearer {}", stranger.expose_secret()))],
        )
        .await;
        assert_eq!(answer.code(), "INVALID_API_KEY");
    }
    let stranger = ApiKey::generate(Environment::Live).unwrap();
    let blocked = get(
        &server,
        "/v1/whoami",
        &[&auth(&format!("Bearer {}", stranger.expose_secret()))],
    )
    .await;
    assert_eq!(
        (blocked.status, blocked.code().as_str()),
        (429, "TOO_MANY_FAILED_ATTEMPTS")
    );
    assert_eq!(blocked.header("retry-after"), Some("30"));
    let still_good = get(&server, "/v1/whoami", &[&auth(&format!("Bearer {good}"))]).await;
    assert_eq!(still_good.status, 200, "a cached valid key still passes");
    server.stop().await;
}

#[tokio::test]
async fn auth_unavailable_when_redis_hangs_then_recovery() {
    let redis = RedisServer::start();
    let server = TestServer::redis(&redis.url(), "").await;
    let known = server.create_key(|_| {}).await;
    assert_eq!(
        get(&server, "/v1/whoami", &[&auth(&format!("Bearer {known}"))])
            .await
            .status,
        200
    );
    let stranger = ApiKey::generate(Environment::Live).unwrap();
    redis.pause();
    let started = std::time::Instant::now();
    let unavailable = get(
        &server,
        "/v1/whoami",
        &[&auth(&format!("Bearer {}", stranger.expose_secret()))],
    )
    .await;
    assert_eq!(
        (unavailable.status, unavailable.code().as_str()),
        (503, "AUTH_UNAVAILABLE")
    );
    assert_eq!(unavailable.header("retry-after"), Some("1"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered in {:?}",
        started.elapsed()
    );
    let cached = get(&server, "/v1/whoami", &[&auth(&format!("Bearer {known}"))]).await;
    assert_eq!(cached.status, 200, "the cached key keeps working");
    let ready = get(&server, "/readyz", &[]).await;
    assert_eq!(
        (ready.status, ready.body.contains("degraded")),
        (200, true),
        "{}",
        ready.body
    );
    redis.resume();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let answer = get(
            &server,
            "/v1/whoami",
            &[&auth(&format!("Bearer {}", stranger.expose_secret()))],
        )
        .await;
        if answer.code() == "INVALID_API_KEY" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery: {}",
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}
