//! `/v1/whoami`, `/auth/verify`, health and readiness over a real socket.

use http::{Method, StatusCode};

use crate::support::TestServer;

#[tokio::test]
async fn whoami_answers_the_key_info_with_limit_headers() {
    let server = TestServer::embedded("").await;
    let key = server.create_key(|_| {}).await;
    let answer = server.get_with_key("/v1/whoami", &key).await;
    assert_eq!(answer.status, StatusCode::OK);
    let info = answer.json();
    assert_eq!(info["account_id"], "acct_test");
    assert_eq!(info["status"], "active");
    assert_eq!(
        info["start"].as_str().unwrap(),
        &format!("{}...", &key[..12])
    );
    assert!(
        !answer
            .body
            .windows(20)
            .any(|w| w == &key.as_bytes()[12..32]),
        "no secret in the body"
    );
    assert_eq!(answer.header("x-ratelimit-limit"), Some("1000"));
    assert_eq!(answer.header("x-ratelimit-remaining"), Some("999"));
    assert_eq!(
        answer.header("ratelimit-policy"),
        Some("\"default\";q=1000;w=3600")
    );
    assert!(answer.header("x-request-id").unwrap().starts_with("req_"));
    let post = server.send(Method::POST, "/v1/whoami", &[], "").await;
    assert_eq!(
        (post.status, post.code()),
        (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED".into())
    );
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    server.stop().await;
}

#[tokio::test]
async fn errors_carry_code_challenge_and_request_id() {
    let server = TestServer::embedded("").await;
    let missing = server
        .send(
            Method::GET,
            "/v1/whoami",
            &[("x-request-id", "trace-1")],
            "",
        )
        .await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.code(), "MISSING_API_KEY");
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"cloro\"")
    );
    assert_eq!(missing.header("content-type"), Some("application/json"));
    assert_eq!(missing.header("x-request-id"), Some("trace-1"));
    assert_eq!(missing.json()["error"]["request_id"], "trace-1");
    assert!(
        missing.header("x-ratelimit-limit").is_none(),
        "no limit headers on 401"
    );

    let in_url = server
        .send(Method::GET, "/v1/whoami?api_key=sk_live_x", &[], "")
        .await;
    assert_eq!(
        (in_url.status, in_url.code()),
        (StatusCode::BAD_REQUEST, "MALFORMED_AUTHORIZATION".into())
    );

    let stranger = cloro_auth_core::ApiKey::generate(cloro_auth_core::Environment::Live).unwrap();
    let unknown = server
        .get_with_key("/v1/whoami", stranger.expose_secret())
        .await;
    assert_eq!(unknown.code(), "INVALID_API_KEY");
    assert!(
        unknown
            .header("www-authenticate")
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    server.stop().await;
}

#[tokio::test]
async fn verify_endpoint_answers_identity_headers_and_uses_original_uri_scopes() {
    let toml = "[route_scopes]\n\"POST /v1/monitor\" = \"monitor:write\"\n";
    let server = TestServer::embedded(toml).await;
    let reader = server
        .create_key(|r| r.scopes = vec![cloro_auth_core::Scope::new("monitor:read").unwrap()])
        .await;
    let auth = format!("Bearer {reader}");
    let plain = server
        .send(Method::GET, "/auth/verify", &[("authorization", &auth)], "")
        .await;
    assert_eq!(plain.status, StatusCode::OK);
    assert!(plain.body.is_empty());
    assert_eq!(plain.header("x-cloro-account-id"), Some("acct_test"));
    assert_eq!(plain.header("x-cloro-environment"), Some("live"));
    assert_eq!(plain.header("x-cloro-scopes"), Some("monitor:read"));
    assert!(plain.header("x-cloro-key-id").unwrap().starts_with("key_"));
    assert!(plain.header("x-ratelimit-remaining").is_some());

    let nginx = [
        ("authorization", auth.as_str()),
        ("x-original-method", "POST"),
        ("x-original-uri", "/v1/monitor"),
    ];
    let forbidden = server.send(Method::GET, "/auth/verify", &nginx, "").await;
    assert_eq!(
        (forbidden.status, forbidden.code()),
        (StatusCode::FORBIDDEN, "INSUFFICIENT_PERMISSIONS".into())
    );
    assert!(
        forbidden
            .header("www-authenticate")
            .unwrap()
            .ends_with("scope=\"monitor:write\"")
    );
    let suffix = server
        .send(
            Method::POST,
            "/auth/verify/v1/monitor",
            &[("authorization", &auth)],
            "",
        )
        .await;
    assert_eq!(suffix.status, StatusCode::FORBIDDEN);
    let key_in_original = [
        ("authorization", auth.as_str()),
        ("x-original-uri", "/v1/run?token=abc"),
    ];
    let refused = server
        .send(Method::GET, "/auth/verify", &key_in_original, "")
        .await;
    assert_eq!(refused.code(), "MALFORMED_AUTHORIZATION");
    server.stop().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let server = TestServer::embedded("").await;
    let health = server.send(Method::GET, "/healthz", &[], "").await;
    assert_eq!(
        (health.status, health.json()["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let ready = server.send(Method::GET, "/readyz", &[], "").await;
    assert_eq!(
        (ready.status, ready.json()["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let nowhere = server.send(Method::GET, "/nope", &[], "").await;
    assert_eq!(
        (nowhere.status, nowhere.code()),
        (StatusCode::NOT_FOUND, "NOT_FOUND".into())
    );
    server.stop().await;
}
