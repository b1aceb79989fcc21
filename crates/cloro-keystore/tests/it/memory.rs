//! The contract against the in-memory store.

use std::sync::Arc;

use cloro_keystore::{KeyStore, MemoryStore};

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    crate::contract::run_contract(|| Arc::new(MemoryStore::new()) as Arc<dyn KeyStore>).await;
}
