//! `RedisRateLimiter`: rate limits that hold exactly across every node
//! (SPEC §5), one Redis round trip per request.
//!
//! Each subject's GCRA state is one string,
//! `cloro:{a:<account>}:rl:<64 hex>`: its theoretical arrival time in
//! microseconds. The hash tag keeps it in its account's Redis Cluster slot,
//! with the account's quota counters and credit balances, so the one
//! script that takes a request's rate limit, quota and credits runs on one
//! server, atomically (SPEC §11). The script takes the time from that server (`TIME`), so
//! nodes whose clocks disagree still share one clock per subject, and it
//! applies the allow rule of [`gcra_decide`]; the header values are then
//! computed in Rust by `decide` itself from what the script saw, so they are
//! the same as in local mode. The key expires once the allowance is full
//! again, so idle subjects cost no memory.
//!
//! Every call answers within the connection's command timeout, also when
//! Redis hangs; the verifier then limits on its own node (SPEC §8). The
//! connection, shared with the store, reconnects in the background.

use core::fmt;
use core::num::NonZeroU64;

use async_trait::async_trait;
use cloro_auth_core::wire::RateLimitPolicy;
use cloro_auth_core::{AccountId, QuotaLimit};

use super::connection::{LuaScript, RedisConnection};
use super::ledger::{credits_key, quota_key};
use crate::limits::{GcraParams, RateDecision, RateState, SharedRateLimiter, Subject, gcra_decide};
use crate::log_limit::LogLimit;
use crate::quota::{Meter, MeterOutcome, period_letter};
use crate::store::StoreError;

/// One GCRA step in Redis and, when the request has a meter, its quota and
/// credits (SPEC §11) in the same atomic run: one round trip, one slot.
///
/// `KEYS[1]` the subject's allowance; `ARGV[1]` the emission interval and
/// `ARGV[2]` the tolerance, both in microseconds (`ARGV[1]` = `-`: no rate
/// limit, only the meter). With a meter, `ARGV[3]`
/// is the cost; the quota (`ARGV[4]` its limit or `-`, `ARGV[5]` when its
/// counter expires, Unix seconds) counts in `KEYS[2]`, and the credits
/// (`ARGV[6]` the meter id or `-`, `ARGV[7]` the refill amount or `-`,
/// `ARGV[8]` and `ARGV[9]` the refill period's letter and number) in the
/// hash `KEYS[3]`, as `<remaining>/<period letter or ->/<period number>`.
///
/// Returns `{allowed (1 or 0), now, tat before the step, meter, quota left,
/// credits left}`: `meter` is 0 without one, 1 charged, 2 refused for
/// credits, 3 refused for quota; a left of -1 means none applies. A request
/// refused by the rate limit touches no meter; one refused by a meter has
/// still used its rate limit (SPEC §5 order) and is charged nothing else.
///
/// Lua numbers are doubles: every value here stays below 2^53 (see
/// [`MAX_EXACT_TOLERANCE_US`] and `MAX_QUOTA_COUNT`), so the arithmetic is
/// exact. Numbers are written with `%.0f` because Redis would turn a bare
/// large number into exponent notation. Stored text that is not a number
/// reads as no state for the allowance (the next allowed request then
/// overwrites it) and as no credits for a balance (never invented).
pub(super) const STEP_LUA: &str = r"
-- Redis before 5 replicates scripts verbatim, which TIME would make
-- non-deterministic; later versions replicate effects and need nothing.
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = 0
if ARGV[1] ~= '-' then
  local stored = redis.call('GET', KEYS[1])
  if stored then tat = tonumber(stored) or 0 end
  local base = math.max(tat, now)
  if base - now > tolerance then
    return {0, now, tat, 0, -1, -1}
  end
  local new_tat = base + interval
  local ttl = math.max(1, math.ceil((new_tat - now) / 1000))
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', string.format('%.0f', ttl))
end
if ARGV[3] == '-' then
  return {1, now, tat, 0, -1, -1}
end
local cost = tonumber(ARGV[3])
local quota_left = -1
if ARGV[4] ~= '-' then
  local used = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  quota_left = math.max(0, tonumber(ARGV[4]) - used)
end
local credits_left = -1
local period = ARGV[8]
local index = tonumber(ARGV[9])
-- Only a balance that was written is written back: a free request must
-- not start one, which the next period would refill (inventing credits).
local written = false
if ARGV[6] ~= '-' then
  credits_left = 0
  local balance = redis.call('HGET', KEYS[3], ARGV[6])
  if balance then
    local r, p, i = string.match(balance, '^(%d+)/([dm%-])/(%-?%d+)$')
    if r then
      written = true
      credits_left = tonumber(r)
      if ARGV[7] == '-' then
        period = p
        index = tonumber(i)
      elseif p == ARGV[8] and tonumber(i) < tonumber(ARGV[9]) then
        -- A later period has started: set to the refill, not added.
        credits_left = tonumber(ARGV[7])
      elseif p == ARGV[8] then
        index = tonumber(i)
      end
    end
  end
end
if credits_left >= 0 and credits_left < cost then
  return {1, now, tat, 2, quota_left, credits_left}
end
if quota_left >= 0 and quota_left < cost then
  return {1, now, tat, 3, quota_left, credits_left}
end
if quota_left >= 0 then
  redis.call('INCRBY', KEYS[2], cost)
  redis.call('EXPIREAT', KEYS[2], ARGV[5])
  quota_left = quota_left - cost
end
if credits_left >= 0 then
  credits_left = credits_left - cost
end
if written then
  redis.call('HSET', KEYS[3], ARGV[6], string.format('%.0f/%s/%.0f', credits_left, period, index))
end
return {1, now, tat, 1, quota_left, credits_left}
";

/// The largest tolerance sent to the script (2^50 µs, about 35 years). The
/// emission interval is at most `u32::MAX` seconds (< 2^52 µs) and now is
/// about 2^50.6 µs, so `now + tolerance + interval` stays below 2^53 for
/// decades. A burst that would take longer than this to refill is cut to
/// it: only absurd policies are affected, and only ever made stricter.
const MAX_EXACT_TOLERANCE_US: i64 = 1 << 50;

/// A [`SharedRateLimiter`] in Redis, on a [`RedisConnection`] shared with
/// the store.
pub struct RedisRateLimiter {
    connection: RedisConnection,
    script: LuaScript,
    heartbeat: LuaScript,
}

impl fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("url", &self.connection.masked_url())
            .field("timeout", &self.connection.options().command_timeout)
            .finish_non_exhaustive()
    }
}

/// Notes a node as alive and counts the nodes seen in the last
/// [`NODE_TTL_SECONDS`]: `KEYS[1]` the set, `ARGV[1]` the node, `ARGV[2]`
/// the time to live. The time is the Redis server's.
const HEARTBEAT_LUA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return redis.call('ZCARD', KEYS[1])
";

/// A node that has not said it is alive for this long is not counted.
const NODE_TTL_SECONDS: u32 = 30;

impl RedisRateLimiter {
    /// A limiter on `connection`, usually the store's
    /// ([`RedisStore::connection`](crate::RedisStore::connection)), each
    /// call bounded by its command timeout.
    pub fn new(connection: &RedisConnection) -> Self {
        RedisRateLimiter {
            connection: connection.clone(),
            script: LuaScript::new(STEP_LUA),
            heartbeat: LuaScript::new(HEARTBEAT_LUA),
        }
    }

    /// One run of the script. Without a meter it is retried if the first
    /// attempt found the connection dropped (Redis restarted since the last
    /// call): should that attempt have run after all, the retry only spends
    /// one more unit of allowance, stricter, never looser. With a meter it
    /// runs once, since a second run would charge quota and credits twice.
    async fn step(
        &self,
        account: &AccountId,
        subject: &Subject,
        params: &GcraParams,
        meter: Option<&Meter>,
    ) -> Result<Step, StoreError> {
        let mut keys = vec![limit_key(account, subject)];
        let mut args = vec![
            params.emission_interval.to_string(),
            params.tolerance.to_string(),
        ];
        match meter {
            None => args.push("-".to_owned()),
            Some(meter) => {
                let (meter_keys, meter_args) = meter_arguments(meter);
                keys.extend(meter_keys);
                args.extend(meter_args);
            }
        }
        let request = self.script.with(&keys, &args);
        let (allowed, now, tat, metered, quota_left, credits_left): (i64, i64, i64, i64, i64, i64) =
            if meter.is_some() {
                self.connection.query_once(request).await?
            } else {
                self.connection.query(request).await?
            };
        let left = |value: i64| u64::try_from(value).ok();
        let outcome = match metered {
            1..=3 => Some(MeterOutcome {
                refused_by: match metered {
                    2 => Some(QuotaLimit::Credits),
                    3 => Some(QuotaLimit::Quota),
                    _ => None,
                },
                quota_left: left(quota_left),
                credits_left: left(credits_left),
            }),
            _ => None,
        };
        Ok(Step {
            allowed: allowed == 1,
            now,
            tat,
            outcome,
        })
    }
}

/// The keys and arguments after the allowance's (see [`STEP_LUA`]).
pub(super) fn meter_arguments(meter: &Meter) -> (Vec<String>, Vec<String>) {
    let keys = vec![
        match &meter.quota {
            Some(quota) => quota_key(&meter.account, &quota.subject, &quota.window),
            // Unused, but named in the account's slot like the others.
            None => credits_key(&meter.account),
        },
        credits_key(&meter.account),
    ];
    let mut args = vec![meter.cost.to_string()];
    match &meter.quota {
        Some(quota) => {
            args.push(quota.limit.to_string());
            // Kept a day past the period, for reads at its very end.
            args.push((quota.window.end + 86_400).to_string());
        }
        None => args.extend(["-".to_owned(), "0".to_owned()]),
    }
    match &meter.credits {
        Some(credits) => {
            args.push(credits.meter_id.to_string());
            match &credits.refill {
                Some(refill) => args.extend([
                    refill.amount.to_string(),
                    period_letter(refill.window.period).to_owned(),
                    refill.window.index.to_string(),
                ]),
                None => args.extend(["-".to_owned(), "-".to_owned(), "0".to_owned()]),
            }
        }
        None => args.extend(["-", "-", "-", "0"].map(str::to_owned)),
    }
    (keys, args)
}

#[async_trait]
impl SharedRateLimiter for RedisRateLimiter {
    async fn check(
        &self,
        account: &AccountId,
        subject: &Subject,
        policy: &RateLimitPolicy,
        meter: Option<&Meter>,
    ) -> Result<(RateDecision, Option<MeterOutcome>), StoreError> {
        let params = script_params(policy);
        let step = self
            .connection
            .bounded(self.step(account, subject, &params, meter))
            .await?;
        Ok((decision_of(&step, &params), step.outcome))
    }

    async fn live_nodes(&self, node_id: u64) -> Result<u32, StoreError> {
        let keys = ["cloro:{nodes}".to_owned()];
        let args = [format!("{node_id:016x}"), NODE_TTL_SECONDS.to_string()];
        let count: u32 = self
            .connection
            .bounded(self.connection.query(self.heartbeat.with(&keys, &args)))
            .await?;
        Ok(count.max(1))
    }
}

/// What the script saw and decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Step {
    allowed: bool,
    now: i64,
    tat: i64,
    outcome: Option<MeterOutcome>,
}

/// `policy` in microseconds, its tolerance capped so Lua stays exact.
fn script_params(policy: &RateLimitPolicy) -> GcraParams {
    let mut params = GcraParams::of_in_microseconds(policy);
    params.tolerance = params.tolerance.min(MAX_EXACT_TOLERANCE_US);
    params
}

/// The header values of `step`, from the same function as local mode. The
/// script's verdict is the one that counted (it wrote, or did not write,
/// the new state), so on a disagreement it wins and the values are made to
/// fit it.
fn decision_of(step: &Step, params: &GcraParams) -> RateDecision {
    let (decision, _) = gcra_decide(step.tat, step.now, params);
    if decision.is_allowed() == step.allowed {
        return decision;
    }
    // Checked on every rate-limited request: a systematic disagreement
    // would otherwise log once per request (SPEC §9).
    static DISAGREEMENT: LogLimit = LogLimit::per_second();
    if let Some(suppressed) = DISAGREEMENT.admit() {
        tracing::error!(
            script = step.allowed,
            local = decision.is_allowed(),
            suppressed,
            "the redis rate-limit script and gcra disagree; following the script"
        );
    }
    let state = RateState {
        remaining: 0,
        ..decision.state()
    };
    if step.allowed {
        RateDecision::Allowed { state }
    } else {
        // gcra saw room, so it has no wait to offer: the shortest one.
        RateDecision::Refused {
            state,
            retry_after: NonZeroU64::MIN,
        }
    }
}

/// The Redis key of `subject`'s allowance, in its account's slot so that
/// the quota and credits of the same request are in reach of one script.
fn limit_key(account: &AccountId, subject: &Subject) -> String {
    format!(
        "cloro:{{a:{account}}}:rl:{}",
        String::from_utf8_lossy(&subject.to_hex())
    )
}

#[cfg(test)]
mod tests {
    use core::num::NonZeroU32;

    use cloro_auth_core::KeyHash;

    use super::*;

    fn policy(requests: u32, per_seconds: u32, burst: Option<u32>) -> RateLimitPolicy {
        let mut policy = RateLimitPolicy::new(
            NonZeroU32::new(requests).unwrap(),
            NonZeroU32::new(per_seconds).unwrap(),
        );
        policy.burst = burst.and_then(NonZeroU32::new);
        policy
    }

    /// The wait of a refusal; `None` when allowed.
    fn retry_after(decision: &RateDecision) -> Option<u64> {
        match decision {
            RateDecision::Refused { retry_after, .. } => Some(retry_after.get()),
            RateDecision::Allowed { .. } => None,
        }
    }

    #[test]
    fn keys_carry_the_account_as_a_hash_tag() {
        let account = AccountId::new("acct_1").unwrap();
        let key = limit_key(&account, &KeyHash::from_bytes([0xab; 32]));
        assert_eq!(key, format!("cloro:{{a:acct_1}}:rl:{}", "ab".repeat(32)));
    }

    #[test]
    fn script_params_are_microseconds_and_stay_exact_in_lua() {
        let params = script_params(&policy(10, 60, None));
        assert_eq!(
            (params.emission_interval, params.tolerance),
            (6_000_000, 54_000_000)
        );
        assert_eq!(params.units_per_second, 1_000_000);
        let absurd = script_params(&policy(1, u32::MAX, Some(u32::MAX)));
        assert_eq!(absurd.tolerance, MAX_EXACT_TOLERANCE_US);
        let now_in_2080 = 3_500_000_000_000_000i64;
        assert!(now_in_2080 + absurd.tolerance + absurd.emission_interval < 1 << 53);
    }

    #[test]
    fn decisions_follow_gcra_and_the_script_wins_a_disagreement() {
        let params = script_params(&policy(10, 60, None));
        let now = 1_800_000_000_000_000;
        let fresh = decision_of(
            &Step {
                allowed: true,
                now,
                tat: 0,
                outcome: None,
            },
            &params,
        );
        let state = fresh.state();
        assert_eq!(
            (fresh.is_allowed(), state.remaining, state.reset_seconds),
            (true, 9, 6)
        );
        let full = Step {
            allowed: false,
            now,
            tat: now + 60_000_000,
            outcome: None,
        };
        let refused = decision_of(&full, &params);
        assert_eq!(retry_after(&refused), Some(6));
        // The script refused what gcra would allow: refused, with a wait.
        let overruled = decision_of(&Step { tat: 0, ..full }, &params);
        assert!(!overruled.is_allowed() && overruled.state().remaining == 0);
        assert_eq!(retry_after(&overruled), Some(1));
        // The script allowed what gcra would refuse: allowed, nothing left.
        let overruled = decision_of(
            &Step {
                allowed: true,
                ..full
            },
            &params,
        );
        assert!(overruled.is_allowed() && retry_after(&overruled).is_none());
        assert_eq!(overruled.state().remaining, 0);
    }
}
