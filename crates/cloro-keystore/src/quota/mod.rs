//! Quotas and credits (SPEC §11): how much a key or an account may use per
//! calendar period, and a key's own balance of credits. This module holds
//! the contract of a [`Ledger`] (where those counts live, and the one
//! atomic step that charges a request to them), the calendar periods
//! (`period`), the in-process ledger (`local`) of the embedded and
//! memory stores, and what a node may spend while Redis is out of reach
//! (`fallback`); the Redis one is in `crate::redis`, where the same step
//! runs in the same script as the rate limit.
//!
//! A request is charged its route's cost once it passed the rate limit
//! (SPEC §5 order). It is charged to its quota and its credits together or
//! to neither: a request that either cannot pay for is refused and costs
//! nothing.

mod events;
mod fallback;
mod local;
mod period;

pub use events::QUOTA_EVENT_ACTOR;
pub(crate) use events::{QuotaEvents, crossings, lines_crossed};
pub(crate) use fallback::FallbackShares;
pub use local::{CounterHint, LocalLedger};
pub use period::Window;
pub(crate) use period::period_letter;

use core::fmt;

use async_trait::async_trait;
use cloro_auth_core::wire::{AppliesTo, QuotaPolicy, Refill};
use cloro_auth_core::{AccountId, KeyId, PlanName, QuotaLimit};
use jiff::Timestamp;

use crate::store::{KeyRecord, StoreError};

/// Whose quota counter a request counts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaSubject {
    /// The account's, shared by all its keys.
    Account,
    /// One key's (by its meter id: the first key of its rotation chain).
    Key(KeyId),
}

/// The quota a request counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaMeter {
    /// Whose counter.
    pub subject: QuotaSubject,
    /// Units per period.
    pub limit: u64,
    /// The period the request falls in.
    pub window: Window,
    /// The plan the quota comes from (`details.plan`); `None` for a key's own.
    pub plan: Option<PlanName>,
}

/// Credits refilled to `amount` at the start of each period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefillWindow {
    /// The balance at each period start.
    pub amount: u64,
    /// The current period.
    pub window: Window,
}

impl RefillWindow {
    /// `refill` at `now`.
    pub fn of(refill: &Refill, now: Timestamp) -> Self {
        RefillWindow {
            amount: refill.amount,
            window: Window::containing(refill.interval, now),
        }
    }
}

/// The credits a request spends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreditsMeter {
    /// Whose balance (the first key of the rotation chain).
    pub meter_id: KeyId,
    /// The refill in force, if any.
    pub refill: Option<RefillWindow>,
}

/// What one request must pay for beyond its rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meter {
    /// The account (the Redis ledger keeps its counters in its slot).
    pub account: AccountId,
    /// The route's cost in units (SPEC §11 `[route_costs]`, default 1).
    pub cost: u64,
    /// The quota, if the key or its plan has one.
    pub quota: Option<QuotaMeter>,
    /// The credits, if the key's are limited.
    pub credits: Option<CreditsMeter>,
}

impl Meter {
    /// What a request with `key` at `now` on a route costing `cost` pays,
    /// given its plan's name and quota; `None` when it pays nothing.
    pub fn for_key(
        record: &KeyRecord,
        plan: (PlanName, Option<&QuotaPolicy>),
        cost: u64,
        now: Timestamp,
    ) -> Option<Meter> {
        let (plan_name, plan_quota) = plan;
        // A key's own quota applies to the key unless it says otherwise; a
        // plan's to the account (SPEC §11).
        let quota = match (record.quota, plan_quota) {
            (Some(own), _) => Some((own, own.applies_to_or(AppliesTo::Key), None)),
            (None, Some(plan_quota)) => Some((
                *plan_quota,
                plan_quota.applies_to_or(AppliesTo::Account),
                Some(plan_name),
            )),
            (None, None) => None,
        };
        let quota = quota.map(|(policy, applies_to, plan)| QuotaMeter {
            subject: match applies_to {
                AppliesTo::Account => QuotaSubject::Account,
                AppliesTo::Key => QuotaSubject::Key(record.meter_id()),
            },
            limit: policy.requests,
            window: Window::containing(policy.period, now),
            plan,
        });
        let credits = record.credits_limited.then(|| CreditsMeter {
            meter_id: record.meter_id(),
            refill: record.refill.map(|refill| RefillWindow::of(&refill, now)),
        });
        (quota.is_some() || credits.is_some()).then_some(Meter {
            account: record.account_id,
            cost,
            quota,
            credits,
        })
    }
}

/// What a [`Ledger`] decided for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeterOutcome {
    /// `None`: charged. `Some`: refused by this allowance, nothing charged.
    pub refused_by: Option<QuotaLimit>,
    /// Units left in the quota's period after this request, if it has one.
    pub quota_left: Option<u64>,
    /// Credits left after this request, if they are limited.
    pub credits_left: Option<u64>,
}

impl MeterOutcome {
    /// Whether the request was charged.
    pub fn is_charged(&self) -> bool {
        self.refused_by.is_none()
    }
}

/// A change an admin makes to a balance (`POST /admin/v1/keys/{id}/credits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreditsChange {
    /// The balance becomes this (and counts as this period's refill).
    Set(u64),
    /// This much is added (after a refill that was due).
    Add(u64),
}

/// Where quota counters and credit balances live, and the one atomic step
/// that charges a request to them.
///
/// - **Together or not at all.** `charge` takes the cost from the quota and
///   from the credits only if both can pay; otherwise it changes nothing
///   and says which could not.
/// - **Periods.** A quota counter belongs to its window: a new window starts
///   at 0. A balance remembers the window of its last refill; the first
///   charge or read in a later window sets it to the refill amount (set,
///   not added).
/// - **Never invents.** A balance never written reads as 0, not as the
///   refill or any default; a counter never written reads as 0 used.
#[async_trait]
pub trait Ledger: Send + Sync + fmt::Debug + 'static {
    /// Charges one request.
    async fn charge(&self, meter: &Meter) -> Result<MeterOutcome, StoreError>;

    /// Charges one request at once where that needs no I/O (the
    /// in-process ledger), so the hot path skips the future and its
    /// timeout; `None` where it must go through [`Ledger::charge`].
    fn charge_in_process(&self, _meter: &Meter) -> Option<MeterOutcome> {
        None
    }

    /// [`Ledger::charge_in_process`] with a cached key's [`CounterHint`],
    /// which an in-process ledger may use to find the quota counter
    /// without a map lookup; others ignore it.
    fn charge_in_process_hinted(&self, meter: &Meter, _hint: &CounterHint) -> Option<MeterOutcome> {
        self.charge_in_process(meter)
    }

    /// Units counted against `subject`'s quota in `window`.
    async fn quota_used(
        &self,
        account: &AccountId,
        subject: &QuotaSubject,
        window: &Window,
    ) -> Result<u64, StoreError>;

    /// The balance of `meter_id`, refilled if a refill is due.
    async fn balance(
        &self,
        account: &AccountId,
        meter_id: &KeyId,
        refill: Option<&RefillWindow>,
    ) -> Result<u64, StoreError>;

    /// Changes the balance of `meter_id` and answers the new one, capped at
    /// [`MAX_QUOTA_COUNT`](cloro_auth_core::wire::MAX_QUOTA_COUNT).
    async fn adjust_credits(
        &self,
        account: &AccountId,
        meter_id: &KeyId,
        change: CreditsChange,
        refill: Option<&RefillWindow>,
    ) -> Result<u64, StoreError>;

    /// [`Ledger::adjust_credits`] at most once per `operation` (for 24 h):
    /// a retry of a change whose first attempt timed out after it was
    /// applied answers the first result instead of adding again. The
    /// default suits ledgers whose `adjust_credits` never fails after
    /// applying a change (the in-process one).
    async fn adjust_credits_once(
        &self,
        account: &AccountId,
        meter_id: &KeyId,
        change: CreditsChange,
        refill: Option<&RefillWindow>,
        _operation: &str,
    ) -> Result<u64, StoreError> {
        self.adjust_credits(account, meter_id, change, refill).await
    }

    /// Makes the counts durable where the ledger keeps them in process (the
    /// embedded store); the verifier calls it every second and at shutdown.
    async fn persist(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Forgets counters of periods that ended before `now` where the ledger
    /// must do that itself (Redis lets them expire).
    fn forget_ended(&self, _now: Timestamp) {}
}
