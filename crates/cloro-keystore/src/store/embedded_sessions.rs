//! The [`SessionStore`] of the [`EmbeddedStore`]: two redb tables in the
//! same file, `sessions` (SHA-256 → JSON of [`SessionRecord`]) and
//! `session_ends` ((end, SHA-256) → ()), the index each write sweeps
//! expired sessions from, so space stays bounded without a scan.

use async_trait::async_trait;
use cloro_auth_core::KeyHash;
use jiff::Timestamp;
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};

use super::embedded::{begin_read, begin_write, commit, open_read, open_write, redb_error};
use super::sessions::{MAX_SESSIONS, SessionRecord, SessionStore, decode, encode};
use super::{EmbeddedStore, StoreError};

pub(super) const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
pub(super) const SESSION_ENDS: TableDefinition<(i64, &[u8]), ()> =
    TableDefinition::new("session_ends");

/// How many expired sessions one write removes at most: more than one
/// write's worth, so the sweep always keeps up, and never a long write.
const SWEEP_PER_WRITE: usize = 64;

fn seconds(at: Timestamp) -> i64 {
    at.as_second()
}

#[async_trait]
impl SessionStore for EmbeddedStore {
    async fn put_session(
        &self,
        id: &KeyHash,
        record: &SessionRecord,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let (id, record) = (*id, record.clone());
        self.blocking(move |db| {
            let txn = begin_write(db)?;
            {
                let mut sessions = open_write(&txn, SESSIONS)?;
                let mut ends = open_write(&txn, SESSION_ENDS)?;
                // Ends in an earlier second than `now`'s: surely expired.
                let mut expired = Vec::new();
                for entry in ends
                    .range(..(seconds(now), &[][..]))
                    .map_err(|error| redb_error("cannot read the session index", error))?
                    .take(SWEEP_PER_WRITE)
                {
                    let (key, ()) = entry
                        .map(|(key, value)| (key, value.value()))
                        .map_err(|error| redb_error("cannot read the session index", error))?;
                    let (end, hash) = key.value();
                    expired.push((end, hash.to_vec()));
                }
                for (end, hash) in &expired {
                    sessions
                        .remove(hash.as_slice())
                        .map_err(|error| redb_error("cannot remove a session", error))?;
                    ends.remove((*end, hash.as_slice()))
                        .map_err(|error| redb_error("cannot remove a session", error))?;
                }
                let count = sessions
                    .len()
                    .map_err(|error| redb_error("cannot count the sessions", error))?;
                if usize::try_from(count).unwrap_or(usize::MAX) >= MAX_SESSIONS {
                    return Err(StoreError::Conflict);
                }
                let hash = id.as_bytes();
                sessions
                    .insert(&hash[..], encode(&record)?.as_slice())
                    .map_err(|error| redb_error("cannot write a session", error))?;
                ends.insert((seconds(record.expires_at), &hash[..]), ())
                    .map_err(|error| redb_error("cannot write a session", error))?;
            }
            commit(txn)
        })
        .await
    }

    async fn session(
        &self,
        id: &KeyHash,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let id = *id;
        self.blocking(move |db| {
            let txn = begin_read(db)?;
            let table = open_read(&txn, SESSIONS)?;
            let stored = table
                .get(&id.as_bytes()[..])
                .map_err(|error| redb_error("cannot read a session", error))?
                .map(|json| decode(json.value()))
                .transpose()?;
            Ok(stored.filter(|session| session.is_live(now)))
        })
        .await
    }

    async fn take_session(
        &self,
        id: &KeyHash,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let id = *id;
        self.blocking(move |db| {
            let txn = begin_write(db)?;
            let stored = {
                let mut sessions = open_write(&txn, SESSIONS)?;
                let stored = sessions
                    .remove(&id.as_bytes()[..])
                    .map_err(|error| redb_error("cannot remove a session", error))?
                    .map(|json| decode(json.value()))
                    .transpose()?;
                if let Some(session) = &stored {
                    open_write(&txn, SESSION_ENDS)?
                        .remove((seconds(session.expires_at), &id.as_bytes()[..]))
                        .map_err(|error| redb_error("cannot remove a session", error))?;
                }
                stored
            };
            commit(txn)?;
            Ok(stored.filter(|session| session.is_live(now)))
        })
        .await
    }
}
