//! Named admin tokens and roles (SPEC §13): made by the bootstrap token,
//! each the audit actor of what it does; `read` tokens read and change
//! nothing; a deleted token stops working at once, on every node.

use cloro_test_support::RedisServer;
use http::{Method, StatusCode};

use crate::support::{ADMIN_TOKEN, Answer, TestServer};

async fn call(server: &TestServer, token: &str, method: Method, path: &str, body: &str) -> Answer {
    server
        .send(
            method,
            path,
            &[
                ("authorization", &format!("Bearer {token}")),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
}

/// Makes a token; its plaintext and id.
async fn make(server: &TestServer, name: &str, role: &str) -> (String, String) {
    let made = call(
        server,
        ADMIN_TOKEN,
        Method::POST,
        "/admin/v1/tokens",
        &serde_json::json!({"name": name, "role": role}).to_string(),
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.json());
    let json = made.json();
    let token = json["token"].as_str().unwrap().to_owned();
    assert!(
        token.starts_with("cloro_admin_") && token.len() == 12 + 64,
        "{token}"
    );
    assert_eq!(json["token_info"]["name"], name);
    assert_eq!(json["token_info"]["role"], role);
    (token, json["token_info"]["id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn named_tokens_act_under_their_name_and_read_tokens_change_nothing() {
    let server = TestServer::embedded("").await;
    let (reader, reader_id) = make(&server, "auditor", "read").await;
    let (ops, _) = make(&server, "ops", "admin").await;

    let body = r#"{"account_id": "acct_ops", "name": "by ops"}"#;
    let created = call(&server, &ops, Method::POST, "/admin/v1/keys", body).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let audit = call(
        &server,
        &reader,
        Method::GET,
        "/admin/v1/audit?account_id=acct_ops",
        "",
    )
    .await;
    assert_eq!(audit.status, StatusCode::OK);
    assert_eq!(audit.json()["events"][0]["actor"], "ops");

    // A read token reads, and changes nothing anywhere.
    for (method, path, body) in [
        (Method::POST, "/admin/v1/keys", body),
        (
            Method::POST,
            "/admin/v1/tokens",
            r#"{"name": "x", "role": "admin"}"#,
        ),
        (
            Method::DELETE,
            &*format!("/admin/v1/tokens/{reader_id}"),
            "",
        ),
        (
            Method::PUT,
            "/admin/v1/accounts/acct_ops",
            r#"{"plan": "free"}"#,
        ),
    ] {
        let refused = call(&server, &reader, method.clone(), path, body).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(refused.code(), "INSUFFICIENT_PERMISSIONS");
        assert!(
            refused.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("read role")
        );
    }
    let keys = call(
        &server,
        &reader,
        Method::GET,
        "/admin/v1/keys?account_id=acct_ops",
        "",
    )
    .await;
    assert_eq!(
        keys.json()["keys"].as_array().unwrap().len(),
        1,
        "nothing was made"
    );

    // Listed newest first, never with a token or its hash; used ones say when.
    let listed = call(&server, ADMIN_TOKEN, Method::GET, "/admin/v1/tokens", "").await;
    assert_eq!(listed.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&listed.body).into_owned();
    assert!(
        !text.contains(&ops) && !text.contains(&reader) && !text.contains("hash"),
        "{text}"
    );
    let tokens = listed.json()["tokens"].as_array().unwrap().clone();
    let names: Vec<&str> = tokens.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ops", "auditor"]);
    assert!(
        tokens.iter().all(|t| t["last_used_at"].is_string()),
        "{tokens:?}"
    );

    // Deleted: refused from the next request on.
    let deleted = call(
        &server,
        &ops,
        Method::DELETE,
        &format!("/admin/v1/tokens/{reader_id}"),
        "",
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = call(&server, &reader, Method::GET, "/admin/v1/tokens", "").await;
    assert_eq!(gone.status, StatusCode::UNAUTHORIZED);
    let again = call(
        &server,
        &ops,
        Method::DELETE,
        &format!("/admin/v1/tokens/{reader_id}"),
        "",
    )
    .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);

    // Bad input: a 400 naming the field; other ids are 404.
    for (body, field) in [
        (r#"{"name": "Ops Team", "role": "admin"}"#, "name"),
        (r#"{"name": "bootstrap", "role": "admin"}"#, "name"),
        (r#"{"name": "ops", "role": "read"}"#, "name"),
        (r#"{"name": "new", "role": "owner"}"#, "role"),
        (r#"{"name": "new", "role": "read", "scopes": []}"#, "scopes"),
    ] {
        let refused = call(&server, ADMIN_TOKEN, Method::POST, "/admin/v1/tokens", body).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(refused.json()["error"]["details"]["field"], field, "{body}");
    }
    for id in [
        "tok_nope",
        "TOK_0123456789abcdef01234567",
        "key_0123456789abcdef01234567",
    ] {
        let missing = call(
            &server,
            ADMIN_TOKEN,
            Method::DELETE,
            &format!("/admin/v1/tokens/{id}"),
            "",
        )
        .await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{id}");
    }

    // Other spellings: HEAD reads (a read token may), other methods are
    // 405, an oversized body is refused whole.
    let (auditor, _) = make(&server, "auditor-2", "read").await;
    let head = call(&server, &auditor, Method::HEAD, "/admin/v1/tokens", "").await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    let put = call(&server, ADMIN_TOKEN, Method::PUT, "/admin/v1/tokens", "{}").await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);
    let huge = format!(r#"{{"name": "{}", "role": "read"}}"#, "a".repeat(70 * 1024));
    let refused = call(
        &server,
        ADMIN_TOKEN,
        Method::POST,
        "/admin/v1/tokens",
        &huge,
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);

    // A replay under an Idempotency-Key never shows the token again.
    let headers = [
        ("authorization", format!("Bearer {ADMIN_TOKEN}")),
        ("content-type", "application/json".to_owned()),
        ("idempotency-key", "make-ci-token".to_owned()),
    ];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let body = r#"{"name": "ci", "role": "read"}"#;
    let first = server
        .send(Method::POST, "/admin/v1/tokens", &headers, body)
        .await;
    assert!(first.json()["token"].is_string());
    let replay = server
        .send(Method::POST, "/admin/v1/tokens", &headers, body)
        .await;
    assert_eq!(replay.status, StatusCode::CREATED);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.json()["token"], serde_json::Value::Null);
    assert_eq!(replay.json()["token_info"], first.json()["token_info"]);
    server.stop().await;
}

/// A token made on one node works on the other, and deleted there stops
/// working here at once.
#[tokio::test]
async fn tokens_are_shared_by_every_node_on_redis() {
    let redis = RedisServer::start();
    let (a, b) = (
        TestServer::redis(&redis.url(), "").await,
        TestServer::redis(&redis.url(), "").await,
    );
    let (token, id) = make(&a, "ops", "admin").await;
    let listed = call(&b, &token, Method::GET, "/admin/v1/tokens", "").await;
    assert_eq!(listed.status, StatusCode::OK);
    let deleted = call(
        &b,
        ADMIN_TOKEN,
        Method::DELETE,
        &format!("/admin/v1/tokens/{id}"),
        "",
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let refused = call(&a, &token, Method::GET, "/admin/v1/tokens", "").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    a.stop().await;
    b.stop().await;
}
