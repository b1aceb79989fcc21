//! The human forms of durations, rates and sizes used by flags and the CLI:
//! `30s`, `250ms`, `24h`, `90d`; `100/minute`, `1000/hour`, `10/s`;
//! `16MiB`, `512KiB`.
//! Shared so that `cloro-server --cache-ttl` and `cloro keys create
//! --expires-in` read the same text the same way.

use core::fmt;
use core::num::NonZeroU32;
use core::time::Duration;

/// Why a duration or rate was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitsError {
    /// No number, or a number out of range.
    Number,
    /// A unit that is not one of the accepted ones.
    Unit,
    /// A rate without `/`.
    RateShape,
    /// A size unit that is not one of the accepted ones.
    SizeUnit,
}

impl fmt::Display for UnitsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitsError::Number => {
                f.write_str("expected a whole number greater than zero, e.g. 30s or 100/minute")
            }
            UnitsError::Unit => {
                f.write_str("unknown unit; use ms, s, m, h or d (or second, minute, hour, day)")
            }
            UnitsError::RateShape => {
                f.write_str("a rate is COUNT/UNIT, e.g. 100/minute or 1000/hour")
            }
            UnitsError::SizeUnit => {
                f.write_str("unknown size unit; use B, KiB, MiB or GiB (e.g. 16MiB)")
            }
        }
    }
}

impl core::error::Error for UnitsError {}

/// Parses `250ms`, `30s`, `5m`, `24h`, `90d` (a bare number is seconds).
///
/// # Errors
/// When the number or the unit is not understood.
pub fn parse_duration(text: &str) -> Result<Duration, UnitsError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let count: u64 = digits.parse().map_err(|_| UnitsError::Number)?;
    let duration = match unit.trim() {
        "ms" => Duration::from_millis(count),
        "" | "s" | "sec" | "second" | "seconds" => Duration::from_secs(count),
        unit => Duration::from_secs(
            count
                .checked_mul(unit_seconds(unit)?)
                .ok_or(UnitsError::Number)?,
        ),
    };
    Ok(duration)
}

/// Parses a size in bytes: `16MiB`, `512KiB`, `1GiB`, `4096` or `4096B`
/// (`KB`, `MB`, `GB` are read as the binary units too: a memory budget is
/// never meant in powers of ten).
///
/// # Errors
/// When the number or the unit is not understood, or the size overflows.
pub fn parse_byte_size(text: &str) -> Result<u64, UnitsError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let count: u64 = digits.parse().map_err(|_| UnitsError::Number)?;
    let unit = unit.trim();
    let scales: [(&[&str], u64); 4] = [
        (&["", "b"], 1),
        (&["k", "kb", "kib"], 1 << 10),
        (&["m", "mb", "mib"], 1 << 20),
        (&["g", "gb", "gib"], 1 << 30),
    ];
    let scale = scales
        .iter()
        .find(|(names, _)| names.iter().any(|name| name.eq_ignore_ascii_case(unit)))
        .map(|(_, scale)| *scale)
        .ok_or(UnitsError::SizeUnit)?;
    count.checked_mul(scale).ok_or(UnitsError::Number)
}

/// Parses `COUNT/UNIT` (`100/minute`, `1000/hour`, `10/s`, `5/10s`) into
/// requests and a period in seconds.
///
/// # Errors
/// When the count, the unit or the shape is not understood.
pub fn parse_rate(text: &str) -> Result<(NonZeroU32, NonZeroU32), UnitsError> {
    let (count, per) = text.trim().split_once('/').ok_or(UnitsError::RateShape)?;
    let requests: u32 = count.trim().parse().map_err(|_| UnitsError::Number)?;
    let per = per.trim();
    let seconds = if per.starts_with(|c: char| c.is_ascii_digit()) {
        let duration = parse_duration(per)?;
        if duration.subsec_nanos() != 0 {
            return Err(UnitsError::Unit);
        }
        duration.as_secs()
    } else {
        match per {
            "s" | "sec" | "second" => 1,
            unit => unit_seconds(unit)?,
        }
    };
    let requests = NonZeroU32::new(requests).ok_or(UnitsError::Number)?;
    let seconds = u32::try_from(seconds)
        .ok()
        .and_then(NonZeroU32::new)
        .ok_or(UnitsError::Number)?;
    Ok((requests, seconds))
}

fn unit_seconds(unit: &str) -> Result<u64, UnitsError> {
    Ok(match unit {
        "s" | "sec" | "second" | "seconds" => 1,
        "m" | "min" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        _ => return Err(UnitsError::Unit),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("10y"), Err(UnitsError::Unit));
        assert_eq!(parse_duration("h"), Err(UnitsError::Number));
        assert_eq!(
            parse_duration("99999999999999999999d"),
            Err(UnitsError::Number)
        );
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_byte_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_byte_size("1gb"), Ok(1 << 30));
        assert_eq!(parse_byte_size("4096"), Ok(4096));
        assert_eq!(parse_byte_size("4096B"), Ok(4096));
        assert_eq!(parse_byte_size("16TiB"), Err(UnitsError::SizeUnit));
        assert_eq!(parse_byte_size("MiB"), Err(UnitsError::Number));
        assert_eq!(
            parse_byte_size("99999999999999GiB"),
            Err(UnitsError::Number)
        );
    }

    #[test]
    fn rates() {
        let rate = |n, s| Ok((NonZeroU32::new(n).unwrap(), NonZeroU32::new(s).unwrap()));
        assert_eq!(parse_rate("100/minute"), rate(100, 60));
        assert_eq!(parse_rate("1000/hour"), rate(1000, 3600));
        assert_eq!(parse_rate("10/s"), rate(10, 1));
        assert_eq!(parse_rate("5/10s"), rate(5, 10));
        assert_eq!(parse_rate("7/day"), rate(7, 86_400));
        assert_eq!(parse_rate("0/minute"), Err(UnitsError::Number));
        assert_eq!(parse_rate("100"), Err(UnitsError::RateShape));
        assert_eq!(parse_rate("100/fortnight"), Err(UnitsError::Unit));
        assert_eq!(parse_rate("5/500ms"), Err(UnitsError::Unit));
    }
}
