//! Calendar periods in UTC (SPEC §11): which day or month a moment falls
//! in, when that period started and when the next one starts. Quotas count
//! per period and credits refill at each period start, so both stores and
//! every node must cut time the same way; this is the one place that does.

use cloro_auth_core::wire::QuotaPeriod;
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::Offset;

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
    pub fn containing(period: QuotaPeriod, at: Timestamp) -> Self {
        let date = Offset::UTC.to_datetime(at).date();
        let (first, next) = match period {
            QuotaPeriod::Day => (date, date.tomorrow().unwrap_or(date)),
            QuotaPeriod::Month => {
                let first = date.first_of_month();
                (first, first.last_of_month().tomorrow().unwrap_or(first))
            }
        };
        let start = unix_seconds(first);
        let end = unix_seconds(next);
        let index = match period {
            QuotaPeriod::Day => start.div_euclid(86_400),
            QuotaPeriod::Month => {
                (i64::from(first.year()) - 1970) * 12 + i64::from(first.month()) - 1
            }
        };
        Window {
            period,
            index,
            start,
            end,
        }
    }

    /// The period's length in seconds (`w=` of the quota's `RateLimit-Policy`).
    pub fn seconds(&self) -> u64 {
        u64::try_from(self.end - self.start).unwrap_or(0)
    }

    /// Whole seconds from `at` until the next period, rounded up, at least 1.
    pub fn seconds_left(&self, at: Timestamp) -> u64 {
        let nanos_left = i128::from(self.end) * 1_000_000_000 - at.as_nanosecond();
        let seconds = (nanos_left + 999_999_999).div_euclid(1_000_000_000);
        u64::try_from(seconds).unwrap_or(0).max(1)
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

fn unix_seconds(date: Date) -> i64 {
    Offset::UTC
        .to_timestamp(date.to_datetime(jiff::civil::Time::midnight()))
        .map_or(i64::MAX, |at| at.as_second())
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

    #[test]
    fn days_are_numbered_from_the_epoch() {
        let day = Window::containing(QuotaPeriod::Day, at("1970-01-02T05:00:00Z"));
        assert_eq!((day.index, day.start, day.end), (1, 86_400, 172_800));
        assert_eq!(day.seconds_left(at("1970-01-02T05:00:00Z")), 19 * 3600);
    }
}
