//! The SDK against the real server: the whole key lifecycle, every admin
//! route, the generic request and the typed errors.

use std::num::NonZeroU32;

use cloro_client::cloro_auth_core::wire::{
    AuditAction, CreateKeyRequest, KeyInfo, KeyPurpose, Patch, RateLimitPolicy, RotateKeyRequest,
    UpdateKeyRequest,
};
use cloro_client::cloro_auth_core::{AccountId, Environment, KeyId, KeyStatus, PlanName, Scope};
use cloro_client::{AdminToken, AuditQuery, ConfigError, Error, ErrorCode, KeyListQuery};
use http::{Method, StatusCode};

use crate::support::{Server, unknown_key};

fn n(value: u32) -> NonZeroU32 {
    NonZeroU32::new(value).unwrap()
}

#[tokio::test]
async fn create_whoami_list_rotate_revoke() {
    let server = Server::start().await;
    let admin = server.admin();
    let account = AccountId::new("acct_sdk").unwrap();

    // Create, with most options.
    let mut request = CreateKeyRequest::new(account, "ci key");
    request.purpose = KeyPurpose::Ci;
    request.environment = Environment::Test;
    request.scopes = vec![Scope::new("monitor:read").unwrap(), Scope::wildcard()];
    request.rate_limit = Some(RateLimitPolicy::new(n(1000), n(3600)));
    request.concurrency_limit = Some(n(10));
    request.metadata.insert("team".into(), "payments".into());
    let created = admin.create_key(&request).await.unwrap();
    assert_eq!(created.meta().status, StatusCode::CREATED);
    let created = created.into_value();
    assert_eq!(created.key.environment(), Environment::Test);
    assert_eq!(created.key_info.start, created.key.redacted().as_str());
    assert_eq!(created.key_info.purpose, KeyPurpose::Ci);
    assert_eq!(created.key_info.status, KeyStatus::Active);

    // Whoami with it, and the limiter's state on the response.
    let client = server
        .builder()
        .api_key(created.key.clone())
        .build()
        .unwrap();
    let me = client.whoami().await.unwrap();
    assert_eq!(me.value().id, created.key_info.id);
    let limit = me.rate_limit().copied().unwrap();
    assert_eq!(limit.limit, 1000);
    assert!(limit.remaining < 1000, "{limit:?}");
    assert_eq!(me.meta().concurrency.map(|c| c.limit), Some(10));
    assert!(me.meta().request_id.is_some());
    assert_eq!(me.meta().attempts, 1);

    // The generic request reaches any /v1 route, and only those.
    let generic = client
        .request(Method::GET, "/v1/whoami")
        .send_json::<KeyInfo>()
        .await
        .unwrap();
    assert_eq!(generic.value().id, created.key_info.id);
    let error = client
        .request(Method::GET, "/admin/v1/plans")
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Config(ConfigError::NotApiPath { .. })),
        "{error}"
    );
    let no_upstream = client
        .request(Method::POST, "/v1/monitor")
        .json(&serde_json::json!({"url": "https://example.com"}))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        no_upstream.code(),
        Some(ErrorCode::NotFound),
        "{no_upstream}"
    );

    // A second key, then both through the pager, one per page, newest first.
    let second = admin
        .create_key(&CreateKeyRequest::new(account, "second"))
        .await
        .unwrap()
        .into_value();
    let mut pager = admin.keys(KeyListQuery::new(account).limit(1));
    let first_page = pager.next_page().await.unwrap().unwrap();
    assert_eq!(first_page.value().keys.len(), 1);
    assert_eq!(first_page.value().keys[0].id, second.key_info.id);
    assert!(first_page.value().next_cursor.is_some());
    let all = admin
        .keys(KeyListQuery::new(account).limit(1))
        .collect_all()
        .await
        .unwrap();
    let ids: Vec<KeyId> = all.iter().map(|key| key.id).collect();
    assert_eq!(ids, [second.key_info.id, created.key_info.id]);

    // Rotate with an hour of grace: both keys work meanwhile.
    let rotated = admin
        .rotate_key(
            &created.key_info.id,
            &RotateKeyRequest {
                grace_period_seconds: 3600,
                ..RotateKeyRequest::default()
            },
        )
        .await
        .unwrap()
        .into_value();
    assert_ne!(rotated.key, created.key);
    assert_eq!(rotated.previous.id, created.key_info.id);
    assert!(rotated.previous.expires_at.is_some());
    assert_eq!(rotated.key_info.scopes, created.key_info.scopes);
    let new_client = server
        .builder()
        .api_key(rotated.key.clone())
        .build()
        .unwrap();
    assert_eq!(
        new_client.whoami().await.unwrap().value().id,
        rotated.key_info.id
    );
    assert_eq!(
        client.whoami().await.unwrap().value().id,
        created.key_info.id
    );

    // Revoke the new key: refused at once, with the code and a fix, no retry.
    let revoked = admin
        .revoke_key(&rotated.key_info.id, Some("test over"))
        .await
        .unwrap();
    assert_eq!(revoked.value().status, KeyStatus::Revoked);
    let error = new_client.whoami().await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::RevokedApiKey), "{error}");
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(error.api_error().unwrap().attempts, 1);
    assert!(error.request_id().is_some());
    assert_eq!(
        cloro_client::cli::advice(&error),
        "this key was revoked; create a new one with cloro keys create"
    );
    // Revoking again is fine (idempotent); rotating a revoked key is not.
    admin.revoke_key(&rotated.key_info.id, None).await.unwrap();
    let error = admin
        .rotate_key(&rotated.key_info.id, &RotateKeyRequest::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::KeyRevoked), "{error}");

    // Update: rename and disable the old key; it is refused as disabled.
    let patch = UpdateKeyRequest {
        name: Patch::Value("renamed".into()),
        enabled: Patch::Value(false),
        ..UpdateKeyRequest::default()
    };
    let updated = admin
        .update_key(&created.key_info.id, &patch)
        .await
        .unwrap();
    assert_eq!(updated.value().name, "renamed");
    let shown = admin.get_key(&created.key_info.id).await.unwrap();
    assert_eq!(shown.value().status, KeyStatus::Disabled);
    let error = client.whoami().await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::RevokedApiKey), "{error}");
    assert!(
        cloro_client::cli::advice(&error).contains("--enable"),
        "{}",
        cloro_client::cli::advice(&error)
    );

    // Not found, bad field.
    let missing = admin
        .get_key(&KeyId::new("key_nope").unwrap())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some(ErrorCode::KeyNotFound));
    let error = admin
        .set_plan(&account, PlanName::new("platinum").unwrap())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidRequest), "{error}");

    // Audit, plans, accounts.
    let events = admin
        .audit_events(AuditQuery::new(account).limit(2))
        .collect_all()
        .await
        .unwrap();
    let actions: Vec<AuditAction> = events.iter().map(|event| event.action).collect();
    for action in [
        AuditAction::KeyCreated,
        AuditAction::KeyRotated,
        AuditAction::KeyRevoked,
        AuditAction::KeyUpdated,
    ] {
        assert!(
            actions.contains(&action),
            "{action:?} missing from {actions:?}"
        );
    }
    let first_audit_page = admin
        .audit(&AuditQuery::new(account).limit(2))
        .await
        .unwrap();
    assert_eq!(first_audit_page.value().events.len(), 2);
    let plans = admin.plans().await.unwrap().into_value();
    assert_eq!(plans.default_plan.as_str(), "free");
    assert!(plans.plans.iter().any(|plan| plan.name.as_str() == "pro"));
    let info = admin.account(&account).await.unwrap().into_value();
    assert_eq!(info.plan.as_str(), "free");
    assert_eq!(info.key_count, 3);
    let moved = admin
        .set_plan(&account, PlanName::new("pro").unwrap())
        .await
        .unwrap()
        .into_value();
    assert_eq!(moved.plan.as_str(), "pro");
    let unknown = admin
        .account(&AccountId::new("acct_nobody").unwrap())
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Some(ErrorCode::AccountNotFound));
}

#[tokio::test]
async fn wrong_credentials_get_their_codes() {
    let server = Server::start().await;
    let stranger = server.builder().api_key(unknown_key()).build().unwrap();
    let error = stranger.whoami().await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidApiKey), "{error}");
    assert_eq!(error.label(), "INVALID_API_KEY");

    let wrong_admin = server
        .builder()
        .admin_token(AdminToken::new("not_the_admin_token_0123456789abcdef").unwrap())
        .build_admin()
        .unwrap();
    let error = wrong_admin.plans().await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidAdminToken), "{error}");
    assert!(cloro_client::cli::advice(&error).contains("CLORO_ADMIN_TOKEN"));
}
