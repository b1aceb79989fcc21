//! The `Ledger` contract (SPEC §11), written once and run unchanged against
//! every ledger: in memory, durable over the embedded store, Redis and Redis
//! Cluster. It proves that a request is charged to its quota and credits
//! together or not at all, that exactly N of many concurrent charges pass a
//! quota of N, that counters belong to one window and one subject, that a
//! balance nobody wrote is 0 and stays 0, that set and add meet refills as
//! SPEC §11 says (set, not added; a changed interval invents nothing), and
//! that balances cap at `MAX_QUOTA_COUNT`. For the embedded store it also
//! proves that `persist` survives a reopen and that a reopen without it
//! never shows more use than happened.
//!
//! Every timestamp is chosen, never read from a clock, and lies in 2031:
//! Redis expires a quota counter a day after its period ends, so a period
//! in the past would be forgotten as soon as it was written. Each check uses
//! its own account, so one ledger serves the whole suite.

use std::sync::Arc;
use std::time::Duration;

use cloro_auth_core::wire::{MAX_QUOTA_COUNT, QuotaPeriod};
use cloro_auth_core::{AccountId, KeyId, QuotaLimit};
use cloro_keystore::{
    CounterStore, CreditsChange, CreditsMeter, EmbeddedStore, Ledger, LocalLedger, Meter,
    MeterOutcome, QuotaMeter, QuotaSubject, RedisLedger, RedisOptions, RedisStore, RefillWindow,
    Window,
};
use cloro_test_support::{RedisCluster, RedisServer};
use jiff::Timestamp;

/// Runs every check of the contract against `ledger`.
pub(crate) async fn run_ledger_contract(ledger: Arc<dyn Ledger>) {
    let ledger = ledger.as_ref();
    a_cost_above_what_is_left_is_refused_and_charges_nothing(ledger).await;
    a_request_both_must_pay_is_charged_to_both_or_neither(ledger).await;
    quota_counters_are_per_window(ledger).await;
    quota_counters_are_per_subject_and_account(ledger).await;
    a_balance_never_written_reads_zero_and_stays_zero(ledger).await;
    set_counts_as_this_periods_refill_and_later_periods_set_not_add(ledger).await;
    add_applies_a_due_refill_first(ledger).await;
    a_changed_refill_interval_invents_no_refill(ledger).await;
    counts_cap_at_max_quota_count_and_stay_exact(ledger).await;
}

/// Runs the concurrent checks, which need the ledger shared between tasks.
pub(crate) async fn run_concurrent_ledger_contract(ledger: Arc<dyn Ledger>) {
    exactly_n_of_many_concurrent_charges_pass_a_quota_of_n(&ledger).await;
    concurrent_charges_to_quota_and_credits_take_both_or_neither(&ledger).await;
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn month(text: &str) -> Window {
    Window::containing(QuotaPeriod::Month, at(text))
}

fn day(text: &str) -> Window {
    Window::containing(QuotaPeriod::Day, at(text))
}

fn account(name: &str) -> AccountId {
    AccountId::new(name).unwrap()
}

fn key(name: &str) -> KeyId {
    KeyId::new(name).unwrap()
}

/// A refill of `amount` in the period of `window`.
fn refill(amount: u64, window: Window) -> RefillWindow {
    RefillWindow { amount, window }
}

/// What a request on `account` costing `cost` pays: nothing yet.
fn meter(account: AccountId, cost: u64) -> Meter {
    Meter {
        account,
        cost,
        quota: None,
        credits: None,
    }
}

/// `meter` with a quota of `limit` for `subject` in `window`.
fn with_quota(meter: Meter, subject: QuotaSubject, limit: u64, window: Window) -> Meter {
    Meter {
        quota: Some(QuotaMeter {
            subject,
            limit,
            window,
            plan: None,
        }),
        ..meter
    }
}

/// `meter` with the credits of `meter_id`.
fn with_credits(meter: Meter, meter_id: KeyId, refill: Option<RefillWindow>) -> Meter {
    Meter {
        credits: Some(CreditsMeter { meter_id, refill }),
        ..meter
    }
}

async fn charge(ledger: &dyn Ledger, meter: &Meter) -> MeterOutcome {
    ledger.charge(meter).await.unwrap()
}

async fn used(ledger: &dyn Ledger, account: &AccountId, subject: QuotaSubject, w: Window) -> u64 {
    ledger.quota_used(account, &subject, &w).await.unwrap()
}

async fn balance(
    ledger: &dyn Ledger,
    account: &AccountId,
    meter_id: &KeyId,
    refill: Option<RefillWindow>,
) -> u64 {
    ledger
        .balance(account, meter_id, refill.as_ref())
        .await
        .unwrap()
}

async fn adjust(
    ledger: &dyn Ledger,
    account: &AccountId,
    meter_id: &KeyId,
    change: CreditsChange,
    refill: Option<RefillWindow>,
) -> u64 {
    ledger
        .adjust_credits(account, meter_id, change, refill.as_ref())
        .await
        .unwrap()
}

fn refused(by: QuotaLimit, quota_left: Option<u64>, credits_left: Option<u64>) -> MeterOutcome {
    MeterOutcome {
        refused_by: Some(by),
        quota_left,
        credits_left,
    }
}

fn charged(quota_left: Option<u64>, credits_left: Option<u64>) -> MeterOutcome {
    MeterOutcome {
        refused_by: None,
        quota_left,
        credits_left,
    }
}

async fn a_cost_above_what_is_left_is_refused_and_charges_nothing(ledger: &dyn Ledger) {
    let owner = account("acct_cost");
    let window = month("2031-03-10T00:00:00Z");

    // Credits: 95 pays for nine requests of 10; the tenth would need 10
    // of the 5 left and takes none of them.
    let k = key("key_cost");
    assert_eq!(
        adjust(ledger, &owner, &k, CreditsChange::Set(95), None).await,
        95
    );
    let pay = with_credits(meter(owner, 10), k, None);
    for n in 1..=9 {
        assert_eq!(charge(ledger, &pay).await, charged(None, Some(95 - 10 * n)));
    }
    assert_eq!(
        charge(ledger, &pay).await,
        refused(QuotaLimit::Credits, None, Some(5))
    );
    assert_eq!(balance(ledger, &owner, &k, None).await, 5);
    // What is left exactly is enough.
    let exact = with_credits(meter(owner, 5), k, None);
    assert_eq!(charge(ledger, &exact).await, charged(None, Some(0)));
    assert_eq!(balance(ledger, &owner, &k, None).await, 0);

    // Quota: 25 of 30 used, a request costing 10 is refused and the
    // counter stays at 25; one costing the 5 left passes.
    let q = QuotaSubject::Account;
    let ten = with_quota(meter(owner, 10), q, 30, window);
    let five = with_quota(meter(owner, 5), q, 30, window);
    assert_eq!(charge(ledger, &ten).await, charged(Some(20), None));
    assert_eq!(charge(ledger, &ten).await, charged(Some(10), None));
    assert_eq!(charge(ledger, &five).await, charged(Some(5), None));
    assert_eq!(
        charge(ledger, &ten).await,
        refused(QuotaLimit::Quota, Some(5), None)
    );
    assert_eq!(used(ledger, &owner, q, window).await, 25);
    assert_eq!(charge(ledger, &five).await, charged(Some(0), None));
    assert_eq!(
        charge(ledger, &five).await,
        refused(QuotaLimit::Quota, Some(0), None)
    );
    assert_eq!(used(ledger, &owner, q, window).await, 30);
}

async fn a_request_both_must_pay_is_charged_to_both_or_neither(ledger: &dyn Ledger) {
    let window = month("2031-04-10T00:00:00Z");
    let q = QuotaSubject::Account;

    // Credits enough, quota not: the credits stay untouched.
    let owner = account("acct_both_quota");
    let k = key("key_both_quota");
    adjust(ledger, &owner, &k, CreditsChange::Set(100), None).await;
    let both = with_credits(with_quota(meter(owner, 10), q, 15, window), k, None);
    assert_eq!(charge(ledger, &both).await, charged(Some(5), Some(90)));
    assert_eq!(
        charge(ledger, &both).await,
        refused(QuotaLimit::Quota, Some(5), Some(90))
    );
    assert_eq!(balance(ledger, &owner, &k, None).await, 90);
    assert_eq!(used(ledger, &owner, q, window).await, 10);

    // Quota enough, credits not: the quota counter stays untouched.
    let owner = account("acct_both_credits");
    let k = key("key_both_credits");
    adjust(ledger, &owner, &k, CreditsChange::Set(12), None).await;
    let both = with_credits(with_quota(meter(owner, 10), q, 100, window), k, None);
    assert_eq!(charge(ledger, &both).await, charged(Some(90), Some(2)));
    assert_eq!(
        charge(ledger, &both).await,
        refused(QuotaLimit::Credits, Some(90), Some(2))
    );
    assert_eq!(used(ledger, &owner, q, window).await, 10);
    assert_eq!(balance(ledger, &owner, &k, None).await, 2);

    // Neither enough: credits are named (they are checked first), and
    // still nothing is charged.
    let small = with_credits(with_quota(meter(owner, 50), q, 60, window), k, None);
    assert_eq!(
        charge(ledger, &small).await.refused_by,
        Some(QuotaLimit::Credits)
    );
    assert_eq!(used(ledger, &owner, q, window).await, 10);
    assert_eq!(balance(ledger, &owner, &k, None).await, 2);
}

async fn quota_counters_are_per_window(ledger: &dyn Ledger) {
    let owner = account("acct_windows");
    let q = QuotaSubject::Account;
    let january = month("2031-01-31T23:59:59.999999999Z");
    let february = month("2031-02-01T00:00:00Z");
    let on_january = with_quota(meter(owner, 1), q, 3, january);
    for left in [2, 1, 0] {
        assert_eq!(charge(ledger, &on_january).await, charged(Some(left), None));
    }
    assert_eq!(
        charge(ledger, &on_january).await.refused_by,
        Some(QuotaLimit::Quota)
    );
    // The first instant of February counts from 0; January keeps its count.
    let on_february = with_quota(meter(owner, 1), q, 3, february);
    assert_eq!(charge(ledger, &on_february).await, charged(Some(2), None));
    assert_eq!(used(ledger, &owner, q, january).await, 3);
    assert_eq!(used(ledger, &owner, q, february).await, 1);
    assert_eq!(
        used(ledger, &owner, q, month("2031-03-01T00:00:00Z")).await,
        0
    );

    // Days likewise, and a day's counter is not the month's, even where
    // the day and the month have the same bounds' start.
    let first_day = day("2031-02-01T12:00:00Z");
    let next_day = day("2031-02-02T00:00:00Z");
    let on_day = with_quota(meter(owner, 2), q, 2, first_day);
    assert_eq!(charge(ledger, &on_day).await, charged(Some(0), None));
    assert_eq!(
        charge(ledger, &on_day).await.refused_by,
        Some(QuotaLimit::Quota)
    );
    let on_next_day = with_quota(meter(owner, 2), q, 2, next_day);
    assert_eq!(charge(ledger, &on_next_day).await, charged(Some(0), None));
    assert_eq!(used(ledger, &owner, q, first_day).await, 2);
    assert_eq!(used(ledger, &owner, q, next_day).await, 2);
    assert_eq!(used(ledger, &owner, q, february).await, 1);
}

async fn quota_counters_are_per_subject_and_account(ledger: &dyn Ledger) {
    let owner = account("acct_subjects");
    let other = account("acct_subjects_other");
    let window = month("2031-05-05T00:00:00Z");
    let first = QuotaSubject::Key(key("key_subject_1"));
    let second = QuotaSubject::Key(key("key_subject_2"));
    let on_first = with_quota(meter(owner, 1), first, 2, window);
    charge(ledger, &on_first).await;
    charge(ledger, &on_first).await;
    assert_eq!(
        charge(ledger, &on_first).await.refused_by,
        Some(QuotaLimit::Quota)
    );
    // Another key of the account, the account itself, and the same key id
    // under another account all count apart.
    for (who, subject) in [
        (owner, second),
        (owner, QuotaSubject::Account),
        (other, first),
    ] {
        assert_eq!(used(ledger, &who, subject, window).await, 0);
        let fresh = with_quota(meter(who, 1), subject, 2, window);
        assert_eq!(charge(ledger, &fresh).await, charged(Some(1), None));
    }
    assert_eq!(used(ledger, &owner, first, window).await, 2);
    assert_eq!(
        used(ledger, &account("acct_subjects_never"), first, window).await,
        0,
        "a counter never written reads 0"
    );
}

async fn a_balance_never_written_reads_zero_and_stays_zero(ledger: &dyn Ledger) {
    let owner = account("acct_unwritten");
    let k = key("key_unwritten");
    let today = day("2031-06-10T08:00:00Z");
    let tomorrow = day("2031-06-11T08:00:00Z");
    let later = day("2031-06-14T08:00:00Z");
    assert_eq!(balance(ledger, &owner, &k, None).await, 0);
    assert_eq!(
        balance(ledger, &owner, &k, Some(refill(50, today))).await,
        0,
        "not the refill amount"
    );
    // A charge on it is refused; a free request passes and pays nothing.
    let paid = with_credits(meter(owner, 1), k, Some(refill(50, today)));
    assert_eq!(
        charge(ledger, &paid).await,
        refused(QuotaLimit::Credits, None, Some(0))
    );
    let free = with_credits(meter(owner, 0), k, Some(refill(50, today)));
    assert_eq!(charge(ledger, &free).await, charged(None, Some(0)));
    // Neither made it a balance that the next periods refill.
    assert_eq!(
        balance(ledger, &owner, &k, Some(refill(50, tomorrow))).await,
        0
    );
    let paid_tomorrow = with_credits(meter(owner, 1), k, Some(refill(50, tomorrow)));
    assert_eq!(
        charge(ledger, &paid_tomorrow).await,
        refused(QuotaLimit::Credits, None, Some(0))
    );
    assert_eq!(
        balance(ledger, &owner, &k, Some(refill(50, later))).await,
        0
    );
}

async fn set_counts_as_this_periods_refill_and_later_periods_set_not_add(ledger: &dyn Ledger) {
    let owner = account("acct_refill_set");
    let k = key("key_refill_set");
    let daily = |text| Some(refill(50, day(text)));
    let first = daily("2031-07-10T12:00:00Z");
    assert_eq!(
        adjust(ledger, &owner, &k, CreditsChange::Set(7), first).await,
        7
    );
    // The set is this day's refill: no refill to 50 later the same day.
    assert_eq!(
        balance(ledger, &owner, &k, daily("2031-07-10T23:59:59Z")).await,
        7
    );
    let spend = |refill| with_credits(meter(owner, 1), k, refill);
    assert_eq!(
        charge(ledger, &spend(daily("2031-07-10T23:59:59Z"))).await,
        charged(None, Some(6))
    );
    // The next day sets 50, not 6 + 50; and the same day twice refills once.
    let next = daily("2031-07-11T00:00:00Z");
    assert_eq!(balance(ledger, &owner, &k, next).await, 50);
    assert_eq!(charge(ledger, &spend(next)).await, charged(None, Some(49)));
    assert_eq!(
        charge(ledger, &spend(daily("2031-07-11T18:00:00Z"))).await,
        charged(None, Some(48))
    );
    // Days without use still refill once, to the amount.
    assert_eq!(
        charge(ledger, &spend(daily("2031-07-15T09:00:00Z"))).await,
        charged(None, Some(49))
    );
    // A set in a later period without a read first is that period's
    // refill too.
    let later = daily("2031-07-20T09:00:00Z");
    assert_eq!(
        adjust(ledger, &owner, &k, CreditsChange::Set(3), later).await,
        3
    );
    assert_eq!(balance(ledger, &owner, &k, later).await, 3);
    assert_eq!(
        balance(ledger, &owner, &k, daily("2031-07-21T00:00:00Z")).await,
        50
    );
}

async fn add_applies_a_due_refill_first(ledger: &dyn Ledger) {
    let owner = account("acct_refill_add");
    let k = key("key_refill_add");
    let daily = |text| Some(refill(50, day(text)));
    adjust(
        ledger,
        &owner,
        &k,
        CreditsChange::Set(7),
        daily("2031-08-01T10:00:00Z"),
    )
    .await;
    // Two days later, nothing read in between: 50 + 25, not 7 + 25.
    let later = daily("2031-08-03T10:00:00Z");
    assert_eq!(
        adjust(ledger, &owner, &k, CreditsChange::Add(25), later).await,
        75
    );
    assert_eq!(balance(ledger, &owner, &k, later).await, 75);
    // An add in the same period adds; the next refill forgets the extra.
    assert_eq!(
        adjust(ledger, &owner, &k, CreditsChange::Add(5), later).await,
        80
    );
    assert_eq!(
        balance(ledger, &owner, &k, daily("2031-08-04T00:00:00Z")).await,
        50
    );
    // Without a refill, add only adds, and an add to nothing starts at 0.
    let plain = key("key_refill_add_plain");
    assert_eq!(
        adjust(ledger, &owner, &plain, CreditsChange::Add(4), None).await,
        4
    );
    assert_eq!(
        adjust(ledger, &owner, &plain, CreditsChange::Add(6), None).await,
        10
    );
    assert_eq!(balance(ledger, &owner, &plain, None).await, 10);
}

async fn a_changed_refill_interval_invents_no_refill(ledger: &dyn Ledger) {
    let owner = account("acct_interval");
    let k = key("key_interval");
    // Set on a daily refill on 10 September...
    adjust(
        ledger,
        &owner,
        &k,
        CreditsChange::Set(7),
        Some(refill(50, day("2031-09-10T10:00:00Z"))),
    )
    .await;
    // ...then the refill becomes monthly: a new day has started, and the
    // monthly number (months since 1970) is far below the daily one, but
    // neither is a reason to refill.
    let september = Some(refill(50, month("2031-09-11T10:00:00Z")));
    assert_eq!(balance(ledger, &owner, &k, september).await, 7);
    let spend = |refill| with_credits(meter(owner, 1), k, refill);
    assert_eq!(
        charge(ledger, &spend(september)).await,
        charged(None, Some(6))
    );
    assert_eq!(balance(ledger, &owner, &k, september).await, 6);
    // October is a new period of the new interval: that refill is real.
    let october = Some(refill(50, month("2031-10-01T00:00:00Z")));
    assert_eq!(balance(ledger, &owner, &k, october).await, 50);
    assert_eq!(
        charge(ledger, &spend(october)).await,
        charged(None, Some(49))
    );

    // The other way round: monthly, then daily.
    let back = key("key_interval_back");
    adjust(
        ledger,
        &owner,
        &back,
        CreditsChange::Set(9),
        Some(refill(50, month("2031-09-10T10:00:00Z"))),
    )
    .await;
    let a_later_day = Some(refill(50, day("2031-09-12T10:00:00Z")));
    assert_eq!(
        charge(ledger, &with_credits(meter(owner, 1), back, a_later_day)).await,
        charged(None, Some(8))
    );
    // A refill removed keeps the balance as it is.
    assert_eq!(balance(ledger, &owner, &back, None).await, 8);
}

async fn counts_cap_at_max_quota_count_and_stay_exact(ledger: &dyn Ledger) {
    let owner = account("acct_cap");
    let k = key("key_cap");
    assert_eq!(
        adjust(
            ledger,
            &owner,
            &k,
            CreditsChange::Set(MAX_QUOTA_COUNT - 2),
            None
        )
        .await,
        MAX_QUOTA_COUNT - 2
    );
    assert_eq!(
        adjust(ledger, &owner, &k, CreditsChange::Add(10), None).await,
        MAX_QUOTA_COUNT
    );
    assert_eq!(
        adjust(
            ledger,
            &owner,
            &k,
            CreditsChange::Add(MAX_QUOTA_COUNT),
            None
        )
        .await,
        MAX_QUOTA_COUNT
    );
    assert_eq!(
        adjust(ledger, &owner, &k, CreditsChange::Add(u64::MAX), None).await,
        MAX_QUOTA_COUNT
    );
    // Charges at the top of the range are exact (Lua's doubles are exact
    // only below 2^53).
    let spend = with_credits(meter(owner, 1), k, None);
    assert_eq!(
        charge(ledger, &spend).await,
        charged(None, Some(MAX_QUOTA_COUNT - 1))
    );
    assert_eq!(balance(ledger, &owner, &k, None).await, MAX_QUOTA_COUNT - 1);
    assert_eq!(
        adjust(ledger, &owner, &k, CreditsChange::Set(u64::MAX), None).await,
        MAX_QUOTA_COUNT
    );
    // A refill of the largest amount.
    let refilled = key("key_cap_refill");
    let first = Some(refill(MAX_QUOTA_COUNT, day("2031-10-10T00:00:00Z")));
    let next = Some(refill(MAX_QUOTA_COUNT, day("2031-10-11T00:00:00Z")));
    adjust(ledger, &owner, &refilled, CreditsChange::Set(1), first).await;
    assert_eq!(
        charge(ledger, &with_credits(meter(owner, 2), refilled, next)).await,
        charged(None, Some(MAX_QUOTA_COUNT - 2))
    );

    // A quota of the largest size counts to it exactly and no further.
    let window = month("2031-10-10T00:00:00Z");
    let q = QuotaSubject::Account;
    let big = with_quota(
        meter(owner, MAX_QUOTA_COUNT - 1),
        q,
        MAX_QUOTA_COUNT,
        window,
    );
    assert_eq!(charge(ledger, &big).await, charged(Some(1), None));
    let one = with_quota(meter(owner, 1), q, MAX_QUOTA_COUNT, window);
    assert_eq!(charge(ledger, &one).await, charged(Some(0), None));
    assert_eq!(
        charge(ledger, &one).await,
        refused(QuotaLimit::Quota, Some(0), None)
    );
    assert_eq!(used(ledger, &owner, q, window).await, MAX_QUOTA_COUNT);
}

/// Runs `tasks` charges of `meter` at once; answers how many were charged.
async fn charge_concurrently(ledger: &Arc<dyn Ledger>, meter: Meter, tasks: usize) -> usize {
    let barrier = Arc::new(tokio::sync::Barrier::new(tasks));
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let ledger = Arc::clone(ledger);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                // All start together, so the charges really overlap.
                barrier.wait().await;
                ledger.charge(&meter).await.unwrap()
            })
        })
        .collect();
    let mut count = 0;
    for handle in handles {
        let outcome = handle.await.unwrap();
        if outcome.is_charged() {
            count += 1;
        } else {
            assert!(outcome.refused_by.is_some());
        }
    }
    count
}

async fn exactly_n_of_many_concurrent_charges_pass_a_quota_of_n(ledger: &Arc<dyn Ledger>) {
    let owner = account("acct_concurrent");
    let window = month("2031-11-11T00:00:00Z");
    let q = QuotaSubject::Account;
    let one = with_quota(meter(owner, 1), q, 50, window);
    assert_eq!(charge_concurrently(ledger, one, 200).await, 50);
    assert_eq!(used(ledger.as_ref(), &owner, q, window).await, 50);

    // Credits likewise: 50 units, 200 requests of 1.
    let k = key("key_concurrent");
    adjust(ledger.as_ref(), &owner, &k, CreditsChange::Set(50), None).await;
    let spend = with_credits(meter(owner, 1), k, None);
    assert_eq!(charge_concurrently(ledger, spend, 200).await, 50);
    assert_eq!(balance(ledger.as_ref(), &owner, &k, None).await, 0);
}

async fn concurrent_charges_to_quota_and_credits_take_both_or_neither(ledger: &Arc<dyn Ledger>) {
    // 40 credits run out before a quota of 60: the quota must count only
    // the 40 that paid, however the 200 requests interleave.
    let owner = account("acct_concurrent_both");
    let window = month("2031-11-11T00:00:00Z");
    let q = QuotaSubject::Account;
    let k = key("key_concurrent_both");
    adjust(ledger.as_ref(), &owner, &k, CreditsChange::Set(40), None).await;
    let both = with_credits(with_quota(meter(owner, 1), q, 60, window), k, None);
    assert_eq!(charge_concurrently(ledger, both, 200).await, 40);
    assert_eq!(used(ledger.as_ref(), &owner, q, window).await, 40);
    assert_eq!(balance(ledger.as_ref(), &owner, &k, None).await, 0);

    // And the other way: a quota of 30 runs out before 80 credits.
    let owner = account("acct_concurrent_both_q");
    adjust(ledger.as_ref(), &owner, &k, CreditsChange::Set(80), None).await;
    let both = with_credits(with_quota(meter(owner, 1), q, 30, window), k, None);
    assert_eq!(charge_concurrently(ledger, both, 200).await, 30);
    assert_eq!(used(ledger.as_ref(), &owner, q, window).await, 30);
    assert_eq!(balance(ledger.as_ref(), &owner, &k, None).await, 50);
}

/// Generous, so a loaded 2-core machine turns no slow answer into a failure.
fn patient() -> RedisOptions {
    let mut options = RedisOptions::default();
    options.command_timeout = Duration::from_secs(2);
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_memory_ledger_keeps_the_contract() {
    run_ledger_contract(Arc::new(LocalLedger::in_memory())).await;
    run_concurrent_ledger_contract(Arc::new(LocalLedger::in_memory())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_durable_ledger_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let ledger = Arc::new(LocalLedger::durable(store).await.unwrap());
    run_ledger_contract(ledger.clone()).await;
    run_concurrent_ledger_contract(ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_ledger_keeps_the_contract() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), patient()).unwrap();
    let ledger: Arc<dyn Ledger> = Arc::new(RedisLedger::new(store.connection()));
    run_ledger_contract(ledger.clone()).await;
    run_concurrent_ledger_contract(ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_cluster_ledger_keeps_the_contract() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 0))
        .await
        .unwrap();
    let store = RedisStore::connect_cluster(&cluster.seeds(), patient()).unwrap();
    let ledger: Arc<dyn Ledger> = Arc::new(RedisLedger::new(store.connection()));
    run_ledger_contract(ledger.clone()).await;
    run_concurrent_ledger_contract(ledger).await;
}

/// The embedded store's ledger in `dir`, as a restarted server opens it.
async fn reopen(dir: &std::path::Path) -> (Arc<EmbeddedStore>, LocalLedger) {
    let store = Arc::new(EmbeddedStore::open(dir).unwrap());
    let counters: Arc<dyn CounterStore> = store.clone();
    let ledger = LocalLedger::durable(counters).await.unwrap();
    (store, ledger)
}

#[tokio::test]
async fn the_durable_ledger_reopens_with_what_it_persisted_and_never_more() {
    let dir = tempfile::tempdir().unwrap();
    let owner = account("acct_durable");
    let k = key("key_durable");
    let q = QuotaSubject::Key(k);
    let window = month("2031-12-05T00:00:00Z");
    let daily = Some(refill(20, day("2031-12-05T00:00:00Z")));
    let spend = with_credits(with_quota(meter(owner, 2), q, 100, window), k, daily);
    let account_quota = with_quota(meter(owner, 1), QuotaSubject::Account, 10, window);

    {
        let (_store, ledger) = reopen(dir.path()).await;
        // An admin change is durable before it is acknowledged.
        adjust(&ledger, &owner, &k, CreditsChange::Set(15), daily).await;
        for _ in 0..3 {
            assert!(ledger.charge_now(&spend).is_charged());
        }
        for _ in 0..4 {
            assert!(ledger.charge_now(&account_quota).is_charged());
        }
        ledger.persist().await.unwrap();
    }
    {
        let (_store, ledger) = reopen(dir.path()).await;
        assert_eq!(used(&ledger, &owner, q, window).await, 6);
        assert_eq!(
            used(&ledger, &owner, QuotaSubject::Account, window).await,
            4
        );
        // The set counted as that day's refill, also after the reopen.
        assert_eq!(balance(&ledger, &owner, &k, daily).await, 9);
        // More use, not persisted: a kill -9 now would forget it.
        for _ in 0..2 {
            assert!(ledger.charge_now(&spend).is_charged());
        }
        assert!(ledger.charge_now(&account_quota).is_charged());
        assert_eq!(used(&ledger, &owner, q, window).await, 10);
    }
    {
        let (_store, ledger) = reopen(dir.path()).await;
        // Never more use than happened: the last persisted values, which
        // the counters really had.
        let quota_used = used(&ledger, &owner, q, window).await;
        assert!(quota_used <= 10, "{quota_used}");
        assert_eq!(quota_used, 6);
        assert_eq!(
            used(&ledger, &owner, QuotaSubject::Account, window).await,
            4
        );
        assert_eq!(balance(&ledger, &owner, &k, daily).await, 9);
        // It carries on from there and a later day still refills once.
        let tomorrow = Some(refill(20, day("2031-12-06T00:00:00Z")));
        assert_eq!(balance(&ledger, &owner, &k, tomorrow).await, 20);
        ledger.persist().await.unwrap();
    }
    {
        let (_store, ledger) = reopen(dir.path()).await;
        assert_eq!(
            balance(
                &ledger,
                &owner,
                &k,
                Some(refill(20, day("2031-12-06T12:00:00Z")))
            )
            .await,
            20
        );
        // Ended periods are forgotten, on disk too, once persisted.
        ledger.forget_ended(at("2032-01-01T00:00:00Z"));
        ledger.persist().await.unwrap();
    }
    let (_store, ledger) = reopen(dir.path()).await;
    assert_eq!(used(&ledger, &owner, q, window).await, 0);
    assert_eq!(
        used(&ledger, &owner, QuotaSubject::Account, window).await,
        0
    );
}
