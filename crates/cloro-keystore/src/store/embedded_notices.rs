//! The expiry-notice schedule of the [`EmbeddedStore`](super::EmbeddedStore)
//! (see `expiry_notices`): one redb table, `expiry_notices`, keyed by
//! (notice time in ns, [`ScheduledNotice::encode`]) so that a range from
//! the start finds what is due, holding the end of the entry's claim in ns
//! ([`FREE`] while free). Commits add entries inside their own transaction.

use jiff::Timestamp;
use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};

use super::embedded::{begin_write, commit, open_write, redb_error};
use super::{KeyRecord, ScheduledNotice, StoreError, WEBHOOK_LEASE};

pub(super) const NOTICES: TableDefinition<(i128, &str), i128> =
    TableDefinition::new("expiry_notices");

/// No claim.
const FREE: i128 = i128::MIN;

/// Adds the entry of each record that has a notice to come; an entry
/// already there (maybe claimed) is kept as it is.
pub(super) fn schedule(txn: &WriteTransaction, records: &[&KeyRecord]) -> Result<(), StoreError> {
    let mut notices = open_write(txn, NOTICES)?;
    for notice in records
        .iter()
        .filter_map(|record| ScheduledNotice::of(record))
    {
        let row = (notice.at.as_nanosecond(), notice.encode());
        let present = notices
            .get((row.0, row.1.as_str()))
            .map_err(|error| redb_error("cannot read the notice schedule", error))?
            .is_some();
        if !present {
            notices
                .insert((row.0, row.1.as_str()), FREE)
                .map_err(|error| redb_error("cannot write the notice schedule", error))?;
        }
    }
    Ok(())
}

/// `KeyStore::expiry_notices_due`: claims in one write transaction, which
/// is aborted (no disk sync) when nothing was due.
pub(super) fn claim_due(
    db: &Database,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<ScheduledNotice>, StoreError> {
    let txn = begin_write(db)?;
    let claim_end = now
        .checked_add(WEBHOOK_LEASE)
        .unwrap_or(now)
        .as_nanosecond();
    let mut claimed = Vec::new();
    {
        let mut notices = open_write(&txn, NOTICES)?;
        let mut free = Vec::new();
        for row in notices
            .range(..=(now.as_nanosecond(), "\u{10FFFF}"))
            .map_err(|error| redb_error("cannot scan the notice schedule", error))?
        {
            let (key, claim) =
                row.map_err(|error| redb_error("cannot scan the notice schedule", error))?;
            if claim.value() > now.as_nanosecond() {
                continue;
            }
            let (at, member) = key.value();
            free.push((at, member.to_owned()));
            if free.len() == limit {
                break;
            }
        }
        for (at, member) in free {
            notices
                .insert((at, member.as_str()), claim_end)
                .map_err(|error| redb_error("cannot claim a notice", error))?;
            // An entry this version cannot read is dropped, not retried
            // for ever.
            match ScheduledNotice::decode(&member) {
                Some(notice) => claimed.push(notice),
                None => {
                    notices
                        .remove((at, member.as_str()))
                        .map_err(|error| redb_error("cannot drop a notice", error))?;
                }
            }
        }
    }
    if claimed.is_empty() {
        txn.abort()
            .map_err(|error| redb_error("cannot end a read of the notice schedule", error))?;
        return Ok(claimed);
    }
    commit(txn)?;
    Ok(claimed)
}

/// `KeyStore::finish_expiry_notice`.
pub(super) fn finish(db: &Database, notice: &ScheduledNotice) -> Result<(), StoreError> {
    let txn = begin_write(db)?;
    {
        let mut notices = open_write(&txn, NOTICES)?;
        notices
            .remove((notice.at.as_nanosecond(), notice.encode().as_str()))
            .map_err(|error| redb_error("cannot finish a notice", error))?;
    }
    commit(txn)
}
