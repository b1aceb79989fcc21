//! What a node may still spend of a shared quota while Redis is out of
//! reach (SPEC §11): its share of the last remaining count it saw, never
//! more, and nothing for an allowance it never saw (the caller answers
//! `AUTH_UNAVAILABLE` then, never unlimited).
//!
//! Every charge that Redis answered refreshes the share: what was left,
//! divided by the nodes alive then. During an outage each node spends only
//! its share, so all nodes together spend at most what was left.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use cloro_auth_core::wire::QuotaPeriod;
use cloro_auth_core::{AccountId, KeyId, QuotaLimit};
use dashmap::DashMap;
use jiff::Timestamp;

use super::{Meter, MeterOutcome, QuotaSubject};
use crate::table::KeyedHasher;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ShareOf {
    Quota(QuotaSubject, QuotaPeriod, i64),
    Credits(KeyId),
}

#[derive(Debug)]
struct Share {
    left: AtomicU64,
    /// Until when the share means anything (a quota's period end).
    until: i64,
}

/// Each allowance's share for this node, learnt from Redis's answers.
#[derive(Debug)]
pub(crate) struct FallbackShares {
    shares: DashMap<(AccountId, ShareOf), Share, KeyedHasher>,
    nodes: AtomicU32,
}

impl Default for FallbackShares {
    fn default() -> Self {
        FallbackShares {
            shares: DashMap::with_hasher(KeyedHasher::default()),
            nodes: AtomicU32::new(1),
        }
    }
}

impl FallbackShares {
    /// How many nodes share each allowance (at least 1).
    pub(crate) fn set_nodes(&self, nodes: u32) {
        self.nodes.store(nodes.max(1), Ordering::Relaxed);
    }

    fn put(&self, account: AccountId, of: ShareOf, left: u64, until: i64) {
        let share = left / u64::from(self.nodes.load(Ordering::Relaxed).max(1));
        match self.shares.get(&(account, of)) {
            Some(existing) => existing.left.store(share, Ordering::Release),
            None => {
                self.shares.insert(
                    (account, of),
                    Share {
                        left: AtomicU64::new(share),
                        until,
                    },
                );
            }
        }
    }

    /// Notes what Redis said was left after charging `meter`.
    pub(crate) fn learn(&self, meter: &Meter, outcome: &MeterOutcome) {
        if let (Some(quota), Some(left)) = (&meter.quota, outcome.quota_left) {
            let of = ShareOf::Quota(quota.subject, quota.window.period, quota.window.index);
            self.put(meter.account, of, left, quota.window.end);
        }
        if let (Some(credits), Some(left)) = (&meter.credits, outcome.credits_left) {
            let until = credits.refill.map_or(i64::MAX, |refill| refill.window.end);
            self.put(
                meter.account,
                ShareOf::Credits(credits.meter_id),
                left,
                until,
            );
        }
    }

    /// Charges `meter` to this node's shares; `None` when one of its
    /// allowances was never seen in this period (nothing to go by).
    pub(crate) fn charge(&self, meter: &Meter) -> Option<MeterOutcome> {
        let cost = meter.cost;
        let credits = match &meter.credits {
            Some(credits) => Some(
                self.shares
                    .get(&(meter.account, ShareOf::Credits(credits.meter_id)))?,
            ),
            None => None,
        };
        let quota = match &meter.quota {
            Some(quota) => Some(self.shares.get(&(
                meter.account,
                ShareOf::Quota(quota.subject, quota.window.period, quota.window.index),
            ))?),
            None => None,
        };
        let take = |share: &Share| {
            share
                .left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                    left.checked_sub(cost)
                })
        };
        let left = |share: &Option<dashmap::mapref::one::Ref<'_, (AccountId, ShareOf), Share>>| {
            share
                .as_ref()
                .map(|share| share.left.load(Ordering::Acquire))
        };
        if let Some(share) = &credits
            && take(share).is_err()
        {
            return Some(MeterOutcome {
                refused_by: Some(QuotaLimit::Credits),
                quota_left: left(&quota),
                credits_left: left(&credits),
            });
        }
        if let Some(share) = &quota
            && take(share).is_err()
        {
            if let Some(credits) = &credits {
                credits.left.fetch_add(cost, Ordering::AcqRel);
            }
            return Some(MeterOutcome {
                refused_by: Some(QuotaLimit::Quota),
                quota_left: left(&quota),
                credits_left: left(&credits),
            });
        }
        Some(MeterOutcome {
            refused_by: None,
            quota_left: left(&quota),
            credits_left: left(&credits),
        })
    }

    /// Forgets shares of periods that ended.
    pub(crate) fn forget_ended(&self, now: Timestamp) {
        let now = now.as_second();
        self.shares.retain(|_, share| share.until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::{QuotaMeter, Window};

    #[test]
    fn a_node_spends_only_its_share_and_nothing_it_never_saw() {
        let now: Timestamp = "2026-04-04T00:00:00Z".parse().unwrap();
        let meter = Meter {
            account: AccountId::new("acct_1").unwrap(),
            cost: 1,
            quota: Some(QuotaMeter {
                subject: QuotaSubject::Account,
                limit: 100,
                window: Window::containing(QuotaPeriod::Day, now),
                plan: None,
            }),
            credits: None,
        };
        let shares = FallbackShares::default();
        assert_eq!(shares.charge(&meter), None);
        shares.set_nodes(3);
        shares.learn(
            &meter,
            &MeterOutcome {
                refused_by: None,
                quota_left: Some(31),
                credits_left: None,
            },
        );
        let charged = (0..20)
            .filter(|_| shares.charge(&meter).is_some_and(|o| o.is_charged()))
            .count();
        assert_eq!(charged, 10, "31 left over 3 nodes is 10 each");
    }
}
