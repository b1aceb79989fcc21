//! The [`IdempotencyStore`] of the [`EmbeddedStore`]: two tables in the same
//! redb file.
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `idempotency` | slot name (`<scope>:<64 hex>`) | JSON of the record: fingerprint, claim token, end, answer |
//! | `idempotency_expiry` | (end in ns, slot name) | `()` |
//!
//! Every call is one write transaction: redb runs one at a time, which is
//! what makes a claim an atomic insert-if-absent. The expiry index holds
//! exactly one row per record (a rewrite moves it), so each claim can drop
//! the records that ended, oldest first, without scanning the table: a
//! claim adds at most one record and sweeps up to [`SWEEP_PER_CLAIM`], so the
//! tables stay bounded by the keys of the last window. The tables are
//! opened inside write transactions, which creates them on first use; no
//! read transaction ever opens them.

use core::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::embedded::{begin_write, commit, open_write, redb_error};
use super::idempotency::{
    Claim, ClaimToken, IdempotencyRecord, IdempotencySlot, IdempotencyStore, RequestFingerprint,
    StoredAnswer,
};
use super::{EmbeddedStore, StoreError};

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
const EXPIRY: TableDefinition<(i128, &str), ()> = TableDefinition::new("idempotency_expiry");

/// Expired records dropped per claim at most: more than a claim adds, so
/// a backlog (a node that was down over a window's end) drains, and few
/// enough that one claim never does a long sweep.
const SWEEP_PER_CLAIM: usize = 32;

#[async_trait]
impl IdempotencyStore for EmbeddedStore {
    async fn claim(
        &self,
        slot: &IdempotencySlot,
        fingerprint: &RequestFingerprint,
        token: &ClaimToken,
        now: Timestamp,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let (slot, fingerprint, token) = (slot.clone(), fingerprint.clone(), token.clone());
        self.blocking(move |db| {
            let txn = begin_write(db)?;
            sweep(&txn, now)?;
            let stored = read(&txn, &slot)?;
            let (claim, write) =
                IdempotencyRecord::claim(stored.as_ref(), &fingerprint, &token, now, lease);
            if let Some(record) = write {
                write_record(&txn, &slot, stored.as_ref(), &record)?;
            }
            commit(txn)?;
            Ok(claim)
        })
        .await
    }

    async fn complete(
        &self,
        slot: &IdempotencySlot,
        token: &ClaimToken,
        answer: &StoredAnswer,
        now: Timestamp,
        keep: Duration,
    ) -> Result<bool, StoreError> {
        let (slot, token, answer) = (slot.clone(), token.clone(), answer.clone());
        self.blocking(move |db| {
            let txn = begin_write(db)?;
            let stored = read(&txn, &slot)?;
            let Some(record) =
                IdempotencyRecord::complete(stored.as_ref(), &token, &answer, now, keep)
            else {
                return Ok(false);
            };
            write_record(&txn, &slot, stored.as_ref(), &record)?;
            commit(txn)?;
            Ok(true)
        })
        .await
    }

    async fn release(&self, slot: &IdempotencySlot, token: &ClaimToken) -> Result<(), StoreError> {
        let (slot, token) = (slot.clone(), token.clone());
        self.blocking(move |db| {
            let txn = begin_write(db)?;
            let Some(record) = read(&txn, &slot)?
                .filter(|record| IdempotencyRecord::releases(Some(record), &token))
            else {
                // Not this claim's (or already answered): nothing to write.
                return Ok(());
            };
            remove_record(&txn, slot.as_str(), record.until)?;
            commit(txn)
        })
        .await
    }
}

fn read(
    txn: &WriteTransaction,
    slot: &IdempotencySlot,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    let records = open_write(txn, RECORDS)?;
    let Some(json) = records
        .get(slot.as_str())
        .map_err(|error| redb_error("cannot read an idempotency record", error))?
    else {
        return Ok(None);
    };
    serde_json::from_slice(json.value())
        .map(Some)
        .map_err(|error| {
            StoreError::corrupt("an idempotency record cannot be read").caused_by(error)
        })
}

/// Writes `record` over `stored`, moving its expiry row.
fn write_record(
    txn: &WriteTransaction,
    slot: &IdempotencySlot,
    stored: Option<&IdempotencyRecord>,
    record: &IdempotencyRecord,
) -> Result<(), StoreError> {
    let json = serde_json::to_vec(record).map_err(|error| {
        StoreError::corrupt("an idempotency record cannot be encoded").caused_by(error)
    })?;
    let mut records = open_write(txn, RECORDS)?;
    let mut expiry = open_write(txn, EXPIRY)?;
    if let Some(stored) = stored {
        expiry
            .remove((stored.until, slot.as_str()))
            .map_err(|error| redb_error("cannot update the idempotency expiry index", error))?;
    }
    records
        .insert(slot.as_str(), json.as_slice())
        .map_err(|error| redb_error("cannot write an idempotency record", error))?;
    expiry
        .insert((record.until, slot.as_str()), ())
        .map_err(|error| redb_error("cannot write the idempotency expiry index", error))?;
    Ok(())
}

fn remove_record(txn: &WriteTransaction, name: &str, until: i128) -> Result<(), StoreError> {
    open_write(txn, RECORDS)?
        .remove(name)
        .map_err(|error| redb_error("cannot remove an idempotency record", error))?;
    open_write(txn, EXPIRY)?
        .remove((until, name))
        .map_err(|error| redb_error("cannot update the idempotency expiry index", error))?;
    Ok(())
}

/// Drops up to [`SWEEP_PER_CLAIM`] records whose end is not after `now`.
fn sweep(txn: &WriteTransaction, now: Timestamp) -> Result<(), StoreError> {
    let ended: Vec<(i128, String)> = {
        let expiry = open_write(txn, EXPIRY)?;
        let range = expiry
            // Ended means `until <= now`: every name at `now` included.
            .range((i128::MIN, "")..(now.as_nanosecond().saturating_add(1), ""))
            .map_err(|error| redb_error("cannot scan the idempotency expiry index", error))?;
        let mut ended = Vec::new();
        for entry in range.take(SWEEP_PER_CLAIM) {
            let (key, _) = entry
                .map_err(|error| redb_error("cannot scan the idempotency expiry index", error))?;
            let (until, name) = key.value();
            ended.push((until, name.to_owned()));
        }
        ended
    };
    for (until, name) in ended {
        remove_record(txn, &name, until)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;
    use redb::{ReadableDatabase, ReadableTableMetadata};

    use super::*;

    fn rows(store: &EmbeddedStore) -> (u64, u64) {
        let txn = store.database().begin_read().unwrap();
        let records = txn.open_table(RECORDS).unwrap().len().unwrap();
        let expiry = txn.open_table(EXPIRY).unwrap().len().unwrap();
        (records, expiry)
    }

    #[tokio::test]
    async fn claims_sweep_what_ended_so_the_tables_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let start = Timestamp::from_second(1_800_000_000).unwrap();
        let lease = Duration::from_secs(60);
        let fingerprint = RequestFingerprint::of(&[b"POST"]);
        for n in 0..70 {
            let slot = IdempotencySlot::new("admin", format!("old-{n}").as_bytes());
            let token = ClaimToken::generate().unwrap();
            store
                .claim(&slot, &fingerprint, &token, start, lease)
                .await
                .unwrap();
            if n % 2 == 0 {
                // Answered ones move their expiry row; none may dangle.
                let answer = StoredAnswer {
                    status: 200,
                    content_type: None,
                    code: None,
                    body: String::new(),
                };
                store
                    .complete(&slot, &token, &answer, start, lease)
                    .await
                    .unwrap();
            }
        }
        assert_eq!(rows(&store), (70, 70));
        let later = start + SignedDuration::from_secs(61);
        for n in 0..3 {
            let slot = IdempotencySlot::new("admin", format!("new-{n}").as_bytes());
            store
                .claim(
                    &slot,
                    &fingerprint,
                    &ClaimToken::generate().unwrap(),
                    later,
                    lease,
                )
                .await
                .unwrap();
        }
        // Three claims swept 32 + 32 + the last 6, and added their own 3.
        assert_eq!(rows(&store), (3, 3));
    }
}
