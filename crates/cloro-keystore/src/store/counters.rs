//! `CounterStore`: a durable table of named counters, for state that lives
//! in process and is written out in the background (the quota ledger of
//! the embedded store). The store knows nothing of what the names mean.

use core::fmt;

use async_trait::async_trait;

use super::StoreError;

/// Named values written in batches, each batch atomically.
#[async_trait]
pub trait CounterStore: Send + Sync + fmt::Debug + 'static {
    /// Every counter, as written.
    async fn load_counters(&self) -> Result<Vec<(String, String)>, StoreError>;

    /// Writes `put` and deletes `remove`, in one durable transaction.
    async fn save_counters(
        &self,
        put: Vec<(String, String)>,
        remove: Vec<String>,
    ) -> Result<(), StoreError>;
}
