//! The [`SessionStore`] of the [`MemoryStore`].

use async_trait::async_trait;
use cloro_auth_core::KeyHash;
use jiff::Timestamp;

use super::sessions::{MAX_SESSIONS, SessionRecord, SessionStore};
use super::{MemoryStore, StoreError};

#[async_trait]
impl SessionStore for MemoryStore {
    async fn put_session(
        &self,
        id: &KeyHash,
        record: &SessionRecord,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut state = self.state()?;
        state.sessions.retain(|_, session| session.is_live(now));
        if state.sessions.len() >= MAX_SESSIONS {
            return Err(StoreError::Conflict);
        }
        state.sessions.insert(*id, record.clone());
        Ok(())
    }

    async fn session(
        &self,
        id: &KeyHash,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self
            .state()?
            .sessions
            .get(id)
            .filter(|session| session.is_live(now))
            .cloned())
    }

    async fn take_session(
        &self,
        id: &KeyHash,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self
            .state()?
            .sessions
            .remove(id)
            .filter(|session| session.is_live(now)))
    }
}
