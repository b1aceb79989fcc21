//! Quotas, credits and idempotency (SPEC §11) against scripted servers:
//! what the SDK and the CLI send, how they read the answers, and which
//! refusals they wait out. The same flows against the real server are in
//! `quota_server.rs`.

use std::time::{Duration, Instant};

use cloro_client::cloro_auth_core::wire::{CreateKeyRequest, RotateKeyRequest};
use cloro_client::cloro_auth_core::{AccountId, KeyId};
use cloro_client::{ClientBuilder, Error, ErrorCode, IdempotencyKey, QuotaLimit};
use http::Method;

use crate::cli::{ADMIN, cloro_at};
use crate::support::{
    Canned, KEY_INFO, Scripted, admin, quick_retries, replayed_create, unknown_key,
};

fn client(base_url: &str) -> cloro_client::Client {
    ClientBuilder::new()
        .base_url(base_url)
        .retry_policy(quick_retries())
        .api_key(unknown_key())
        .build()
        .unwrap()
}

/// [`KEY_INFO`] with a credit balance.
fn key_info_with_credits(credits: u64) -> String {
    KEY_INFO.replace(
        r#""status": "active""#,
        &format!(
            r#""status": "active", "credits": {credits}, "refill": {{"amount": 500, "interval": "day"}}, "quota": {{"requests": 10000, "period": "month"}}"#
        ),
    )
}

#[tokio::test]
async fn a_replayed_create_says_which_key_to_rotate() {
    // The first attempt's answer was lost (a 503 from a proxy), a second
    // met the first still running (409), the third got the stored answer:
    // the key exists, its plaintext is gone.
    let server = Scripted::start(vec![
        Canned::error(503, "AUTH_UNAVAILABLE"),
        Canned::error(409, "IDEMPOTENCY_KEY_REUSED"),
        replayed_create(),
    ])
    .await;
    let error = admin(&server.base_url)
        .create_key(&CreateKeyRequest::new(AccountId::new("acct").unwrap(), "k"))
        .await
        .unwrap_err();
    let Error::KeyNotShown(not_shown) = &error else {
        panic!("not KeyNotShown: {error:?}");
    };
    assert_eq!(not_shown.key_id.as_str(), "key_scripted");
    assert_eq!(not_shown.status, http::StatusCode::CREATED);
    assert_eq!(error.label(), "KEY_NOT_SHOWN");
    let text = error.to_string();
    assert!(
        text.contains("key_scripted") && text.contains("rotate"),
        "{text}"
    );
    assert!(
        cloro_client::cli::advice(&error).contains("cloro keys rotate key_scripted"),
        "{}",
        cloro_client::cli::advice(&error)
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 3, "the 409 to our own repeat is waited out");
    let key = seen[0].idempotency_key().unwrap();
    assert!(seen.iter().all(|s| s.idempotency_key() == Some(key)));
}

#[tokio::test]
async fn a_409_to_a_first_attempt_is_not_retried() {
    // The caller's key was used before with another body: trying again
    // cannot help.
    let server = Scripted::start(vec![Canned::error(409, "IDEMPOTENCY_KEY_REUSED")]).await;
    let admin = admin(&server.base_url);
    let error = admin
        .with_idempotency_key(IdempotencyKey::new("order-7").unwrap())
        .create_key(&CreateKeyRequest::new(AccountId::new("acct").unwrap(), "k"))
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        Some(ErrorCode::IdempotencyKeyReused),
        "{error}"
    );
    assert_eq!(server.seen().len(), 1);
    assert_eq!(server.seen()[0].idempotency_key(), Some("order-7"));
    assert!(cloro_client::cli::advice(&error).contains("idempotency"));
}

#[tokio::test]
async fn a_replayed_rotate_names_the_new_key() {
    let previous = KEY_INFO.replace("key_scripted", "key_old");
    let mut replay = Canned::ok(&format!(
        r#"{{"key": null, "key_info": {KEY_INFO}, "previous": {previous}}}"#
    ))
    .with("idempotent-replayed", "true");
    replay.status = http::StatusCode::CREATED;
    let server = Scripted::start(vec![replay]).await;
    let error = admin(&server.base_url)
        .with_idempotency_key(IdempotencyKey::new("rotate-1").unwrap())
        .rotate_key(
            &KeyId::new("key_old").unwrap(),
            &RotateKeyRequest::default(),
        )
        .await
        .unwrap_err();
    let Error::KeyNotShown(not_shown) = &error else {
        panic!("not KeyNotShown: {error:?}");
    };
    assert_eq!(not_shown.key_id.as_str(), "key_scripted");
    let seen = server.seen();
    assert_eq!(seen[0].path, "/admin/v1/keys/key_old/rotate");
    assert_eq!(seen[0].idempotency_key(), Some("rotate-1"));
}

#[tokio::test]
async fn credits_are_set_and_added_once() {
    let server = Scripted::start(vec![
        Canned::error(503, "AUTH_UNAVAILABLE"),
        Canned::ok(&key_info_with_credits(600)).with("idempotent-replayed", "true"),
        Canned::ok(&key_info_with_credits(5)),
    ])
    .await;
    let admin = admin(&server.base_url);
    let id = KeyId::new("key_scripted").unwrap();
    let added = admin
        .with_idempotency_key(IdempotencyKey::new("topup-1").unwrap())
        .add_credits(&id, 100)
        .await
        .unwrap();
    assert_eq!(added.value().credits, Some(600));
    assert!(added.meta().replayed);
    assert_eq!(added.meta().attempts, 2);
    let set = admin.set_credits(&id, 5).await.unwrap();
    assert_eq!(set.value().credits, Some(5));
    assert!(!set.meta().replayed);

    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    for request in &seen {
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.path, "/admin/v1/keys/key_scripted/credits");
    }
    assert_eq!(seen[0].json(), serde_json::json!({"add": 100}));
    assert_eq!(seen[1].idempotency_key(), Some("topup-1"));
    assert_eq!(seen[2].json(), serde_json::json!({"set": 5}));
    let own = seen[2].idempotency_key().unwrap();
    assert!(own != "topup-1" && own.len() == 32, "{own}");
}

#[tokio::test]
async fn account_quota_is_read() {
    let server = Scripted::start(vec![Canned::ok(
        r#"{"account_id": "acct_q", "plan": "free", "quota": {"requests": 10000, "period": "month"},
            "used": 1234, "remaining": 8766, "resets_at": "2026-02-01T00:00:00Z"}"#,
    )])
    .await;
    let quota = admin(&server.base_url)
        .account_quota(&AccountId::new("acct_q").unwrap())
        .await
        .unwrap()
        .into_value();
    assert_eq!(quota.plan.as_str(), "free");
    assert_eq!(quota.quota.map(|q| q.requests), Some(10_000));
    assert_eq!((quota.used, quota.remaining), (Some(1234), Some(8766)));
    assert_eq!(
        quota.resets_at.map(|at| at.to_string()).as_deref(),
        Some("2026-02-01T00:00:00Z")
    );
    let seen = server.seen();
    assert_eq!(seen[0].method, Method::GET);
    assert_eq!(seen[0].path, "/admin/v1/accounts/acct_q/quota");
}

#[tokio::test]
async fn a_quota_that_resets_in_hours_comes_back_at_once_typed() {
    let server = Scripted::start(vec![
        Canned::error_with(
            429,
            "QUOTA_EXCEEDED",
            r#"{"limit": "quota", "plan": "free", "resets_at": "2026-02-01T00:00:00Z", "retry_after": 7200}"#,
        )
        .with("retry-after", "7200"),
    ])
    .await;
    let started = Instant::now();
    let error = client(&server.base_url).whoami().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1), "not slept");
    assert_eq!(server.seen().len(), 1);
    assert_eq!(error.code(), Some(ErrorCode::QuotaExceeded));
    let quota = error.quota_exceeded().unwrap();
    assert_eq!(quota.limit, Some(QuotaLimit::Quota));
    assert_eq!(
        quota.plan.map(|plan| plan.to_string()).as_deref(),
        Some("free")
    );
    assert_eq!(
        quota.resets_at.map(|at| at.to_string()).as_deref(),
        Some("2026-02-01T00:00:00Z")
    );
    assert_eq!(quota.retry_after, Some(Duration::from_secs(7200)));
    let advice = cloro_client::cli::advice(&error);
    assert!(
        advice.contains("plan free") && advice.contains("2026-02-01T00:00:00Z"),
        "{advice}"
    );
}

#[tokio::test]
async fn credits_that_never_refill_are_not_retried() {
    // No Retry-After: nothing refills, so no backoff would help.
    let server = Scripted::start(vec![Canned::error_with(
        429,
        "QUOTA_EXCEEDED",
        r#"{"limit": "credits", "resets_at": null}"#,
    )])
    .await;
    let error = client(&server.base_url).whoami().await.unwrap_err();
    assert_eq!(server.seen().len(), 1);
    let quota = error.quota_exceeded().unwrap();
    assert_eq!(quota.limit, Some(QuotaLimit::Credits));
    assert_eq!(
        (quota.plan, quota.resets_at, quota.retry_after),
        (None, None, None)
    );
    assert!(
        cloro_client::cli::advice(&error).contains("cloro keys credits"),
        "{}",
        cloro_client::cli::advice(&error)
    );
    // Other codes carry no quota particulars.
    let other = Scripted::start(vec![Canned::error(401, "INVALID_API_KEY")]).await;
    let error = client(&other.base_url).whoami().await.unwrap_err();
    assert!(error.quota_exceeded().is_none());
}

#[tokio::test]
async fn a_quota_back_within_the_budget_is_waited_for() {
    // A daily quota that starts again in a second: worth the wait.
    let server = Scripted::start(vec![
        Canned::error_with(
            429,
            "QUOTA_EXCEEDED",
            r#"{"limit": "quota", "resets_at": "2026-01-16T00:00:00Z", "retry_after": 1}"#,
        )
        .with("retry-after", "1"),
        Canned::ok(KEY_INFO),
    ])
    .await;
    let me = client(&server.base_url).whoami().await.unwrap();
    assert_eq!(me.meta().attempts, 2);
}

#[tokio::test]
async fn the_cli_sends_quota_credits_and_refill() {
    let server = Scripted::start(vec![
        crate::support::created(&crate::support::issued_key()),
        replayed_create(),
    ])
    .await;
    let args = [
        "keys",
        "create",
        "--account",
        "acct_q",
        "--name",
        "metered",
        "--quota",
        "10000/month",
        "--quota-applies-to",
        "account",
        "--credits",
        "500",
        "--refill",
        "500/day",
        "--idempotency-key",
        "make-metered-1",
    ];
    cloro_at(&server.base_url, ADMIN, &args).await.ok();
    // The same command again: the server has the key, not its secret.
    let again = cloro_at(&server.base_url, ADMIN, &args).await;
    assert_eq!(again.code, 1, "{again:?}");
    assert_eq!(again.stdout, "");
    assert!(
        again.stderr.starts_with("KEY_NOT_SHOWN: ")
            && again.stderr.contains("cloro keys rotate key_scripted"),
        "{again:?}"
    );
    let mut json_args = vec!["--json"];
    json_args.extend_from_slice(&args);
    let again = cloro_at(&server.base_url, ADMIN, &json_args).await;
    assert_eq!(again.code, 1, "{again:?}");
    let error: serde_json::Value = serde_json::from_str(again.stderr.trim()).unwrap();
    assert_eq!(error["error"]["code"], "KEY_NOT_SHOWN");
    assert_eq!(error["error"]["key_id"], "key_scripted");
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    let body = seen[0].json();
    assert_eq!(
        body["quota"],
        serde_json::json!({"requests": 10000, "period": "month", "applies_to": "account"})
    );
    assert_eq!(body["credits"], 500);
    assert_eq!(
        body["refill"],
        serde_json::json!({"amount": 500, "interval": "day"})
    );
    assert!(
        seen.iter()
            .all(|s| s.idempotency_key() == Some("make-metered-1"))
    );
}

#[tokio::test]
async fn bad_cli_values_send_nothing() {
    let server = Scripted::start(vec![Canned::ok(KEY_INFO)]).await;
    for args in [
        &[
            "keys",
            "create",
            "--account",
            "a",
            "--name",
            "n",
            "--quota",
            "0/month",
        ][..],
        &[
            "keys",
            "create",
            "--account",
            "a",
            "--name",
            "n",
            "--quota",
            "10/week",
        ],
        &[
            "keys",
            "create",
            "--account",
            "a",
            "--name",
            "n",
            "--refill",
            "x",
        ],
        &[
            "keys",
            "create",
            "--account",
            "a",
            "--name",
            "n",
            "--credits",
            "9007199254740992",
        ],
        &["keys", "credits", "key_1", "--add", "1", "--set", "1"],
        &["keys", "credits", "key_1"],
        &["keys", "update", "key_1", "--quota", "1/day", "--no-quota"],
    ] {
        let run = cloro_at(&server.base_url, ADMIN, args).await;
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        // The flag at fault is named (a missing --set/--add too).
        let flag = args
            .iter()
            .rfind(|arg| arg.starts_with("--"))
            .unwrap_or(&"--set");
        assert!(run.stderr.contains(flag), "{args:?}: {run:?}");
    }
    assert!(server.seen().is_empty(), "nothing reached the server");
}

#[tokio::test]
async fn the_cli_shows_credits_and_account_quotas() {
    let server = Scripted::start(vec![
        Canned::ok(&key_info_with_credits(600)).with("idempotent-replayed", "true"),
        Canned::ok(&key_info_with_credits(600)),
        Canned::ok(
            r#"{"account_id": "acct_q", "plan": "free", "quota": {"requests": 10000, "period": "month"},
                "used": 1234, "remaining": 8766, "resets_at": "2026-02-01T00:00:00Z"}"#,
        ),
        Canned::ok(
            r#"{"account_id": "acct_q", "plan": "free", "quota": null,
                "used": null, "remaining": null, "resets_at": null}"#,
        ),
    ])
    .await;
    let added = cloro_at(
        &server.base_url,
        ADMIN,
        &[
            "keys",
            "credits",
            "key_scripted",
            "--add",
            "100",
            "--idempotency-key",
            "topup-1",
        ],
    )
    .await
    .ok();
    assert!(added.stdout.contains("600 left"), "{added:?}");
    assert!(added.stdout.contains("to 500 each day"), "{added:?}");
    assert!(added.stdout.contains("10000/month per key"), "{added:?}");
    assert!(added.stderr.contains("nothing was changed"), "{added:?}");
    let shown = cloro_at(
        &server.base_url,
        ADMIN,
        &["--json", "keys", "credits", "key_scripted", "--set", "600"],
    )
    .await
    .ok()
    .json();
    assert_eq!(shown["credits"], 600);
    let table = cloro_at(&server.base_url, ADMIN, &["accounts", "quota", "acct_q"])
        .await
        .ok();
    for text in [
        "acct_q",
        "10000/month per account",
        "1234",
        "8766",
        "2026-02-01T00:00:00Z",
    ] {
        assert!(table.stdout.contains(text), "{text}: {table:?}");
    }
    let none = cloro_at(
        &server.base_url,
        ADMIN,
        &["--json", "accounts", "quota", "acct_q"],
    )
    .await
    .ok()
    .json();
    assert_eq!(none["quota"], serde_json::Value::Null);

    let seen = server.seen();
    assert_eq!(seen[0].json(), serde_json::json!({"add": 100}));
    assert_eq!(seen[0].idempotency_key(), Some("topup-1"));
    assert_eq!(seen[1].json(), serde_json::json!({"set": 600}));
    assert_eq!(seen[2].path, "/admin/v1/accounts/acct_q/quota");
}
