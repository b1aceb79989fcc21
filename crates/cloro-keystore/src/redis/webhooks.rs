//! The [`WebhookStore`] of the [`RedisStore`] (SPEC §12), laid out for
//! Redis Cluster like the rest of the store.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `cloro:{a:<account>}:outbox` | zset | one member per event, its `<time>.<id>` position; score 0, or while claimed the end of the claim in ms |
//! | `cloro:{a:<account>}:outbox_events` | hash | position → JSON of [`OutboxEvent`] |
//! | `cloro:{webhooks}:outbox_accounts` | zset | accounts that may have events; score: when one was last added, in ms |
//! | `cloro:{webhooks}:ids` | zset, scores 0 | `<time>.<id>` per endpoint, by `ZRANGEBYLEX` |
//! | `cloro:{w:<id>}:record` | string | JSON of [`WebhookRecord`] (the secret sealed) |
//! | `cloro:{w:<id>}:deliveries` | hash | event position → JSON of [`Delivery`] |
//! | `cloro:{w:<id>}:log` | zset, scores 0 | event positions, newest last, for the listing |
//! | `cloro:{w:<id>}:due` | zset | pending deliveries' positions; score: due, or while claimed the end of the claim, in ms |
//!
//! An event is written by its commit's script in the account's slot (see
//! `store.rs`), so it exists exactly when the change does. Its account is
//! added to `outbox_accounts` before that script runs, as the key indexes
//! are: a crash between the two leaves an account listed with nothing in
//! its outbox, never an event nobody looks for. An account leaves the list
//! only when its outbox is empty and nothing was added for a minute,
//! checked in that order and then removed only if its score is unchanged;
//! a commit that listed it since has moved the score, and one that listed
//! it earlier has finished (every call is bounded by the command timeout).
//!
//! A fan-out writes each endpoint's delivery in the endpoint's slot
//! (`HSETNX`: a repeat adds nothing), then takes the event off the
//! account's outbox. Claims are scores: a claim moves a member's score to
//! the end of the lease in one script, so two nodes never claim the same
//! member at once.

use std::sync::LazyLock;

use async_trait::async_trait;
use cloro_auth_core::wire::DeliveryStatus;
use jiff::Timestamp;

use super::connection::LuaScript;
use super::store::{AccountSlot, RedisStore, position, time_prefix};
use crate::store::{
    Delivery, OutboxEvent, Page, PageRequest, StoreError, WEBHOOK_LEASE, WebhookRecord,
    WebhookStore,
};

const OUTBOX_ACCOUNTS: &str = "cloro:{webhooks}:outbox_accounts";
const WEBHOOK_IDS: &str = "cloro:{webhooks}:ids";
/// How long an account stays listed after its last event was added.
const LISTED_AT_LEAST_MS: i64 = 60_000;
/// Accounts one outbox read visits at most.
const ACCOUNTS_PER_READ: usize = 1000;

/// Claims the free members of a zset (score at most `ARGV[1]`), at most
/// `ARGV[2]`, moving their score to `ARGV[3]`, and answers each with the
/// hash field of the same name: `KEYS[1]` the zset, `KEYS[2]` the hash.
/// Answers `{}` with a first element `"empty"` when the zset is empty.
const CLAIM_LUA: &str = r"
if redis.call('ZCARD', KEYS[1]) == 0 then return {'empty'} end
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {'some'}
for _, member in ipairs(members) do
  local value = redis.call('HGET', KEYS[2], member)
  if value then
    redis.call('ZADD', KEYS[1], ARGV[3], member)
    table.insert(out, value)
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
return out
";

/// Adds a delivery if the endpoint exists and has none for this event:
/// `KEYS` record, deliveries, log, due; `ARGV` position, JSON, due in ms.
const FAN_OUT_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[3], 0, ARGV[1])
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
end
return 1
";

/// Writes a delivery after an attempt if it still exists: `KEYS`
/// deliveries, due; `ARGV` position, JSON, due in ms or `""` for none.
const ATTEMPT_LUA: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
return 1
";

/// Drops a listed account whose score is still `ARGV[2]`: `KEYS[1]` the
/// list, `ARGV[1]` the account.
const UNLIST_LUA: &str = r"
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
";

/// Removes up to `ARGV[2]` finished deliveries whose position sorts before
/// `ARGV[1]` (a time prefix): `KEYS` log, deliveries, due. Answers how many.
const PRUNE_LUA: &str = r"
local members = redis.call('ZRANGEBYLEX', KEYS[1], '-', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
local pruned = 0
for _, member in ipairs(members) do
  if not redis.call('ZSCORE', KEYS[3], member) then
    redis.call('HDEL', KEYS[2], member)
    redis.call('ZREM', KEYS[1], member)
    pruned = pruned + 1
  end
end
return pruned
";

// Each script's SHA-1 is computed once, on first use.
static CLAIM: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(CLAIM_LUA));
static FAN_OUT: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(FAN_OUT_LUA));
static ATTEMPT: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(ATTEMPT_LUA));
static UNLIST: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(UNLIST_LUA));
static PRUNE: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(PRUNE_LUA));

/// One endpoint's keys, all in its slot.
struct WebhookSlot {
    tag: String,
}

impl WebhookSlot {
    fn new(id: &str) -> Self {
        WebhookSlot {
            tag: format!("cloro:{{w:{id}}}"),
        }
    }
    fn record(&self) -> String {
        format!("{}:record", self.tag)
    }
    fn deliveries(&self) -> String {
        format!("{}:deliveries", self.tag)
    }
    fn log(&self) -> String {
        format!("{}:log", self.tag)
    }
    fn due(&self) -> String {
        format!("{}:due", self.tag)
    }
}

fn millis(at: Timestamp) -> i64 {
    at.as_millisecond()
}

fn lease_end(now: Timestamp) -> i64 {
    millis(now.checked_add(WEBHOOK_LEASE).unwrap_or(now))
}

fn encode<T: serde::Serialize>(value: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|error| StoreError::corrupt(format!("cannot encode {what}")).caused_by(error))
}

fn decode<T: serde::de::DeserializeOwned>(json: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(json)
        .map_err(|error| StoreError::corrupt(format!("{what} cannot be read")).caused_by(error))
}

fn ids_member(record: &WebhookRecord) -> String {
    position(record.info.created_at, &record.info.id)
}

impl RedisStore {
    /// Lists `account` as one that may have outbox events; called before
    /// the script that writes them.
    pub(super) async fn note_outbox(
        &self,
        account: &cloro_auth_core::AccountId,
    ) -> Result<(), StoreError> {
        self.connection()
            .query::<()>(
                redis::cmd("ZADD")
                    .arg(OUTBOX_ACCOUNTS)
                    .arg(millis(Timestamp::now()))
                    .arg(account.as_str()),
            )
            .await
    }

    /// Claims what is free in a zset of one slot (see `CLAIM_LUA`); `None`
    /// when the zset is empty.
    async fn claim(
        &self,
        zset: String,
        hash: String,
        now: Timestamp,
        limit: usize,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let keys = [zset, hash];
        let args = [
            millis(now).to_string(),
            // Redis takes a signed 64-bit count.
            i64::try_from(limit).unwrap_or(i64::MAX).to_string(),
            lease_end(now).to_string(),
        ];
        let mut answer: Vec<String> = self.connection().query(CLAIM.with(&keys, &args)).await?;
        if answer.first().map(String::as_str) == Some("empty") {
            return Ok(None);
        }
        if answer.is_empty() {
            return Err(StoreError::corrupt("redis answered a claim with nothing"));
        }
        answer.remove(0);
        Ok(Some(answer))
    }
}

#[async_trait]
impl WebhookStore for RedisStore {
    async fn add_webhook(&self, record: &WebhookRecord) -> Result<(), StoreError> {
        let json = encode(record, "a webhook")?;
        let slot = WebhookSlot::new(&record.info.id);
        self.connection()
            .bounded(async {
                let set: Option<String> = self
                    .connection()
                    .query(redis::cmd("SET").arg(slot.record()).arg(&json).arg("NX"))
                    .await?;
                if set.is_none() {
                    return Err(StoreError::Conflict);
                }
                self.connection()
                    .query::<()>(
                        redis::cmd("ZADD")
                            .arg(WEBHOOK_IDS)
                            .arg(0)
                            .arg(ids_member(record)),
                    )
                    .await
            })
            .await
    }

    async fn webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        self.connection()
            .bounded(async {
                let members: Vec<String> = self
                    .connection()
                    .query(
                        redis::cmd("ZREVRANGEBYLEX")
                            .arg(WEBHOOK_IDS)
                            .arg("+")
                            .arg("-"),
                    )
                    .await?;
                let mut webhooks = Vec::with_capacity(members.len());
                for member in members {
                    let Some((_, id)) = member.split_once('.') else {
                        return Err(StoreError::corrupt(
                            "the webhook index holds a malformed member",
                        ));
                    };
                    let json: Option<String> = self
                        .connection()
                        .query(redis::cmd("GET").arg(WebhookSlot::new(id).record()))
                        .await?;
                    // Listed but not (or no longer) stored: half of an add
                    // or a removal; the record decides.
                    if let Some(json) = json {
                        webhooks.push(decode::<WebhookRecord>(&json, "a webhook")?);
                    }
                }
                Ok(webhooks)
            })
            .await
    }

    async fn remove_webhook(&self, id: &str) -> Result<bool, StoreError> {
        let slot = WebhookSlot::new(id);
        self.connection()
            .bounded(async {
                let json: Option<String> = self
                    .connection()
                    .query(redis::cmd("GET").arg(slot.record()))
                    .await?;
                let Some(json) = json else {
                    return Ok(false);
                };
                let record: WebhookRecord = decode(&json, "a webhook")?;
                let removed: u64 = self
                    .connection()
                    .query(
                        redis::cmd("DEL")
                            .arg(slot.record())
                            .arg(slot.deliveries())
                            .arg(slot.log())
                            .arg(slot.due()),
                    )
                    .await?;
                self.connection()
                    .query::<()>(redis::cmd("ZREM").arg(WEBHOOK_IDS).arg(ids_member(&record)))
                    .await?;
                Ok(removed > 0)
            })
            .await
    }

    async fn outbox(&self, now: Timestamp, limit: usize) -> Result<Vec<OutboxEvent>, StoreError> {
        self.connection()
            .bounded(async {
                let listed: Vec<(String, String)> = self
                    .connection()
                    .query(
                        redis::cmd("ZRANGE")
                            .arg(OUTBOX_ACCOUNTS)
                            .arg(0)
                            .arg(ACCOUNTS_PER_READ - 1)
                            .arg("WITHSCORES"),
                    )
                    .await?;
                let mut claimed = Vec::new();
                for (account, score) in listed {
                    if claimed.len() == limit {
                        break;
                    }
                    let Ok(account_id) = cloro_auth_core::AccountId::new(&account) else {
                        return Err(StoreError::corrupt(
                            "the outbox list holds a malformed account",
                        ));
                    };
                    let slot = AccountSlot::new(&account_id);
                    let found = self
                        .claim(
                            slot.outbox(),
                            slot.outbox_events(),
                            now,
                            limit - claimed.len(),
                        )
                        .await?;
                    match found {
                        Some(events) => {
                            for json in events {
                                claimed.push(decode::<OutboxEvent>(&json, "an outbox event")?);
                            }
                        }
                        None => {
                            let quiet = score.parse::<f64>().is_ok_and(|listed_at| {
                                listed_at < (millis(now) - LISTED_AT_LEAST_MS) as f64
                            });
                            if quiet {
                                self.connection()
                                    .query::<()>(UNLIST.with(
                                        &[OUTBOX_ACCOUNTS.to_owned()],
                                        &[account.clone(), score.clone()],
                                    ))
                                    .await?;
                            }
                        }
                    }
                }
                Ok(claimed)
            })
            .await
    }

    async fn fan_out(
        &self,
        event: &OutboxEvent,
        webhook_ids: &[String],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let event_position = position(event.at, &event.id);
        self.connection()
            .bounded(async {
                for id in webhook_ids {
                    let slot = WebhookSlot::new(id);
                    let json = encode(&Delivery::pending(id, event, now), "a delivery")?;
                    let keys = [slot.record(), slot.deliveries(), slot.log(), slot.due()];
                    let args = [event_position.clone(), json, millis(now).to_string()];
                    self.connection()
                        .query::<i64>(FAN_OUT.with(&keys, &args))
                        .await?;
                }
                let account = AccountSlot::new(&event.account_id);
                let mut pipe = redis::pipe();
                pipe.atomic();
                pipe.cmd("ZREM")
                    .arg(account.outbox())
                    .arg(&event_position)
                    .ignore();
                pipe.cmd("HDEL")
                    .arg(account.outbox_events())
                    .arg(&event_position)
                    .ignore();
                self.connection().query::<()>(&pipe).await
            })
            .await
    }

    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let webhooks = self.webhooks().await?;
        self.connection()
            .bounded(async {
                let mut claimed = Vec::new();
                for webhook in webhooks {
                    if claimed.len() == limit {
                        break;
                    }
                    let slot = WebhookSlot::new(&webhook.info.id);
                    let found = self
                        .claim(slot.due(), slot.deliveries(), now, limit - claimed.len())
                        .await?
                        .unwrap_or_default();
                    for json in found {
                        let delivery: Delivery = decode(&json, "a delivery")?;
                        if delivery.status == DeliveryStatus::Pending {
                            claimed.push(delivery);
                        }
                    }
                }
                claimed.sort_by_key(|d| (d.next_attempt_at, d.event.at));
                Ok(claimed)
            })
            .await
    }

    async fn record_attempt(&self, delivery: &Delivery) -> Result<(), StoreError> {
        let slot = WebhookSlot::new(&delivery.webhook_id);
        let due = match delivery.status {
            DeliveryStatus::Pending => delivery
                .next_attempt_at
                .map_or_else(String::new, |at| millis(at).to_string()),
            DeliveryStatus::Delivered | DeliveryStatus::Failed => String::new(),
        };
        let keys = [slot.deliveries(), slot.due()];
        let args = [
            position(delivery.event.at, &delivery.event.id),
            encode(delivery, "a delivery")?,
            due,
        ];
        self.connection()
            .bounded(async {
                self.connection()
                    .query::<i64>(ATTEMPT.with(&keys, &args))
                    .await
                    .map(drop)
            })
            .await
    }

    async fn prune_deliveries(&self, before: Timestamp, limit: usize) -> Result<usize, StoreError> {
        let records = self.webhooks().await?;
        let cutoff = time_prefix(before);
        self.connection()
            .bounded(async {
                let mut pruned = 0usize;
                for record in &records {
                    if pruned >= limit {
                        break;
                    }
                    let slot = WebhookSlot::new(&record.info.id);
                    let keys = [slot.log(), slot.deliveries(), slot.due()];
                    let args = [
                        cutoff.clone(),
                        i64::try_from(limit - pruned)
                            .unwrap_or(i64::MAX)
                            .to_string(),
                    ];
                    let removed: u64 = self.connection().query(PRUNE.with(&keys, &args)).await?;
                    pruned += usize::try_from(removed).unwrap_or(usize::MAX);
                }
                Ok(pruned)
            })
            .await
    }

    async fn deliveries(
        &self,
        webhook_id: &str,
        page: &PageRequest,
    ) -> Result<Page<Delivery>, StoreError> {
        let slot = WebhookSlot::new(webhook_id);
        let bound = match &page.after {
            Some(cursor) => format!("({}", position(cursor.at, &cursor.id)),
            None => "+".to_owned(),
        };
        self.connection()
            .bounded(async {
                let positions: Vec<String> = self
                    .connection()
                    .query(
                        redis::cmd("ZREVRANGEBYLEX")
                            .arg(slot.log())
                            .arg(&bound)
                            .arg("-")
                            .arg("LIMIT")
                            .arg(0)
                            .arg(page.limit + 1),
                    )
                    .await?;
                if positions.is_empty() {
                    return Ok(Page {
                        items: Vec::new(),
                        next: None,
                    });
                }
                let mut command = redis::cmd("HMGET");
                command.arg(slot.deliveries());
                for at in &positions {
                    command.arg(at);
                }
                let rows: Vec<Option<String>> = self.connection().query(&command).await?;
                let mut items = Vec::with_capacity(rows.len());
                for json in rows.into_iter().flatten() {
                    items.push(decode::<Delivery>(&json, "a delivery")?);
                }
                let page_request = PageRequest {
                    limit: page.limit,
                    after: None,
                };
                Ok(crate::store::paginate(
                    items.into_iter(),
                    &page_request,
                    |d| d.position(),
                    |_| true,
                ))
            })
            .await
    }
}
