//! Usage as SVG, drawn on the server (SPEC §13): a stacked bar per time
//! bucket, one colour per outcome, with axes, labels, a legend and a title
//! for screen readers; and the small sparkline of a key's last 24 hours.
//!
//! Colours are SVG presentation attributes, not `style`, so the strict
//! Content-Security-Policy (no inline style) holds; the legend's swatches
//! use the style sheet's `o-<outcome>` classes with the same colours.

use cloro_auth_core::wire::{UsageBucket, UsageCounts, UsageGranularity, UsageOutcome};
use maud::{Markup, html};

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// Each outcome's colour: green for served, warm for limits, grey and red
/// for keys that no longer work.
pub(crate) fn colour(outcome: UsageOutcome) -> &'static str {
    match outcome {
        UsageOutcome::Valid => "#2f9e44",
        UsageOutcome::RateLimited => "#f59f00",
        UsageOutcome::QuotaExceeded => "#e8590c",
        UsageOutcome::ConcurrencyLimited => "#ae3ec9",
        UsageOutcome::Forbidden => "#7048e8",
        UsageOutcome::Expired => "#868e96",
        UsageOutcome::Revoked => "#e03131",
        UsageOutcome::Disabled => "#495057",
    }
}

/// How an outcome reads in a legend.
pub(crate) fn label(outcome: UsageOutcome) -> &'static str {
    match outcome {
        UsageOutcome::Valid => "Served",
        UsageOutcome::RateLimited => "Rate limited",
        UsageOutcome::QuotaExceeded => "Quota exceeded",
        UsageOutcome::ConcurrencyLimited => "Concurrency limited",
        UsageOutcome::Forbidden => "Forbidden (scope)",
        UsageOutcome::Expired => "Expired",
        UsageOutcome::Revoked => "Revoked",
        UsageOutcome::Disabled => "Disabled",
    }
}

/// The smallest "round" number (1, 2, 5 × 10ⁿ) at or above `value`.
fn nice_ceiling(value: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for factor in [1, 2, 5] {
            let candidate = step.saturating_mul(factor);
            if candidate >= value {
                return candidate;
            }
        }
        step = step.saturating_mul(10);
        if step == u64::MAX {
            return u64::MAX;
        }
    }
}

/// A count as people read it: 1234567 → 1,234,567.
pub(crate) fn grouped(value: u64) -> String {
    let digits = value.to_string();
    let mut text = String::with_capacity(digits.len() + digits.len() / 3);
    for (at, digit) in digits.chars().enumerate() {
        if at > 0 && (digits.len() - at).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

fn bucket_label(bucket: &UsageBucket, granularity: UsageGranularity) -> String {
    let time = bucket.start;
    match granularity {
        UsageGranularity::Minute | UsageGranularity::Hour => time.strftime("%H:%M").to_string(),
        UsageGranularity::Day => time.strftime("%b %-d").to_string(),
    }
}

/// Each outcome of a bucket with a count, as the span of the stack it
/// takes: (outcome, from, to), bottom first.
fn stack(counts: &UsageCounts) -> Vec<(UsageOutcome, u64, u64)> {
    let mut below = 0u64;
    let mut spans = Vec::new();
    for outcome in UsageOutcome::ALL {
        let value = counts.get(outcome);
        if value > 0 {
            spans.push((outcome, below, below.saturating_add(value)));
            below = below.saturating_add(value);
        }
    }
    spans
}

/// The chart of `buckets`, titled `title`.
pub(crate) fn usage_chart(
    title: &str,
    buckets: &[UsageBucket],
    granularity: UsageGranularity,
) -> Markup {
    let highest = buckets
        .iter()
        .map(|bucket| bucket.counts.total())
        .max()
        .unwrap_or(0);
    let top = nice_ceiling(highest.max(4));
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let count = buckets.len().max(1) as f64;
    let slot = plot_width / count;
    let bar = (slot * 0.8).max(1.0);
    let y_of = |value: u64| TOP + plot_height - plot_height * (value as f64 / top as f64);
    let total: u64 = buckets.iter().map(|bucket| bucket.counts.total()).sum();
    let described = format!(
        "{title}: {} requests in {} buckets of one {}",
        grouped(total),
        buckets.len(),
        granularity.as_str()
    );
    let ticks: Vec<u64> = (0..=4).map(|step| top / 4 * step).collect();
    let labelled: Vec<usize> = match buckets.len() {
        0 => Vec::new(),
        1 => vec![0],
        n => vec![0, n / 2, n - 1],
    };
    html! {
        svg class="chart" viewBox={"0 0 " (WIDTH) " " (HEIGHT)} role="img"
            aria-label=(described) xmlns="http://www.w3.org/2000/svg" {
            title { (described) }
            @for tick in &ticks {
                @let y = y_of(*tick);
                line x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y) y2=(y) stroke="#e9ecef" stroke-width="1" {}
                text x=(LEFT - 8.0) y=(y + 4.0) text-anchor="end" font-size="11" fill="#6c757d" {
                    (grouped(*tick))
                }
            }
            @for (index, bucket) in buckets.iter().enumerate() {
                g {
                    title { (bucket_label(bucket, granularity)) ": " (grouped(bucket.counts.total())) " requests" }
                    @for (outcome, low, high) in stack(&bucket.counts) {
                        @let x = LEFT + slot * index as f64 + (slot - bar) / 2.0;
                        @let y_top = y_of(high);
                        @let height = (y_of(low) - y_top).max(0.5);
                        rect x=(format!("{x:.2}")) y=(format!("{y_top:.2}")) width=(format!("{bar:.2}"))
                            height=(format!("{height:.2}")) fill=(colour(outcome)) {}
                    }
                }
            }
            line x1=(LEFT) x2=(WIDTH - RIGHT) y1=(TOP + plot_height) y2=(TOP + plot_height) stroke="#adb5bd" stroke-width="1" {}
            @for index in &labelled {
                @let bucket = &buckets[*index];
                @let x = LEFT + slot * (*index as f64 + 0.5);
                text x=(format!("{x:.2}")) y=(HEIGHT - 8.0) text-anchor="middle" font-size="11" fill="#6c757d" {
                    (bucket_label(bucket, granularity))
                }
            }
        }
    }
}

/// The legend under a chart: each outcome seen, with its total.
pub(crate) fn legend(totals: &UsageCounts) -> Markup {
    let seen: Vec<UsageOutcome> = UsageOutcome::ALL
        .into_iter()
        .filter(|outcome| totals.get(*outcome) > 0 || *outcome == UsageOutcome::Valid)
        .collect();
    html! {
        ul.legend {
            @for outcome in seen {
                li {
                    span class={"swatch o-" (outcome.as_str())} aria-hidden="true" {}
                    (label(outcome)) " "
                    strong { (grouped(totals.get(outcome))) }
                }
            }
        }
    }
}

/// A key's last hours as a small line, for the account's key table.
pub(crate) fn sparkline(buckets: &[UsageBucket]) -> Markup {
    const W: f64 = 120.0;
    const H: f64 = 28.0;
    let highest = buckets
        .iter()
        .map(|bucket| bucket.counts.total())
        .max()
        .unwrap_or(0);
    let total: u64 = buckets.iter().map(|bucket| bucket.counts.total()).sum();
    let step = if buckets.len() > 1 {
        W / (buckets.len() - 1) as f64
    } else {
        W
    };
    let points: Vec<String> = buckets
        .iter()
        .enumerate()
        .map(|(index, bucket)| {
            let y = if highest == 0 {
                H - 2.0
            } else {
                H - 2.0 - (H - 4.0) * (bucket.counts.total() as f64 / highest as f64)
            };
            format!("{:.1},{:.1}", step * index as f64, y)
        })
        .collect();
    let described = format!("{} requests in the last 24 hours", grouped(total));
    html! {
        svg class="sparkline" viewBox={"0 0 " (W) " " (H)} role="img" aria-label=(described)
            xmlns="http://www.w3.org/2000/svg" {
            title { (described) }
            polyline points=(points.join(" ")) fill="none"
                stroke=(if total == 0 { "#ced4da" } else { "#1c7ed6" }) stroke-width="1.5" {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(nice_ceiling(0), 1);
        assert_eq!(nice_ceiling(3), 5);
        assert_eq!(nice_ceiling(11), 20);
        assert_eq!(nice_ceiling(501), 1000);
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }

    #[test]
    fn a_chart_stacks_each_outcome_and_says_what_it_shows() {
        let start = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let buckets = [UsageBucket {
            start,
            counts: UsageCounts {
                valid: 3,
                rate_limited: 2,
                ..UsageCounts::default()
            },
        }];
        let svg = usage_chart("Usage", &buckets, UsageGranularity::Hour).into_string();
        assert!(svg.contains("<title>Usage: 5 requests in 1 buckets of one hour</title>"));
        assert!(svg.contains(colour(UsageOutcome::Valid)));
        assert!(svg.contains(colour(UsageOutcome::RateLimited)));
        assert!(!svg.contains(colour(UsageOutcome::Revoked)));
    }
}
