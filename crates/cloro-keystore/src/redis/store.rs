//! `RedisStore`: the [`KeyStore`] for many nodes sharing one Redis.
//!
//! # Key layout
//!
//! Every key an admin action touches together lives in one hash slot, the
//! account's (`{a:<account>}`), so the store runs unchanged on Redis
//! Cluster. Only the two global indexes sit in slots of their own; they are
//! immutable and written before the account's commit.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `cloro:{a:<account>}:key:<id>` | string | the [`KeyRecord`] as JSON (`version` included, usage not) |
//! | `cloro:{a:<account>}:keys` | zset, scores 0 | one member per key, `<time>.<id>`, ordered by `ZRANGEBYLEX` |
//! | `cloro:{a:<account>}:audit` | zset, scores 0 | one member per event, `<time>.<id> <event JSON>` |
//! | `cloro:{a:<account>}:plan` | string | the account's plan name |
//! | `cloro:{a:<account>}:usage` | hash | `<id>:count` (uses) and `<id>:last_used_at` (a `<time>`) |
//! | `cloro:{a:<account>}:usage_applied:<node>` | string, expires | the last usage sequence applied from node `<node>` (16 hex digits), 22 digits |
//! | `cloro:{h:<64 hex>}` | string | `<account> <key id>`: the verifier's index by [`KeyHash`] |
//! | `cloro:{i:<key id>}` | string | `<account>`: the index by key id |
//!
//! `<time>` is the Unix time in nanoseconds plus 10²¹, zero-padded to 22
//! digits: non-negative for every [`Timestamp`], and it sorts as text in
//! time order. ZSET scores are doubles and cannot hold nanoseconds exactly,
//! so the index orders members lexicographically instead; with a fixed-width
//! time, `(time, id)` order and byte order agree, which is what the
//! newest-first pages and their cursors need. In the audit member a space
//! ends the position (ids hold no spaces), so JSON after it never changes
//! the order.
//!
//! # Consistency
//!
//! A new record's `{h:…}` and `{i:…}` entries are set with `SET NX` first;
//! finding another value there means a duplicate hash or id
//! ([`StoreError::Conflict`]). Then one Lua script checks every expected
//! version in the account slot and, only if all match, writes the records,
//! the key index and the audit events. If that commit fails, the index
//! entries dangle: reads follow them only to a record with the same hash and
//! id, so a dangling entry reads as "no such key".
//!
//! A usage batch is applied by one script in its account's slot, which adds
//! the counts only if the batch's sequence is above the one remembered in
//! `usage_applied:<node>`, and then remembers it for the
//! [`USAGE_DEDUP_WINDOW`](crate::USAGE_DEDUP_WINDOW) (`SET … EX`, renewed
//! by every batch). So a batch whose outcome was unknown (it timed out after
//! Redis ran it) and is sent again changes nothing, and the memory of a node
//! that stopped expires by itself, one key per account it wrote to.
//!
//! # Failure
//!
//! Every call answers within [`RedisOptions::command_timeout`], also when
//! Redis hangs instead of refusing: the whole call, however many round
//! trips, runs under one timeout ([`RedisConnection::bounded`]), and a
//! miss is [`StoreError::Unavailable`]. Reads are retried once when the
//! connection was found dropped; commits and usage writes are sent once.
//! `record_usage` is the exception, since one
//! flush may carry tens of thousands of accounts: each account's write has
//! the timeout to itself, a few hundred of them in flight on the connection
//! at once, and an account that fails or times out fails alone.
//!
//! The connection manager reconnects in the background, so the same
//! `RedisStore` works again once Redis is back. On a cluster
//! ([`RedisStore::connect_cluster`]) the cluster client follows slot moves
//! and failovers: while a master is down, only calls touching its slots
//! fail, and they work again once a replica has taken over. No plaintext
//! key ever reaches Redis, and errors show the URL with its password
//! masked.

use core::fmt;
use std::collections::HashMap;

use async_trait::async_trait;
use cloro_auth_core::wire::{AuditEvent, UsageCounts, UsageGranularity};
use cloro_auth_core::{AccountId, KeyHash, KeyId, PlanName};
use futures_util::{StreamExt, stream};
use jiff::Timestamp;

use super::connection::{LuaScript, RedisConnection, RedisOptions};
use crate::store::OutboxEvent;
use crate::store::{
    AccountRecord, Cursor, KeyBatch, KeyLookup, KeyRecord, KeyStore, KeyUsage, PRUNE_PER_WRITE,
    Page, PageRequest, ScheduledNotice, SeriesPoint, StoreError, USAGE_DEDUP_WINDOW, UsageBatch,
    retention_cutoff,
};

/// Added to Unix nanoseconds so that every `Timestamp` (the earliest is
/// about -3.8 × 10²⁰ ns) is positive and fits 22 digits.
const TIME_BIAS: i128 = 1_000_000_000_000_000_000_000;
const TIME_DIGITS: usize = 22;
/// How many index members one round trip of a key listing reads at least:
/// revoked keys are filtered after reading, so a page may need several.
const MIN_LIST_BATCH: usize = 16;
const MAX_LIST_BATCH: usize = 256;

/// Checks every version and writes all or nothing, in the account slot.
///
/// `KEYS[1]` key index, `KEYS[2]` audit, `KEYS[3]` the outbox, `KEYS[4]`
/// its events, `KEYS[4 + i]` record `i`. `ARGV[1]` the number of writes
/// `n`; per write `i` (from 1) at `3i - 1`: the expected version (`""`
/// when the record must not exist), the record JSON and its index member;
/// then per audit event to the end, in threes: its audit member, its
/// outbox position and its outbox event's JSON (SPEC §12: the event is
/// written with the change).
/// Returns 1 (written), 0 (a version check failed, nothing written) or -1
/// (a write would move a record in the index, which records never do).
const COMMIT_LUA: &str = r"
local n = tonumber(ARGV[1])
for i = 1, n do
  local expected = ARGV[3 * i - 1]
  local current = redis.call('GET', KEYS[4 + i])
  if expected == '' then
    if current then return 0 end
  else
    if not current then return 0 end
    local stored = cjson.decode(current)
    local incoming = cjson.decode(ARGV[3 * i])
    if stored.version ~= tonumber(expected) or stored.hash ~= incoming.hash then
      return 0
    end
    if stored.created_at ~= incoming.created_at then return -1 end
  end
end
for i = 1, n do
  redis.call('SET', KEYS[4 + i], ARGV[3 * i])
  redis.call('ZADD', KEYS[1], 0, ARGV[3 * i + 1])
end
for j = 3 * n + 2, #ARGV, 3 do
  redis.call('ZADD', KEYS[2], 0, ARGV[j])
  redis.call('ZADD', KEYS[3], 0, ARGV[j + 1])
  redis.call('HSET', KEYS[4], ARGV[j + 1], ARGV[j + 2])
end
return 1
";

/// Applies one usage batch to one account, at most once: `KEYS[1]` the
/// usage hash, `KEYS[2]` the last sequence applied from the batch's node;
/// `ARGV[1]` the batch's sequence (22 digits), `ARGV[2]` how long to
/// remember it, in seconds; then in threes: key id, count, last use as a
/// `<time>`. Returns 1 (applied) or 0 (already applied, or older than one
/// that was: nothing written). Last use never moves backwards. Times and
/// sequences are compared in two 11-digit halves, as numbers: a Lua number
/// holds 11 digits exactly but not 22, and string comparison in Redis's Lua
/// follows the server's locale.
const USAGE_LUA: &str = r"
local function later(a, b)
  local a_high, b_high = tonumber(string.sub(a, 1, 11)), tonumber(string.sub(b, 1, 11))
  if a_high ~= b_high then return a_high > b_high end
  return tonumber(string.sub(a, 12)) > tonumber(string.sub(b, 12))
end
local applied = redis.call('GET', KEYS[2])
if applied and not later(ARGV[1], applied) then return 0 end
local widths = {60, 3600, 86400}
for i = 7, #ARGV, 11 do
  local id = ARGV[i]
  local count = ARGV[i + 1]
  if tonumber(count) > 0 then
    redis.call('HINCRBY', KEYS[1], id .. ':count', count)
    local field = id .. ':last_used_at'
    local last = redis.call('HGET', KEYS[1], field)
    if (not last) or later(ARGV[i + 2], last) then
      redis.call('HSET', KEYS[1], field, ARGV[i + 2])
    end
  end
  local minute = tonumber(ARGV[i + 3])
  for g = 1, 3 do
    local start = minute - (minute % widths[g])
    local bucket = id .. ':' .. string.format('%d', start)
    local touched = false
    for o = 0, 7 do
      local n = count
      if o > 0 then n = ARGV[i + 3 + o] end
      if tonumber(n) > 0 then
        redis.call('HINCRBY', KEYS[2 + g], bucket .. ':' .. o, n)
        touched = true
      end
    end
    if touched then redis.call('ZADD', KEYS[5 + g], start, bucket) end
  end
end
for g = 1, 3 do
  local old = redis.call('ZRANGEBYSCORE', KEYS[5 + g], '-inf', '(' .. ARGV[2 + g], 'LIMIT', 0, ARGV[6])
  for _, bucket in ipairs(old) do
    for o = 0, 7 do redis.call('HDEL', KEYS[2 + g], bucket .. ':' .. o) end
    redis.call('ZREM', KEYS[5 + g], bucket)
  end
end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
return 1
";

/// Buckets a usage read names outright instead of listing the account's
/// index: a key's longest range (1,500 buckets) and then some.
const DIRECT_SERIES_READ: i64 = 4096;

/// Accounts whose usage is written at once: enough to keep the multiplexed
/// connection busy (a flush of 50,000 accounts then takes about 200 round
/// trips' time, not 50,000), few enough that a flush cannot swamp Redis or
/// hold up for long the verifier's lookups that share the connection.
const USAGE_WRITES_IN_FLIGHT: usize = 256;

/// A [`KeyStore`] in a single Redis or a Redis Cluster (the same key
/// layout and Lua serve both, see the module docs).
pub struct RedisStore {
    connection: RedisConnection,
    commit_script: LuaScript,
    usage_script: LuaScript,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.connection.masked_url())
            .field("options", self.connection.options())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on the Redis at `url` (`redis://[user:password@]host:port[/db]`).
    ///
    /// Redis need not be up yet: the first call connects, and until then
    /// calls answer [`StoreError::Unavailable`]. Use [`KeyStore::ping`] to
    /// check that it is reachable.
    ///
    /// # Errors
    /// `Unavailable` when the URL cannot be used (the message masks any
    /// password in it).
    ///
    /// # Panics
    /// Outside a tokio runtime: the connection manager spawns its task here.
    pub fn connect(url: &str, options: RedisOptions) -> Result<RedisStore, StoreError> {
        RedisConnection::single(url, options).map(RedisStore::on)
    }

    /// A store on the Redis Cluster reached through `seeds`, a comma-separated
    /// list of `redis://` URLs of some of its nodes (any one that answers
    /// is enough to learn the whole cluster).
    ///
    /// Like [`Self::connect`], the cluster need not be up yet: the first
    /// call connects, and calls answer [`StoreError::Unavailable`] until it
    /// is. The client follows slot moves and failovers by itself.
    ///
    /// # Errors
    /// `Unavailable` when the list is empty or a URL cannot be used (the
    /// message masks any password).
    pub fn connect_cluster(seeds: &str, options: RedisOptions) -> Result<RedisStore, StoreError> {
        RedisConnection::cluster(seeds, options).map(RedisStore::on)
    }

    fn on(connection: RedisConnection) -> RedisStore {
        RedisStore {
            connection,
            commit_script: LuaScript::new(COMMIT_LUA),
            usage_script: LuaScript::new(USAGE_LUA),
        }
    }

    /// The options in force.
    pub fn options(&self) -> &RedisOptions {
        self.connection.options()
    }

    /// The URL with any password masked: safe for logs.
    pub fn masked_url(&self) -> &str {
        self.connection.masked_url()
    }

    /// The store's connection, to share with the
    /// [`RedisRateLimiter`](crate::RedisRateLimiter) and the
    /// [`RedisNotifier`](crate::RedisNotifier) on the same Redis.
    pub fn connection(&self) -> &RedisConnection {
        &self.connection
    }

    /// Reads records of one account by id, usage included; `None` where a
    /// record is missing.
    async fn records_with_usage(
        &self,
        slot: &AccountSlot,
        ids: &[&str],
    ) -> Result<Vec<Option<KeyRecord>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.cmd("MGET");
        for id in ids {
            pipe.arg(slot.record(id));
        }
        pipe.cmd("HMGET").arg(slot.usage());
        for id in ids {
            pipe.arg(usage_count_field(id)).arg(usage_last_field(id));
        }
        let (records, usage): (Vec<Option<String>>, Vec<Option<String>>) =
            self.connection.query(&pipe).await?;
        if records.len() != ids.len() || usage.len() != 2 * ids.len() {
            return Err(StoreError::corrupt(
                "redis answered a read with the wrong number of values",
            ));
        }
        records
            .into_iter()
            .zip(usage.chunks_exact(2))
            .map(|(json, usage)| {
                json.map(|json| {
                    let mut record = decode_record(&json)?;
                    record.usage = decode_usage(usage[0].as_deref(), usage[1].as_deref())?;
                    Ok(record)
                })
                .transpose()
            })
            .collect()
    }
}

#[async_trait]
impl KeyStore for RedisStore {
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<KeyLookup>, StoreError> {
        self.connection
            .bounded(async {
                let entry: Option<String> = self
                    .connection
                    .query(redis::cmd("GET").arg(hash_index_key(hash)))
                    .await?;
                let Some(entry) = entry else {
                    return Ok(None);
                };
                let (account, id) = decode_hash_entry(&entry)?;
                let slot = AccountSlot::new(&account);
                let (record, plan): (Option<String>, Option<String>) = self
                    .connection
                    .query(
                        redis::cmd("MGET")
                            .arg(slot.record(id.as_str()))
                            .arg(slot.plan()),
                    )
                    .await?;
                let Some(record) = record else {
                    // A dangling index entry: its commit never happened.
                    return Ok(None);
                };
                let record = decode_record(&record)?;
                if record.hash != *hash || record.id != id || record.account_id != account {
                    return Ok(None);
                }
                Ok(Some(KeyLookup {
                    record,
                    account_plan: plan.as_deref().map(decode_plan).transpose()?,
                }))
            })
            .await
    }

    async fn key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.connection
            .bounded(async {
                let account: Option<String> = self
                    .connection
                    .query(redis::cmd("GET").arg(id_index_key(id)))
                    .await?;
                let Some(account) = account else {
                    return Ok(None);
                };
                let account = decode_account(&account)?;
                let slot = AccountSlot::new(&account);
                let record = self
                    .records_with_usage(&slot, &[id.as_str()])
                    .await?
                    .into_iter()
                    .next()
                    .flatten();
                Ok(record.filter(|r| r.id == *id && r.account_id == account))
            })
            .await
    }

    async fn keys_of_account(
        &self,
        account: &AccountId,
        page: &PageRequest,
        include_revoked: bool,
    ) -> Result<Page<KeyRecord>, StoreError> {
        self.connection
            .bounded(async {
                let slot = AccountSlot::new(account);
                // One more than the page, to know whether a next page exists.
                let wanted = page.limit.saturating_add(1);
                let mut bound = match &page.after {
                    Some(cursor) => format!("({}", position(cursor.at, &cursor.id)),
                    None => "+".to_owned(),
                };
                let mut kept: Vec<KeyRecord> = Vec::new();
                while kept.len() < wanted {
                    let batch = (wanted - kept.len()).clamp(MIN_LIST_BATCH, MAX_LIST_BATCH);
                    let members: Vec<String> = self
                        .connection
                        .query(
                            redis::cmd("ZREVRANGEBYLEX")
                                .arg(slot.keys())
                                .arg(&bound)
                                .arg("-")
                                .arg("LIMIT")
                                .arg(0)
                                .arg(batch),
                        )
                        .await?;
                    let Some(last) = members.last() else {
                        break;
                    };
                    bound = format!("({last}");
                    let ids = members
                        .iter()
                        .map(|member| member_id(member))
                        .collect::<Result<Vec<_>, _>>()?;
                    let records = self.records_with_usage(&slot, &ids).await?;
                    for (id, record) in ids.iter().zip(records) {
                        let record = record.ok_or_else(|| {
                            StoreError::corrupt(format!(
                                "the key index lists {id} without a record"
                            ))
                        })?;
                        if (include_revoked || record.revoked_at.is_none()) && kept.len() < wanted {
                            kept.push(record);
                        }
                    }
                    if members.len() < batch {
                        break;
                    }
                }
                Ok(into_page(kept, page.limit, |r| {
                    (r.created_at, r.id.to_string())
                }))
            })
            .await
    }

    async fn commit(&self, batch: KeyBatch) -> Result<(), StoreError> {
        let slot = AccountSlot::new(&batch.account_id);
        // Validate and encode before the clock starts: no I/O here.
        let mut records = Vec::with_capacity(batch.writes.len());
        for write in &batch.writes {
            if write.record.account_id != batch.account_id {
                return Err(StoreError::corrupt("a batch may only touch one account"));
            }
            let json = serde_json::to_string(&write.record)
                .map_err(|error| StoreError::corrupt("cannot encode a record").caused_by(error))?;
            records.push(json);
        }
        let mut audit = Vec::with_capacity(batch.audit.len());
        for event in &batch.audit {
            audit.push(audit_member(event, &batch.account_id)?);
        }
        let written: Vec<&KeyRecord> = batch.writes.iter().map(|w| &w.record).collect();
        let outbox = OutboxEvent::of_commit(&batch.audit, &written)?
            .iter()
            .map(outbox_entry)
            .collect::<Result<Vec<_>, _>>()?;
        self.connection
            .bounded(async {
                let new_records: Vec<&KeyRecord> = batch
                    .writes
                    .iter()
                    .filter(|w| w.expected_version.is_none())
                    .map(|w| &w.record)
                    .collect();
                self.claim_indexes(&batch.account_id, &new_records).await?;
                if !outbox.is_empty() {
                    self.note_outbox(&batch.account_id).await?;
                }
                self.schedule_notices(&written).await?;

                let mut keys = vec![
                    slot.keys(),
                    slot.audit(),
                    slot.outbox(),
                    slot.outbox_events(),
                ];
                let mut args = vec![batch.writes.len().to_string()];
                for (write, json) in batch.writes.iter().zip(&records) {
                    keys.push(slot.record(write.record.id.as_str()));
                    args.push(
                        write
                            .expected_version
                            .map_or_else(String::new, |v| v.to_string()),
                    );
                    args.push(json.clone());
                    args.push(position(write.record.created_at, write.record.id.as_str()));
                }
                for (member, (position, json)) in audit.iter().zip(&outbox) {
                    args.push(member.clone());
                    args.push(position.clone());
                    args.push(json.clone());
                }
                // Sent once: run twice, the second run would find its own
                // versions and answer a conflict.
                let outcome: i64 = self
                    .connection
                    .query_once(self.commit_script.with(&keys, &args))
                    .await?;
                match outcome {
                    1 => Ok(()),
                    0 => Err(StoreError::Conflict),
                    _ => Err(StoreError::corrupt(
                        "a record's creation time cannot change",
                    )),
                }
            })
            .await
    }

    async fn audit_events(
        &self,
        account: &AccountId,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>, StoreError> {
        self.connection
            .bounded(async {
                let slot = AccountSlot::new(account);
                let bound = match &page.after {
                    // Ends the position with the separator, so the cursor's own
                    // event (position, space, JSON) sorts after the bound.
                    Some(cursor) => format!("({} ", position(cursor.at, &cursor.id)),
                    None => "+".to_owned(),
                };
                let members: Vec<String> = self
                    .connection
                    .query(
                        redis::cmd("ZREVRANGEBYLEX")
                            .arg(slot.audit())
                            .arg(bound)
                            .arg("-")
                            .arg("LIMIT")
                            .arg(0)
                            .arg(page.limit.saturating_add(1)),
                    )
                    .await?;
                let events = members
                    .iter()
                    .map(|member| decode_audit_member(member))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(into_page(events, page.limit, |e| (e.at, e.id.clone())))
            })
            .await
    }

    async fn account(&self, account: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        self.connection
            .bounded(async {
                let slot = AccountSlot::new(account);
                let mut pipe = redis::pipe();
                pipe.cmd("ZCARD").arg(slot.keys());
                pipe.cmd("GET").arg(slot.plan());
                let (key_count, plan): (u64, Option<String>) = self.connection.query(&pipe).await?;
                let plan = plan.as_deref().map(decode_plan).transpose()?;
                Ok(AccountRecord::if_exists(*account, plan, key_count))
            })
            .await
    }

    async fn set_account_plan(
        &self,
        account: &AccountId,
        plan: &PlanName,
        event: AuditEvent,
    ) -> Result<(), StoreError> {
        let member = audit_member(&event, account)?;
        let (position, json) = outbox_entry(&OutboxEvent::of_audit(&event, None)?)?;
        self.connection
            .bounded(async {
                let slot = AccountSlot::new(account);
                self.note_outbox(account).await?;
                // MULTI/EXEC: the plan, its audit event and its outbox
                // event land together.
                let mut pipe = redis::pipe();
                pipe.atomic();
                pipe.cmd("SET").arg(slot.plan()).arg(plan.as_str()).ignore();
                pipe.cmd("ZADD")
                    .arg(slot.audit())
                    .arg(0)
                    .arg(member)
                    .ignore();
                pipe.cmd("ZADD")
                    .arg(slot.outbox())
                    .arg(0)
                    .arg(&position)
                    .ignore();
                pipe.cmd("HSET")
                    .arg(slot.outbox_events())
                    .arg(&position)
                    .arg(json)
                    .ignore();
                self.connection.query::<()>(&pipe).await
            })
            .await
    }

    async fn record_usage(&self, batches: &[UsageBatch]) -> Vec<Result<(), StoreError>> {
        // Each account's batches, in the order given: usage of different
        // accounts lives in different slots, so each account is written on
        // its own, many at once; one account's batches go one after another.
        let mut by_account: HashMap<AccountId, Vec<usize>> = HashMap::new();
        for (index, batch) in batches.iter().enumerate() {
            by_account.entry(batch.account_id).or_default().push(index);
        }
        let mut writes = stream::iter(by_account.into_values().map(|indexes| async move {
            let mut outcome = Ok(());
            let mut answered = Vec::with_capacity(indexes.len());
            for index in indexes {
                // After a failure the account's later batches are not sent:
                // applied first, they would make the failed one look old.
                if outcome.is_ok() {
                    outcome = self
                        .connection
                        .bounded(self.apply_usage(&batches[index]))
                        .await;
                }
                answered.push((index, outcome.clone()));
            }
            answered
        }))
        .buffer_unordered(USAGE_WRITES_IN_FLIGHT);
        let mut results = vec![None; batches.len()];
        while let Some(answered) = writes.next().await {
            for (index, outcome) in answered {
                results[index] = Some(outcome);
            }
        }
        results
            .into_iter()
            .map(|outcome| {
                // Every index is in exactly one account's list.
                outcome
                    .unwrap_or_else(|| Err(StoreError::corrupt("a usage batch was never written")))
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.connection
            .bounded(async {
                let _: String = self.connection.query(&redis::cmd("PING")).await?;
                Ok(())
            })
            .await
    }

    async fn usage_series(
        &self,
        account: &AccountId,
        keys: &[KeyId],
        granularity: UsageGranularity,
        from: i64,
        to: i64,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        let slot = AccountSlot::new(account);
        let wanted: std::collections::HashSet<&str> = keys.iter().map(KeyId::as_str).collect();
        let width = granularity.seconds();
        let starts = (to.saturating_sub(from).max(0) + width - 1) / width;
        self.connection
            .bounded(async {
                // Few keys (one key's usage): the fields are known, so they
                // are read straight, however many keys the account has.
                // Many (an account's): the buckets that exist in the range,
                // from the account's index, then only those are read.
                let found: Vec<(String, KeyId, i64)> = if i64::try_from(keys.len())
                    .unwrap_or(i64::MAX)
                    .saturating_mul(starts)
                    <= DIRECT_SERIES_READ
                {
                    let mut found = Vec::new();
                    for key_id in keys {
                        let mut start = granularity.bucket_start(from);
                        while start < to {
                            if start >= from {
                                found.push((format!("{key_id}:{start}"), *key_id, start));
                            }
                            start += width;
                        }
                    }
                    found
                } else {
                    let buckets: Vec<String> = self
                        .connection
                        .query(
                            redis::cmd("ZRANGEBYSCORE")
                                .arg(slot.series_buckets(granularity))
                                .arg(from)
                                .arg(format!("({to}")),
                        )
                        .await?;
                    buckets
                        .into_iter()
                        .filter_map(|bucket| {
                            let (id, start) = bucket.rsplit_once(':')?;
                            if !wanted.contains(id) {
                                return None;
                            }
                            let key_id = KeyId::new(id).ok()?;
                            let start = start.parse::<i64>().ok()?;
                            Some((bucket.clone(), key_id, start))
                        })
                        .collect()
                };
                let mut points = Vec::with_capacity(found.len());
                for chunk in found.chunks(256) {
                    let mut command = redis::cmd("HMGET");
                    command.arg(slot.series(granularity));
                    for (bucket, _, _) in chunk {
                        for outcome in 0..8 {
                            command.arg(format!("{bucket}:{outcome}"));
                        }
                    }
                    let values: Vec<Option<u64>> = self.connection.query(&command).await?;
                    for ((_, key_id, start), counts) in chunk.iter().zip(values.chunks(8)) {
                        if counts.iter().all(Option::is_none) {
                            continue;
                        }
                        let mut array = [0u64; 8];
                        for (slot, value) in array.iter_mut().zip(counts) {
                            *slot = value.unwrap_or(0);
                        }
                        points.push(SeriesPoint {
                            key_id: *key_id,
                            start: *start,
                            counts: UsageCounts::from_array(array),
                        });
                    }
                }
                Ok(points)
            })
            .await
    }

    async fn expiry_notices_due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<ScheduledNotice>, StoreError> {
        self.claim_notices(now, limit).await
    }

    async fn finish_expiry_notice(&self, notice: &ScheduledNotice) -> Result<(), StoreError> {
        self.finish_notice(notice).await
    }
}

impl RedisStore {
    /// Runs [`USAGE_LUA`] for one batch, in the batch's account slot.
    async fn apply_usage(&self, batch: &UsageBatch) -> Result<(), StoreError> {
        let slot = AccountSlot::new(&batch.account_id);
        let mut args = Vec::with_capacity(6 + 11 * batch.deltas.len());
        args.push(encode_sequence(batch.sequence));
        args.push(USAGE_DEDUP_WINDOW.as_secs().to_string());
        // Retention is measured on this node's clock: the nodes' clocks
        // differ by seconds, retention is hours to years.
        let now = Timestamp::now().as_second();
        for granularity in UsageGranularity::ALL {
            args.push(retention_cutoff(granularity, now).to_string());
        }
        args.push(PRUNE_PER_WRITE.to_string());
        let count_arg = |count: u64| i64::try_from(count).unwrap_or(i64::MAX).to_string();
        for delta in &batch.deltas {
            args.push(delta.key_id.as_str().to_owned());
            args.push(count_arg(delta.count));
            args.push(encode_time(delta.last_used_at));
            args.push(delta.minute.to_string());
            for refused in &delta.refused.to_array()[1..] {
                args.push(count_arg(*refused));
            }
        }
        let mut keys = vec![slot.usage(), slot.usage_applied(batch.node_id)];
        keys.extend(UsageGranularity::ALL.map(|g| slot.series(g)));
        keys.extend(UsageGranularity::ALL.map(|g| slot.series_buckets(g)));
        // 0 (already applied) is as good as 1: the batch is in the counts.
        self.connection
            .query_once::<i64>(self.usage_script.with(&keys, &args))
            .await
            .map(drop)
    }

    /// Sets the global `{h:…}` and `{i:…}` entries of new records (`SET NX`,
    /// then reads them back): an entry that holds another value means the
    /// hash or id is taken. Entries equal to ours are fine, so a commit
    /// retried after a timeout does not conflict with itself.
    async fn claim_indexes(
        &self,
        account: &AccountId,
        records: &[&KeyRecord],
    ) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut claims = Vec::with_capacity(2 * records.len());
        for record in records {
            claims.push((
                hash_index_key(&record.hash),
                format!("{account} {}", record.id),
            ));
            claims.push((id_index_key(&record.id), account.to_string()));
        }
        let expected: Vec<&String> = claims.iter().map(|(_, value)| value).collect();
        let stored: Vec<Option<String>> = if self.connection.is_cluster() {
            // Each entry has a slot of its own: one pipeline per entry, all
            // in flight at once.
            let answers = futures_util::future::try_join_all(claims.iter().map(|(key, value)| {
                let mut pipe = redis::pipe();
                pipe.cmd("SET").arg(key).arg(value).arg("NX").ignore();
                pipe.cmd("GET").arg(key);
                async move { self.connection.query::<(Option<String>,)>(&pipe).await }
            }))
            .await?;
            answers.into_iter().map(|(stored,)| stored).collect()
        } else {
            let mut pipe = redis::pipe();
            for (key, value) in &claims {
                pipe.cmd("SET").arg(key).arg(value).arg("NX").ignore();
                pipe.cmd("GET").arg(key);
            }
            self.connection.query(&pipe).await?
        };
        if stored.len() != expected.len() {
            return Err(StoreError::corrupt(
                "redis answered the index claims with the wrong number of values",
            ));
        }
        if stored
            .iter()
            .zip(&expected)
            .all(|(stored, expected)| stored.as_deref() == Some(expected.as_str()))
        {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }
}

/// The keys of one account, all in its hash slot.
pub(super) struct AccountSlot {
    tag: String,
}

impl AccountSlot {
    pub(super) fn new(account: &AccountId) -> Self {
        AccountSlot {
            tag: format!("cloro:{{a:{account}}}"),
        }
    }

    fn record(&self, id: &str) -> String {
        format!("{}:key:{id}", self.tag)
    }

    fn keys(&self) -> String {
        format!("{}:keys", self.tag)
    }

    fn audit(&self) -> String {
        format!("{}:audit", self.tag)
    }

    fn plan(&self) -> String {
        format!("{}:plan", self.tag)
    }

    fn usage(&self) -> String {
        format!("{}:usage", self.tag)
    }

    /// A granularity's usage buckets: `<key>:<start>:<outcome index>` →
    /// count.
    fn series(&self, granularity: UsageGranularity) -> String {
        format!("{}:usage:{}", self.tag, granularity.as_str())
    }

    /// Which buckets of a granularity exist: `<key>:<start>`, scored by the
    /// start, so that those past retention are one range.
    fn series_buckets(&self, granularity: UsageGranularity) -> String {
        format!("{}:usage:{}:buckets", self.tag, granularity.as_str())
    }

    fn usage_applied(&self, node_id: u64) -> String {
        format!("{}:usage_applied:{node_id:016x}", self.tag)
    }

    pub(super) fn outbox(&self) -> String {
        format!("{}:outbox", self.tag)
    }

    pub(super) fn outbox_events(&self) -> String {
        format!("{}:outbox_events", self.tag)
    }
}

/// An outbox event as the account slot keeps it: its position (the
/// member of `outbox`, the field of `outbox_events`) and its JSON.
fn outbox_entry(event: &OutboxEvent) -> Result<(String, String), StoreError> {
    let json = serde_json::to_string(event)
        .map_err(|error| StoreError::corrupt("cannot encode an outbox event").caused_by(error))?;
    Ok((position(event.at, &event.id), json))
}

fn hash_index_key(hash: &KeyHash) -> String {
    format!("cloro:{{h:{}}}", String::from_utf8_lossy(&hash.to_hex()))
}

fn id_index_key(id: &KeyId) -> String {
    format!("cloro:{{i:{id}}}")
}

fn usage_count_field(id: &str) -> String {
    format!("{id}:count")
}

fn usage_last_field(id: &str) -> String {
    format!("{id}:last_used_at")
}

/// A fixed-width, text-sortable time (see the module docs).
fn encode_time(at: Timestamp) -> String {
    format!(
        "{:0width$}",
        at.as_nanosecond() + TIME_BIAS,
        width = TIME_DIGITS
    )
}

/// A usage sequence as the script compares it: as wide as a `<time>`, so
/// one comparison serves both.
fn encode_sequence(sequence: u64) -> String {
    format!("{sequence:0width$}", width = TIME_DIGITS)
}

fn decode_time(text: &str) -> Result<Timestamp, StoreError> {
    text.parse::<i128>()
        .ok()
        .and_then(|biased| Timestamp::from_nanosecond(biased - TIME_BIAS).ok())
        .ok_or_else(|| StoreError::corrupt("a stored time cannot be read"))
}

/// The time part of [`position`]: every position of an earlier time sorts
/// before it.
pub(super) fn time_prefix(at: Timestamp) -> String {
    encode_time(at)
}

/// An index member: time then id, so text order is `(time, id)` order.
pub(super) fn position(at: Timestamp, id: &str) -> String {
    format!("{}.{id}", encode_time(at))
}

/// The id in a key index member.
fn member_id(member: &str) -> Result<&str, StoreError> {
    member
        .get(TIME_DIGITS + 1..)
        .filter(|id| !id.is_empty() && member.as_bytes().get(TIME_DIGITS) == Some(&b'.'))
        .ok_or_else(|| StoreError::corrupt("the key index holds a malformed member"))
}

/// The audit zset member: position, a space, the event as JSON.
fn audit_member(event: &AuditEvent, account: &AccountId) -> Result<String, StoreError> {
    if event.account_id != *account {
        return Err(StoreError::corrupt(
            "an audit event belongs to another account",
        ));
    }
    // Bytes at or below the space would sort the separator after the id and
    // break the order (see the module docs).
    if event.id.is_empty() || event.id.bytes().any(|b| b <= b' ') {
        return Err(StoreError::corrupt(
            "an audit event id must be non-empty, without spaces or control characters",
        ));
    }
    let json = serde_json::to_string(event)
        .map_err(|error| StoreError::corrupt("cannot encode an audit event").caused_by(error))?;
    Ok(format!("{} {json}", position(event.at, &event.id)))
}

fn decode_audit_member(member: &str) -> Result<AuditEvent, StoreError> {
    let (_, json) = member
        .split_once(' ')
        .ok_or_else(|| StoreError::corrupt("the audit log holds a malformed member"))?;
    serde_json::from_str(json)
        .map_err(|error| StoreError::corrupt("an audit event cannot be read").caused_by(error))
}

fn decode_record(json: &str) -> Result<KeyRecord, StoreError> {
    serde_json::from_str(json)
        .map_err(|error| StoreError::corrupt("a key record cannot be read").caused_by(error))
}

fn decode_usage(count: Option<&str>, last: Option<&str>) -> Result<KeyUsage, StoreError> {
    let count = match count {
        Some(text) => text.parse::<u64>().map_err(|error| {
            StoreError::corrupt("a usage count cannot be read").caused_by(error)
        })?,
        None => 0,
    };
    Ok(KeyUsage {
        count,
        last_used_at: last.map(decode_time).transpose()?,
    })
}

fn decode_hash_entry(entry: &str) -> Result<(AccountId, KeyId), StoreError> {
    entry
        .split_once(' ')
        .and_then(|(account, id)| Some((AccountId::new(account).ok()?, KeyId::new(id).ok()?)))
        .ok_or_else(|| StoreError::corrupt("the hash index holds a malformed entry"))
}

fn decode_account(text: &str) -> Result<AccountId, StoreError> {
    AccountId::new(text).map_err(|error| {
        StoreError::corrupt("the id index holds a malformed account").caused_by(error)
    })
}

fn decode_plan(text: &str) -> Result<PlanName, StoreError> {
    PlanName::new(text)
        .map_err(|error| StoreError::corrupt("a stored plan name is malformed").caused_by(error))
}

/// `items` hold up to `limit + 1` entries, newest first: the extra one only
/// says that a next page exists (as `paginate` decides it).
fn into_page<T>(
    mut items: Vec<T>,
    limit: usize,
    position: impl Fn(&T) -> (Timestamp, String),
) -> Page<T> {
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more {
        items.last().map(|last| {
            let (at, id) = position(last);
            Cursor { at, id }
        })
    } else {
        None
    };
    Page { items, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_sort_as_text_in_time_order() {
        let times = [
            Timestamp::MIN,
            "1969-12-31T23:59:59.999999999Z".parse().unwrap(),
            Timestamp::UNIX_EPOCH,
            "2026-01-15T12:00:00.000000001Z".parse().unwrap(),
            "2026-01-15T12:00:00.1Z".parse().unwrap(),
            Timestamp::MAX,
        ];
        let encoded: Vec<String> = times.iter().map(|t| encode_time(*t)).collect();
        assert!(
            encoded.iter().all(|e| e.len() == TIME_DIGITS),
            "{encoded:?}"
        );
        assert!(encoded.windows(2).all(|w| w[0] < w[1]), "{encoded:?}");
        for (time, text) in times.iter().zip(&encoded) {
            assert_eq!(decode_time(text).unwrap(), *time);
        }
    }

    #[test]
    fn sequences_are_as_wide_as_times_and_sort_as_text() {
        let sequences = [0, 1, 9, 10, u64::from(u32::MAX), u64::MAX];
        let encoded: Vec<String> = sequences.iter().map(|s| encode_sequence(*s)).collect();
        assert!(
            encoded.iter().all(|e| e.len() == TIME_DIGITS),
            "{encoded:?}"
        );
        assert!(encoded.windows(2).all(|w| w[0] < w[1]), "{encoded:?}");
    }

    #[test]
    fn positions_order_ties_by_id_like_the_cursor() {
        let at = Timestamp::UNIX_EPOCH;
        let ids = ["key_a", "key_ab", "key_b", "key_B", "key_-"];
        for a in ids {
            for b in ids {
                assert_eq!(
                    position(at, a).cmp(&position(at, b)),
                    (at, a).cmp(&(at, b)),
                    "{a} vs {b}"
                );
            }
        }
        assert_eq!(member_id(&position(at, "key_ab")).unwrap(), "key_ab");
        assert!(member_id("short").is_err());
    }

    #[test]
    fn audit_members_keep_order_whatever_the_json() {
        let at = Timestamp::UNIX_EPOCH;
        // The prefix id sorts first, as (at, id) does, though '{' > 'b'.
        let short = format!("{} {{\"z\":1}}", position(at, "evt_a"));
        let long = format!("{} {{\"a\":1}}", position(at, "evt_ab"));
        assert!(short < long);
        // The cursor bound excludes its own event and keeps earlier ones.
        let bound = format!("{} ", position(at, "evt_ab"));
        assert!(short < bound && long > bound);
    }

    #[test]
    fn bad_url_errors_do_not_echo_the_password() {
        let error = RedisStore::connect("redis://user:hunter2@[::1", RedisOptions::default())
            .unwrap_err()
            .to_string();
        assert!(!error.contains("hunter2"), "{error}");
        let error = RedisStore::connect("hunter2", RedisOptions::default())
            .unwrap_err()
            .to_string();
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn decode_failures_keep_the_parser_error_as_source() {
        let error = decode_record("{not json").unwrap_err();
        assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
        let source = std::error::Error::source(&error).expect("a cause");
        assert!(source.downcast_ref::<serde_json::Error>().is_some());
        let error = decode_usage(Some("many"), None).unwrap_err();
        assert!(std::error::Error::source(&error).is_some());
    }

    #[test]
    fn pages_keep_one_extra_item_only_to_set_the_cursor() {
        let at = Timestamp::UNIX_EPOCH;
        let page = into_page(vec!["a", "b", "c"], 2, |s| (at, (*s).to_owned()));
        assert_eq!(page.items, vec!["a", "b"]);
        assert_eq!(page.next.map(|c| c.id), Some("b".to_owned()));
        let last = into_page(vec!["a"], 2, |s| (at, (*s).to_owned()));
        assert!(last.next.is_none());
        let empty = into_page(vec!["a"], 0, |s| (at, (*s).to_owned()));
        assert!(empty.items.is_empty() && empty.next.is_none());
    }
}
