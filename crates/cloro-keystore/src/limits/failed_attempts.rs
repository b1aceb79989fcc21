//! The failed-attempt guard (SPEC §4 `TOO_MANY_FAILED_ATTEMPTS`, §9): a GCRA
//! allowance of unknown keys (and wrong admin tokens) per client address.
//!
//! The allowance is charged *before* a lookup starts and given back when
//! the key turns out to be valid, so a client that abandons its request
//! mid-lookup has still paid, and N concurrent unknown keys from one
//! address make at most the allowance in store lookups. IPv6 addresses
//! count per prefix (a /64 by default: one customer line holds 2^64
//! addresses). The table of addresses is bounded in bytes and forgets the
//! least recently charged address first.

use std::net::IpAddr;

use cloro_auth_core::wire::RateLimitPolicy;
use cloro_auth_core::{AuthError, KeyHash};

use super::gcra::{self, GcraParams, RateDecision};
use super::subject::Subject;
use crate::table::BoundedTable;

/// One attempt taken from an allowance, to give back if the key was valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a charge for a valid key is refunded"]
pub struct Charge {
    before: i64,
    after: i64,
}

/// The allowance of every client address on this node.
#[derive(Debug)]
pub struct FailedAttempts {
    /// Theoretical arrival time (ns) per address subject.
    tats: BoundedTable<i64>,
    params: GcraParams,
    ipv6_prefix: u8,
}

impl FailedAttempts {
    /// `policy` per address, IPv6 addresses grouped by their first
    /// `ipv6_prefix` bits (clamped to 1..=128), the table within `budget`
    /// bytes.
    pub fn new(policy: &RateLimitPolicy, ipv6_prefix: u8, budget: usize) -> Self {
        FailedAttempts {
            tats: BoundedTable::with_budget(budget),
            params: GcraParams::of(policy),
            ipv6_prefix: ipv6_prefix.clamp(1, 128),
        }
    }

    /// The subject an address is counted under: IPv4 as it is (an
    /// IPv4-mapped IPv6 address is its IPv4 address), IPv6 by its prefix.
    pub fn subject(&self, client: IpAddr) -> Subject {
        let mut input = [0u8; 26];
        input[..9].copy_from_slice(b"cloro-ip\0");
        let len = match client.to_canonical() {
            IpAddr::V4(v4) => {
                input[9..13].copy_from_slice(&v4.octets());
                13
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = u128::MAX << (128 - u32::from(self.ipv6_prefix));
                input[9..25].copy_from_slice(&(bits & mask).to_be_bytes());
                input[25] = self.ipv6_prefix;
                26
            }
        };
        KeyHash::of(&input[..len])
    }

    /// Takes one attempt from `subject`'s allowance.
    ///
    /// # Errors
    /// `TOO_MANY_FAILED_ATTEMPTS` with the wait when none is left; nothing
    /// is taken then.
    pub fn charge(&self, subject: &Subject, now: i64) -> Result<Charge, AuthError> {
        let params = &self.params;
        self.tats.upsert(
            subject,
            || 0,
            |tat| match gcra::decide(*tat, now, params) {
                (RateDecision::Allowed { .. }, next) => {
                    let charge = Charge {
                        before: *tat,
                        after: next,
                    };
                    *tat = next;
                    Ok(charge)
                }
                (RateDecision::Refused { retry_after, .. }, _) => {
                    Err(AuthError::TooManyFailedAttempts {
                        retry_after: retry_after.get(),
                    })
                }
            },
        )
    }

    /// Gives back an attempt charged to `subject` (the key was valid):
    /// exactly as it was if nothing was charged since, else one interval.
    pub fn refund(&self, subject: &Subject, charge: Charge) {
        let interval = self.params.emission_interval;
        self.tats.get_mut(subject, |tat| {
            *tat = if *tat == charge.after {
                charge.before
            } else {
                tat.saturating_sub(interval)
            };
        });
    }

    /// Whether `subject` has used up its allowance, without taking any.
    ///
    /// # Errors
    /// `TOO_MANY_FAILED_ATTEMPTS` with the wait.
    pub fn check(&self, subject: &Subject, now: i64) -> Result<(), AuthError> {
        let refused = self.tats.get_mut(subject, |tat| {
            match gcra::decide(*tat, now, &self.params).0 {
                RateDecision::Refused { retry_after, .. } => Some(retry_after.get()),
                RateDecision::Allowed { .. } => None,
            }
        });
        match refused.flatten() {
            Some(retry_after) => Err(AuthError::TooManyFailedAttempts { retry_after }),
            None => Ok(()),
        }
    }

    /// Forgets addresses whose allowance is full again: for GCRA a `tat`
    /// in the past is the same as no state.
    pub fn forget_idle(&self, now: i64) {
        self.tats.retain(|_, tat| *tat > now);
    }

    /// Addresses tracked.
    pub fn tracked(&self) -> usize {
        self.tats.len()
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    const SECOND: i64 = 1_000_000_000;

    fn guard(requests: u32, prefix: u8) -> FailedAttempts {
        let policy = RateLimitPolicy::new(
            NonZeroU32::new(requests).unwrap(),
            NonZeroU32::new(60).unwrap(),
        );
        FailedAttempts::new(&policy, prefix, 1 << 20)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn charges_until_spent_and_refunds() {
        let guard = guard(2, 64);
        let subject = guard.subject(ip("192.0.2.1"));
        let now = 100 * SECOND;
        let first = guard.charge(&subject, now).unwrap();
        let second = guard.charge(&subject, now).unwrap();
        assert!(guard.check(&subject, now).is_err());
        assert!(matches!(
            guard.charge(&subject, now),
            Err(AuthError::TooManyFailedAttempts { retry_after: 30 })
        ));
        // The last charge given back exactly, an earlier one by an interval.
        guard.refund(&subject, second);
        guard.refund(&subject, first);
        guard.check(&subject, now).unwrap();
        let _ = guard.charge(&subject, now).unwrap();
        let _ = guard.charge(&subject, now).unwrap();
        assert!(guard.charge(&subject, now).is_err());
    }

    #[test]
    fn a_refunded_charge_leaves_no_trace_even_across_a_clock_step() {
        let guard = guard(2, 64);
        let subject = guard.subject(ip("192.0.2.1"));
        // Charged and given back at a later time, then used at an earlier
        // one (the wall clock stepped back): nothing is owed.
        let charge = guard.charge(&subject, 1_000 * SECOND).unwrap();
        guard.refund(&subject, charge);
        let _ = guard.charge(&subject, 10 * SECOND).unwrap();
        let _ = guard.charge(&subject, 10 * SECOND).unwrap();
    }

    #[test]
    fn ipv6_counts_per_prefix() {
        let guard64 = guard(1, 64);
        let a = guard64.subject(ip("2001:db8:1:2:aaaa::1"));
        let b = guard64.subject(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        let c = guard64.subject(ip("2001:db8:1:3::1"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let guard128 = guard(1, 128);
        assert_ne!(
            guard128.subject(ip("2001:db8::1")),
            guard128.subject(ip("2001:db8::2"))
        );
        assert_eq!(
            guard64.subject(ip("::ffff:192.0.2.1")),
            guard64.subject(ip("192.0.2.1"))
        );
        assert_ne!(
            guard64.subject(ip("192.0.2.1")),
            guard64.subject(ip("192.0.2.2"))
        );
    }

    #[test]
    fn idle_addresses_are_forgotten() {
        let guard = guard(60, 64);
        let subject = guard.subject(ip("192.0.2.1"));
        let _ = guard.charge(&subject, 0).unwrap();
        guard.forget_idle(SECOND / 2);
        assert_eq!(guard.tracked(), 1);
        guard.forget_idle(2 * SECOND);
        assert_eq!(guard.tracked(), 0);
    }
}
