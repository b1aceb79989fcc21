//! Quota events (SPEC §12): `quota.warning` when a period's use reaches
//! 80 % of its quota, `quota.exhausted` when it reaches all of it.
//!
//! **Once per period.** Only an exact count can tell: the request whose
//! charge carried the counter across the line is the one that sees it
//! ([`crossings`]), so on Redis (one atomic counter for all nodes) it is
//! one request on one node; on the embedded store, one on the node. A
//! node spending its share during a Redis outage counts only roughly and
//! raises none. A crossing is queued in memory ([`QuotaEvents`], off the
//! request path: no store call, a lock only on the rare crossing) and
//! written within a second as an audit event, and so as an outbox event,
//! by the verifier's housekeeping.
//!
//! **Ids.** An event's id is derived from what it is about (account,
//! subject, period, kind), so one written twice (a retry after a write
//! that timed out, or a crossing made again after `kill -9` of the
//! embedded store forgot its last second of counts) reaches receivers
//! under the same `webhook-id`, which they drop as a repeat.

use std::collections::BTreeMap;
use std::sync::Mutex;

use cloro_auth_core::wire::{AuditAction, AuditEvent};
use cloro_auth_core::{AccountId, KeyHash, PlanName};
use jiff::Timestamp;

use super::{Meter, MeterOutcome, QuotaSubject, Window};

/// The share of a quota at which `quota.warning` is raised, in percent.
pub(crate) const QUOTA_WARNING_PERCENT: u64 = 80;

/// Crossings queued at most; beyond it (a store down for a long time with
/// very many quotas), new ones are dropped and logged.
const QUEUE_LIMIT: usize = 10_000;

/// A line one request's charge carried a quota across.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct QuotaCrossing {
    /// Whose quota.
    pub(crate) account: AccountId,
    /// The account's, or one key's.
    pub(crate) subject: QuotaSubject,
    /// `QuotaWarning` or `QuotaExhausted`.
    pub(crate) action: AuditAction,
    /// Units per period.
    pub(crate) limit: u64,
    /// Units used after the charge.
    pub(crate) used: u64,
    /// The period.
    pub(crate) window: Window,
    /// The plan the quota comes from; `None` for a key's own.
    pub(crate) plan: Option<PlanName>,
    /// When the request was charged.
    pub(crate) at: Timestamp,
}

/// The audit actor of quota events: no person or token raised them.
pub const QUOTA_EVENT_ACTOR: &str = "quota";

impl QuotaCrossing {
    /// The audit (and so outbox) event of this crossing, actor
    /// [`QUOTA_EVENT_ACTOR`].
    pub(crate) fn audit_event(&self) -> AuditEvent {
        let subject = match self.subject {
            QuotaSubject::Account => "account",
            QuotaSubject::Key(_) => "key",
        };
        let mut details = BTreeMap::new();
        details.insert("subject".to_owned(), subject.to_owned());
        details.insert("limit".to_owned(), self.limit.to_string());
        details.insert("used".to_owned(), self.used.to_string());
        details.insert("period".to_owned(), self.window.period.as_str().to_owned());
        if let Ok(end) = Timestamp::from_second(self.window.end) {
            details.insert("resets_at".to_owned(), end.to_string());
        }
        if let Some(plan) = self.plan {
            details.insert("plan".to_owned(), plan.as_str().to_owned());
        }
        AuditEvent {
            id: self.event_id(),
            at: self.at,
            actor: QUOTA_EVENT_ACTOR.to_owned(),
            action: self.action,
            key_id: match self.subject {
                QuotaSubject::Account => None,
                QuotaSubject::Key(id) => Some(id),
            },
            account_id: self.account,
            details,
        }
    }

    /// The event's id: `evt_` and 24 hex digits of a SHA-256 over what it
    /// is about (see the module documentation).
    pub(crate) fn event_id(&self) -> String {
        let subject = match self.subject {
            QuotaSubject::Account => "account".to_owned(),
            QuotaSubject::Key(id) => format!("key:{id}"),
        };
        let about = format!(
            "quota-event|{}|{subject}|{}|{}|{}",
            self.account,
            self.window.period.as_str(),
            self.window.start,
            match self.action {
                AuditAction::QuotaWarning => "warning",
                _ => "exhausted",
            }
        );
        let digest = KeyHash::of(about.as_bytes());
        let mut id = String::from("evt_");
        for byte in &digest.as_bytes()[..12] {
            id.push_str(&format!("{byte:02x}"));
        }
        id
    }
}

/// Whether `outcome`, an exact charge of `meter`, carried its quota across
/// the warning line and the limit. Every metered request asks, nearly
/// every one is told "neither": a few comparisons, nothing built.
#[inline]
pub(crate) fn lines_crossed(meter: &Meter, outcome: &MeterOutcome) -> (bool, bool) {
    let (Some(quota), Some(left), true) = (
        meter.quota.as_ref(),
        outcome.quota_left,
        outcome.is_charged(),
    ) else {
        return (false, false);
    };
    let used = quota.limit.saturating_sub(left);
    let before = used.saturating_sub(meter.cost);
    // The least use that is at least 80 % of the limit.
    let warning_at = quota
        .limit
        .saturating_mul(QUOTA_WARNING_PERCENT)
        .div_ceil(100)
        .max(1);
    let crossed = |line: u64| before < line && line <= used;
    (crossed(warning_at), crossed(quota.limit))
}

/// The crossings of [`lines_crossed`], as events to write.
pub(crate) fn crossings(
    meter: &Meter,
    outcome: &MeterOutcome,
    now: Timestamp,
) -> Vec<QuotaCrossing> {
    let (warning, exhausted) = lines_crossed(meter, outcome);
    let (Some(quota), Some(left)) = (meter.quota.as_ref(), outcome.quota_left) else {
        return Vec::new();
    };
    [
        (warning, AuditAction::QuotaWarning),
        (exhausted, AuditAction::QuotaExhausted),
    ]
    .into_iter()
    .filter(|(crossed, _)| *crossed)
    .map(|(_, action)| QuotaCrossing {
        account: meter.account,
        subject: quota.subject,
        action,
        limit: quota.limit,
        used: quota.limit.saturating_sub(left),
        window: quota.window,
        plan: quota.plan,
        at: now,
    })
    .collect()
}

/// Crossings waiting to be written.
#[derive(Debug, Default)]
pub(crate) struct QuotaEvents {
    queue: Mutex<Vec<QuotaCrossing>>,
}

impl QuotaEvents {
    /// Queues `crossing`; `false` if the queue is full and it was dropped.
    pub(crate) fn push(&self, crossing: QuotaCrossing) -> bool {
        let Ok(mut queue) = self.queue.lock() else {
            return false;
        };
        if queue.len() >= QUEUE_LIMIT {
            return false;
        }
        queue.push(crossing);
        true
    }

    /// Everything queued, oldest first.
    pub(crate) fn take(&self) -> Vec<QuotaCrossing> {
        self.queue
            .lock()
            .map(|mut queue| std::mem::take(&mut *queue))
            .unwrap_or_default()
    }

    /// Puts back what could not be written, ahead of anything newer.
    pub(crate) fn put_back(&self, mut unsent: Vec<QuotaCrossing>) {
        if let Ok(mut queue) = self.queue.lock() {
            unsent.append(&mut queue);
            unsent.truncate(QUEUE_LIMIT);
            *queue = unsent;
        }
    }
}

#[cfg(test)]
mod tests {
    use cloro_auth_core::wire::QuotaPeriod;

    use super::*;
    use crate::quota::QuotaMeter;

    fn meter(limit: u64, cost: u64) -> Meter {
        Meter {
            account: AccountId::new("acct_lines").unwrap(),
            cost,
            quota: Some(QuotaMeter {
                subject: QuotaSubject::Account,
                limit,
                window: Window::containing(QuotaPeriod::Day, Timestamp::UNIX_EPOCH),
                plan: None,
            }),
            credits: None,
        }
    }

    fn charged(left: u64) -> MeterOutcome {
        MeterOutcome {
            refused_by: None,
            quota_left: Some(left),
            credits_left: None,
        }
    }

    fn lines(meter: &Meter, outcome: &MeterOutcome) -> Vec<AuditAction> {
        crossings(meter, outcome, Timestamp::UNIX_EPOCH)
            .into_iter()
            .map(|crossing| crossing.action)
            .collect()
    }

    #[test]
    fn only_the_charge_that_crosses_a_line_raises_it() {
        // 80 % of 10 is 8: the charge to 8 warns, the one to 10 exhausts.
        let one = meter(10, 1);
        let raised: Vec<(u64, Vec<AuditAction>)> = (1..=10)
            .map(|used| (used, lines(&one, &charged(10 - used))))
            .filter(|(_, lines)| !lines.is_empty())
            .collect();
        assert_eq!(
            raised,
            vec![
                (8, vec![AuditAction::QuotaWarning]),
                (10, vec![AuditAction::QuotaExhausted])
            ]
        );
        // A cost that jumps over both lines raises both.
        assert_eq!(
            lines(&meter(10, 5), &charged(0)),
            vec![AuditAction::QuotaWarning, AuditAction::QuotaExhausted]
        );
        // 80 % of 3 is 2.4: the least whole use at or past it is 3, the
        // limit itself, so the last request raises both.
        assert_eq!(lines(&meter(3, 1), &charged(1)), Vec::<AuditAction>::new());
        assert_eq!(
            lines(&meter(3, 1), &charged(0)),
            vec![AuditAction::QuotaWarning, AuditAction::QuotaExhausted]
        );
        // A refused request crossed nothing.
        let refused = MeterOutcome {
            refused_by: Some(cloro_auth_core::QuotaLimit::Quota),
            quota_left: Some(0),
            credits_left: None,
        };
        assert!(lines(&one, &refused).is_empty());
    }

    #[test]
    fn an_event_id_names_its_period_and_kind_only() {
        let one = meter(10, 1);
        let warning: Vec<QuotaCrossing> = crossings(&one, &charged(2), Timestamp::UNIX_EPOCH);
        let later = Timestamp::UNIX_EPOCH
            .checked_add(jiff::SignedDuration::from_secs(60))
            .unwrap();
        let again: Vec<QuotaCrossing> = crossings(&one, &charged(2), later);
        assert_eq!(warning[0].event_id(), again[0].event_id());
        let exhausted: Vec<QuotaCrossing> = crossings(&one, &charged(0), later);
        assert_ne!(warning[0].event_id(), exhausted[0].event_id());
        let next_day = Timestamp::UNIX_EPOCH
            .checked_add(jiff::SignedDuration::from_hours(24))
            .unwrap();
        let mut tomorrow = meter(10, 1);
        tomorrow.quota.as_mut().unwrap().window = Window::containing(QuotaPeriod::Day, next_day);
        let next: Vec<QuotaCrossing> = crossings(&tomorrow, &charged(2), next_day);
        assert_ne!(warning[0].event_id(), next[0].event_id());
        assert!(warning[0].event_id().starts_with("evt_") && warning[0].event_id().len() == 28);
    }
}
