//! The expiry-notice schedule of the [`RedisStore`] (see the keystore's
//! `expiry_notices` module): one sorted set, `cloro:{notices}:schedule`,
//! member [`ScheduledNotice::encode`], score the notice time in ms, or
//! while claimed the end of the claim.
//!
//! The set has a slot of its own, so a commit cannot write it in its
//! script; it adds its entries just before (`ZADD NX`), as it lists the
//! key indexes. A commit that then fails leaves an entry whose notice
//! never comes: its handler finds nothing to send and removes it. A commit
//! that succeeds always has its entry, so no notice is missed.

use std::sync::LazyLock;

use jiff::Timestamp;

use super::connection::LuaScript;
use super::store::RedisStore;
use crate::store::{KeyRecord, ScheduledNotice, StoreError, WEBHOOK_LEASE};

const SCHEDULE: &str = "cloro:{notices}:schedule";

/// Claims the members with a score at most `ARGV[1]`, at most `ARGV[2]`,
/// moving their score to `ARGV[3]`.
const CLAIM_LUA: &str = r"
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(members) do
  redis.call('ZADD', KEYS[1], ARGV[3], member)
end
return members
";

static CLAIM: LazyLock<LuaScript> = LazyLock::new(|| LuaScript::new(CLAIM_LUA));

impl RedisStore {
    /// Adds the schedule entries of `records` (before their commit runs).
    pub(super) async fn schedule_notices(&self, records: &[&KeyRecord]) -> Result<(), StoreError> {
        let entries: Vec<ScheduledNotice> = records
            .iter()
            .filter_map(|record| ScheduledNotice::of(record))
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        let mut command = redis::cmd("ZADD");
        command.arg(SCHEDULE).arg("NX");
        for entry in &entries {
            command.arg(entry.at.as_millisecond()).arg(entry.encode());
        }
        self.connection().query::<()>(&command).await
    }

    /// `KeyStore::expiry_notices_due`.
    pub(super) async fn claim_notices(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<ScheduledNotice>, StoreError> {
        let claim_end = now.checked_add(WEBHOOK_LEASE).unwrap_or(now);
        let keys = [SCHEDULE.to_owned()];
        let args = [
            now.as_millisecond().to_string(),
            i64::try_from(limit).unwrap_or(i64::MAX).to_string(),
            claim_end.as_millisecond().to_string(),
        ];
        let members: Vec<String> = self
            .connection()
            .bounded(self.connection().query(CLAIM.with(&keys, &args)))
            .await?;
        let mut claimed = Vec::with_capacity(members.len());
        for member in members {
            match ScheduledNotice::decode(&member) {
                Some(notice) => claimed.push(notice),
                // Not an entry this version wrote: dropped, not retried.
                None => {
                    self.connection()
                        .query::<()>(redis::cmd("ZREM").arg(SCHEDULE).arg(&member))
                        .await?;
                }
            }
        }
        Ok(claimed)
    }

    /// `KeyStore::finish_expiry_notice`.
    pub(super) async fn finish_notice(&self, notice: &ScheduledNotice) -> Result<(), StoreError> {
        let command = redis::cmd("ZREM")
            .arg(SCHEDULE)
            .arg(notice.encode())
            .clone();
        self.connection()
            .bounded(self.connection().query::<()>(&command))
            .await
    }
}
