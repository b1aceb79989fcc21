//! `RedisRateLimiter`: rate limits that hold exactly across every node
//! (SPEC §5), one Redis round trip per request.
//!
//! Each subject's GCRA state is one string, `cloro:rl:{<64 hex>}`: its
//! theoretical arrival time in microseconds. The hash tag keeps the key in
//! one Redis Cluster slot, so the script that reads and writes it runs on
//! one server. The script takes the time from that server (`TIME`), so
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

use super::connection::{LuaScript, RedisConnection};
use crate::limits::{GcraParams, RateDecision, RateState, SharedRateLimiter, Subject, gcra_decide};
use crate::log_limit::LogLimit;
use crate::store::StoreError;

/// One GCRA step in Redis. `KEYS[1]` the subject's key; `ARGV[1]` the
/// emission interval and `ARGV[2]` the tolerance, both in microseconds.
/// Returns `{allowed (1 or 0), now, tat before the step}`, microseconds.
///
/// Lua numbers are doubles: every value here stays below 2^53 (see
/// [`MAX_EXACT_TOLERANCE_US`]), so the arithmetic is exact. Numbers are
/// written with `%.0f` because Redis would turn a bare large number into
/// exponent notation. Stored text that is not a number reads as no state:
/// the next allowed request then overwrites it, so it cannot block a key.
const GCRA_LUA: &str = r"
-- Redis before 5 replicates scripts verbatim, which TIME would make
-- non-deterministic; later versions replicate effects and need nothing.
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local stored = redis.call('GET', KEYS[1])
local tat = 0
if stored then tat = tonumber(stored) or 0 end
local base = math.max(tat, now)
if base - now > tolerance then
  return {0, now, tat}
end
local new_tat = base + interval
local ttl = math.max(1, math.ceil((new_tat - now) / 1000))
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', string.format('%.0f', ttl))
return {1, now, tat}
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
}

impl fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("url", &self.connection.masked_url())
            .field("timeout", &self.connection.options().command_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    /// A limiter on `connection`, usually the store's
    /// ([`RedisStore::connection`](crate::RedisStore::connection)), each
    /// call bounded by its command timeout.
    pub fn new(connection: &RedisConnection) -> Self {
        RedisRateLimiter {
            connection: connection.clone(),
            script: LuaScript::new(GCRA_LUA),
        }
    }

    /// One run of the script. It is retried if the first attempt found the
    /// connection dropped (Redis restarted since the last call): should
    /// that attempt have run after all, the retry only spends one more unit
    /// of allowance: stricter, never looser.
    async fn step(&self, subject: &Subject, params: &GcraParams) -> Result<Step, StoreError> {
        let keys = [limit_key(subject)];
        let args = [
            params.emission_interval.to_string(),
            params.tolerance.to_string(),
        ];
        let (allowed, now, tat): (i64, i64, i64) = self
            .connection
            .query(self.script.with(&keys, &args))
            .await?;
        Ok(Step {
            allowed: allowed == 1,
            now,
            tat,
        })
    }
}

#[async_trait]
impl SharedRateLimiter for RedisRateLimiter {
    async fn check(
        &self,
        subject: &Subject,
        policy: &RateLimitPolicy,
    ) -> Result<RateDecision, StoreError> {
        let params = script_params(policy);
        let step = self.connection.bounded(self.step(subject, &params)).await?;
        Ok(decision_of(&step, &params))
    }
}

/// What the script saw and decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Step {
    allowed: bool,
    now: i64,
    tat: i64,
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

/// The Redis key of `subject`'s allowance.
fn limit_key(subject: &Subject) -> String {
    format!(
        "cloro:rl:{{{}}}",
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
    fn keys_carry_the_subject_as_a_hash_tag() {
        let key = limit_key(&KeyHash::from_bytes([0xab; 32]));
        assert_eq!(key, format!("cloro:rl:{{{}}}", "ab".repeat(32)));
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
