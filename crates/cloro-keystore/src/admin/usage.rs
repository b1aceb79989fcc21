//! Usage analytics reads (SPEC §10): a key's, or an account's summed over
//! its keys, per bucket and outcome, every bucket of the range included
//! (zeros where nothing was counted).

use std::collections::HashMap;

use cloro_auth_core::wire::{
    AccountUsageResponse, KeyUsageResponse, KeyUsageTotals, MAX_USAGE_BUCKETS, UsageBucket,
    UsageCounts, UsageGranularity,
};
use cloro_auth_core::{AccountId, KeyId};
use jiff::{SignedDuration, Timestamp};

use super::{AdminError, KeyAdmin};
use crate::store::{PageRequest, SeriesPoint, retention_cutoff};

/// A range of whole buckets, Unix seconds: `from` inclusive, `to` exclusive.
#[derive(Clone, Copy, Debug)]
struct BucketRange {
    granularity: UsageGranularity,
    from: i64,
    to: i64,
}

impl BucketRange {
    /// The buckets from the one holding `from` to the one holding the last
    /// instant before `to` (defaults: the 24 hours before `now`), checked
    /// against retention and [`MAX_USAGE_BUCKETS`].
    fn new(
        granularity: UsageGranularity,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<Self, AdminError> {
        let to = to.unwrap_or(now);
        let from = match from {
            Some(from) => from,
            None => to
                .checked_sub(SignedDuration::from_hours(24))
                .map_err(|_| AdminError::invalid("to", "is too early"))?,
        };
        if from >= to {
            return Err(AdminError::invalid("from", "must be before `to`"));
        }
        let width = granularity.seconds();
        let first = granularity.bucket_start(from.as_second());
        // The end of the bucket holding the last instant before `to`.
        let last_second = to
            .checked_sub(SignedDuration::from_nanos(1))
            .map_or(to.as_second(), |last| last.as_second());
        let end = granularity.bucket_start(last_second).saturating_add(width);
        if first < retention_cutoff(granularity, now.as_second()) {
            return Err(AdminError::invalid(
                "from",
                format!(
                    "{} buckets are kept {}; start the range later or use a wider granularity",
                    granularity.as_str(),
                    match granularity {
                        UsageGranularity::Minute => "48 hours",
                        UsageGranularity::Hour => "90 days",
                        UsageGranularity::Day => "2 years",
                    }
                ),
            ));
        }
        if (end - first) / width > MAX_USAGE_BUCKETS {
            return Err(AdminError::invalid(
                "from",
                format!(
                    "the range holds more than {MAX_USAGE_BUCKETS} {} buckets; \
                     shorten it or use a wider granularity",
                    granularity.as_str()
                ),
            ));
        }
        Ok(BucketRange {
            granularity,
            from: first,
            to: end,
        })
    }

    fn timestamp(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    /// Every bucket of the range, oldest first, with the points' counts
    /// summed in; and their total.
    fn buckets<'a>(
        &self,
        points: impl IntoIterator<Item = &'a SeriesPoint>,
    ) -> (Vec<UsageBucket>, UsageCounts) {
        let width = self.granularity.seconds();
        let mut counts = vec![
            UsageCounts::default();
            usize::try_from((self.to - self.from) / width).unwrap_or(0)
        ];
        let mut totals = UsageCounts::default();
        for point in points {
            let index = (point.start - self.from) / width;
            if let Some(bucket) = usize::try_from(index).ok().and_then(|i| counts.get_mut(i)) {
                bucket.add(&point.counts);
                totals.add(&point.counts);
            }
        }
        let buckets = counts
            .into_iter()
            .enumerate()
            .map(|(index, counts)| UsageBucket {
                start: Self::timestamp(self.from + width * index as i64),
                counts,
            })
            .collect();
        (buckets, totals)
    }
}

impl KeyAdmin {
    /// `GET /admin/v1/keys/{id}/usage`.
    ///
    /// # Errors
    /// `KeyNotFound`, `InvalidField` (`from` for a range outside retention,
    /// over [`MAX_USAGE_BUCKETS`] or not before `to`), or `Store`.
    pub async fn key_usage(
        &self,
        id: &KeyId,
        granularity: UsageGranularity,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<KeyUsageResponse, AdminError> {
        let range = BucketRange::new(granularity, from, to, self.clock.now())?;
        let record = self.stored(id).await?;
        let points = self
            .store
            .usage_series(
                &record.account_id,
                &[*id],
                granularity,
                range.from,
                range.to,
            )
            .await?;
        let (buckets, totals) = range.buckets(&points);
        Ok(KeyUsageResponse {
            key_id: *id,
            granularity,
            from: BucketRange::timestamp(range.from),
            to: BucketRange::timestamp(range.to),
            buckets,
            totals,
        })
    }

    /// `GET /admin/v1/accounts/{id}/usage`: every key of the account, the
    /// revoked ones too (their past use is still the account's).
    ///
    /// # Errors
    /// `AccountNotFound`, `InvalidField` as [`KeyAdmin::key_usage`], or
    /// `Store`.
    pub async fn account_usage(
        &self,
        account: &AccountId,
        granularity: UsageGranularity,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<AccountUsageResponse, AdminError> {
        let range = BucketRange::new(granularity, from, to, self.clock.now())?;
        self.account(account).await?;
        let mut keys = Vec::new();
        let mut page = PageRequest {
            limit: 1000,
            after: None,
        };
        loop {
            let found = self.store.keys_of_account(account, &page, true).await?;
            keys.extend(found.items.iter().map(|record| record.id));
            match found.next {
                Some(next) => page.after = Some(next),
                None => break,
            }
        }
        let points = self
            .store
            .usage_series(account, &keys, granularity, range.from, range.to)
            .await?;
        let (buckets, totals) = range.buckets(&points);
        let mut per_key: HashMap<KeyId, UsageCounts> = HashMap::new();
        for point in &points {
            if point.start >= range.from && point.start < range.to {
                per_key.entry(point.key_id).or_default().add(&point.counts);
            }
        }
        let mut keys: Vec<KeyUsageTotals> = per_key
            .into_iter()
            .map(|(key_id, totals)| KeyUsageTotals { key_id, totals })
            .collect();
        keys.sort_by(|a, b| {
            b.totals
                .total()
                .cmp(&a.totals.total())
                .then_with(|| a.key_id.cmp(&b.key_id))
        });
        Ok(AccountUsageResponse {
            account_id: *account,
            granularity,
            from: BucketRange::timestamp(range.from),
            to: BucketRange::timestamp(range.to),
            buckets,
            totals,
            keys,
        })
    }
}
