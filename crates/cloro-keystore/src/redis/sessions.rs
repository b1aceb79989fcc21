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
use crate::store::{
    SessionRecord, SessionStore, StoreError, decode_session as decode, encode_session as encode,
};

fn key(id: &KeyHash) -> String {
    let mut key = String::from("cloro:session:");
    key.extend(id.to_hex().iter().map(|&digit| char::from(digit)));
    key
}

/// The live session in what Redis answered, if any.
fn live(json: Option<Vec<u8>>, now: Timestamp) -> Result<Option<SessionRecord>, StoreError> {
    Ok(json
        .as_deref()
        .map(decode)
        .transpose()?
        .filter(|session| session.is_live(now)))
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
        let json = encode(record)?;
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
        let json: Option<Vec<u8>> = self
            .connection()
            .bounded(self.connection().query(redis::cmd("GET").arg(key(id))))
            .await?;
        live(json, now)
    }

    async fn take_session(
        &self,
        id: &KeyHash,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        // Once, never retried: a second GETDEL after a lost answer would
        // find nothing and call a good link used.
        let json: Option<Vec<u8>> = self
            .connection()
            .bounded(
                self.connection()
                    .query_once(redis::cmd("GETDEL").arg(key(id))),
            )
            .await?;
        live(json, now)
    }
}
