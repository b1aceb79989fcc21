//! The contract against the in-memory store.

use std::sync::Arc;

use cloro_keystore::{IdempotencyStore, KeyStore, MemoryStore};

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    crate::contract::run_contract(|| Arc::new(MemoryStore::new()) as Arc<dyn KeyStore>).await;
}

#[tokio::test]
async fn memory_store_keeps_the_idempotency_contract() {
    crate::idempotency::run_idempotency_contract(|| {
        Arc::new(MemoryStore::new()) as Arc<dyn IdempotencyStore>
    })
    .await;
}
