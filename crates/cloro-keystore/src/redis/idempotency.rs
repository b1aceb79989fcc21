//! `RedisIdempotencyStore`: the [`IdempotencyStore`] on Redis, on the
//! store's connection, so every node of a deployment sees one record per
//! `Idempotency-Key`.
//!
//! Each slot is one hash, `cloro:{idem:<scope>:<64 hex>}`, its own hash tag:
//! every script touches that one key, so it runs on Redis Cluster, and
//! records spread over the cluster instead of crowding one slot. Fields:
//! `fingerprint`, `token` (the claim's), `until` (the end of the lease or
//! of the window, Unix ms, compared with the caller's clock) and, once
//! answered, `answer` (JSON of [`StoredAnswer`]). The key also carries a TTL
//! of the same span, so Redis drops it by itself once it ended.
//!
//! Each call is one script, so a claim is an atomic insert-if-absent. All
//! three are safe to run twice (the claim recognises its own token), so
//! they are retried once on a dropped connection like reads, and every call
//! answers within the command timeout.

use core::fmt;
use core::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

use super::connection::{LuaScript, RedisConnection};
use crate::store::{
    Claim, ClaimToken, IdempotencySlot, IdempotencyStore, RequestFingerprint, StoreError,
    StoredAnswer,
};

/// `KEYS[1]` the slot; `ARGV[1]` now, `ARGV[2]` the fingerprint, `ARGV[3]`
/// the claim token, `ARGV[4]` the lease's end, `ARGV[5]` the lease (ms).
/// Returns `{'claimed'}`, `{'replay', answer}`, `{'running'}` or
/// `{'reused'}`. Times are Unix ms: 13 digits, exact in a Lua number.
const CLAIM_LUA: &str = r"
local stored = redis.call('HMGET', KEYS[1], 'fingerprint', 'token', 'until', 'answer')
local ends = tonumber(stored[3])
if stored[1] and ends and ends > tonumber(ARGV[1]) then
  if stored[1] ~= ARGV[2] then return {'reused'} end
  if stored[4] then return {'replay', stored[4]} end
  if stored[2] == ARGV[3] then return {'claimed'} end
  return {'running'}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[2], 'token', ARGV[3], 'until', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {'claimed'}
";

/// `KEYS[1]` the slot; `ARGV[1]` the claim token, `ARGV[2]` the answer,
/// `ARGV[3]` the window's end, `ARGV[4]` the window (ms). Returns 1 when
/// stored, 0 when the slot is not (or no longer) this claim's.
const COMPLETE_LUA: &str = r"
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'answer', ARGV[2], 'until', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
";

/// `KEYS[1]` the slot; `ARGV[1]` the claim token. Deletes the slot only
/// while it holds this claim and no answer.
const RELEASE_LUA: &str = r"
local stored = redis.call('HMGET', KEYS[1], 'token', 'answer')
if stored[1] == ARGV[1] and not stored[2] then redis.call('DEL', KEYS[1]) end
return 1
";

/// An [`IdempotencyStore`] in Redis, on a [`RedisConnection`] shared with
/// the store.
pub struct RedisIdempotencyStore {
    connection: RedisConnection,
    claim_script: LuaScript,
    complete_script: LuaScript,
    release_script: LuaScript,
}

impl fmt::Debug for RedisIdempotencyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisIdempotencyStore")
            .field("url", &self.connection.masked_url())
            .finish_non_exhaustive()
    }
}

impl RedisIdempotencyStore {
    /// Records on `connection`, usually the store's
    /// ([`RedisStore::connection`](crate::RedisStore::connection)), each
    /// call bounded by its command timeout.
    pub fn new(connection: &RedisConnection) -> Self {
        RedisIdempotencyStore {
            connection: connection.clone(),
            claim_script: LuaScript::new(CLAIM_LUA),
            complete_script: LuaScript::new(COMPLETE_LUA),
            release_script: LuaScript::new(RELEASE_LUA),
        }
    }
}

/// The slot's key: its own hash tag (see the module docs).
pub(crate) fn slot_key(slot: &IdempotencySlot) -> String {
    format!("cloro:{{idem:{}}}", slot.as_str())
}

fn millis(span: Duration) -> i64 {
    i64::try_from(span.as_millis()).unwrap_or(i64::MAX).max(1)
}

fn end_ms(now: Timestamp, span: Duration) -> i64 {
    now.as_millisecond().saturating_add(millis(span))
}

#[async_trait]
impl IdempotencyStore for RedisIdempotencyStore {
    async fn claim(
        &self,
        slot: &IdempotencySlot,
        fingerprint: &RequestFingerprint,
        token: &ClaimToken,
        now: Timestamp,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let keys = [slot_key(slot)];
        let args = [
            now.as_millisecond().to_string(),
            fingerprint.as_str().to_owned(),
            token.as_str().to_owned(),
            end_ms(now, lease).to_string(),
            millis(lease).to_string(),
        ];
        let found: Vec<String> = self
            .connection
            .bounded(self.connection.query(self.claim_script.with(&keys, &args)))
            .await?;
        match found.first().map(String::as_str) {
            Some("claimed") => Ok(Claim::Claimed(token.clone())),
            Some("running") => Ok(Claim::InProgress),
            Some("reused") => Ok(Claim::Reused),
            Some("replay") => {
                let json = found.get(1).ok_or_else(|| {
                    StoreError::corrupt("redis answered a replay without its answer")
                })?;
                serde_json::from_str(json)
                    .map(Claim::Replay)
                    .map_err(|error| {
                        StoreError::corrupt("an idempotency answer cannot be read").caused_by(error)
                    })
            }
            _ => Err(StoreError::corrupt(
                "redis answered an idempotency claim with something unknown",
            )),
        }
    }

    async fn complete(
        &self,
        slot: &IdempotencySlot,
        token: &ClaimToken,
        answer: &StoredAnswer,
        now: Timestamp,
        keep: Duration,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(answer).map_err(|error| {
            StoreError::corrupt("an idempotency answer cannot be encoded").caused_by(error)
        })?;
        let keys = [slot_key(slot)];
        let args = [
            token.as_str().to_owned(),
            json,
            end_ms(now, keep).to_string(),
            millis(keep).to_string(),
        ];
        let stored: i64 = self
            .connection
            .bounded(
                self.connection
                    .query(self.complete_script.with(&keys, &args)),
            )
            .await?;
        Ok(stored == 1)
    }

    async fn release(&self, slot: &IdempotencySlot, token: &ClaimToken) -> Result<(), StoreError> {
        let keys = [slot_key(slot)];
        let args = [token.as_str().to_owned()];
        let _: i64 = self
            .connection
            .bounded(
                self.connection
                    .query(self.release_script.with(&keys, &args)),
            )
            .await?;
        Ok(())
    }
}
