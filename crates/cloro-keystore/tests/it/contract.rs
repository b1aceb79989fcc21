//! The `KeyStore` contract, written once and run unchanged against every
//! store (memory, embedded redb, Redis). Each check takes a fresh store and
//! uses its own account ids, so stores may be shared between checks.

use std::sync::Arc;

use cloro_auth_core::wire::{
    AuditAction, CreateKeyRequest, Patch, RotateKeyRequest, UpdateKeyRequest,
};
use cloro_auth_core::{AccountId, ApiKey, KeyStatus, PlanName, Scope};
use cloro_keystore::{
    AdminError, KeyAdmin, KeyBatch, KeyRecord, KeyStore, LocalNotifier, PageRequest, Plans,
    RecordWrite, StoreError, UsageBatch, UsageDelta,
};
use jiff::Timestamp;

/// Runs every contract check against stores made by `make`.
pub(crate) async fn run_contract<F>(make: F)
where
    F: Fn() -> Arc<dyn KeyStore>,
{
    create_then_lookup_by_hash_and_id(make()).await;
    unknown_hash_and_id_are_none(make()).await;
    list_is_newest_first_with_stable_pages(make()).await;
    revoked_keys_listed_only_on_request(make()).await;
    stale_version_conflicts_and_writes_nothing(make()).await;
    duplicate_hash_conflicts(make()).await;
    update_merge_patch(make()).await;
    revoke_is_idempotent_and_blocks_changes(make()).await;
    rotate_is_atomic_and_inherits(make()).await;
    audit_is_newest_first_without_secrets(make()).await;
    accounts_and_plans(make()).await;
    usage_is_accumulated(make()).await;
    the_same_usage_batch_counts_once(make()).await;
    an_older_usage_sequence_after_a_newer_is_ignored(make()).await;
    ping_answers(make()).await;
    expiry_notices_are_sent_once_each(make()).await;
    usage_series_count_each_outcome_once_and_drop_old_buckets(make()).await;
    expiry_notice_claims_keep_other_callers_off(make()).await;
}

/// `KeyAdmin` over `store` with the built-in plans and no other nodes.
pub(crate) fn admin(store: Arc<dyn KeyStore>) -> KeyAdmin {
    KeyAdmin::new(
        store,
        Arc::new(Plans::builtin()),
        Arc::new(LocalNotifier::default()),
    )
}

/// A valid account id.
pub(crate) fn account(name: &str) -> AccountId {
    AccountId::new(name).unwrap()
}

/// A fixed instant plus `seconds`, so tests never depend on the clock.
pub(crate) fn t(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

async fn create_then_lookup_by_hash_and_id(store: Arc<dyn KeyStore>) {
    let admin = admin(store.clone());
    let mut request = CreateKeyRequest::new(account("acct_lookup"), "first");
    request.scopes = vec![Scope::new("monitor:write").unwrap()];
    let issued = admin.create(request, "admin", t(0)).await.unwrap();
    let found = store
        .lookup(&issued.key.hash())
        .await
        .unwrap()
        .expect("lookup by hash");
    assert_eq!(found.record.id, issued.record.id);
    assert_eq!(
        found.record.scopes,
        vec![Scope::new("monitor:write").unwrap()]
    );
    assert_eq!(found.account_plan, None);
    let by_id = store
        .key(&issued.record.id)
        .await
        .unwrap()
        .expect("lookup by id");
    assert_eq!(by_id, issued.record);
    assert_eq!(by_id.status(t(1)), KeyStatus::Active);
    assert!(by_id.start.starts_with("sk_live_") && by_id.start.ends_with("..."));
}

async fn unknown_hash_and_id_are_none(store: Arc<dyn KeyStore>) {
    let key = ApiKey::generate(cloro_auth_core::Environment::Test).unwrap();
    assert!(store.lookup(&key.hash()).await.unwrap().is_none());
    assert!(
        store
            .key(&cloro_auth_core::KeyId::new("key_missing").unwrap())
            .await
            .unwrap()
            .is_none()
    );
}

async fn list_is_newest_first_with_stable_pages(store: Arc<dyn KeyStore>) {
    let admin = admin(store.clone());
    let owner = account("acct_list");
    let mut ids = Vec::new();
    for i in 0..7 {
        // Two keys share each timestamp, so the id tie-break is exercised.
        let issued = admin
            .create(
                CreateKeyRequest::new(owner, format!("k{i}")),
                "admin",
                t(i / 2),
            )
            .await
            .unwrap();
        ids.push(issued.record.id);
    }
    admin
        .create(
            CreateKeyRequest::new(account("acct_other"), "x"),
            "admin",
            t(9),
        )
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = admin
            .list(&owner, 3, cursor.as_deref(), false)
            .await
            .unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|r| (r.created_at, r.id)));
        match page.next {
            Some(next) => cursor = Some(next.encode()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7, "every key once: {seen:?}");
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| (b.0, b.1.as_str()).cmp(&(a.0, a.1.as_str())));
    assert_eq!(seen, sorted, "newest first, ties by id");
    let bad = admin.list(&owner, 3, Some("garbage"), false).await;
    assert!(matches!(
        bad,
        Err(AdminError::InvalidField {
            field: "cursor",
            ..
        })
    ));
}

async fn revoked_keys_listed_only_on_request(store: Arc<dyn KeyStore>) {
    let admin = admin(store.clone());
    let owner = account("acct_revoked_list");
    let keep = admin
        .create(CreateKeyRequest::new(owner, "keep"), "admin", t(0))
        .await
        .unwrap();
    let gone = admin
        .create(CreateKeyRequest::new(owner, "gone"), "admin", t(1))
        .await
        .unwrap();
    admin
        .revoke(&gone.record.id, Some("leaked"), "admin", t(2))
        .await
        .unwrap();
    let active = store
        .keys_of_account(
            &owner,
            &PageRequest {
                limit: 10,
                after: None,
            },
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        active.items.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![keep.record.id]
    );
    let all = store
        .keys_of_account(
            &owner,
            &PageRequest {
                limit: 10,
                after: None,
            },
            true,
        )
        .await
        .unwrap();
    assert_eq!(all.items.len(), 2);
    assert!(all.next.is_none());
}

async fn stale_version_conflicts_and_writes_nothing(store: Arc<dyn KeyStore>) {
    let admin = admin(store.clone());
    let issued = admin
        .create(
            CreateKeyRequest::new(account("acct_cas"), "cas"),
            "admin",
            t(0),
        )
        .await
        .unwrap();
    let mut changed = issued.record.clone();
    changed.name = "changed".into();
    changed.version = 2;
    let stale = KeyBatch {
        account_id: changed.account_id,
        writes: vec![RecordWrite {
            record: changed.clone(),
            expected_version: Some(5),
        }],
        audit: vec![],
    };
    assert!(matches!(
        store.commit(stale).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store.key(&issued.record.id).await.unwrap().unwrap().name,
        "cas"
    );
    let fresh = KeyBatch {
        account_id: changed.account_id,
        writes: vec![RecordWrite {
            record: changed,
            expected_version: Some(1),
        }],
        audit: vec![],
    };
    store.commit(fresh).await.unwrap();
    let stored = store.key(&issued.record.id).await.unwrap().unwrap();
    assert_eq!((stored.name.as_str(), stored.version), ("changed", 2));
}

async fn duplicate_hash_conflicts(store: Arc<dyn KeyStore>) {
    let admin = admin(store.clone());
    let issued = admin
        .create(
            CreateKeyRequest::new(account("acct_dup"), "dup"),
            "admin",
            t(0),
        )
        .await
        .unwrap();
    let mut copy = issued.record.clone();
    copy.id = cloro_auth_core::KeyId::new("key_copy_of_dup").unwrap();
    let batch = KeyBatch {
        account_id: copy.account_id,
        writes: vec![RecordWrite {
            record: copy.clone(),
            expected_version: None,
        }],
        audit: vec![],
    };
    assert!(matches!(
        store.commit(batch).await,
        Err(StoreError::Conflict)
    ));
    assert!(store.key(&copy.id).await.unwrap().is_none());
}

async fn update_merge_patch(store: Arc<dyn KeyStore>) {
    let admin = admin(store.clone());
    let mut request = CreateKeyRequest::new(account("acct_patch"), "patch");
    request.metadata = [
        ("team".to_owned(), "core".to_owned()),
        ("env".to_owned(), "ci".to_owned()),
    ]
    .into();
    request.expires_at = Some(t(1000));
    let issued = admin.create(request, "admin", t(0)).await.unwrap();

    let patch: UpdateKeyRequest = serde_json::from_value(serde_json::json!({
        "name": "renamed",
        "expires_at": null,
        "metadata": {"env": null, "owner": "ops"},
        "rate_limit": {"requests": 5, "per_seconds": 60},
        "enabled": false,
    }))
    .unwrap();
    let updated = admin
        .update(&issued.record.id, &patch, "admin", t(1))
        .await
        .unwrap();
    assert_eq!(updated.name, "renamed");
    assert_eq!(updated.expires_at, None);
    assert_eq!(
        updated.metadata,
        [
            ("owner".to_owned(), "ops".to_owned()),
            ("team".to_owned(), "core".to_owned())
        ]
        .into()
    );
    assert_eq!(updated.rate_limit.unwrap().requests.get(), 5);
    assert_eq!(updated.status(t(2)), KeyStatus::Disabled);
    assert_eq!(
        store.key(&issued.record.id).await.unwrap().unwrap(),
        updated
    );

    let null_name: UpdateKeyRequest =
        serde_json::from_value(serde_json::json!({"name": null})).unwrap();
    assert!(matches!(
        admin
            .update(&issued.record.id, &null_name, "admin", t(2))
            .await,
        Err(AdminError::InvalidField { field: "name", .. })
    ));
    let past = UpdateKeyRequest {
        expires_at: Patch::Value(t(0)),
        ..Default::default()
    };
    assert!(matches!(
        admin.update(&issued.record.id, &past, "admin", t(2)).await,
        Err(AdminError::InvalidField {
            field: "expires_at",
            ..
        })
    ));
    let missing = cloro_auth_core::KeyId::new("key_nope").unwrap();
    assert!(matches!(
        admin.update(&missing, &past, "admin", t(2)).await,
        Err(AdminError::KeyNotFound)
    ));
}

async fn revoke_is_idempotent_and_blocks_changes(store: Arc<dyn KeyStore>) {
    let admin = admin(store.clone());
    let issued = admin
        .create(
            CreateKeyRequest::new(account("acct_revoke"), "r"),
            "admin",
            t(0),
        )
        .await
        .unwrap();
    let first = admin
        .revoke(&issued.record.id, Some("leaked in a log"), "admin", t(1))
        .await
        .unwrap();
    assert_eq!(first.revoked_at, Some(t(1)));
    assert_eq!(first.revoked_reason.as_deref(), Some("leaked in a log"));
    let again = admin
        .revoke(&issued.record.id, Some("other"), "admin", t(5))
        .await
        .unwrap();
    assert_eq!(
        (again.revoked_at, again.revoked_reason.clone()),
        (first.revoked_at, first.revoked_reason.clone())
    );
    assert_eq!(again.status(t(6)), KeyStatus::Revoked);
    let lookup = store.lookup(&issued.key.hash()).await.unwrap().unwrap();
    assert_eq!(lookup.record.status(t(6)), KeyStatus::Revoked);
    let rename = UpdateKeyRequest {
        name: Patch::Value("x".into()),
        ..Default::default()
    };
    assert!(matches!(
        admin
            .update(&issued.record.id, &rename, "admin", t(7))
            .await,
        Err(AdminError::KeyRevoked)
    ));
    assert!(matches!(
        admin
            .rotate(
                &issued.record.id,
                &RotateKeyRequest::default(),
                "admin",
                t(7)
            )
            .await,
        Err(AdminError::KeyRevoked)
    ));
}

async fn rotate_is_atomic_and_inherits(store: Arc<dyn KeyStore>) {
    let admin = admin(store.clone());
    let mut request = CreateKeyRequest::new(account("acct_rotate"), "rot");
    request.scopes = vec![Scope::new("monitor:read").unwrap()];
    request.expires_at = Some(t(10_000));
    request.concurrency_limit = std::num::NonZeroU32::new(3);
    let old = admin.create(request, "admin", t(0)).await.unwrap();

    let with_grace = RotateKeyRequest {
        grace_period_seconds: 60,
        expires_at: Patch::Absent,
    };
    let rotation = admin
        .rotate(&old.record.id, &with_grace, "admin", t(100))
        .await
        .unwrap();
    let new = &rotation.issued.record;
    assert_ne!(new.id, old.record.id);
    assert_ne!(rotation.issued.key.expose_secret(), old.key.expose_secret());
    assert_eq!(new.scopes, old.record.scopes);
    assert_eq!(new.expires_at, Some(t(10_000)), "expiry inherited");
    assert_eq!(new.concurrency_limit, old.record.concurrency_limit);
    assert_eq!(
        rotation.previous.expires_at,
        Some(t(160)),
        "old key ends after the grace"
    );
    assert_eq!(rotation.previous.rotated_to, Some(new.id));
    let old_stored = store.lookup(&old.key.hash()).await.unwrap().unwrap().record;
    assert_eq!(old_stored.status(t(159)), KeyStatus::Active);
    assert_eq!(old_stored.status(t(160)), KeyStatus::Expired);
    assert!(
        store
            .lookup(&rotation.issued.key.hash())
            .await
            .unwrap()
            .is_some()
    );

    // No grace: the old key stops at once; an explicit null expiry means never.
    let immediate = RotateKeyRequest {
        grace_period_seconds: 0,
        expires_at: Patch::Null,
    };
    let second = admin
        .rotate(&new.id, &immediate, "admin", t(200))
        .await
        .unwrap();
    assert_eq!(second.previous.status(t(200)), KeyStatus::Expired);
    assert_eq!(second.issued.record.expires_at, None);

    // A grace longer than the key's own life does not extend it.
    let mut short = CreateKeyRequest::new(account("acct_rotate"), "short");
    short.expires_at = Some(t(300));
    let short = admin.create(short, "admin", t(0)).await.unwrap();
    let long_grace = RotateKeyRequest {
        grace_period_seconds: 3600,
        expires_at: Patch::Value(t(5000)),
    };
    let rotated = admin
        .rotate(&short.record.id, &long_grace, "admin", t(250))
        .await
        .unwrap();
    assert_eq!(rotated.previous.expires_at, Some(t(300)));

    // An expired key may be rotated, but its expiry cannot be inherited.
    let expired = admin
        .rotate(
            &short.record.id,
            &RotateKeyRequest::default(),
            "admin",
            t(400),
        )
        .await;
    assert!(matches!(
        expired,
        Err(AdminError::InvalidField {
            field: "expires_at",
            ..
        })
    ));
    let renewed = RotateKeyRequest {
        grace_period_seconds: 0,
        expires_at: Patch::Value(t(9000)),
    };
    let renewed = admin
        .rotate(&short.record.id, &renewed, "admin", t(400))
        .await
        .unwrap();
    assert_eq!(renewed.issued.record.status(t(401)), KeyStatus::Active);
}

async fn audit_is_newest_first_without_secrets(store: Arc<dyn KeyStore>) {
    let admin = admin(store.clone());
    let owner = account("acct_audit");
    let issued = admin
        .create(CreateKeyRequest::new(owner, "audited"), "admin", t(0))
        .await
        .unwrap();
    let rename = UpdateKeyRequest {
        name: Patch::Value("renamed".into()),
        ..Default::default()
    };
    admin
        .update(&issued.record.id, &rename, "admin", t(1))
        .await
        .unwrap();
    let rotation = admin
        .rotate(
            &issued.record.id,
            &RotateKeyRequest::default(),
            "admin",
            t(2),
        )
        .await
        .unwrap();
    admin
        .revoke(&rotation.issued.record.id, Some("done"), "admin", t(3))
        .await
        .unwrap();
    admin
        .set_plan(&owner, PlanName::new("free").unwrap(), "admin", t(4))
        .await
        .unwrap();

    let page = admin.audit(&owner, 10, None).await.unwrap();
    let actions: Vec<AuditAction> = page.items.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        vec![
            AuditAction::AccountUpdated,
            AuditAction::KeyRevoked,
            AuditAction::KeyRotated,
            AuditAction::KeyUpdated,
            AuditAction::KeyCreated
        ]
    );
    let first_two = admin.audit(&owner, 2, None).await.unwrap();
    let rest = admin
        .audit(&owner, 10, first_two.next.map(|c| c.encode()).as_deref())
        .await
        .unwrap();
    assert_eq!(first_two.items.len() + rest.items.len(), 5);
    let json = serde_json::to_string(&page.items).unwrap();
    for secret in [
        issued.key.expose_secret(),
        rotation.issued.key.expose_secret(),
    ] {
        assert!(!json.contains(secret), "audit holds a plaintext key");
        assert!(
            !json.contains(&secret[8..40]),
            "audit holds the random part of a key"
        );
    }
}

async fn accounts_and_plans(store: Arc<dyn KeyStore>) {
    let admin = admin(store.clone());
    let owner = account("acct_plans");
    assert!(matches!(
        admin.account(&owner).await,
        Err(AdminError::AccountNotFound)
    ));
    let issued = admin
        .create(CreateKeyRequest::new(owner, "p"), "admin", t(0))
        .await
        .unwrap();
    let (record, plan) = admin.account(&owner).await.unwrap();
    assert_eq!((record.key_count, plan.as_str()), (1, "free"));
    let unknown = admin
        .set_plan(&owner, PlanName::new("gold").unwrap(), "admin", t(1))
        .await;
    assert!(matches!(
        unknown,
        Err(AdminError::InvalidField { field: "plan", .. })
    ));
    admin
        .set_plan(&owner, PlanName::new("free").unwrap(), "admin", t(1))
        .await
        .unwrap();
    let lookup = store.lookup(&issued.key.hash()).await.unwrap().unwrap();
    assert_eq!(lookup.account_plan, Some(PlanName::new("free").unwrap()));
    // An account with a plan and no keys exists.
    let empty = account("acct_plan_only");
    let (record, _) = admin
        .set_plan(&empty, PlanName::new("free").unwrap(), "admin", t(2))
        .await
        .unwrap();
    assert_eq!(record.key_count, 0);
}

/// A key of a new account, and a maker of one-key usage batches for it.
async fn usage_key(
    store: &Arc<dyn KeyStore>,
    owner: &str,
) -> (KeyRecord, impl Fn(u64, u64, i64, u64) -> UsageBatch) {
    let issued = admin(store.clone())
        .create(CreateKeyRequest::new(account(owner), "u"), "admin", t(0))
        .await
        .unwrap();
    let record = issued.record;
    let (account_id, key_id) = (record.account_id, record.id);
    let batch = move |node_id, sequence, at, count| UsageBatch {
        account_id,
        node_id,
        sequence,
        deltas: vec![UsageDelta {
            key_id,
            last_used_at: t(at),
            count,
            minute: t(at).as_second() / 60 * 60,
            refused: Default::default(),
        }],
    };
    (record, batch)
}

/// Asserts that every batch of a `record_usage` call was answered `Ok`.
pub(crate) fn all_written(outcomes: &[Result<(), StoreError>], batches: usize) {
    assert_eq!(
        outcomes.len(),
        batches,
        "one outcome per batch: {outcomes:?}"
    );
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
}

async fn usage_of(store: &Arc<dyn KeyStore>, record: &KeyRecord) -> (u64, Option<Timestamp>) {
    let usage = store.key(&record.id).await.unwrap().unwrap().usage;
    (usage.count, usage.last_used_at)
}

async fn usage_is_accumulated(store: Arc<dyn KeyStore>) {
    let (record, batch) = usage_key(&store, "acct_usage").await;
    all_written(&store.record_usage(&[batch(1, 1, 5, 3)]).await, 1);
    all_written(&store.record_usage(&[batch(1, 2, 4, 2)]).await, 1);
    assert_eq!(
        usage_of(&store, &record).await,
        (5, Some(t(5))),
        "counts add up; last use never moves backwards"
    );
    assert_eq!(
        store
            .key(&record.id)
            .await
            .unwrap()
            .unwrap()
            .to_info(t(6))
            .last_used_at,
        Some(t(5))
    );
    // Usage is not part of the versioned record: an admin change still commits.
    let rename = UpdateKeyRequest {
        name: Patch::Value("n".into()),
        ..Default::default()
    };
    admin(store.clone())
        .update(&record.id, &rename, "admin", t(7))
        .await
        .unwrap();
}

async fn the_same_usage_batch_counts_once(store: Arc<dyn KeyStore>) {
    let (record, batch) = usage_key(&store, "acct_usage_once").await;
    // A retry after an unknown outcome sends the same batch again.
    all_written(&store.record_usage(&[batch(1, 1, 1, 3)]).await, 1);
    all_written(&store.record_usage(&[batch(1, 1, 1, 3)]).await, 1);
    assert_eq!(usage_of(&store, &record).await, (3, Some(t(1))));
    // Also twice in one call.
    all_written(
        &store
            .record_usage(&[batch(1, 2, 2, 4), batch(1, 2, 2, 4)])
            .await,
        2,
    );
    assert_eq!(usage_of(&store, &record).await, (7, Some(t(2))));
}

async fn an_older_usage_sequence_after_a_newer_is_ignored(store: Arc<dyn KeyStore>) {
    let (record, batch) = usage_key(&store, "acct_usage_order").await;
    all_written(&store.record_usage(&[batch(1, 5, 5, 2)]).await, 1);
    // Ignored whole: neither its count nor its later last use.
    all_written(&store.record_usage(&[batch(1, 4, 9, 7)]).await, 1);
    assert_eq!(usage_of(&store, &record).await, (2, Some(t(5))));
    // Sequences belong to a node: another node's first batch counts.
    all_written(&store.record_usage(&[batch(2, 1, 6, 1)]).await, 1);
    assert_eq!(usage_of(&store, &record).await, (3, Some(t(6))));
    // And to an account: node 1's first batch for another account counts.
    let (other, other_batch) = usage_key(&store, "acct_usage_order_other").await;
    all_written(&store.record_usage(&[other_batch(1, 1, 1, 1)]).await, 1);
    assert_eq!(usage_of(&store, &other).await, (1, Some(t(1))));
    // Batches of one account in one call apply in the order given.
    all_written(
        &store
            .record_usage(&[batch(1, 6, 7, 1), batch(1, 7, 8, 1)])
            .await,
        2,
    );
    assert_eq!(usage_of(&store, &record).await, (5, Some(t(8))));
    all_written(
        &store
            .record_usage(&[batch(1, 9, 9, 1), batch(1, 8, 10, 1)])
            .await,
        2,
    );
    assert_eq!(usage_of(&store, &record).await, (6, Some(t(9))));
}

async fn ping_answers(store: Arc<dyn KeyStore>) {
    store.ping().await.unwrap();
}

const DAY: i64 = 24 * 3600;

/// The `key.expiring` / `key.expired` audit events of `key`, oldest first,
/// as `(action, notice, expires_at)`.
async fn notices_of(
    store: &Arc<dyn KeyStore>,
    account_id: &AccountId,
    key: cloro_auth_core::KeyId,
) -> Vec<(AuditAction, Option<String>, String)> {
    let page = PageRequest {
        limit: 100,
        after: None,
    };
    let mut found: Vec<_> = store
        .audit_events(account_id, &page)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|event| {
            event.key_id == Some(key)
                && matches!(
                    event.action,
                    AuditAction::KeyExpiring | AuditAction::KeyExpired
                )
        })
        .map(|event| {
            assert_eq!(event.actor, cloro_keystore::EXPIRY_NOTICE_ACTOR);
            (
                event.action,
                event.details.get("notice").cloned(),
                event.details["expires_at"].clone(),
            )
        })
        .collect();
    found.reverse();
    found
}

/// SPEC §12: `key.expiring` 7 days and a day ahead, `key.expired` at the
/// time, each once however often (and however concurrently) the schedule
/// is worked; a moved expiry starts afresh; notices that came together
/// send only the latest; a revoked key gets none.
async fn expiry_notices_are_sent_once_each(store: Arc<dyn KeyStore>) {
    let admin = admin(store.clone());
    let owner = account("acct_notices");
    let mut request = CreateKeyRequest::new(owner, "expiring");
    request.expires_at = Some(t(10 * DAY));
    let key = admin
        .create(request, "admin", t(0))
        .await
        .unwrap()
        .record
        .id;
    let mut revoked = CreateKeyRequest::new(owner, "revoked");
    revoked.expires_at = Some(t(10 * DAY));
    let revoked = admin
        .create(revoked, "admin", t(0))
        .await
        .unwrap()
        .record
        .id;
    admin.revoke(&revoked, None, "admin", t(1)).await.unwrap();

    admin.send_due_expiry_notices(t(1), 100).await.unwrap();
    assert!(
        notices_of(&store, &owner, key).await.is_empty(),
        "too early"
    );

    // Three days in: the 7-day notice, once, though four callers race.
    let at = t(3 * DAY + 1);
    let sent =
        futures_util::future::join_all((0..4).map(|_| admin.send_due_expiry_notices(at, 100)))
            .await;
    assert!(sent.iter().all(Result::is_ok), "{sent:?}");
    admin.send_due_expiry_notices(at, 100).await.unwrap();
    let first_expiry = t(10 * DAY).to_string();
    assert_eq!(
        notices_of(&store, &owner, key).await,
        vec![(
            AuditAction::KeyExpiring,
            Some("7d".to_owned()),
            first_expiry.clone()
        )]
    );

    admin
        .send_due_expiry_notices(t(9 * DAY + 1), 100)
        .await
        .unwrap();
    admin
        .send_due_expiry_notices(t(9 * DAY + 2), 100)
        .await
        .unwrap();
    let one_day = (
        AuditAction::KeyExpiring,
        Some("1d".to_owned()),
        first_expiry.clone(),
    );
    assert_eq!(notices_of(&store, &owner, key).await.len(), 2);
    assert_eq!(notices_of(&store, &owner, key).await[1], one_day);

    // Moved out to day 20: its own notices, from the start.
    let later = UpdateKeyRequest {
        expires_at: Patch::Value(t(20 * DAY)),
        ..Default::default()
    };
    admin
        .update(&key, &later, "admin", t(9 * DAY + 3))
        .await
        .unwrap();
    admin
        .send_due_expiry_notices(t(9 * DAY + 4), 100)
        .await
        .unwrap();
    assert_eq!(
        notices_of(&store, &owner, key).await.len(),
        2,
        "the old expiry's notices are done"
    );
    admin
        .send_due_expiry_notices(t(13 * DAY + 1), 100)
        .await
        .unwrap();
    let second_expiry = t(20 * DAY).to_string();
    assert_eq!(
        notices_of(&store, &owner, key).await[2],
        (
            AuditAction::KeyExpiring,
            Some("7d".to_owned()),
            second_expiry.clone()
        )
    );
    // Down past both the 1-day notice and the expiry: only `key.expired`.
    admin
        .send_due_expiry_notices(t(25 * DAY), 100)
        .await
        .unwrap();
    admin
        .send_due_expiry_notices(t(26 * DAY), 100)
        .await
        .unwrap();
    assert_eq!(
        notices_of(&store, &owner, key).await,
        vec![
            (
                AuditAction::KeyExpiring,
                Some("7d".to_owned()),
                first_expiry.clone()
            ),
            one_day,
            (
                AuditAction::KeyExpiring,
                Some("7d".to_owned()),
                second_expiry.clone()
            ),
            (AuditAction::KeyExpired, None, second_expiry),
        ]
    );
    assert!(notices_of(&store, &owner, revoked).await.is_empty());
    // Nothing is left to come: the schedule holds none of these keys.
    let left = store.expiry_notices_due(t(400 * DAY), 1000).await.unwrap();
    assert!(
        left.iter()
            .all(|entry| entry.key_id != key && entry.key_id != revoked),
        "{left:?}"
    );
}

/// A claimed entry is kept from every other caller until its lease ends.
async fn expiry_notice_claims_keep_other_callers_off(store: Arc<dyn KeyStore>) {
    let admin = admin(store.clone());
    let mut request = CreateKeyRequest::new(account("acct_notice_claims"), "claimed");
    request.expires_at = Some(t(1000 * DAY));
    let key = admin
        .create(request, "admin", t(0))
        .await
        .unwrap()
        .record
        .id;
    let due = t(993 * DAY);
    let mine = |entries: Vec<cloro_keystore::ScheduledNotice>| {
        entries
            .into_iter()
            .filter(|entry| entry.key_id == key)
            .count()
    };
    assert_eq!(
        mine(store.expiry_notices_due(t(992 * DAY), 1000).await.unwrap()),
        0
    );
    assert_eq!(mine(store.expiry_notices_due(due, 1000).await.unwrap()), 1);
    assert_eq!(
        mine(store.expiry_notices_due(due, 1000).await.unwrap()),
        0,
        "claimed twice"
    );
    let after_lease = due.checked_add(cloro_keystore::WEBHOOK_LEASE).unwrap();
    let again = store.expiry_notices_due(after_lease, 1000).await.unwrap();
    let entry = again
        .iter()
        .find(|entry| entry.key_id == key)
        .cloned()
        .expect("free after the lease");
    store.finish_expiry_notice(&entry).await.unwrap();
    let later = t(1001 * DAY);
    assert_eq!(
        mine(store.expiry_notices_due(later, 1000).await.unwrap()),
        0,
        "finished"
    );
}

/// SPEC §10 in the store: a batch's outcomes land in the minute, hour and
/// day buckets of its minute, once however often it is retried; nodes add
/// up; buckets past retention go; and the admin reads fill the range with
/// zeros and refuse ranges outside retention or too long.
async fn usage_series_count_each_outcome_once_and_drop_old_buckets(store: Arc<dyn KeyStore>) {
    use cloro_auth_core::wire::{UsageCounts, UsageGranularity};
    let admin = admin(store.clone());
    let owner = account("acct_series");
    let a = admin
        .create(CreateKeyRequest::new(owner, "a"), "admin", t(0))
        .await
        .unwrap()
        .record;
    let b = admin
        .create(CreateKeyRequest::new(owner, "b"), "admin", t(0))
        .await
        .unwrap()
        .record;
    // Retention is measured on the store's clock: real time here.
    let now = Timestamp::now();
    let minute = UsageGranularity::Minute.bucket_start(now.as_second());
    let delta = |key: &KeyRecord, minute: i64, count: u64, refused: UsageCounts| UsageDelta {
        key_id: key.id,
        last_used_at: now,
        count,
        minute,
        refused,
    };
    let batch = |node_id, sequence, deltas| UsageBatch {
        account_id: owner,
        node_id,
        sequence,
        deltas,
    };
    let refused_a = UsageCounts {
        rate_limited: 2,
        forbidden: 1,
        ..Default::default()
    };
    let revoked_b = UsageCounts {
        revoked: 3,
        ..Default::default()
    };
    let first = batch(
        7,
        1,
        vec![
            delta(&a, minute, 5, refused_a),
            delta(&b, minute - 60, 0, revoked_b),
        ],
    );
    all_written(&store.record_usage(std::slice::from_ref(&first)).await, 1);
    all_written(&store.record_usage(&[first]).await, 1);
    all_written(
        &store
            .record_usage(&[batch(
                8,
                1,
                vec![delta(&a, minute, 1, UsageCounts::default())],
            )])
            .await,
        1,
    );
    let old = minute - 49 * 3600;
    all_written(
        &store
            .record_usage(&[batch(7, 2, vec![delta(&a, old, 4, UsageCounts::default())])])
            .await,
        1,
    );
    assert_eq!(
        store.key(&b.id).await.unwrap().unwrap().usage.last_used_at,
        None,
        "refusals are no use"
    );

    let series = |granularity, from, to| {
        let store = store.clone();
        async move {
            let mut points = store
                .usage_series(&owner, &[a.id, b.id], granularity, from, to)
                .await
                .unwrap();
            points.sort_by_key(|point| (point.start, point.key_id));
            points
                .into_iter()
                .map(|point| (point.key_id, point.start, point.counts))
                .collect::<Vec<_>>()
        }
    };
    let a_now = UsageCounts {
        valid: 6,
        rate_limited: 2,
        forbidden: 1,
        ..Default::default()
    };
    assert_eq!(
        series(UsageGranularity::Minute, minute - 50 * 3600, minute + 60).await,
        vec![(b.id, minute - 60, revoked_b), (a.id, minute, a_now)],
        "counted once, nodes added up, the 49-hour-old minute dropped"
    );
    let hour = UsageGranularity::Hour.bucket_start(minute);
    let old_hour = UsageGranularity::Hour.bucket_start(old);
    let hours = series(UsageGranularity::Hour, old_hour, hour + 3600).await;
    assert_eq!(
        hours.first(),
        Some(&(
            a.id,
            old_hour,
            UsageCounts {
                valid: 4,
                ..Default::default()
            }
        )),
        "hours are kept 90 days"
    );
    let day = UsageGranularity::Day.bucket_start(minute);
    let days: u64 = series(UsageGranularity::Day, day - 3 * 86_400, day + 86_400)
        .await
        .iter()
        .map(|(_, _, counts)| counts.total())
        .sum();
    assert_eq!(days, 6 + 2 + 1 + 3 + 4);

    let at = |seconds: i64| Timestamp::from_second(seconds).unwrap();
    let usage = admin
        .key_usage(
            &a.id,
            UsageGranularity::Minute,
            Some(at(minute - 600)),
            Some(at(minute + 60)),
        )
        .await
        .unwrap();
    assert_eq!(usage.buckets.len(), 11, "every bucket, empty ones too");
    assert!(usage.buckets[..10].iter().all(|b| b.counts.is_empty()));
    assert_eq!(usage.buckets[10].counts, a_now);
    assert_eq!(usage.totals, a_now);
    assert_eq!(usage.from, at(minute - 600));
    assert_eq!(usage.to, at(minute + 60));

    let account = admin
        .account_usage(
            &owner,
            UsageGranularity::Hour,
            Some(at(old_hour)),
            Some(at(hour + 3600)),
        )
        .await
        .unwrap();
    let per_key: Vec<(cloro_auth_core::KeyId, u64)> = account
        .keys
        .iter()
        .map(|k| (k.key_id, k.totals.total()))
        .collect();
    assert_eq!(per_key, vec![(a.id, 13), (b.id, 3)], "busiest first");
    assert_eq!(account.totals.total(), 16);

    for (granularity, from, to) in [
        // Before retention.
        (UsageGranularity::Minute, minute - 3 * 86_400, minute),
        // Over 1,500 buckets.
        (UsageGranularity::Minute, minute - 1501 * 60, minute),
        // Not a range.
        (UsageGranularity::Hour, minute, minute),
    ] {
        assert!(
            matches!(
                admin
                    .key_usage(&a.id, granularity, Some(at(from)), Some(at(to)))
                    .await,
                Err(AdminError::InvalidField { field: "from", .. })
            ),
            "{granularity:?} {from} {to}"
        );
    }
}
