//! The retry rules against scripted servers: what is retried, how often,
//! and how long the client waits.

use std::time::{Duration, Instant};

use cloro_client::cloro_auth_core::AccountId;
use cloro_client::cloro_auth_core::wire::CreateKeyRequest;
use cloro_client::{ClientBuilder, Error, ErrorCode, TransportErrorKind};
use http::Method;

use crate::support::{
    Canned, KEY_INFO, Scripted, admin, created, issued_key, quick_retries, refused_url, unknown_key,
};

fn client(base_url: &str) -> cloro_client::Client {
    ClientBuilder::new()
        .base_url(base_url)
        .retry_policy(quick_retries())
        .api_key(unknown_key())
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_once_after_that_long() {
    let server = Scripted::start(vec![
        Canned::error(429, "RATE_LIMIT_EXCEEDED").with("retry-after", "1"),
        Canned::ok(KEY_INFO)
            .with("x-ratelimit-limit", "1000")
            .with("x-ratelimit-remaining", "998")
            .with("x-ratelimit-reset", "8"),
    ])
    .await;
    let started = Instant::now();
    let me = client(&server.base_url).whoami().await.unwrap();
    let elapsed = started.elapsed();
    let arrivals = server.arrivals();
    assert_eq!(arrivals.len(), 2, "exactly one retry");
    let gap = arrivals[1] - arrivals[0];
    assert!(
        gap >= Duration::from_secs(1) && gap < Duration::from_secs(2),
        "waited {gap:?}"
    );
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(me.meta().attempts, 2);
    assert_eq!(me.value().id.as_str(), "key_scripted");
    assert_eq!(me.rate_limit().map(|limit| limit.remaining), Some(998));
}

#[tokio::test]
async fn a_401_is_never_retried() {
    let server = Scripted::start(vec![Canned::error(401, "INVALID_API_KEY")]).await;
    let error = client(&server.base_url).whoami().await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidApiKey), "{error}");
    assert_eq!(error.request_id(), Some("req_scripted"));
    assert_eq!(error.api_error().unwrap().attempts, 1);
    assert_eq!(server.arrivals().len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_retried_up_to_the_cap() {
    let url = refused_url().await;
    let started = Instant::now();
    let error = client(&url).whoami().await.unwrap_err();
    let Error::Transport(transport) = &error else {
        panic!("not a transport error: {error:?}");
    };
    assert_eq!(transport.kind, TransportErrorKind::Connect);
    assert_eq!(transport.attempts, quick_retries().max_attempts);
    assert_eq!(error.label(), "CONNECTION_FAILED");
    assert!(error.to_string().contains("after 4 attempts"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_retry_after_past_the_time_budget_returns_at_once() {
    let server = Scripted::start(vec![
        Canned::error(503, "AUTH_UNAVAILABLE").with("retry-after", "60"),
    ])
    .await;
    let started = Instant::now();
    let error = client(&server.base_url).whoami().await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::AuthUnavailable));
    assert_eq!(error.retry_after(), Some(Duration::from_secs(60)));
    assert_eq!(server.arrivals().len(), 1);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn posts_are_retried_only_when_marked_idempotent() {
    // A POST nobody declared idempotent is sent once: a second could act twice.
    let server = Scripted::start(vec![Canned::error(503, "AUTH_UNAVAILABLE")]).await;
    let error = client(&server.base_url)
        .request(Method::POST, "/v1/monitor")
        .json(&serde_json::json!({"url": "https://example.com"}))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::AuthUnavailable));
    assert_eq!(server.arrivals().len(), 1);

    // A POST the caller declares idempotent is.
    let server = Scripted::start(vec![
        Canned::error(503, "AUTH_UNAVAILABLE"),
        Canned::ok("{}"),
    ])
    .await;
    let answer = client(&server.base_url)
        .request(Method::POST, "/v1/monitor")
        .json(&serde_json::json!({"url": "https://example.com"}))
        .idempotent(true)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.meta().attempts, 2);
    assert_eq!(server.arrivals().len(), 2);
    assert!(
        server.seen()[0].idempotency_key().is_none(),
        "the SDK keys only the admin calls it knows the server deduplicates"
    );
}

#[tokio::test]
async fn a_create_is_retried_with_one_idempotency_key() {
    // With the key the server acts once, so a 503 is retried like a GET's,
    // and every attempt carries the same key.
    let server = Scripted::start(vec![
        Canned::error(503, "AUTH_UNAVAILABLE"),
        Canned::error(503, "AUTH_UNAVAILABLE"),
        created(&issued_key()),
    ])
    .await;
    let answer = admin(&server.base_url)
        .create_key(&CreateKeyRequest::new(AccountId::new("acct").unwrap(), "k"))
        .await
        .unwrap();
    assert_eq!(answer.meta().attempts, 3);
    assert!(!answer.meta().replayed);
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    let key = seen[0].idempotency_key().unwrap().to_owned();
    assert_eq!(key.len(), 32, "{key}");
    assert!(key.bytes().all(|byte| byte.is_ascii_hexdigit()), "{key}");
    for attempt in &seen {
        assert_eq!(attempt.idempotency_key(), Some(key.as_str()));
        assert_eq!(attempt.body, seen[0].body);
    }

    // The next create is another request, with another key.
    let again = Scripted::start(vec![created(&issued_key())]).await;
    admin(&again.base_url)
        .create_key(&CreateKeyRequest::new(AccountId::new("acct").unwrap(), "k"))
        .await
        .unwrap();
    assert_ne!(again.seen()[0].idempotency_key(), Some(key.as_str()));
}
#[tokio::test]
async fn unreadable_answers_are_decoding_errors() {
    let server = Scripted::start(vec![Canned::ok("<html>hello</html>")]).await;
    let error = client(&server.base_url).whoami().await.unwrap_err();
    assert!(matches!(error, Error::Decode(_)), "{error:?}");
    assert_eq!(error.label(), "UNEXPECTED_RESPONSE");
    let mut bad_gateway = Canned::ok("<html>bad gateway</html>");
    bad_gateway.status = http::StatusCode::BAD_GATEWAY;
    let server = Scripted::start(vec![bad_gateway]).await;
    let error = client(&server.base_url).whoami().await.unwrap_err();
    assert!(matches!(error, Error::Decode(_)), "{error:?}");
    assert_eq!(error.status(), Some(http::StatusCode::BAD_GATEWAY));
}
