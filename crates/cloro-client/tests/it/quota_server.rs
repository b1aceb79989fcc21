//! Quotas, credits and idempotency (SPEC §11) against the real server: the
//! SDK and the CLI end to end.
//!
//! These need the server side of SPEC §11: the credit ledger, `POST
//! /admin/v1/keys/{id}/credits`, `GET /admin/v1/accounts/{id}/quota`,
//! `Idempotency-Key` on admin POSTs and quota enforcement on `/v1/*`. They
//! fail until it is merged; the same client behaviour is pinned against
//! scripted servers in `quotas.rs`, which passes either way.

use cloro_client::cloro_auth_core::wire::{
    AppliesTo, CreateKeyRequest, Patch, QuotaPeriod, QuotaPolicy, Refill, UpdateKeyRequest,
};
use cloro_client::cloro_auth_core::{AccountId, PlanName};
use cloro_client::{Error, ErrorCode, IdempotencyKey, QuotaLimit, RetryPolicy};

use crate::cli::{ADMIN, cloro};
use crate::support::Server;

fn metered_request(account: AccountId) -> CreateKeyRequest {
    let mut request = CreateKeyRequest::new(account, "metered");
    request.quota = Some(QuotaPolicy {
        requests: 10_000,
        period: QuotaPeriod::Month,
        applies_to: Some(AppliesTo::Key),
    });
    request.credits = Some(500);
    request.refill = Some(Refill {
        amount: 500,
        interval: QuotaPeriod::Day,
    });
    request
}

#[tokio::test]
async fn credits_are_set_added_and_cleared() {
    let server = Server::start().await;
    let admin = server.admin();
    let account = AccountId::new("acct_credits").unwrap();
    let created = admin
        .create_key(&metered_request(account))
        .await
        .unwrap()
        .into_value();
    let info = &created.key_info;
    assert_eq!(info.credits, Some(500));
    assert_eq!(info.quota.map(|quota| quota.requests), Some(10_000));
    assert_eq!(info.refill.map(|refill| refill.amount), Some(500));

    let added = admin.add_credits(&info.id, 100).await.unwrap();
    assert_eq!(added.value().credits, Some(600));
    let set = admin.set_credits(&info.id, 5).await.unwrap();
    assert_eq!(set.value().credits, Some(5));
    assert_eq!(
        admin.get_key(&info.id).await.unwrap().value().credits,
        Some(5)
    );

    let cleared = admin
        .update_key(
            &info.id,
            &UpdateKeyRequest {
                quota: Patch::Null,
                credits: Patch::Null,
                refill: Patch::Null,
                ..UpdateKeyRequest::default()
            },
        )
        .await
        .unwrap()
        .into_value();
    assert_eq!(
        (cleared.quota, cleared.credits, cleared.refill),
        (None, None, None)
    );
}

#[tokio::test]
async fn an_idempotency_key_makes_admin_posts_happen_once() {
    let server = Server::start().await;
    let admin = server.admin();
    let account = AccountId::new("acct_once").unwrap();
    let once = admin.with_idempotency_key(IdempotencyKey::new("create-once-1").unwrap());
    let request = CreateKeyRequest::new(account, "once");
    let first = once.create_key(&request).await.unwrap().into_value();

    // The same call again: the same key, without its secret.
    let error = once.create_key(&request).await.unwrap_err();
    let Error::KeyNotShown(not_shown) = &error else {
        panic!("not KeyNotShown: {error:?}");
    };
    assert_eq!(not_shown.key_id, first.key_info.id);
    assert_eq!(admin.account(&account).await.unwrap().value().key_count, 1);

    // The same key with another body is refused, and not retried.
    let error = once
        .create_key(&CreateKeyRequest::new(account, "another"))
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        Some(ErrorCode::IdempotencyKeyReused),
        "{error}"
    );
    assert_eq!(error.api_error().unwrap().attempts, 1);

    // Credits added twice under one key are added once.
    admin.set_credits(&first.key_info.id, 10).await.unwrap();
    let topup = admin.with_idempotency_key(IdempotencyKey::new("topup-1").unwrap());
    let added = topup.add_credits(&first.key_info.id, 5).await.unwrap();
    assert_eq!(added.value().credits, Some(15));
    assert!(!added.meta().replayed);
    let again = topup.add_credits(&first.key_info.id, 5).await.unwrap();
    assert!(again.meta().replayed);
    assert_eq!(again.value().credits, Some(15));
    assert_eq!(
        admin
            .get_key(&first.key_info.id)
            .await
            .unwrap()
            .value()
            .credits,
        Some(15)
    );
}

#[tokio::test]
async fn quota_and_credit_refusals_are_typed() {
    let server = Server::start().await;
    let admin = server.admin();
    let account = AccountId::new("acct_refused").unwrap();

    // Credits that never refill: one use, then QUOTA_EXCEEDED without a
    // wait, sent once.
    let mut request = CreateKeyRequest::new(account, "one use");
    request.credits = Some(1);
    let created = admin.create_key(&request).await.unwrap().into_value();
    let client = server.builder().api_key(created.key).build().unwrap();
    client.whoami().await.unwrap();
    let error = client.whoami().await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::QuotaExceeded), "{error}");
    let quota = error.quota_exceeded().unwrap();
    assert_eq!(quota.limit, Some(QuotaLimit::Credits));
    assert_eq!((quota.resets_at, quota.retry_after), (None, None));
    assert_eq!(error.api_error().unwrap().attempts, 1);

    // A plan's daily quota: QUOTA_EXCEEDED naming the plan and when the
    // day starts again.
    admin
        .set_plan(&account, PlanName::new("metered").unwrap())
        .await
        .unwrap();
    let daily = admin
        .create_key(&CreateKeyRequest::new(account, "daily"))
        .await
        .unwrap()
        .into_value();
    let client = server
        .builder()
        .retry_policy(RetryPolicy::none())
        .api_key(daily.key)
        .build()
        .unwrap();
    client.whoami().await.unwrap();
    client.whoami().await.unwrap();
    let error = client.whoami().await.unwrap_err();
    let quota = error.quota_exceeded().unwrap();
    assert_eq!(quota.limit, Some(QuotaLimit::Quota));
    assert_eq!(
        quota.plan.map(|plan| plan.to_string()).as_deref(),
        Some("metered")
    );
    assert!(
        quota.resets_at.is_some() && quota.retry_after.is_some(),
        "{quota:?}"
    );

    let account_quota = admin.account_quota(&account).await.unwrap().into_value();
    assert_eq!(account_quota.plan.as_str(), "metered");
    assert_eq!(account_quota.quota.map(|quota| quota.requests), Some(2));
    assert_eq!(account_quota.remaining, Some(0));
    assert!(account_quota.resets_at.is_some());
}

#[tokio::test]
async fn quotas_and_credits_through_the_cli() {
    let server = Server::start().await;
    let created = cloro(
        &server,
        ADMIN,
        &[
            "--json",
            "keys",
            "create",
            "--account",
            "acct_cli_q",
            "--name",
            "metered",
            "--quota",
            "10000/month",
            "--credits",
            "500",
            "--refill",
            "500/day",
        ],
    )
    .await
    .ok()
    .json();
    let id = created["key_info"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["key_info"]["credits"], 500);
    assert_eq!(
        created["key_info"]["quota"],
        serde_json::json!({"requests": 10000, "period": "month"})
    );

    let shown = cloro(&server, ADMIN, &["keys", "show", &id]).await.ok();
    for text in ["10000/month per key", "500 left", "to 500 each day"] {
        assert!(shown.stdout.contains(text), "{text}: {shown:?}");
    }
    let list = cloro(&server, ADMIN, &["keys", "list", "--account", "acct_cli_q"])
        .await
        .ok();
    assert!(list.stdout.contains("QUOTA"), "{list:?}");
    assert!(list.stdout.contains("500 (to 500 each day)"), "{list:?}");

    let added = cloro(
        &server,
        ADMIN,
        &["--json", "keys", "credits", &id, "--add", "100"],
    )
    .await
    .ok()
    .json();
    assert_eq!(added["credits"], 600);

    let cleared = cloro(
        &server,
        ADMIN,
        &[
            "--json",
            "keys",
            "update",
            &id,
            "--no-quota",
            "--no-credits",
            "--no-refill",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(cleared["quota"], serde_json::Value::Null);
    assert_eq!(cleared["credits"], serde_json::Value::Null);
    assert_eq!(cleared["refill"], serde_json::Value::Null);

    cloro(
        &server,
        ADMIN,
        &["accounts", "set-plan", "acct_cli_q", "metered"],
    )
    .await
    .ok();
    let quota = cloro(&server, ADMIN, &["accounts", "quota", "acct_cli_q"])
        .await
        .ok();
    assert!(quota.stdout.contains("2/day per account"), "{quota:?}");
    let quota = cloro(
        &server,
        ADMIN,
        &["--json", "accounts", "quota", "acct_cli_q"],
    )
    .await
    .ok()
    .json();
    assert_eq!(quota["plan"], "metered");
    assert_eq!(quota["used"], 0);
}
