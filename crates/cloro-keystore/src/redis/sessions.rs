//! The [`SessionStore`] of the [`RedisStore`]: one string per session,
//! `cloro:session:<SHA-256 hex>` → JSON of [`SessionRecord`], expiring in
//! Redis at the session's end (`PXAT`), so Redis drops it by itself. A
//! take is `GETDEL`: of two concurrent takes, one gets the session.
//!
//! Each session is a single key, so any slot of a Redis Cluster serves.
//! [`MAX_SESSIONS`](crate::store::MAX_SESSIONS) is not counted here: a
//! count across a cluster's slots would cost a scan, and the keys expire
//! by themselves within a session's life.

use async_trait::async_trait;
use cloro_auth_core::KeyHash;
use jiff::Timestamp;

use super::store::RedisStore;
use crate::store::{SessionRecord, SessionStore, StoreError};

fn key(id: &KeyHash) -> String {
    let mut key = String::from("cloro:session:");
    key.extend(id.to_hex().iter().map(|&digit| char::from(digit)));
    key
}

fn decode(json: &str) -> Result<SessionRecord, StoreError> {
    serde_json::from_str(json)
        .map_err(|error| StoreError::corrupt("a session cannot be read").caused_by(error))
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn put_session(
        &self,
        id: &KeyHash,
        record: &SessionRecord,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        if !record.is_live(now) {
            return Ok(());
        }
        let json = serde_json::to_string(record)
            .map_err(|error| StoreError::corrupt("a session cannot be encoded").caused_by(error))?;
        let end_ms = record.expires_at.as_millisecond();
        self.connection()
            .bounded(
                self.connection().query::<()>(
                    redis::cmd("SET")
                        .arg(key(id))
                        .arg(json)
                        .arg("PXAT")
                        .arg(end_ms),
                ),
            )
            .await
    }

    async fn session(
        &self,
        id: &KeyHash,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let json: Option<String> = self
            .connection()
            .bounded(self.connection().query(redis::cmd("GET").arg(key(id))))
            .await?;
        Ok(json
            .as_deref()
            .map(decode)
            .transpose()?
            .filter(|session| session.is_live(now)))
    }

    async fn take_session(
        &self,
        id: &KeyHash,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        // Once, never retried: a second GETDEL after a lost answer would
        // find nothing and call a good link used.
        let json: Option<String> = self
            .connection()
            .bounded(
                self.connection()
                    .query_once(redis::cmd("GETDEL").arg(key(id))),
            )
            .await?;
        Ok(json
            .as_deref()
            .map(decode)
            .transpose()?
            .filter(|session| session.is_live(now)))
    }
}
