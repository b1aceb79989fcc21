//! Calendar periods in UTC (SPEC §11): which day or month a moment falls
//! in, when that period started and when the next one starts. Quotas count
//! per period and credits refill at each period start, so both stores and
//! every node must cut time the same way; this is the one place that does.

use cloro_auth_core::wire::QuotaPeriod;
use jiff::Timestamp;

/// One day or month: its number (days or months since 1970-01 UTC, so later
/// periods have higher numbers) and its bounds in Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Day or month.
    pub period: QuotaPeriod,
    /// Days since 1970-01-01, or months since January 1970.
    pub index: i64,
    /// The first second of the period.
    pub start: i64,
    /// The first second of the next period.
    pub end: i64,
}

impl Window {
    /// The period of kind `period` that contains `at`.
    ///
    /// Plain integer arithmetic on the proleptic Gregorian calendar: every
    /// metered request computes its window, and going through `jiff`'s
    /// civil dates cost more than the ledger's charge itself. The property
    /// test below holds it to `jiff`'s answer.
    pub fn containing(period: QuotaPeriod, at: Timestamp) -> Self {
        let day = floor_second(at).div_euclid(SECONDS_PER_DAY);
        match period {
            QuotaPeriod::Day => Window {
                period,
                index: day,
                start: day * SECONDS_PER_DAY,
                end: (day + 1) * SECONDS_PER_DAY,
            },
            QuotaPeriod::Month => {
                // A month lasts a million requests: this thread's last
                // answer is nearly always the one asked for again.
                let second = floor_second(at);
                if let Some(window) = LAST_MONTH.get()
                    && (window.start..window.end).contains(&second)
                {
                    return window;
                }
                let (year, month, day_of_month) = civil_date(day);
                let first = day - (day_of_month - 1);
                let window = Window {
                    period,
                    index: (year - 1970) * 12 + month - 1,
                    start: first * SECONDS_PER_DAY,
                    end: (first + days_in_month(year, month)) * SECONDS_PER_DAY,
                };
                LAST_MONTH.set(Some(window));
                window
            }
        }
    }

    /// The period's length in seconds (`w=` of the quota's `RateLimit-Policy`).
    pub fn seconds(&self) -> u64 {
        u64::try_from(self.end - self.start).unwrap_or(0)
    }

    /// Whole seconds from `at` until the next period, rounded up, at least 1.
    pub fn seconds_left(&self, at: Timestamp) -> u64 {
        // With `at` = s + f (whole seconds s, fraction 0 <= f < 1), the
        // time left rounded up is `end - s` for any f: no division needed.
        u64::try_from(self.end - floor_second(at))
            .unwrap_or(0)
            .max(1)
    }

    /// When the next period starts.
    pub fn end_timestamp(&self) -> Timestamp {
        Timestamp::from_second(self.end).unwrap_or(Timestamp::MAX)
    }
}

/// The letter of a period in counter names and stored balances, the same
/// in process and in the Redis scripts: `d` or `m`.
pub(crate) fn period_letter(period: QuotaPeriod) -> &'static str {
    match period {
        QuotaPeriod::Day => "d",
        QuotaPeriod::Month => "m",
    }
}

/// The period of [`period_letter`]'s letter.
pub(crate) fn period_of(letter: &str) -> Option<QuotaPeriod> {
    match letter {
        "d" => Some(QuotaPeriod::Day),
        "m" => Some(QuotaPeriod::Month),
        _ => None,
    }
}

thread_local! {
    /// The month [`Window::containing`] last answered on this thread.
    static LAST_MONTH: core::cell::Cell<Option<Window>> = const { core::cell::Cell::new(None) };
}

const SECONDS_PER_DAY: i64 = 86_400;

/// The whole second `at` falls in. `as_second` rounds toward zero, so a
/// moment before 1970 with a fraction belongs to the second before it.
fn floor_second(at: Timestamp) -> i64 {
    at.as_second() - i64::from(at.subsec_nanosecond() < 0)
}
/// Days in 400 Gregorian years, the calendar's whole cycle.
const DAYS_PER_ERA: i64 = 146_097;
/// Days from 0000-03-01 to 1970-01-01. Counting years from March puts the
/// leap day at the end of a year, which keeps the arithmetic below free of
/// special cases.
const EPOCH_FROM_MARCH_ZERO: i64 = 719_468;

/// The year, month (1–12) and day of the month (1–31) of `day`, counted
/// in days since 1970-01-01.
fn civil_date(day: i64) -> (i64, i64, i64) {
    let day = day + EPOCH_FROM_MARCH_ZERO;
    let era = day.div_euclid(DAYS_PER_ERA);
    let day_of_era = day - era * DAYS_PER_ERA;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March: 0 is March, 11 is February.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day_of_month = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day_of_month)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn the_last_second_of_a_month_and_the_first_of_the_next() {
        let last = Window::containing(QuotaPeriod::Month, at("2026-01-31T23:59:59.999Z"));
        let next = Window::containing(QuotaPeriod::Month, at("2026-02-01T00:00:00Z"));
        assert_eq!(last.start, at("2026-01-01T00:00:00Z").as_second());
        assert_eq!(last.end, next.start);
        assert_eq!(next.index, last.index + 1);
        assert_eq!(last.seconds(), 31 * 86_400);
        assert_eq!(last.seconds_left(at("2026-01-31T23:59:59.999Z")), 1);
    }

    #[test]
    fn new_year_and_leap_days() {
        let december = Window::containing(QuotaPeriod::Month, at("2026-12-31T12:00:00Z"));
        let january = Window::containing(QuotaPeriod::Month, at("2027-01-01T00:00:00Z"));
        assert_eq!(january.index, december.index + 1);
        assert_eq!(january.start, december.end);
        let february = Window::containing(QuotaPeriod::Month, at("2028-02-29T23:00:00Z"));
        assert_eq!(february.seconds(), 29 * 86_400);
        assert_eq!(february.end, at("2028-03-01T00:00:00Z").as_second());
        let leap_day = Window::containing(QuotaPeriod::Day, at("2028-02-29T23:59:59Z"));
        assert_eq!(leap_day.start, at("2028-02-29T00:00:00Z").as_second());
        assert_eq!(leap_day.end, at("2028-03-01T00:00:00Z").as_second());
        assert_eq!(leap_day.seconds(), 86_400);
        assert_eq!(
            Window::containing(QuotaPeriod::Month, at("1970-01-15T00:00:00Z")).index,
            0
        );
    }

    /// `jiff`'s civil dates: the reference the arithmetic is held to.
    fn reference(period: QuotaPeriod, at: Timestamp) -> (i64, i64, i64) {
        use jiff::civil::{Date, Time};
        use jiff::tz::Offset;
        let midnight = |date: Date| {
            Offset::UTC
                .to_timestamp(date.to_datetime(Time::midnight()))
                .unwrap()
                .as_second()
        };
        let date = Offset::UTC.to_datetime(at).date();
        let (first, next) = match period {
            QuotaPeriod::Day => (date, date.tomorrow().unwrap()),
            QuotaPeriod::Month => {
                let first = date.first_of_month();
                (first, first.last_of_month().tomorrow().unwrap())
            }
        };
        let index = match period {
            QuotaPeriod::Day => midnight(first).div_euclid(86_400),
            QuotaPeriod::Month => {
                (i64::from(first.year()) - 1970) * 12 + i64::from(first.month()) - 1
            }
        };
        (index, midnight(first), midnight(next))
    }

    proptest::proptest! {
        #[test]
        fn the_arithmetic_agrees_with_the_civil_calendar(
            // Years 0001 to 9998: every timestamp whose next month jiff can name.
            second in -62_135_596_800_i64..253_370_764_800,
            nanos in 0..1_000_000_000_i32,
        ) {
            let at = Timestamp::new(second, nanos).unwrap();
            for period in [QuotaPeriod::Day, QuotaPeriod::Month] {
                let window = Window::containing(period, at);
                // Asked again, the answer comes from this thread's cache.
                proptest::prop_assert_eq!(Window::containing(period, at), window);
                proptest::prop_assert_eq!(
                    (window.index, window.start, window.end),
                    reference(period, at),
                    "{:?} at {}", period, at
                );
                let nanos_left = i128::from(window.end) * 1_000_000_000 - at.as_nanosecond();
                let rounded_up = (nanos_left + 999_999_999).div_euclid(1_000_000_000);
                proptest::prop_assert_eq!(
                    i128::from(window.seconds_left(at)),
                    rounded_up.max(1)
                );
            }
        }
    }

    #[test]
    fn days_are_numbered_from_the_epoch() {
        let day = Window::containing(QuotaPeriod::Day, at("1970-01-02T05:00:00Z"));
        assert_eq!((day.index, day.start, day.end), (1, 86_400, 172_800));
        assert_eq!(day.seconds_left(at("1970-01-02T05:00:00Z")), 19 * 3600);
    }
}
