//! `LocalLedger`: quota counters and credit balances in this process, exact
//! on the node (the embedded and memory stores). Counters are atomics in a
//! sharded map; a balance is changed under its map shard's lock, which is
//! also held while the request's quota is checked, so a request is charged
//! to both or to neither.
//!
//! With a [`CounterStore`] (the embedded store) the ledger is durable:
//! [`Ledger::persist`], which the verifier calls every second and at
//! shutdown, writes every counter and balance that changed since the last
//! write, as absolute values. A `kill -9` therefore forgets at most the use
//! since the last write and never invents use: what is on disk is a value
//! the counter really had.

use core::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use cloro_auth_core::wire::{MAX_QUOTA_COUNT, QuotaPeriod};
use cloro_auth_core::{AccountId, KeyId, QuotaLimit};
use dashmap::DashMap;
use jiff::Timestamp;

use super::period::{period_letter, period_of};
use super::{CreditsChange, Ledger, Meter, MeterOutcome, QuotaSubject, RefillWindow, Window};
use crate::store::{CounterStore, StoreError};
use rustc_hash::FxBuildHasher;

/// Where a cached key keeps the quota counter it last charged, so that the
/// next charge finds it without the ledger's map (see
/// [`Ledger::charge_in_process_hinted`]). Empty until the first charge;
/// set once, for the life of the cache entry. Boxed: every cached key has
/// a hint, few have a quota, and the cell inline would cost each of them
/// 160 bytes instead of 16 (`cache_memory` bench).
#[derive(Debug, Default)]
pub struct CounterHint {
    slot: std::sync::OnceLock<Box<(QuotaCell, Arc<QuotaCount>)>>,
}

/// A quota counter found through a hint or in the map (holding its shard's
/// read lock while charged, as before hints).
enum Counter<'a> {
    Hinted(&'a QuotaCount),
    Mapped(dashmap::mapref::one::Ref<'a, QuotaCell, Arc<QuotaCount>>),
}

impl core::ops::Deref for Counter<'_> {
    type Target = QuotaCount;

    fn deref(&self) -> &QuotaCount {
        match self {
            Counter::Hinted(count) => count,
            Counter::Mapped(count) => count,
        }
    }
}

/// One quota counter: whose, and which period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct QuotaCell {
    account: AccountId,
    subject: QuotaSubject,
    period: QuotaPeriod,
    index: i64,
}

#[derive(Debug)]
struct QuotaCount {
    used: AtomicU64,
    /// The value last written to the counter store.
    saved: AtomicU64,
    /// When the period ends (Unix seconds): the counter is dropped then.
    end: i64,
}

/// One balance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct BalanceCell {
    account: AccountId,
    meter_id: KeyId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Balance {
    remaining: u64,
    /// The period whose refill this balance already had (or that it was
    /// set in), if any.
    refilled: Option<(QuotaPeriod, i64)>,
    /// Changed since the last write to the counter store.
    dirty: bool,
}

impl Balance {
    /// A balance nobody wrote: nothing left, and counted as set in the
    /// current period, so it is not refilled before the next one starts
    /// (SPEC §11: a ledger never invents credits).
    fn unwritten(refill: Option<&RefillWindow>) -> Self {
        Balance {
            remaining: 0,
            refilled: refill.map(|refill| (refill.window.period, refill.window.index)),
            dirty: false,
        }
    }

    /// Sets the balance to the refill amount when a later period of the
    /// same kind has started; a changed interval counts from now on.
    fn refill_if_due(&mut self, refill: Option<&RefillWindow>) {
        let Some(refill) = refill else { return };
        let current = (refill.window.period, refill.window.index);
        match self.refilled {
            Some((period, index)) if period == current.0 && index >= current.1 => {}
            Some((period, _)) if period == current.0 => {
                self.remaining = refill.amount;
                self.refilled = Some(current);
                self.dirty = true;
            }
            _ => {
                self.refilled = Some(current);
                self.dirty = true;
            }
        }
    }
}

/// Quota counters and credit balances in this process.
///
/// The maps hash with Fx rather than the keyed hasher of the tables that
/// hold client-chosen keys: their keys are account ids (set by operators)
/// and key ids (random, made by us), so no client can aim collisions at
/// them, and every metered request hashes one or two cells.
pub struct LocalLedger {
    quotas: DashMap<QuotaCell, Arc<QuotaCount>, FxBuildHasher>,
    balances: DashMap<BalanceCell, Balance, FxBuildHasher>,
    durable: Option<Arc<dyn CounterStore>>,
    /// Counters of ended periods, to remove from the counter store.
    ended: std::sync::Mutex<Vec<String>>,
    /// One write to the counter store at a time, so an older snapshot can
    /// never land after a newer one.
    persisting: tokio::sync::Mutex<()>,
}

impl fmt::Debug for LocalLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalLedger")
            .field("quotas", &self.quotas.len())
            .field("balances", &self.balances.len())
            .field("durable", &self.durable.is_some())
            .finish()
    }
}

impl Default for LocalLedger {
    fn default() -> Self {
        Self::in_memory()
    }
}

impl LocalLedger {
    /// A ledger that lives and dies with the process (the memory store).
    pub fn in_memory() -> Self {
        LocalLedger {
            quotas: DashMap::with_hasher(FxBuildHasher),
            balances: DashMap::with_hasher(FxBuildHasher),
            durable: None,
            ended: std::sync::Mutex::new(Vec::new()),
            persisting: tokio::sync::Mutex::new(()),
        }
    }

    /// A ledger kept in `store`, starting from what it holds.
    ///
    /// # Errors
    /// The store's, when its counters cannot be read. An entry this version
    /// cannot read is skipped with a warning rather than failing the start.
    pub async fn durable(store: Arc<dyn CounterStore>) -> Result<Self, StoreError> {
        let ledger = LocalLedger {
            durable: Some(Arc::clone(&store)),
            ..Self::in_memory()
        };
        for (name, value) in store.load_counters().await? {
            if !ledger.restore(&name, &value) {
                tracing::warn!(counter = %name.escape_default(), "skipping a quota counter this version cannot read");
            }
        }
        Ok(ledger)
    }

    fn restore(&self, name: &str, value: &str) -> bool {
        if let Some((cell, end)) = decode_quota(name) {
            let Ok(used) = value.parse::<u64>() else {
                return false;
            };
            self.quotas.insert(
                cell,
                Arc::new(QuotaCount {
                    used: AtomicU64::new(used),
                    saved: AtomicU64::new(used),
                    end,
                }),
            );
            return true;
        }
        if let Some(cell) = decode_balance(name) {
            let Some(balance) = decode_balance_value(value) else {
                return false;
            };
            self.balances.insert(cell, balance);
            return true;
        }
        false
    }

    fn quota_cell(account: &AccountId, subject: &QuotaSubject, window: &Window) -> QuotaCell {
        QuotaCell {
            account: *account,
            subject: *subject,
            period: window.period,
            index: window.index,
        }
    }

    /// The counter of `cell` (made if missing), through `hint` when it
    /// already holds this very cell: the counter is shared with the map,
    /// so a hit skips the map (its shard lock, its hash, and any reference
    /// count) and charges the same atomic. A hint never points at another
    /// period's counter: the cell, period included, must match.
    fn counter<'a>(
        &'a self,
        cell: QuotaCell,
        end: i64,
        hint: Option<&'a CounterHint>,
    ) -> Counter<'a> {
        if let Some((hinted, count)) = hint.and_then(|hint| hint.slot.get()).map(|slot| &**slot)
            && *hinted == cell
        {
            return Counter::Hinted(count);
        }
        // A shared (read) lock on the shard for a counter that exists,
        // which is every request but a period's first.
        let count = match self.quotas.get(&cell) {
            Some(count) => count,
            None => self
                .quotas
                .entry(cell)
                .or_insert_with(|| {
                    Arc::new(QuotaCount {
                        used: AtomicU64::new(0),
                        saved: AtomicU64::new(0),
                        end,
                    })
                })
                .downgrade(),
        };
        if let Some(hint) = hint {
            // The first period a cache entry meets is the one it keeps;
            // entries are refilled often (the cache TTL), periods end
            // seldom, and a miss is only the map lookup again.
            let _ = hint.slot.set(Box::new((cell, Arc::clone(&count))));
        }
        Counter::Mapped(count)
    }

    /// Charges `meter` (see [`Ledger::charge`]); never fails.
    pub fn charge_now(&self, meter: &Meter) -> MeterOutcome {
        self.charge_hinted(meter, None)
    }

    /// [`LocalLedger::charge_now`] finding the quota counter through `hint`.
    fn charge_hinted(&self, meter: &Meter, hint: Option<&CounterHint>) -> MeterOutcome {
        let cost = meter.cost;
        // `Some(None)`: limited credits with no balance written. That reads
        // as 0 and stays unwritten: a charge that started a balance would
        // have it refilled at the next period start, inventing credits.
        let mut balance = meter.credits.map(|credits| {
            let mut balance = self.balances.get_mut(&BalanceCell {
                account: meter.account,
                meter_id: credits.meter_id,
            })?;
            balance.refill_if_due(credits.refill.as_ref());
            Some(balance)
        });
        let credits_left = balance
            .as_ref()
            .map(|balance| balance.as_ref().map_or(0, |balance| balance.remaining));
        let quota = meter.quota.map(|quota| {
            let cell = Self::quota_cell(&meter.account, &quota.subject, &quota.window);
            (self.counter(cell, quota.window.end, hint), quota.limit)
        });
        let quota_left_now = quota
            .as_ref()
            .map(|(count, limit)| limit.saturating_sub(count.used.load(Ordering::Acquire)));
        if credits_left.is_some_and(|left| left < cost) {
            return MeterOutcome {
                refused_by: Some(QuotaLimit::Credits),
                quota_left: quota_left_now,
                credits_left,
            };
        }
        let mut quota_left = None;
        if let Some((count, limit)) = &quota {
            let taken = count
                .used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    used.checked_add(cost).filter(|after| after <= limit)
                });
            match taken {
                Ok(before) => quota_left = Some(limit - (before + cost)),
                Err(used) => {
                    return MeterOutcome {
                        refused_by: Some(QuotaLimit::Quota),
                        quota_left: Some(limit.saturating_sub(used)),
                        credits_left,
                    };
                }
            }
        }
        if let Some(Some(balance)) = balance.as_mut() {
            balance.remaining -= cost;
            balance.dirty = true;
        }
        MeterOutcome {
            refused_by: None,
            quota_left,
            credits_left: balance.map(|balance| balance.map_or(0, |balance| balance.remaining)),
        }
    }

    fn take_ended(&self) -> Vec<String> {
        self.ended
            .lock()
            .map(|mut ended| std::mem::take(&mut *ended))
            .unwrap_or_default()
    }
}

#[async_trait]
impl Ledger for LocalLedger {
    async fn charge(&self, meter: &Meter) -> Result<MeterOutcome, StoreError> {
        Ok(self.charge_now(meter))
    }

    fn charge_in_process(&self, meter: &Meter) -> Option<MeterOutcome> {
        Some(self.charge_now(meter))
    }

    fn charge_in_process_hinted(&self, meter: &Meter, hint: &CounterHint) -> Option<MeterOutcome> {
        Some(self.charge_hinted(meter, Some(hint)))
    }

    async fn quota_used(
        &self,
        account: &AccountId,
        subject: &QuotaSubject,
        window: &Window,
    ) -> Result<u64, StoreError> {
        let cell = Self::quota_cell(account, subject, window);
        Ok(self
            .quotas
            .get(&cell)
            .map_or(0, |count| count.used.load(Ordering::Acquire)))
    }

    async fn balance(
        &self,
        account: &AccountId,
        meter_id: &KeyId,
        refill: Option<&RefillWindow>,
    ) -> Result<u64, StoreError> {
        let cell = BalanceCell {
            account: *account,
            meter_id: *meter_id,
        };
        let Some(mut balance) = self.balances.get_mut(&cell) else {
            return Ok(0);
        };
        balance.refill_if_due(refill);
        Ok(balance.remaining)
    }

    async fn adjust_credits(
        &self,
        account: &AccountId,
        meter_id: &KeyId,
        change: CreditsChange,
        refill: Option<&RefillWindow>,
    ) -> Result<u64, StoreError> {
        let remaining = {
            let mut balance = self
                .balances
                .entry(BalanceCell {
                    account: *account,
                    meter_id: *meter_id,
                })
                .or_insert_with(|| Balance::unwritten(refill));
            balance.refill_if_due(refill);
            balance.remaining = match change {
                CreditsChange::Set(value) => {
                    // A set counts as this period's refill.
                    if let Some(refill) = refill {
                        balance.refilled = Some((refill.window.period, refill.window.index));
                    }
                    value
                }
                CreditsChange::Add(more) => balance.remaining.saturating_add(more),
            }
            .min(MAX_QUOTA_COUNT);
            balance.dirty = true;
            balance.remaining
        };
        // An admin change is written before it is acknowledged. Should that
        // write fail, the change still stands in memory and goes out with
        // the next write, like every other count: answering an error here
        // would invite a retry that adds twice.
        if let Err(error) = self.persist().await {
            tracing::warn!(%error, "writing a credit change failed; it is written again within a second");
        }
        Ok(remaining)
    }

    fn forget_ended(&self, now: Timestamp) {
        let now = now.as_second();
        let mut ended = Vec::new();
        self.quotas.retain(|cell, count| {
            let keep = count.end > now;
            if !keep {
                ended.push(encode_quota(cell, count.end));
            }
            keep
        });
        if self.durable.is_some()
            && !ended.is_empty()
            && let Ok(mut pending) = self.ended.lock()
        {
            pending.extend(ended);
        }
    }

    async fn persist(&self) -> Result<(), StoreError> {
        let Some(store) = &self.durable else {
            return Ok(());
        };
        let _one_at_a_time = self.persisting.lock().await;
        let removed = self.take_ended();
        let mut written = Vec::new();
        let mut saved_quotas = Vec::new();
        for entry in &self.quotas {
            let used = entry.value().used.load(Ordering::Acquire);
            if used != entry.value().saved.load(Ordering::Acquire) {
                written.push((
                    encode_quota(entry.key(), entry.value().end),
                    used.to_string(),
                ));
                saved_quotas.push((*entry.key(), used));
            }
        }
        let mut saved_balances = Vec::new();
        for mut entry in self.balances.iter_mut() {
            if entry.value().dirty {
                entry.value_mut().dirty = false;
                written.push((
                    encode_balance(entry.key()),
                    encode_balance_value(entry.value()),
                ));
                saved_balances.push(*entry.key());
            }
        }
        if written.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let removed_again = removed.clone();
        match store.save_counters(written, removed).await {
            Ok(()) => {
                for (cell, used) in saved_quotas {
                    if let Some(count) = self.quotas.get(&cell) {
                        count.saved.store(used, Ordering::Release);
                    }
                }
                Ok(())
            }
            Err(error) => {
                // Written again next time: the values are absolute.
                if let Ok(mut pending) = self.ended.lock() {
                    pending.extend(removed_again);
                }
                for cell in saved_balances {
                    if let Some(mut balance) = self.balances.get_mut(&cell) {
                        balance.dirty = true;
                    }
                }
                Err(error)
            }
        }
    }
}

// Counter names: `q/<account>/<a | k:key_id>/<d|m>/<index>/<end>` and
// `c/<account>/<meter_id>`. Account and key ids never hold `/` or `:`.

fn encode_quota(cell: &QuotaCell, end: i64) -> String {
    let subject = match cell.subject {
        QuotaSubject::Account => "a".to_owned(),
        QuotaSubject::Key(id) => format!("k:{id}"),
    };
    format!(
        "q/{}/{subject}/{}/{}/{end}",
        cell.account,
        period_letter(cell.period),
        cell.index
    )
}

fn decode_quota(name: &str) -> Option<(QuotaCell, i64)> {
    let mut parts = name.strip_prefix("q/")?.split('/');
    let account = AccountId::new(parts.next()?).ok()?;
    let subject = match parts.next()? {
        "a" => QuotaSubject::Account,
        other => QuotaSubject::Key(KeyId::new(other.strip_prefix("k:")?).ok()?),
    };
    let period = period_of(parts.next()?)?;
    let index = parts.next()?.parse().ok()?;
    let end = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((
        QuotaCell {
            account,
            subject,
            period,
            index,
        },
        end,
    ))
}

fn encode_balance(cell: &BalanceCell) -> String {
    format!("c/{}/{}", cell.account, cell.meter_id)
}

fn decode_balance(name: &str) -> Option<BalanceCell> {
    let (account, meter_id) = name.strip_prefix("c/")?.split_once('/')?;
    Some(BalanceCell {
        account: AccountId::new(account).ok()?,
        meter_id: KeyId::new(meter_id).ok()?,
    })
}

fn encode_balance_value(balance: &Balance) -> String {
    match balance.refilled {
        Some((period, index)) => format!("{}/{}/{index}", balance.remaining, period_letter(period)),
        None => format!("{}/-/0", balance.remaining),
    }
}

fn decode_balance_value(value: &str) -> Option<Balance> {
    let mut parts = value.split('/');
    let remaining = parts.next()?.parse().ok()?;
    let period = parts.next()?;
    let index = parts.next()?.parse().ok()?;
    let refilled = match period {
        "-" => None,
        letter => Some((period_of(letter)?, index)),
    };
    parts.next().is_none().then_some(Balance {
        remaining,
        refilled,
        dirty: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::{CreditsMeter, QuotaMeter};

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn account() -> AccountId {
        AccountId::new("acct_1").unwrap()
    }

    fn key() -> KeyId {
        KeyId::new("key_1").unwrap()
    }

    fn meter(cost: u64, quota: Option<u64>, credits: bool, now: Timestamp) -> Meter {
        Meter {
            account: account(),
            cost,
            quota: quota.map(|limit| QuotaMeter {
                subject: QuotaSubject::Account,
                limit,
                window: Window::containing(QuotaPeriod::Month, now),
                plan: None,
            }),
            credits: credits.then(|| CreditsMeter {
                meter_id: key(),
                refill: None,
            }),
        }
    }

    /// A hint charges the very counter the map holds (reads, persistence
    /// and other keys see it), and a hint from another period is not used:
    /// that period's counter is looked up, and the hint keeps its own.
    #[tokio::test]
    async fn a_hint_charges_the_mapped_counter_and_never_another_period() {
        let ledger = LocalLedger::in_memory();
        let hint = CounterHint::default();
        let march = at("2027-03-10T00:00:00Z");
        let in_march = meter(1, Some(10), false, march);
        for _ in 0..3 {
            assert!(ledger.charge_hinted(&in_march, Some(&hint)).is_charged());
        }
        // Another key (no hint) shares the account's counter.
        assert_eq!(ledger.charge_now(&in_march).quota_left, Some(6));
        let window = in_march.quota.unwrap().window;
        let used = ledger
            .quota_used(&account(), &QuotaSubject::Account, &window)
            .await
            .unwrap();
        assert_eq!(used, 4);
        // April through the March hint: April's own counter.
        let april = meter(1, Some(10), false, at("2027-04-02T00:00:00Z"));
        assert_eq!(
            ledger.charge_hinted(&april, Some(&hint)).quota_left,
            Some(9)
        );
        assert_eq!(
            ledger.charge_hinted(&in_march, Some(&hint)).quota_left,
            Some(5),
            "the hint still holds March"
        );
    }

    #[tokio::test]
    async fn a_cost_above_what_is_left_is_refused_and_costs_nothing() {
        let ledger = LocalLedger::in_memory();
        let now = at("2026-03-10T00:00:00Z");
        ledger
            .adjust_credits(&account(), &key(), CreditsChange::Set(95), None)
            .await
            .unwrap();
        let charged = (0..10)
            .filter(|_| ledger.charge_now(&meter(10, None, true, now)).is_charged())
            .count();
        assert_eq!(charged, 9);
        assert_eq!(ledger.balance(&account(), &key(), None).await.unwrap(), 5);
        // The quota refuses; the credits are untouched.
        let both = meter(5, Some(3), true, now);
        let refused = ledger.charge_now(&both);
        assert_eq!(refused.refused_by, Some(QuotaLimit::Quota));
        assert_eq!(ledger.balance(&account(), &key(), None).await.unwrap(), 5);
        assert_eq!(
            ledger
                .quota_used(
                    &account(),
                    &QuotaSubject::Account,
                    &both.quota.unwrap().window
                )
                .await
                .unwrap(),
            0
        );
    }

    #[test]
    fn concurrent_charges_never_exceed_the_quota() {
        let ledger = LocalLedger::in_memory();
        let now = at("2026-03-10T00:00:00Z");
        let charged = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..75)
                            .filter(|_| {
                                ledger
                                    .charge_now(&meter(1, Some(100), false, now))
                                    .is_charged()
                            })
                            .count()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .sum::<usize>()
        });
        assert_eq!(charged, 100);
    }

    #[tokio::test]
    async fn refills_set_the_balance_at_each_period_start() {
        let ledger = LocalLedger::in_memory();
        let day = |text| RefillWindow {
            amount: 50,
            window: Window::containing(QuotaPeriod::Day, at(text)),
        };
        let first = day("2026-03-10T12:00:00Z");
        ledger
            .adjust_credits(&account(), &key(), CreditsChange::Set(7), Some(&first))
            .await
            .unwrap();
        assert_eq!(
            ledger
                .balance(&account(), &key(), Some(&first))
                .await
                .unwrap(),
            7
        );
        let next = day("2026-03-11T00:00:00Z");
        assert_eq!(
            ledger
                .balance(&account(), &key(), Some(&next))
                .await
                .unwrap(),
            50
        );
        let added = ledger
            .adjust_credits(&account(), &key(), CreditsChange::Add(25), Some(&next))
            .await
            .unwrap();
        assert_eq!(added, 75);
        // Set, not added: the next refill forgets the extra.
        let later = day("2026-03-13T08:00:00Z");
        assert_eq!(
            ledger
                .balance(&account(), &key(), Some(&later))
                .await
                .unwrap(),
            50
        );
    }

    #[test]
    fn counter_names_round_trip() {
        let cell = QuotaCell {
            account: account(),
            subject: QuotaSubject::Key(key()),
            period: QuotaPeriod::Day,
            index: 20_500,
        };
        assert_eq!(decode_quota(&encode_quota(&cell, 99)), Some((cell, 99)));
        let balance = BalanceCell {
            account: account(),
            meter_id: key(),
        };
        assert_eq!(decode_balance(&encode_balance(&balance)), Some(balance));
        let value = Balance {
            remaining: 12,
            refilled: Some((QuotaPeriod::Month, 675)),
            dirty: false,
        };
        assert_eq!(
            decode_balance_value(&encode_balance_value(&value)),
            Some(value)
        );
        assert_eq!(decode_quota("q/acct/x/d/1/2"), None);
    }
}
