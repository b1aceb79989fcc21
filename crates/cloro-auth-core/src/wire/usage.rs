//! Usage analytics on the wire (SPEC §10): per key, per time bucket, how
//! many answered requests had each outcome.

use alloc::vec::Vec;
use core::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::name::{AccountId, KeyId};

/// How an answered request that named an issued key ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum UsageOutcome {
    /// Let through.
    Valid,
    /// Refused by the rate limit.
    RateLimited,
    /// Refused by the quota or the credits.
    QuotaExceeded,
    /// Refused for too many requests in flight.
    ConcurrencyLimited,
    /// The key lacks the route's scope.
    Forbidden,
    /// The key had expired.
    Expired,
    /// The key was revoked.
    Revoked,
    /// The key was disabled.
    Disabled,
}

impl UsageOutcome {
    /// Every outcome, in the order of [`UsageCounts`]' fields.
    pub const ALL: [UsageOutcome; 8] = [
        UsageOutcome::Valid,
        UsageOutcome::RateLimited,
        UsageOutcome::QuotaExceeded,
        UsageOutcome::ConcurrencyLimited,
        UsageOutcome::Forbidden,
        UsageOutcome::Expired,
        UsageOutcome::Revoked,
        UsageOutcome::Disabled,
    ];

    /// The field name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            UsageOutcome::Valid => "valid",
            UsageOutcome::RateLimited => "rate_limited",
            UsageOutcome::QuotaExceeded => "quota_exceeded",
            UsageOutcome::ConcurrencyLimited => "concurrency_limited",
            UsageOutcome::Forbidden => "forbidden",
            UsageOutcome::Expired => "expired",
            UsageOutcome::Revoked => "revoked",
            UsageOutcome::Disabled => "disabled",
        }
    }

    /// Its position in [`UsageOutcome::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for UsageOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A count per outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UsageCounts {
    /// Let through.
    pub valid: u64,
    /// Refused by the rate limit.
    pub rate_limited: u64,
    /// Refused by the quota or the credits.
    pub quota_exceeded: u64,
    /// Refused for too many requests in flight.
    pub concurrency_limited: u64,
    /// Refused for a missing scope.
    pub forbidden: u64,
    /// Refused: expired.
    pub expired: u64,
    /// Refused: revoked.
    pub revoked: u64,
    /// Refused: disabled.
    pub disabled: u64,
}

impl UsageCounts {
    /// The counts in [`UsageOutcome::ALL`] order.
    pub const fn to_array(&self) -> [u64; 8] {
        [
            self.valid,
            self.rate_limited,
            self.quota_exceeded,
            self.concurrency_limited,
            self.forbidden,
            self.expired,
            self.revoked,
            self.disabled,
        ]
    }

    /// Counts from an array in [`UsageOutcome::ALL`] order.
    pub const fn from_array(counts: [u64; 8]) -> Self {
        UsageCounts {
            valid: counts[0],
            rate_limited: counts[1],
            quota_exceeded: counts[2],
            concurrency_limited: counts[3],
            forbidden: counts[4],
            expired: counts[5],
            revoked: counts[6],
            disabled: counts[7],
        }
    }

    /// The count of `outcome`.
    pub const fn get(&self, outcome: UsageOutcome) -> u64 {
        self.to_array()[outcome.index()]
    }

    /// Adds `other`, saturating.
    pub fn add(&mut self, other: &UsageCounts) {
        let mut sum = self.to_array();
        for (mine, theirs) in sum.iter_mut().zip(other.to_array()) {
            *mine = mine.saturating_add(theirs);
        }
        *self = UsageCounts::from_array(sum);
    }

    /// Every outcome together.
    pub fn total(&self) -> u64 {
        self.to_array()
            .iter()
            .fold(0u64, |sum, count| sum.saturating_add(*count))
    }

    /// Whether every count is 0.
    pub fn is_empty(&self) -> bool {
        self.to_array().iter().all(|count| *count == 0)
    }
}

/// The width of a usage bucket, and how long buckets of it are kept.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum UsageGranularity {
    /// A minute; kept 48 hours.
    Minute,
    /// An hour (the default); kept 90 days.
    #[default]
    Hour,
    /// A UTC day; kept 2 years.
    Day,
}

impl UsageGranularity {
    /// Every granularity, narrowest first.
    pub const ALL: [UsageGranularity; 3] = [
        UsageGranularity::Minute,
        UsageGranularity::Hour,
        UsageGranularity::Day,
    ];

    /// A bucket's width in seconds.
    pub const fn seconds(self) -> i64 {
        match self {
            UsageGranularity::Minute => 60,
            UsageGranularity::Hour => 3600,
            UsageGranularity::Day => 86_400,
        }
    }

    /// How long buckets are kept, in seconds (SPEC §10).
    pub const fn retention_seconds(self) -> i64 {
        match self {
            UsageGranularity::Minute => 48 * 3600,
            UsageGranularity::Hour => 90 * 86_400,
            UsageGranularity::Day => 2 * 365 * 86_400,
        }
    }

    /// The start (Unix seconds) of the bucket holding `unix_seconds`.
    pub const fn bucket_start(self, unix_seconds: i64) -> i64 {
        unix_seconds.div_euclid(self.seconds()) * self.seconds()
    }

    /// `minute`, `hour` or `day`.
    pub const fn as_str(self) -> &'static str {
        match self {
            UsageGranularity::Minute => "minute",
            UsageGranularity::Hour => "hour",
            UsageGranularity::Day => "day",
        }
    }

    /// Reads [`UsageGranularity::as_str`]'s words.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == text)
    }
}

/// The most buckets one usage answer holds.
pub const MAX_USAGE_BUCKETS: i64 = 1500;

/// One bucket: its start and its counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UsageBucket {
    /// When the bucket starts.
    #[cfg_attr(feature = "schema", schemars(with = "super::schema::Rfc3339"))]
    pub start: Timestamp,
    /// Its counts, one field per outcome.
    #[serde(flatten)]
    pub counts: UsageCounts,
}

/// `GET /admin/v1/keys/{id}/usage`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct KeyUsageResponse {
    /// The key.
    pub key_id: KeyId,
    /// The buckets' width.
    pub granularity: UsageGranularity,
    /// The first bucket's start.
    #[cfg_attr(feature = "schema", schemars(with = "super::schema::Rfc3339"))]
    pub from: Timestamp,
    /// The end of the last bucket.
    #[cfg_attr(feature = "schema", schemars(with = "super::schema::Rfc3339"))]
    pub to: Timestamp,
    /// Every bucket in the range, oldest first, empty ones with zeros.
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_USAGE_BUCKETS)))]
    pub buckets: Vec<UsageBucket>,
    /// The sum of the buckets.
    pub totals: UsageCounts,
}

/// One key's share of an account's usage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct KeyUsageTotals {
    /// The key.
    pub key_id: KeyId,
    /// Its totals over the range.
    pub totals: UsageCounts,
}

/// `GET /admin/v1/accounts/{id}/usage`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AccountUsageResponse {
    /// The account.
    pub account_id: AccountId,
    /// The buckets' width.
    pub granularity: UsageGranularity,
    /// The first bucket's start.
    #[cfg_attr(feature = "schema", schemars(with = "super::schema::Rfc3339"))]
    pub from: Timestamp,
    /// The end of the last bucket.
    #[cfg_attr(feature = "schema", schemars(with = "super::schema::Rfc3339"))]
    pub to: Timestamp,
    /// The account's keys' buckets summed, oldest first.
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_USAGE_BUCKETS)))]
    pub buckets: Vec<UsageBucket>,
    /// The sum of the buckets.
    pub totals: UsageCounts,
    /// Each key with any use in the range, busiest first.
    pub keys: Vec<KeyUsageTotals>,
}
