//! The [`AdminTokenStore`] of the [`RedisStore`]: two hashes in one slot,
//! `cloro:{tokens}:records` (id → JSON of [`AdminTokenRecord`]) and
//! `cloro:{tokens}:hashes` (SHA-256 hex → id), changed together by
//! scripts, so a name, id or hash is never taken twice.

use std::sync::LazyLock;

use async_trait::async_trait;
use cloro_auth_core::KeyHash;
use jiff::Timestamp;

use super::connection::LuaScript;
use super::store::RedisStore;
use crate::store::{AdminTokenRecord, AdminTokenStore, StoreError};

const RECORDS: &str = "cloro:{tokens}:records";
const HASHES: &str = "cloro:{tokens}:hashes";

/// `ARGV`: id, JSON, hash hex, name, limit. 1 added, 0 taken or full.
const ADD_LUA: &str = r"
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then return 0 end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[3]) == 1 then return 0 end
for _, json in ipairs(redis.call('HVALS', KEYS[1])) do
  if cjson.decode(json).info.name == ARGV[4] then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
return 1
";

/// `ARGV`: id. 1 removed, 0 none.
const REMOVE_LUA: &str = r"
local json = redis.call('HGET', KEYS[1], ARGV[1])
if not json then return 0 end
redis.call('HDEL', KEYS[2], cjson.decode(json).hash)
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
";

/// `ARGV`: id, JSON: written only if the token still exists.
const TOUCH_LUA: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

static ADD: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(ADD_LUA));
static REMOVE: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(REMOVE_LUA));
static TOUCH: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(TOUCH_LUA));

fn keys() -> [String; 2] {
    [RECORDS.to_owned(), HASHES.to_owned()]
}

fn decode(json: &str) -> Result<AdminTokenRecord, StoreError> {
    serde_json::from_str(json)
        .map_err(|error| StoreError::corrupt("an admin token cannot be read").caused_by(error))
}

fn encode(record: &AdminTokenRecord) -> Result<String, StoreError> {
    serde_json::to_string(record)
        .map_err(|error| StoreError::corrupt("an admin token cannot be encoded").caused_by(error))
}

fn hex(hash: &KeyHash) -> String {
    String::from_utf8_lossy(&hash.to_hex()).into_owned()
}

impl RedisStore {
    async fn token(&self, id: &str) -> Result<Option<AdminTokenRecord>, StoreError> {
        let json: Option<String> = self
            .connection()
            .query(redis::cmd("HGET").arg(RECORDS).arg(id))
            .await?;
        json.as_deref().map(decode).transpose()
    }
}

#[async_trait]
impl AdminTokenStore for RedisStore {
    async fn add_token(&self, record: &AdminTokenRecord, limit: usize) -> Result<(), StoreError> {
        let args = [
            record.info.id.clone(),
            encode(record)?,
            hex(&record.hash),
            record.info.name.clone(),
            limit.to_string(),
        ];
        let added: i64 = self
            .connection()
            .bounded(self.connection().query(ADD.with(&keys(), &args)))
            .await?;
        if added == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    async fn tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError> {
        let all: Vec<String> = self
            .connection()
            .bounded(self.connection().query(redis::cmd("HVALS").arg(RECORDS)))
            .await?;
        let mut tokens = all
            .iter()
            .map(|json| decode(json))
            .collect::<Result<Vec<_>, _>>()?;
        crate::store::newest_admin_tokens_first(&mut tokens);
        Ok(tokens)
    }

    async fn token_by_hash(&self, hash: &KeyHash) -> Result<Option<AdminTokenRecord>, StoreError> {
        self.connection()
            .bounded(async {
                let id: Option<String> = self
                    .connection()
                    .query(redis::cmd("HGET").arg(HASHES).arg(hex(hash)))
                    .await?;
                match id {
                    Some(id) => Ok(self.token(&id).await?.filter(|record| record.hash == *hash)),
                    None => Ok(None),
                }
            })
            .await
    }

    async fn remove_token(&self, id: &str) -> Result<bool, StoreError> {
        let removed: i64 = self
            .connection()
            .bounded(
                self.connection()
                    .query(REMOVE.with(&keys(), &[id.to_owned()])),
            )
            .await?;
        Ok(removed == 1)
    }

    async fn touch_token(&self, id: &str, at: Timestamp) -> Result<(), StoreError> {
        self.connection()
            .bounded(async {
                let Some(mut record) = self.token(id).await? else {
                    return Ok(());
                };
                if record.info.last_used_at >= Some(at) {
                    return Ok(());
                }
                record.info.last_used_at = Some(at);
                let args = [id.to_owned(), encode(&record)?];
                self.connection()
                    .query::<i64>(TOUCH.with(&keys(), &args))
                    .await
                    .map(drop)
            })
            .await
    }
}
