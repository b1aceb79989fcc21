//! The `AdminTokenStore` contract (SPEC §13), run against every store:
//! names, ids and hashes taken once, a limit kept in the same step, found
//! by hash, touched, removed.

use std::sync::Arc;

use cloro_auth_core::KeyHash;
use cloro_auth_core::wire::{AdminRole, AdminTokenInfo};
use cloro_keystore::{AdminTokenRecord, AdminTokenStore, StoreError};

use crate::contract::t;

fn token(id: &str, name: &str, created: i64) -> AdminTokenRecord {
    AdminTokenRecord {
        info: AdminTokenInfo {
            id: id.to_owned(),
            name: name.to_owned(),
            role: AdminRole::Read,
            created_at: t(created),
            last_used_at: None,
        },
        hash: KeyHash::of(format!("cloro_admin_{id}").as_bytes()),
    }
}

pub(crate) async fn run_admin_token_contract<S: AdminTokenStore>(store: Arc<S>) {
    let ops = token("tok_ops", "ops", 1);
    let ci = token("tok_ci", "ci", 2);
    store.add_token(&ops, 3).await.unwrap();
    store.add_token(&ci, 3).await.unwrap();
    for (taken, why) in [
        (token("tok_other", "ops", 3), "a name"),
        (token("tok_ops", "other", 3), "an id"),
        (
            AdminTokenRecord {
                hash: ops.hash,
                ..token("tok_same_hash", "same-hash", 3)
            },
            "a hash",
        ),
    ] {
        assert!(
            matches!(store.add_token(&taken, 3).await, Err(StoreError::Conflict)),
            "{why} taken twice"
        );
    }
    store
        .add_token(&token("tok_third", "third", 3), 3)
        .await
        .unwrap();
    assert!(
        matches!(
            store.add_token(&token("tok_fourth", "fourth", 4), 3).await,
            Err(StoreError::Conflict)
        ),
        "over the limit"
    );
    let names: Vec<String> = store
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|record| record.info.name)
        .collect();
    assert_eq!(names, ["third", "ci", "ops"], "newest first");

    assert_eq!(
        store.token_by_hash(&ci.hash).await.unwrap(),
        Some(ci.clone())
    );
    assert_eq!(
        store
            .token_by_hash(&KeyHash::of(b"cloro_admin_nobody"))
            .await
            .unwrap(),
        None
    );
    store.touch_token("tok_ci", t(50)).await.unwrap();
    store.touch_token("tok_ci", t(40)).await.unwrap();
    store.touch_token("tok_gone", t(50)).await.unwrap();
    let touched = store.token_by_hash(&ci.hash).await.unwrap().unwrap();
    assert_eq!(touched.info.last_used_at, Some(t(50)), "never backwards");

    assert!(store.remove_token("tok_ci").await.unwrap());
    assert!(!store.remove_token("tok_ci").await.unwrap());
    assert_eq!(store.token_by_hash(&ci.hash).await.unwrap(), None);
    // Its name and hash are free again.
    store
        .add_token(&token("tok_ci_2", "ci", 5), 3)
        .await
        .unwrap();
}

#[tokio::test]
async fn memory_store_keeps_the_admin_token_contract() {
    run_admin_token_contract(Arc::new(cloro_keystore::MemoryStore::new())).await;
}

#[tokio::test]
async fn embedded_store_keeps_the_admin_token_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(cloro_keystore::EmbeddedStore::open(dir.path()).unwrap());
    run_admin_token_contract(Arc::clone(&store)).await;
    drop(store);
    // Durable: a reopen finds them.
    let reopened = cloro_keystore::EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(reopened.tokens().await.unwrap().len(), 3);
}

#[tokio::test]
async fn redis_keeps_the_admin_token_contract() {
    let server = cloro_test_support::RedisServer::start();
    let store =
        cloro_keystore::RedisStore::connect(&server.url(), cloro_keystore::RedisOptions::default())
            .unwrap();
    run_admin_token_contract(Arc::new(store)).await;
}
