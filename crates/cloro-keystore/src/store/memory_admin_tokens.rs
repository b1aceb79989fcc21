//! The [`AdminTokenStore`] of the [`MemoryStore`].

use async_trait::async_trait;
use cloro_auth_core::KeyHash;
use jiff::Timestamp;

use super::admin_tokens::{AdminTokenRecord, AdminTokenStore, may_add, newest_first};
use super::{MemoryStore, StoreError};

#[async_trait]
impl AdminTokenStore for MemoryStore {
    async fn add_token(&self, record: &AdminTokenRecord, limit: usize) -> Result<(), StoreError> {
        let mut state = self.state()?;
        if !may_add(&state.admin_tokens, record, limit) {
            return Err(StoreError::Conflict);
        }
        state.admin_tokens.push(record.clone());
        Ok(())
    }

    async fn tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError> {
        let mut tokens = self.state()?.admin_tokens.clone();
        newest_first(&mut tokens);
        Ok(tokens)
    }

    async fn token_by_hash(&self, hash: &KeyHash) -> Result<Option<AdminTokenRecord>, StoreError> {
        Ok(self
            .state()?
            .admin_tokens
            .iter()
            .find(|record| record.hash == *hash)
            .cloned())
    }

    async fn remove_token(&self, id: &str) -> Result<bool, StoreError> {
        let mut state = self.state()?;
        let before = state.admin_tokens.len();
        state.admin_tokens.retain(|record| record.info.id != id);
        Ok(state.admin_tokens.len() < before)
    }

    async fn touch_token(&self, id: &str, at: Timestamp) -> Result<(), StoreError> {
        let mut state = self.state()?;
        if let Some(record) = state.admin_tokens.iter_mut().find(|r| r.info.id == id) {
            record.info.last_used_at = record.info.last_used_at.max(Some(at));
        }
        Ok(())
    }
}
