//! `RedisLedger`: quota counters and credit balances in Redis (SPEC §11),
//! exact across every node. A request's charge normally runs inside the
//! rate-limit script (`limiter.rs`), in the same round trip; this type
//! serves the admin API (reading a quota, setting or adding credits) and
//! charges a meter on its own where no rate limit runs with it.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `cloro:{a:<account>}:quota:<a \| k:key id>:<d \| m>:<period number>` | string, expires a day after the period | units used in that period |
//! | `cloro:{a:<account>}:credits` | hash | per meter id: `<remaining>/<period letter or ->/<period number of the last refill>` |
//!
//! Both live in the account's slot, beside its allowances, so one script
//! reaches all of a request's state on Redis Cluster.

use core::fmt;

use async_trait::async_trait;
use cloro_auth_core::wire::MAX_QUOTA_COUNT;
use cloro_auth_core::{AccountId, KeyId};

use super::connection::{LuaScript, RedisConnection};
use super::limiter::{STEP_LUA, meter_arguments};
use crate::quota::{
    CreditsChange, Ledger, Meter, MeterOutcome, QuotaSubject, RefillWindow, Window, period_letter,
};
use crate::store::StoreError;

/// Sets or adds to a balance after a refill that was due. `KEYS[1]` the
/// hash; `ARGV[1]` the meter id, `ARGV[2]` `set` or `add`, `ARGV[3]` the
/// amount, `ARGV[4]` the cap, `ARGV[5]`/`ARGV[6]`/`ARGV[7]` the refill
/// amount (or `-`), period letter and number; `ARGV[8]` an operation id
/// (or `-`), remembered for a day in `KEYS[2]` so that the same operation
/// is applied once. Returns the new balance (for a repeated operation, the
/// balance its first run answered).
const ADJUST_LUA: &str = r"
if ARGV[8] ~= '-' then
  local done = redis.call('GET', KEYS[2])
  if done then return tonumber(done) end
end
local remaining = 0
local period = ARGV[6]
local index = tonumber(ARGV[7])
local balance = redis.call('HGET', KEYS[1], ARGV[1])
if balance then
  local r, p, i = string.match(balance, '^(%d+)/([dm%-])/(%-?%d+)$')
  if r then
    remaining = tonumber(r)
    if ARGV[5] == '-' then
      period = p
      index = tonumber(i)
    elseif p == ARGV[6] and tonumber(i) < tonumber(ARGV[7]) then
      remaining = tonumber(ARGV[5])
    elseif p == ARGV[6] then
      index = tonumber(i)
    end
  end
end
if ARGV[2] == 'set' then
  remaining = tonumber(ARGV[3])
  if ARGV[5] ~= '-' then
    period = ARGV[6]
    index = tonumber(ARGV[7])
  end
else
  remaining = remaining + tonumber(ARGV[3])
end
remaining = math.min(remaining, tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.0f/%s/%.0f', remaining, period, index))
if ARGV[8] ~= '-' then
  redis.call('SET', KEYS[2], string.format('%.0f', remaining), 'EX', 86400)
end
return remaining
";

/// A [`Ledger`] in Redis, on the store's connection.
pub struct RedisLedger {
    connection: RedisConnection,
    step: LuaScript,
    adjust: LuaScript,
}

impl fmt::Debug for RedisLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLedger")
            .field("url", &self.connection.masked_url())
            .finish_non_exhaustive()
    }
}

impl RedisLedger {
    /// A ledger on `connection` (the store's).
    pub fn new(connection: &RedisConnection) -> Self {
        RedisLedger {
            connection: connection.clone(),
            step: LuaScript::new(STEP_LUA),
            adjust: LuaScript::new(ADJUST_LUA),
        }
    }
}

#[async_trait]
impl Ledger for RedisLedger {
    async fn charge(&self, meter: &Meter) -> Result<MeterOutcome, StoreError> {
        let (meter_keys, meter_args) = meter_arguments(meter);
        let keys: Vec<String> = std::iter::once(credits_key(&meter.account))
            .chain(meter_keys)
            .collect();
        let args: Vec<String> = ["-", "0"]
            .map(str::to_owned)
            .into_iter()
            .chain(meter_args)
            .collect();
        let (_, _, _, metered, quota_left, credits_left): (i64, i64, i64, i64, i64, i64) = self
            .connection
            .bounded(self.connection.query_once(self.step.with(&keys, &args)))
            .await?;
        let left = |value: i64| u64::try_from(value).ok();
        Ok(MeterOutcome {
            refused_by: match metered {
                2 => Some(cloro_auth_core::QuotaLimit::Credits),
                3 => Some(cloro_auth_core::QuotaLimit::Quota),
                _ => None,
            },
            quota_left: left(quota_left),
            credits_left: left(credits_left),
        })
    }

    async fn quota_used(
        &self,
        account: &AccountId,
        subject: &QuotaSubject,
        window: &Window,
    ) -> Result<u64, StoreError> {
        let used: Option<u64> = self
            .connection
            .bounded(
                self.connection
                    .query(redis::cmd("GET").arg(quota_key(account, subject, window))),
            )
            .await?;
        Ok(used.unwrap_or(0))
    }

    async fn balance(
        &self,
        account: &AccountId,
        meter_id: &KeyId,
        refill: Option<&RefillWindow>,
    ) -> Result<u64, StoreError> {
        let stored: Option<String> = self
            .connection
            .bounded(
                self.connection.query(
                    redis::cmd("HGET")
                        .arg(credits_key(account))
                        .arg(meter_id.as_str()),
                ),
            )
            .await?;
        Ok(stored
            .as_deref()
            .and_then(parse_balance)
            .map_or(0, |(remaining, period, index)| match refill {
                Some(refill)
                    if period == period_letter(refill.window.period)
                        && index < refill.window.index =>
                {
                    refill.amount
                }
                _ => remaining,
            }))
    }

    async fn adjust_credits(
        &self,
        account: &AccountId,
        meter_id: &KeyId,
        change: CreditsChange,
        refill: Option<&RefillWindow>,
    ) -> Result<u64, StoreError> {
        self.adjust(account, meter_id, change, refill, None).await
    }

    async fn adjust_credits_once(
        &self,
        account: &AccountId,
        meter_id: &KeyId,
        change: CreditsChange,
        refill: Option<&RefillWindow>,
        operation: &str,
    ) -> Result<u64, StoreError> {
        self.adjust(account, meter_id, change, refill, Some(operation))
            .await
    }
}

impl RedisLedger {
    async fn adjust(
        &self,
        account: &AccountId,
        meter_id: &KeyId,
        change: CreditsChange,
        refill: Option<&RefillWindow>,
        operation: Option<&str>,
    ) -> Result<u64, StoreError> {
        let (kind, amount) = match change {
            CreditsChange::Set(value) => ("set", value),
            CreditsChange::Add(value) => ("add", value),
        };
        // The operation id is hashed, so any text a caller chose makes a
        // short key name of the account's slot.
        let operation = operation.map(|text| {
            String::from_utf8_lossy(&cloro_auth_core::KeyHash::of(text.as_bytes()).to_hex())
                .into_owned()
        });
        let keys = [
            credits_key(account),
            format!(
                "cloro:{{a:{account}}}:credits_op:{}",
                operation.as_deref().unwrap_or("-")
            ),
        ];
        let mut args = vec![
            meter_id.to_string(),
            kind.to_owned(),
            amount.to_string(),
            MAX_QUOTA_COUNT.to_string(),
        ];
        match refill {
            Some(refill) => args.extend([
                refill.amount.to_string(),
                period_letter(refill.window.period).to_owned(),
                refill.window.index.to_string(),
            ]),
            None => args.extend(["-", "-", "0"].map(str::to_owned)),
        }
        args.push(operation.unwrap_or_else(|| "-".to_owned()));
        // Once: an `add` that ran twice would add twice. (With an operation
        // id a second run would be harmless, but one attempt is enough.)
        self.connection
            .bounded(self.connection.query_once(self.adjust.with(&keys, &args)))
            .await
    }
}

/// `<remaining>/<letter>/<number>`, as the scripts write it.
fn parse_balance(text: &str) -> Option<(u64, &str, i64)> {
    let mut parts = text.split('/');
    let remaining = parts.next()?.parse().ok()?;
    let period = parts.next()?;
    let index = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((remaining, period, index))
}

/// The counter of `subject`'s quota in `window`.
pub(super) fn quota_key(account: &AccountId, subject: &QuotaSubject, window: &Window) -> String {
    let subject = match subject {
        QuotaSubject::Account => "a".to_owned(),
        QuotaSubject::Key(id) => format!("k:{id}"),
    };
    format!(
        "cloro:{{a:{account}}}:quota:{subject}:{}:{}",
        period_letter(window.period),
        window.index
    )
}

/// The hash of an account's credit balances.
pub(super) fn credits_key(account: &AccountId) -> String {
    format!("cloro:{{a:{account}}}:credits")
}

#[cfg(test)]
mod tests {
    use cloro_auth_core::wire::QuotaPeriod;

    use super::*;

    #[test]
    fn every_key_of_a_meter_is_in_the_account_slot() {
        let account = AccountId::new("acct_9").unwrap();
        let window =
            Window::containing(QuotaPeriod::Month, "2026-05-05T00:00:00Z".parse().unwrap());
        let key = KeyId::new("key_1").unwrap();
        assert_eq!(
            quota_key(&account, &QuotaSubject::Key(key), &window),
            format!("cloro:{{a:acct_9}}:quota:k:key_1:m:{}", window.index)
        );
        assert_eq!(credits_key(&account), "cloro:{a:acct_9}:credits");
        assert_eq!(parse_balance("12/d/20500"), Some((12, "d", 20_500)));
        assert_eq!(parse_balance("12/d"), None);
    }
}
