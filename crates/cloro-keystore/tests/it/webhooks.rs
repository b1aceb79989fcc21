//! The `WebhookStore` contract, written once and run against every store
//! that keeps it: the outbox is written by the commit that causes it, and
//! claims keep each event and delivery with one caller for the lease.

use std::sync::Arc;

use cloro_auth_core::wire::CreateKeyRequest;
use cloro_auth_core::wire::{
    DeliveryStatus, Patch, UpdateKeyRequest, WebhookEventType, WebhookInfo, WebhookPayload,
};
use cloro_auth_core::{KeyStatus, PlanName};
use cloro_keystore::{
    Delivery, KeyBatch, KeyStore, OutboxEvent, PageRequest, RecordWrite, StoreError, WEBHOOK_LEASE,
    WebhookRecord, WebhookStore,
};
use jiff::{SignedDuration, Timestamp};

use crate::contract::{account, admin, t};

/// Runs every webhook contract check against stores made by `make`.
pub(crate) async fn run_webhook_contract<S, F>(make: F)
where
    S: KeyStore + WebhookStore,
    F: Fn() -> Arc<S>,
{
    every_change_is_in_the_outbox_with_its_key(drained(make()).await).await;
    a_failed_commit_queues_nothing(drained(make()).await).await;
    a_claim_hides_an_event_for_the_lease(drained(make()).await).await;
    fan_out_is_idempotent_and_empties_the_outbox(drained(make()).await).await;
    due_claims_and_attempts_reschedule(drained(make()).await).await;
    endpoints_are_listed_newest_first_and_removed_with_their_deliveries(drained(make()).await)
        .await;
    finished_deliveries_are_pruned_and_pending_ones_kept(drained(make()).await).await;
}

/// `store` with nothing left in its outbox or due from earlier checks (the
/// Redis stores of one server share everything).
async fn drained<S: KeyStore + WebhookStore>(store: Arc<S>) -> Arc<S> {
    let far = t(1_000_000_000);
    for event in store.outbox(far, usize::MAX).await.unwrap() {
        store.fan_out(&event, &[], far).await.unwrap();
    }
    for mut delivery in store.due(far, usize::MAX).await.unwrap() {
        delivery.status = DeliveryStatus::Delivered;
        delivery.next_attempt_at = None;
        store.record_attempt(&delivery).await.unwrap();
    }
    for webhook in store.webhooks().await.unwrap() {
        store.remove_webhook(&webhook.info.id).await.unwrap();
    }
    store
}

fn page(limit: usize) -> PageRequest {
    PageRequest { limit, after: None }
}

fn webhook(id: &str, created: i64, events: Vec<WebhookEventType>) -> WebhookRecord {
    WebhookRecord {
        info: WebhookInfo {
            id: id.to_owned(),
            url: "https://hooks.example/in".to_owned(),
            events,
            account_id: None,
            created_at: t(created),
        },
        sealed_secret: vec![7; 60],
    }
}

fn later(at: Timestamp, by: std::time::Duration) -> Timestamp {
    at.checked_add(SignedDuration::try_from(by).unwrap())
        .unwrap()
}

async fn every_change_is_in_the_outbox_with_its_key<S: KeyStore + WebhookStore>(store: Arc<S>) {
    let admin = admin(store.clone());
    let owner = account("acct_wh_outbox");
    let issued = admin
        .create(CreateKeyRequest::new(owner, "hooked"), "admin", t(1))
        .await
        .unwrap();
    let rename = UpdateKeyRequest {
        name: Patch::Value("renamed".into()),
        ..Default::default()
    };
    admin
        .update(&issued.record.id, &rename, "admin", t(2))
        .await
        .unwrap();
    admin
        .revoke(&issued.record.id, Some("done"), "admin", t(3))
        .await
        .unwrap();
    admin
        .set_plan(&owner, PlanName::new("free").unwrap(), "admin", t(4))
        .await
        .unwrap();

    let events = store.outbox(t(10), 100).await.unwrap();
    let types: Vec<WebhookEventType> = events.iter().map(|e| e.event_type).collect();
    assert_eq!(
        types,
        [
            WebhookEventType::KeyCreated,
            WebhookEventType::KeyUpdated,
            WebhookEventType::KeyRevoked,
            WebhookEventType::AccountUpdated,
        ],
        "oldest first"
    );
    for event in &events {
        assert_eq!(event.account_id, owner);
        assert!(
            !event.body.contains(issued.key.expose_secret()),
            "an event body holds the key"
        );
        let payload: WebhookPayload = serde_json::from_str(&event.body).unwrap();
        assert_eq!(payload.event_type, event.event_type);
        assert_eq!(payload.data.event_id, event.id);
        assert_eq!(payload.timestamp, event.at);
    }
    let revoked: WebhookPayload = serde_json::from_str(&events[2].body).unwrap();
    let key = revoked.data.key.expect("the key as the revoke left it");
    assert_eq!(key.id, issued.record.id);
    assert_eq!(key.status, KeyStatus::Revoked);
    let renamed: WebhookPayload = serde_json::from_str(&events[1].body).unwrap();
    assert_eq!(renamed.data.key.unwrap().name, "renamed");
    let plan: WebhookPayload = serde_json::from_str(&events[3].body).unwrap();
    assert_eq!(
        plan.data.details.get("plan").map(String::as_str),
        Some("free")
    );
    assert!(plan.data.key.is_none());
}

async fn a_failed_commit_queues_nothing<S: KeyStore + WebhookStore>(store: Arc<S>) {
    let admin = admin(store.clone());
    let issued = admin
        .create(
            CreateKeyRequest::new(account("acct_wh_conflict"), "k"),
            "admin",
            t(1),
        )
        .await
        .unwrap();
    let queued = store.outbox(t(10), 100).await.unwrap();
    for event in &queued {
        store.fan_out(event, &[], t(10)).await.unwrap();
    }
    // A stale version: the commit is refused, and its event with it.
    let mut stale = issued.record.clone();
    stale.version = 2;
    let event = store
        .audit_events(&issued.record.account_id, &page(1))
        .await
        .unwrap()
        .items
        .remove(0);
    let refused = store
        .commit(KeyBatch {
            account_id: issued.record.account_id,
            writes: vec![RecordWrite {
                record: stale,
                expected_version: Some(7),
            }],
            audit: vec![event],
        })
        .await;
    assert!(matches!(refused, Err(StoreError::Conflict)));
    assert_eq!(store.outbox(t(100), 100).await.unwrap(), vec![]);
}

async fn a_claim_hides_an_event_for_the_lease<S: KeyStore + WebhookStore>(store: Arc<S>) {
    let admin = admin(store.clone());
    for (n, at) in [(1, 1), (2, 2)] {
        admin
            .create(
                CreateKeyRequest::new(account("acct_wh_claim"), format!("k{n}")),
                "admin",
                t(at),
            )
            .await
            .unwrap();
    }
    let now = t(10);
    let first = store.outbox(now, 1).await.unwrap();
    assert_eq!(first.len(), 1, "the limit holds");
    let second = store.outbox(now, 10).await.unwrap();
    assert_eq!(second.len(), 1, "the claimed one is not given again");
    assert_ne!(first[0].id, second[0].id);
    assert_eq!(store.outbox(now, 10).await.unwrap(), vec![]);
    let after_lease = store.outbox(later(now, WEBHOOK_LEASE), 10).await.unwrap();
    assert_eq!(after_lease.len(), 2, "a claim ends with its lease");
    assert_eq!(after_lease[0], first[0]);
}

async fn fan_out_is_idempotent_and_empties_the_outbox<S: KeyStore + WebhookStore>(store: Arc<S>) {
    store
        .add_webhook(&webhook("wh_fan", 0, WebhookEventType::ALL.to_vec()))
        .await
        .unwrap();
    let admin = admin(store.clone());
    admin
        .create(
            CreateKeyRequest::new(account("acct_wh_fan"), "k"),
            "admin",
            t(1),
        )
        .await
        .unwrap();
    let event = store.outbox(t(10), 10).await.unwrap().remove(0);
    let targets = ["wh_fan".to_owned(), "wh_gone".to_owned()];
    store.fan_out(&event, &targets, t(10)).await.unwrap();
    // Repeated, as after a crash between the fan-out and its answer.
    store.fan_out(&event, &targets, t(11)).await.unwrap();
    assert_eq!(
        store.outbox(later(t(10), WEBHOOK_LEASE), 10).await.unwrap(),
        vec![]
    );
    let listed = store.deliveries("wh_fan", &page(10)).await.unwrap();
    assert_eq!(listed.items.len(), 1, "one delivery per endpoint and event");
    let delivery = &listed.items[0];
    assert_eq!(delivery.event, event);
    assert_eq!(delivery.status, DeliveryStatus::Pending);
    assert_eq!(
        delivery.next_attempt_at,
        Some(t(10)),
        "due when first fanned out"
    );
    assert_eq!(delivery.attempts, 0);
    assert_eq!(
        store.deliveries("wh_gone", &page(10)).await.unwrap().items,
        vec![],
        "no delivery for an endpoint that does not exist"
    );
}

async fn due_claims_and_attempts_reschedule<S: KeyStore + WebhookStore>(store: Arc<S>) {
    store
        .add_webhook(&webhook("wh_due", 0, vec![WebhookEventType::KeyCreated]))
        .await
        .unwrap();
    let admin = admin(store.clone());
    admin
        .create(
            CreateKeyRequest::new(account("acct_wh_due"), "k"),
            "admin",
            t(1),
        )
        .await
        .unwrap();
    let event = store.outbox(t(10), 10).await.unwrap().remove(0);
    store
        .fan_out(&event, &["wh_due".to_owned()], t(10))
        .await
        .unwrap();

    assert_eq!(store.due(t(9), 10).await.unwrap(), vec![], "not due yet");
    let claimed = store.due(t(10), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(store.due(t(11), 10).await.unwrap(), vec![], "claimed");

    // A failed attempt: due again in 20 s, which ends the claim.
    let mut failed: Delivery = claimed[0].clone();
    failed.attempts = 1;
    failed.last_attempt_at = Some(t(11));
    failed.last_status = Some(500);
    failed.last_error = Some("the endpoint answered 500".to_owned());
    failed.next_attempt_at = Some(t(31));
    store.record_attempt(&failed).await.unwrap();
    assert_eq!(store.due(t(30), 10).await.unwrap(), vec![]);
    let again = store.due(t(31), 10).await.unwrap();
    assert_eq!(again, vec![failed.clone()]);

    let mut delivered = failed.clone();
    delivered.attempts = 2;
    delivered.status = DeliveryStatus::Delivered;
    delivered.last_status = Some(204);
    delivered.last_error = None;
    delivered.next_attempt_at = None;
    store.record_attempt(&delivered).await.unwrap();
    assert_eq!(
        store.due(t(1_000_000), 10).await.unwrap(),
        vec![],
        "a delivered one is never due"
    );
    let listed = store.deliveries("wh_due", &page(10)).await.unwrap().items;
    assert_eq!(listed, vec![delivered]);
}

/// Pruning takes finished deliveries of events before the cutoff, never a
/// pending one. (Shared Redis stores hold other checks' deliveries too, so
/// this looks at its own endpoint's log, not at counts.)
async fn finished_deliveries_are_pruned_and_pending_ones_kept<S: KeyStore + WebhookStore>(
    store: Arc<S>,
) {
    store
        .add_webhook(&webhook("wh_prune", 0, vec![WebhookEventType::KeyCreated]))
        .await
        .unwrap();
    let admin = admin(store.clone());
    for n in 0..3 {
        admin
            .create(
                CreateKeyRequest::new(account("acct_wh_prune"), format!("k{n}")),
                "admin",
                t(5000 + n),
            )
            .await
            .unwrap();
    }
    let now = t(6000);
    for event in store.outbox(now, 10).await.unwrap() {
        store
            .fan_out(&event, &["wh_prune".to_owned()], now)
            .await
            .unwrap();
    }
    let mut due = store.due(now, 10).await.unwrap();
    due.sort_by_key(|delivery| delivery.event.at);
    assert_eq!(due.len(), 3);
    let outcomes = [
        (DeliveryStatus::Delivered, None),
        (DeliveryStatus::Failed, None),
        (DeliveryStatus::Pending, Some(t(7000))),
    ];
    for (delivery, (status, next)) in due.iter_mut().zip(outcomes) {
        delivery.attempts = 1;
        delivery.status = status;
        delivery.next_attempt_at = next;
        store.record_attempt(delivery).await.unwrap();
    }
    let log = || async {
        store
            .deliveries("wh_prune", &page(10))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|delivery| (delivery.event.at, delivery.status))
            .collect::<Vec<_>>()
    };
    assert!(store.prune_deliveries(t(5001), 100).await.unwrap() >= 1);
    assert_eq!(
        log().await,
        vec![
            (t(5002), DeliveryStatus::Pending),
            (t(5001), DeliveryStatus::Failed)
        ]
    );
    assert_eq!(store.prune_deliveries(t(1_000_000), 0).await.unwrap(), 0);
    assert!(store.prune_deliveries(t(1_000_000), 100).await.unwrap() >= 1);
    assert_eq!(log().await, vec![(t(5002), DeliveryStatus::Pending)]);
    // Still due, still claimable.
    assert_eq!(store.due(t(7000), 10).await.unwrap().len(), 1);
}

async fn endpoints_are_listed_newest_first_and_removed_with_their_deliveries<
    S: KeyStore + WebhookStore,
>(
    store: Arc<S>,
) {
    let older = webhook("wh_older", 1, vec![WebhookEventType::KeyCreated]);
    let newer = webhook("wh_newer", 2, vec![WebhookEventType::KeyRevoked]);
    store.add_webhook(&older).await.unwrap();
    store.add_webhook(&newer).await.unwrap();
    assert!(matches!(
        store.add_webhook(&older).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store.webhooks().await.unwrap(),
        vec![newer.clone(), older.clone()]
    );

    let admin = admin(store.clone());
    for n in 0..3 {
        admin
            .create(
                CreateKeyRequest::new(account("acct_wh_remove"), format!("k{n}")),
                "admin",
                t(10 + n),
            )
            .await
            .unwrap();
    }
    let events: Vec<OutboxEvent> = store.outbox(t(20), 10).await.unwrap();
    for event in &events {
        store
            .fan_out(event, &["wh_older".to_owned()], t(20))
            .await
            .unwrap();
    }
    let first = store.deliveries("wh_older", &page(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.items[0].event.id, events[2].id, "newest event first");
    let rest = store
        .deliveries(
            "wh_older",
            &PageRequest {
                limit: 2,
                after: first.next.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.items[0].event.id, events[0].id);
    assert_eq!(rest.next, None);

    assert!(store.remove_webhook("wh_older").await.unwrap());
    assert!(!store.remove_webhook("wh_older").await.unwrap());
    assert_eq!(store.webhooks().await.unwrap(), vec![newer]);
    assert_eq!(
        store.deliveries("wh_older", &page(10)).await.unwrap().items,
        vec![]
    );
    assert_eq!(store.due(t(1_000_000), 10).await.unwrap(), vec![]);
}

#[tokio::test]
async fn memory_store_keeps_the_webhook_contract() {
    run_webhook_contract(|| Arc::new(cloro_keystore::MemoryStore::new())).await;
}

#[tokio::test]
async fn embedded_store_keeps_the_webhook_contract() {
    let dir = tempfile::tempdir().unwrap();
    let stores = std::sync::atomic::AtomicUsize::new(0);
    run_webhook_contract(|| {
        let n = stores.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Arc::new(cloro_keystore::EmbeddedStore::open(&dir.path().join(format!("wh-{n}"))).unwrap())
    })
    .await;
}

/// An event committed before a crash is in the outbox after the reopen:
/// the change and its event are one transaction.
#[tokio::test]
async fn the_embedded_outbox_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Arc::new(cloro_keystore::EmbeddedStore::open(dir.path()).unwrap());
        admin(store)
            .create(
                CreateKeyRequest::new(account("acct_wh_reopen"), "k"),
                "admin",
                t(1),
            )
            .await
            .unwrap();
    }
    let store = cloro_keystore::EmbeddedStore::open(dir.path()).unwrap();
    let events = store.outbox(t(10), 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, WebhookEventType::KeyCreated);
}
