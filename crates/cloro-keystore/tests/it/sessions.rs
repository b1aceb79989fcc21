//! The `SessionStore` contract (SPEC §13), run against every store: a
//! session is found by its id until its end and never after, a take
//! removes it and answers it once, and nothing of one session is found
//! under another's id.

use std::sync::Arc;

use cloro_auth_core::wire::AdminRole;
use cloro_auth_core::{AccountId, KeyHash};
use cloro_keystore::{SessionRecord, SessionStore, SessionSubject};

use crate::contract::t;

fn operator(created: i64, ends: i64) -> SessionRecord {
    SessionRecord {
        subject: SessionSubject::Operator {
            name: "ops".to_owned(),
            role: AdminRole::Read,
            token: KeyHash::of(b"cloro_admin_ops"),
        },
        created_at: t(created),
        expires_at: t(ends),
    }
}

fn link(account: &str, ends: i64) -> SessionRecord {
    SessionRecord {
        subject: SessionSubject::PortalLink {
            account_id: AccountId::new(account).unwrap(),
        },
        created_at: t(0),
        expires_at: t(ends),
    }
}

pub(crate) async fn run_session_contract<S: SessionStore>(store: Arc<S>) {
    let signed_in = KeyHash::of(b"session one");
    let other = KeyHash::of(b"session two");
    store
        .put_session(&signed_in, &operator(0, 100), t(0))
        .await
        .unwrap();
    assert_eq!(
        store.session(&signed_in, t(99)).await.unwrap(),
        Some(operator(0, 100))
    );
    assert_eq!(store.session(&other, t(1)).await.unwrap(), None);
    assert_eq!(
        store.session(&signed_in, t(100)).await.unwrap(),
        None,
        "a session ends at its end"
    );
    assert_eq!(store.take_session(&signed_in, t(100)).await.unwrap(), None);
    assert_eq!(store.session(&signed_in, t(50)).await.unwrap(), None);

    // A link opens once, even when two take it at the same moment.
    let portal = KeyHash::of(b"portal link");
    store
        .put_session(&portal, &link("acct_portal", 600), t(0))
        .await
        .unwrap();
    let (first, second) = tokio::join!(
        store.take_session(&portal, t(10)),
        store.take_session(&portal, t(10))
    );
    let taken: Vec<_> = [first.unwrap(), second.unwrap()]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(taken, vec![link("acct_portal", 600)]);
    assert_eq!(store.session(&portal, t(11)).await.unwrap(), None);

    // An expired link is no link, and a take of it answers nothing.
    let stale = KeyHash::of(b"stale link");
    store
        .put_session(&stale, &link("acct_portal", 600), t(0))
        .await
        .unwrap();
    assert_eq!(store.take_session(&stale, t(600)).await.unwrap(), None);

    // Writes sweep what has ended without touching what has not.
    for n in 0..100u32 {
        let id = KeyHash::of(format!("old {n}").as_bytes());
        store
            .put_session(&id, &operator(0, 10), t(0))
            .await
            .unwrap();
    }
    let fresh = KeyHash::of(b"fresh");
    store
        .put_session(&fresh, &operator(20, 5_000), t(20))
        .await
        .unwrap();
    assert_eq!(
        store.session(&fresh, t(4_999)).await.unwrap(),
        Some(operator(20, 5_000))
    );
    let old = KeyHash::of(b"old 7");
    assert_eq!(store.session(&old, t(21)).await.unwrap(), None);
}

#[tokio::test]
async fn memory_store_keeps_the_session_contract() {
    run_session_contract(Arc::new(cloro_keystore::MemoryStore::new())).await;
}

#[tokio::test]
async fn embedded_store_keeps_the_session_contract_and_its_sessions_over_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(cloro_keystore::EmbeddedStore::open(dir.path()).unwrap());
    run_session_contract(Arc::clone(&store)).await;
    drop(store);
    let reopened = cloro_keystore::EmbeddedStore::open(dir.path()).unwrap();
    assert!(
        reopened
            .session(&KeyHash::of(b"fresh"), t(30))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn redis_keeps_the_session_contract() {
    let server = cloro_test_support::RedisServer::start();
    let store =
        cloro_keystore::RedisStore::connect(&server.url(), cloro_keystore::RedisOptions::default())
            .unwrap();
    run_session_contract(Arc::new(store)).await;
}
