//! The generic cell rate algorithm (GCRA) of SPEC §5, as one pure function
//! shared by the in-process limiter and the Redis script, so both make the
//! same decisions and report the same header values.
//!
//! A policy of `requests` per `per_seconds` with burst `B` has an emission
//! interval `T = per_seconds / requests` and a tolerance `τ = (B − 1)·T`. The
//! only state is the theoretical arrival time `tat`. A request at `now` is
//! allowed when `max(tat, now) − now ≤ τ`, and then `tat` becomes
//! `max(tat, now) + T`. Requests are therefore spread evenly instead of all
//! being allowed at the start of a window.

use core::num::NonZeroU64;

use cloro_auth_core::wire::RateLimitPolicy;

const NANOS_PER_SECOND: i128 = 1_000_000_000;
const MICROS_PER_SECOND: i128 = 1_000_000;

/// A policy in integer time units: nanoseconds in process, microseconds in
/// Redis (whose Lua numbers are doubles: microseconds since the epoch stay
/// below 2^53 and so are exact, nanoseconds would not be).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcraParams {
    /// `T`: time units per request.
    pub emission_interval: i64,
    /// `τ`: how far `tat` may run ahead of now and still allow a request.
    pub tolerance: i64,
    /// Time units per second: 10⁹ (nanoseconds) or 10⁶ (microseconds).
    pub units_per_second: i64,
    /// `requests` of the policy: the `X-RateLimit-Limit` value.
    pub limit: u32,
    /// `per_seconds` of the policy: the window of `RateLimit-Policy`.
    pub window_seconds: u32,
}

impl GcraParams {
    /// The parameters of `policy` in nanoseconds. `T` is rounded up to a
    /// whole unit, so rounding can only make the limit stricter, never looser.
    pub fn of(policy: &RateLimitPolicy) -> Self {
        Self::in_units(policy, NANOS_PER_SECOND)
    }

    /// The parameters of `policy` in microseconds, for the Redis script.
    pub fn of_in_microseconds(policy: &RateLimitPolicy) -> Self {
        Self::in_units(policy, MICROS_PER_SECOND)
    }

    fn in_units(policy: &RateLimitPolicy, units_per_second: i128) -> Self {
        let requests = i128::from(policy.requests.get());
        let period = i128::from(policy.per_seconds.get()) * units_per_second;
        let emission_interval = ((period + requests - 1) / requests).max(1);
        let burst = i128::from(policy.effective_burst().get());
        let tolerance = emission_interval * (burst - 1);
        GcraParams {
            emission_interval: saturate(emission_interval),
            tolerance: saturate(tolerance),
            units_per_second: saturate(units_per_second),
            limit: policy.requests.get(),
            window_seconds: policy.per_seconds.get(),
        }
    }
}

fn saturate(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The values of the rate-limit headers after a step: the policy and what
/// is left of the allowance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateState {
    /// `X-RateLimit-Limit`.
    pub limit: u32,
    /// The policy's window in seconds (`RateLimit-Policy: w=`).
    pub window_seconds: u32,
    /// Requests allowed right now, after this one (0 when refused).
    pub remaining: u32,
    /// Whole seconds until the allowance is full again, rounded up.
    pub reset_seconds: u64,
}

/// The outcome of one GCRA step. A refusal always carries its wait, so no
/// caller has to make one up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    /// The request may proceed; it took one unit of the allowance.
    Allowed {
        /// The header values after this request.
        state: RateState,
    },
    /// The request is refused; nothing was taken.
    Refused {
        /// The header values (`remaining` is 0).
        state: RateState,
        /// `Retry-After`: whole seconds until one more request is allowed,
        /// rounded up.
        retry_after: NonZeroU64,
    },
}

impl RateDecision {
    /// The header values, allowed or refused.
    pub fn state(&self) -> RateState {
        match self {
            RateDecision::Allowed { state } | RateDecision::Refused { state, .. } => *state,
        }
    }

    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, RateDecision::Allowed { .. })
    }
}

/// One GCRA step: the decision, and the `tat` to store after it (the one
/// given, when refused). `tat` and `now` are in the params' units; `tat`
/// is 0 (or anything ≤ `now`) for a subject with no state.
pub fn decide(tat: i64, now: i64, params: &GcraParams) -> (RateDecision, i64) {
    let base = tat.max(now);
    let ahead = i128::from(base) - i128::from(now);
    let interval = i128::from(params.emission_interval);
    let tolerance = i128::from(params.tolerance);
    if ahead > tolerance {
        let state = RateState {
            limit: params.limit,
            window_seconds: params.window_seconds,
            remaining: 0,
            reset_seconds: ceil_seconds(ahead, params),
        };
        // At least one unit ahead of the tolerance, which rounds up to at
        // least a second; `MIN` only spells that out for the type.
        let retry_after =
            NonZeroU64::new(ceil_seconds(ahead - tolerance, params)).unwrap_or(NonZeroU64::MIN);
        return (RateDecision::Refused { state, retry_after }, tat);
    }
    let new_tat = base.saturating_add(params.emission_interval);
    let used = ahead + interval;
    let remaining = (tolerance + interval - used) / interval;
    let state = RateState {
        limit: params.limit,
        window_seconds: params.window_seconds,
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        reset_seconds: ceil_seconds(used, params),
    };
    (RateDecision::Allowed { state }, new_tat)
}

fn ceil_seconds(units: i128, params: &GcraParams) -> u64 {
    let per_second = i128::from(params.units_per_second.max(1));
    let seconds = (units.max(0) + per_second - 1) / per_second;
    u64::try_from(seconds).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use core::num::NonZeroU32;

    use super::*;

    fn policy(requests: u32, per_seconds: u32, burst: Option<u32>) -> GcraParams {
        let mut policy = RateLimitPolicy::new(
            NonZeroU32::new(requests).unwrap(),
            NonZeroU32::new(per_seconds).unwrap(),
        );
        policy.burst = burst.and_then(NonZeroU32::new);
        GcraParams::of(&policy)
    }

    /// The wait of a refusal; `None` when allowed.
    fn retry_after(decision: &RateDecision) -> Option<u64> {
        match decision {
            RateDecision::Refused { retry_after, .. } => Some(retry_after.get()),
            RateDecision::Allowed { .. } => None,
        }
    }

    /// Runs `count` requests at `now`, threading `tat` through.
    fn burst_at(tat: &mut i64, now: i64, count: usize, params: &GcraParams) -> Vec<RateDecision> {
        (0..count)
            .map(|_| {
                let (decision, next) = decide(*tat, now, params);
                *tat = next;
                decision
            })
            .collect()
    }

    #[test]
    fn burst_then_refusal_with_exact_headers() {
        let params = policy(10, 60, None);
        let mut tat = 0;
        let now = 1_000 * 1_000_000_000;
        let decisions = burst_at(&mut tat, now, 11, &params);
        let remaining: Vec<u32> = decisions.iter().map(|d| d.state().remaining).collect();
        assert_eq!(remaining, vec![9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0]);
        assert!(decisions[..10].iter().all(RateDecision::is_allowed));
        let refused = decisions[10];
        assert!(!refused.is_allowed());
        // One request every 6 s: the next is allowed 6 s later; full after 60 s.
        assert_eq!(retry_after(&refused), Some(6));
        assert_eq!(refused.state().reset_seconds, 60);
        assert_eq!(decisions[0].state().reset_seconds, 6);
    }

    #[test]
    fn requests_are_spread_evenly_after_the_burst() {
        let params = policy(10, 60, None);
        let mut tat = 0;
        let start = 5_000 * 1_000_000_000i64;
        burst_at(&mut tat, start, 10, &params);
        // 5.9 s later: still nothing; 6 s later: exactly one.
        assert!(!decide(tat, start + 5_900_000_000, &params).0.is_allowed());
        let at_six = burst_at(&mut tat, start + 6_000_000_000, 2, &params);
        assert_eq!(
            (at_six[0].is_allowed(), at_six[1].is_allowed()),
            (true, false)
        );
    }

    #[test]
    fn burst_smaller_than_rate() {
        let params = policy(100, 1, Some(5));
        let mut tat = 0;
        let decisions = burst_at(&mut tat, 1_000_000_000, 6, &params);
        assert_eq!(decisions.iter().filter(|d| d.is_allowed()).count(), 5);
        assert_eq!(retry_after(&decisions[5]), Some(1), "at least one second");
    }

    #[test]
    fn idle_subject_is_full_again() {
        let params = policy(3, 3, None);
        let mut tat = 0;
        burst_at(&mut tat, 10_000_000_000, 3, &params);
        let later = decide(tat, 13_000_000_000, &params).0;
        assert_eq!((later.is_allowed(), later.state().remaining), (true, 2));
    }

    #[test]
    fn microsecond_params_decide_like_nanosecond_ones() {
        let nanos = policy(10, 60, None);
        let policy =
            RateLimitPolicy::new(NonZeroU32::new(10).unwrap(), NonZeroU32::new(60).unwrap());
        let micros = GcraParams::of_in_microseconds(&policy);
        assert_eq!(micros.emission_interval * 1000, nanos.emission_interval);
        let (mut tat_ns, mut tat_us) = (0, 0);
        let now_us = 1_800_000_000_000_000i64;
        let ns = burst_at(&mut tat_ns, now_us * 1000, 11, &nanos);
        let us = burst_at(&mut tat_us, now_us, 11, &micros);
        assert_eq!(ns, us);
    }

    #[test]
    fn rounding_never_allows_more() {
        // 3 per 1 s: T = 333_333_334 ns (rounded up), so 3 fit in one second
        // only after the full second has passed.
        let params = policy(3, 1, Some(1));
        assert_eq!(params.emission_interval, 333_333_334);
        let mut tat = 0;
        let mut allowed = 0;
        for step in 0..100 {
            let now = 1_000_000_000 + step * 10_000_000;
            let (decision, next) = decide(tat, now, &params);
            tat = next;
            allowed += usize::from(decision.is_allowed());
            assert!(decision.state().remaining <= 3);
        }
        assert!(allowed <= 3, "{allowed} in 0.99 s");
    }
}
