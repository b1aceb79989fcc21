//! `EmbeddedStore`: the durable single-node `KeyStore`, one redb file in the
//! data directory (`<data-dir>/keys.redb`).
//!
//! # Tables
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `keys` | key id | JSON of [`KeyRecord`] (with its `version`; never usage) |
//! | `key_hashes` | the 32 bytes of SHA-256(key) | key id |
//! | `account_keys` | (account id, `created_at` in ns, key id) | `()` |
//! | `audit` | (account id, `at` in ns, event id) | JSON of [`AuditEvent`] |
//! | `account_plans` | account id | plan name |
//! | `usage` | key id | (count, last use in ns) |
//! | `usage_applied` | (node id, account id) | the sequence of the last usage batch applied from that node for that account |
//! | `usage_nodes` | node id | when a usage batch of that node was last applied, in ns |
//! | `counters` | a counter's name | its value, as text ([`CounterStore`]: the quota ledger's counters and balances) |
//!
//! Tuple keys compare element by element (strings by their bytes, times as
//! integers), so a reverse range scan over one account yields exactly the
//! contract's newest-first order, ties broken by id, and a cursor is just
//! the exclusive upper bound of the next scan.
//!
//! Usage batches apply at most once (see [`KeyStore::record_usage`]): one
//! write transaction checks and updates `usage_applied` with the counts, so a
//! batch is either counted and remembered, or neither. A node id is random
//! per process, so every restart starts a new one; once a node has had
//! nothing applied for [`USAGE_DEDUP_WINDOW`], its rows go in one range
//! removal, which keeps the table bounded by the accounts of recently
//! running nodes.
//!
//! # Durability
//!
//! Every write is one redb write transaction committed with
//! [`Durability::Immediate`], the default in redb 4 (`set_durability` says
//! "Defaults to `Durability::Immediate`", and `Immediate` commits "are
//! guaranteed to be persistent as soon as `WriteTransaction::commit`
//! returns"). In redb 4.6 that commit writes the new commit slot, flips the
//! primary slot and then calls `File::sync_data` (`PageManager::commit` →
//! `storage.flush()`), so an acknowledged write is on disk, and after a crash
//! redb reopens the last complete commit. We still set it explicitly so that
//! a change of default can never weaken SPEC §8.
//!
//! redb is blocking: every call runs on `spawn_blocking` with a shared
//! `Arc<Database>`. redb allows one write transaction at a time, which is
//! what makes the version checks of `commit` race-free.

use core::fmt;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::embedded_webhooks;
use super::webhooks::OutboxEvent;
use async_trait::async_trait;
use cloro_auth_core::wire::{AuditEvent, UsageCounts, UsageGranularity};
use cloro_auth_core::{AccountId, KeyHash, KeyId, PlanName};
use jiff::Timestamp;
use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};

use super::record::{AccountRecord, KeyLookup, KeyRecord, KeyUsage, UsageBatch, UsageDelta};
use super::{
    CounterStore, KeyBatch, KeyStore, PRUNE_PER_WRITE, Page, PageRequest, ScheduledNotice,
    SeriesPoint, StoreError, USAGE_DEDUP_WINDOW, bucket_starts, embedded_notices, paginate,
    retention_cutoff,
};

/// The database file inside the data directory.
const FILE_NAME: &str = "keys.redb";

/// (account, time in ns, id): the newest-first index shape of keys and audit.
type TimeIndexKey = (&'static str, i128, &'static str);

const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
const KEY_HASHES: TableDefinition<&[u8], &str> = TableDefinition::new("key_hashes");
const ACCOUNT_KEYS: TableDefinition<TimeIndexKey, ()> = TableDefinition::new("account_keys");
const AUDIT: TableDefinition<TimeIndexKey, &[u8]> = TableDefinition::new("audit");
const ACCOUNT_PLANS: TableDefinition<&str, &str> = TableDefinition::new("account_plans");
const USAGE: TableDefinition<&str, (u64, Option<i128>)> = TableDefinition::new("usage");
/// (node id, account id) → the last usage sequence applied: the node comes
/// first so that forgetting a node is one range.
const USAGE_APPLIED: TableDefinition<(u64, &str), u64> = TableDefinition::new("usage_applied");
const USAGE_NODES: TableDefinition<u64, i128> = TableDefinition::new("usage_nodes");
const COUNTERS: TableDefinition<&str, &str> = TableDefinition::new("counters");
/// Usage series (SPEC §10): (granularity, key id, bucket start) → the
/// bucket's counts, eight little-endian u64s in `UsageOutcome::ALL` order.
const USAGE_SERIES: TableDefinition<(u8, &str, i64), &[u8]> = TableDefinition::new("usage_series");
/// The same buckets by (granularity, start, key id), so that those past
/// retention are one range from the start.
const USAGE_SERIES_TIMES: TableDefinition<(u8, i64, &str), ()> =
    TableDefinition::new("usage_series_times");

/// The durable single-node store: one redb database, safe against `kill -9`
/// at any moment (every acknowledged write is committed and fsynced).
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `data_dir`, creating the directory
    /// if needed. After a crash, redb repairs the file here, so this may
    /// take a moment on a large database; it blocks, so call it before
    /// serving or from `spawn_blocking`.
    ///
    /// # Errors
    /// `Unavailable` when the directory cannot be created or another
    /// process (or another store in this one) holds the database open;
    /// `Corrupt` when the file is not a database this version can read.
    pub fn open(data_dir: &Path) -> Result<EmbeddedStore, StoreError> {
        Self::open_with_cache(data_dir, Self::DEFAULT_CACHE_BYTES)
    }

    /// Records are a few hundred bytes: 64 MiB of cache holds a large key
    /// set without letting redb's 1 GiB default claim memory on a small
    /// node. The cache fills as the database grows, up to this.
    pub const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

    /// [`EmbeddedStore::open`] with a page cache of at most `cache_bytes`.
    ///
    /// # Errors
    /// As [`EmbeddedStore::open`].
    pub fn open_with_cache(
        data_dir: &Path,
        cache_bytes: usize,
    ) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|error| {
            StoreError::unavailable(format!(
                "cannot create the data directory {}",
                data_dir.display()
            ))
            .caused_by(error)
        })?;
        let path = data_dir.join(FILE_NAME);
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|error| match error {
                DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
                    StoreError::unavailable(format!(
                        "the database file {} is locked: another process (or another \
                         store in this one) has it open; stop it or use another data directory",
                        path.display()
                    ))
                    .caused_by(error)
                }
                other => redb_error(format!("cannot open {}", path.display()), other),
            })?;
        // Create every table up front, so that read transactions never meet
        // a missing table on a fresh database.
        let txn = begin_write(&db)?;
        for result in [
            txn.open_table(KEYS).map(drop),
            txn.open_table(KEY_HASHES).map(drop),
            txn.open_table(ACCOUNT_KEYS).map(drop),
            txn.open_table(AUDIT).map(drop),
            txn.open_table(ACCOUNT_PLANS).map(drop),
            txn.open_table(USAGE).map(drop),
            txn.open_table(USAGE_APPLIED).map(drop),
            txn.open_table(USAGE_NODES).map(drop),
            txn.open_table(USAGE_SERIES).map(drop),
            txn.open_table(USAGE_SERIES_TIMES).map(drop),
            txn.open_table(embedded_webhooks::WEBHOOKS).map(drop),
            txn.open_table(embedded_webhooks::OUTBOX).map(drop),
            txn.open_table(embedded_webhooks::DELIVERIES).map(drop),
            txn.open_table(embedded_webhooks::DUE).map(drop),
            txn.open_table(embedded_notices::NOTICES).map(drop),
            txn.open_table(super::embedded_admin_tokens::ADMIN_TOKENS)
                .map(drop),
            txn.open_table(super::embedded_sessions::SESSIONS).map(drop),
            txn.open_table(super::embedded_sessions::SESSION_ENDS)
                .map(drop),
        ] {
            result.map_err(|error| redb_error("cannot create the tables", error))?;
        }
        commit(txn)?;
        sync_directory(data_dir)?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database, for the tests of the tables other modules keep in it.
    #[cfg(test)]
    pub(super) fn database(&self) -> &Database {
        &self.db
    }

    /// Runs blocking redb work off the async workers.
    pub(super) async fn blocking<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|error| {
                StoreError::unavailable("an embedded store task did not finish").caused_by(error)
            })?
    }
}

#[async_trait]
impl KeyStore for EmbeddedStore {
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<KeyLookup>, StoreError> {
        let hash = *hash;
        self.blocking(move |db| {
            let txn = begin_read(db)?;
            let Some(id) = open_read(&txn, KEY_HASHES)?
                .get(hash.as_bytes().as_slice())
                .map_err(|error| redb_error("cannot read the hash index", error))?
                .map(|id| id.value().to_owned())
            else {
                return Ok(None);
            };
            let keys = open_read(&txn, KEYS)?;
            let Some(record) = read_record(&keys, &id)? else {
                // The index and the records are written in one transaction.
                return Err(StoreError::corrupt(format!(
                    "the hash index names key {id}, which has no record"
                )));
            };
            let account_plan = read_plan(&open_read(&txn, ACCOUNT_PLANS)?, &record.account_id)?;
            Ok(Some(KeyLookup {
                record,
                account_plan,
            }))
        })
        .await
    }

    async fn key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let id = *id;
        self.blocking(move |db| {
            let txn = begin_read(db)?;
            let Some(mut record) = read_record(&open_read(&txn, KEYS)?, id.as_str())? else {
                return Ok(None);
            };
            record.usage = read_usage(&open_read(&txn, USAGE)?, id.as_str())?;
            Ok(Some(record))
        })
        .await
    }

    async fn keys_of_account(
        &self,
        account: &AccountId,
        page: &PageRequest,
        include_revoked: bool,
    ) -> Result<Page<KeyRecord>, StoreError> {
        let account = *account;
        let page = page.clone();
        self.blocking(move |db| {
            let txn = begin_read(db)?;
            let index = open_read(&txn, ACCOUNT_KEYS)?;
            let keys = open_read(&txn, KEYS)?;
            let usage = open_read(&txn, USAGE)?;
            let (upper_at, upper_id) = upper_bound(&page);
            let range = index
                .range((account.as_str(), i128::MIN, "")..(account.as_str(), upper_at, upper_id))
                .map_err(|error| redb_error("cannot scan the account index", error))?;
            // Records are read lazily, so a page stops reading at its limit;
            // the first failure ends the scan and is returned below.
            let mut failure = None;
            let records = range.rev().map_while(|entry| {
                let record = entry
                    .map_err(|error| redb_error("cannot scan the account index", error))
                    .and_then(|(index_key, _)| {
                        let (_, _, id) = index_key.value();
                        read_record(&keys, id)?.ok_or_else(|| {
                            StoreError::corrupt(format!(
                                "the account index names key {id}, which has no record"
                            ))
                        })
                    });
                record.map_err(|error| failure = Some(error)).ok()
            });
            let found = paginate(
                records,
                &page,
                |r| (r.created_at, r.id.as_str()),
                |r| include_revoked || r.revoked_at.is_none(),
            );
            if let Some(error) = failure {
                return Err(error);
            }
            let mut items = found.items;
            for record in &mut items {
                record.usage = read_usage(&usage, record.id.as_str())?;
            }
            Ok(Page {
                items,
                next: found.next,
            })
        })
        .await
    }

    async fn commit(&self, batch: KeyBatch) -> Result<(), StoreError> {
        self.blocking(move |db| commit_batch(db, &batch)).await
    }

    async fn audit_events(
        &self,
        account: &AccountId,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>, StoreError> {
        let account = *account;
        let page = page.clone();
        self.blocking(move |db| {
            let txn = begin_read(db)?;
            let audit = open_read(&txn, AUDIT)?;
            let (upper_at, upper_id) = upper_bound(&page);
            let range = audit
                .range((account.as_str(), i128::MIN, "")..(account.as_str(), upper_at, upper_id))
                .map_err(|error| redb_error("cannot scan the audit log", error))?;
            let mut failure = None;
            let events = range.rev().map_while(|entry| {
                let event = entry
                    .map_err(|error| redb_error("cannot scan the audit log", error))
                    .and_then(|(_, json)| {
                        serde_json::from_slice::<AuditEvent>(json.value()).map_err(|error| {
                            StoreError::corrupt("an audit event cannot be read").caused_by(error)
                        })
                    });
                event.map_err(|error| failure = Some(error)).ok()
            });
            let found = paginate(events, &page, |e| (e.at, e.id.as_str()), |_| true);
            match failure {
                Some(error) => Err(error),
                None => Ok(found),
            }
        })
        .await
    }

    async fn account(&self, account: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        let account = *account;
        self.blocking(move |db| {
            let txn = begin_read(db)?;
            let plan = read_plan(&open_read(&txn, ACCOUNT_PLANS)?, &account)?;
            // Counting the index keeps no second counter that could drift;
            // an account's keys are few enough to count on an admin read.
            let mut key_count = 0u64;
            for entry in open_read(&txn, ACCOUNT_KEYS)?
                .range((account.as_str(), i128::MIN, "")..(account.as_str(), i128::MAX, ""))
                .map_err(|error| redb_error("cannot scan the account index", error))?
            {
                entry.map_err(|error| redb_error("cannot scan the account index", error))?;
                key_count += 1;
            }
            Ok(AccountRecord::if_exists(account, plan, key_count))
        })
        .await
    }

    async fn set_account_plan(
        &self,
        account: &AccountId,
        plan: &PlanName,
        event: AuditEvent,
    ) -> Result<(), StoreError> {
        let account = *account;
        let plan = *plan;
        self.blocking(move |db| {
            let txn = begin_write(db)?;
            {
                let mut plans = open_write(&txn, ACCOUNT_PLANS)?;
                plans
                    .insert(account.as_str(), plan.as_str())
                    .map_err(|error| redb_error("cannot write the account plan", error))?;
                insert_event(&mut open_write(&txn, AUDIT)?, &event)?;
            }
            embedded_webhooks::enqueue(&txn, &[OutboxEvent::of_audit(&event, None)?])?;
            commit(txn)
        })
        .await
    }

    async fn record_usage(&self, batches: &[UsageBatch]) -> Vec<Result<(), StoreError>> {
        let count = batches.len();
        let batches = batches.to_vec();
        let outcome = self
            .blocking(move |db| apply_usage(db, &batches, Timestamp::now()))
            .await;
        // One transaction: every batch shares its outcome.
        vec![outcome; count]
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|db| {
            let txn = begin_read(db)?;
            open_read(&txn, KEYS).map(drop)
        })
        .await
    }

    async fn usage_series(
        &self,
        _account: &AccountId,
        keys: &[KeyId],
        granularity: UsageGranularity,
        from: i64,
        to: i64,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        let keys = keys.to_vec();
        self.blocking(move |db| {
            let txn = begin_read(db)?;
            let series = open_read(&txn, USAGE_SERIES)?;
            let tag = granularity_tag(granularity);
            let mut points = Vec::new();
            for key_id in keys {
                let id = key_id.as_str();
                for entry in series
                    .range((tag, id, from)..(tag, id, to))
                    .map_err(|error| redb_error("cannot read the usage buckets", error))?
                {
                    let (key, counts) = entry
                        .map_err(|error| redb_error("cannot read the usage buckets", error))?;
                    points.push(SeriesPoint {
                        key_id,
                        start: key.value().2,
                        counts: decode_counts(counts.value())?,
                    });
                }
            }
            Ok(points)
        })
        .await
    }

    async fn expiry_notices_due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<ScheduledNotice>, StoreError> {
        self.blocking(move |db| embedded_notices::claim_due(db, now, limit))
            .await
    }

    async fn finish_expiry_notice(&self, notice: &ScheduledNotice) -> Result<(), StoreError> {
        let notice = notice.clone();
        self.blocking(move |db| embedded_notices::finish(db, &notice))
            .await
    }
}

/// `KeyStore::record_usage` in one write transaction, the store's clock
/// reading `now`: each batch is checked against (and recorded in)
/// `usage_applied` together with its counts, then nodes idle for the
/// [`USAGE_DEDUP_WINDOW`] are forgotten.
#[async_trait]
impl CounterStore for EmbeddedStore {
    async fn load_counters(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.blocking(|db| {
            let txn = begin_read(db)?;
            let table = match txn.open_table(COUNTERS) {
                Ok(table) => table,
                // Written by the first save: a store that never had one is empty.
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(error) => return Err(redb_error("cannot open the counters", error)),
            };
            let mut counters = Vec::new();
            for entry in table
                .iter()
                .map_err(|error| redb_error("cannot read the counters", error))?
            {
                let (name, value) =
                    entry.map_err(|error| redb_error("cannot read the counters", error))?;
                counters.push((name.value().to_owned(), value.value().to_owned()));
            }
            Ok(counters)
        })
        .await
    }

    async fn save_counters(
        &self,
        put: Vec<(String, String)>,
        remove: Vec<String>,
    ) -> Result<(), StoreError> {
        self.blocking(move |db| {
            let txn = begin_write(db)?;
            {
                let mut table = open_write(&txn, COUNTERS)?;
                for (name, value) in &put {
                    table
                        .insert(name.as_str(), value.as_str())
                        .map_err(|error| redb_error("cannot write a counter", error))?;
                }
                for name in &remove {
                    table
                        .remove(name.as_str())
                        .map_err(|error| redb_error("cannot remove a counter", error))?;
                }
            }
            commit(txn)
        })
        .await
    }
}

fn apply_usage(db: &Database, batches: &[UsageBatch], now: Timestamp) -> Result<(), StoreError> {
    let txn = begin_write(db)?;
    {
        let mut usage = open_write(&txn, USAGE)?;
        let mut applied = open_write(&txn, USAGE_APPLIED)?;
        let mut nodes = open_write(&txn, USAGE_NODES)?;
        let mut series = open_write(&txn, USAGE_SERIES)?;
        let mut series_times = open_write(&txn, USAGE_SERIES_TIMES)?;
        let mut active_nodes = Vec::new();
        for batch in batches {
            let tag = (batch.node_id, batch.account_id.as_str());
            let last = applied
                .get(tag)
                .map_err(|error| redb_error("cannot read the applied usage batches", error))?
                .map(|sequence| sequence.value());
            if last.is_some_and(|last| batch.sequence <= last) {
                continue;
            }
            applied
                .insert(tag, batch.sequence)
                .map_err(|error| redb_error("cannot record an applied usage batch", error))?;
            if !active_nodes.contains(&batch.node_id) {
                active_nodes.push(batch.node_id);
            }
            for delta in &batch.deltas {
                let id = delta.key_id.as_str();
                let (count, last_used) = usage
                    .get(id)
                    .map_err(|error| redb_error("cannot read usage", error))?
                    .map(|stored| stored.value())
                    .unwrap_or((0, None));
                // Batches from different nodes arrive in any order: the
                // last use only ever moves forwards.
                let last_used = if delta.count > 0 {
                    last_used.max(Some(delta.last_used_at.as_nanosecond()))
                } else {
                    last_used
                };
                usage
                    .insert(id, (count.saturating_add(delta.count), last_used))
                    .map_err(|error| redb_error("cannot write usage", error))?;
                add_to_series(&mut series, &mut series_times, delta)?;
            }
        }
        prune_series(&mut series, &mut series_times, now)?;
        for node in active_nodes {
            nodes
                .insert(node, now.as_nanosecond())
                .map_err(|error| redb_error("cannot record a usage node", error))?;
        }
        forget_idle_usage_nodes(&mut nodes, &mut applied, now)?;
    }
    commit(txn)
}

type SeriesTable<'txn> = redb::Table<'txn, (u8, &'static str, i64), &'static [u8]>;
type SeriesTimesTable<'txn> = redb::Table<'txn, (u8, i64, &'static str), ()>;

/// The table tag of a granularity.
fn granularity_tag(granularity: UsageGranularity) -> u8 {
    match granularity {
        UsageGranularity::Minute => 0,
        UsageGranularity::Hour => 1,
        UsageGranularity::Day => 2,
    }
}

fn encode_counts(counts: &UsageCounts) -> [u8; 64] {
    let mut bytes = [0u8; 64];
    for (chunk, count) in bytes.chunks_exact_mut(8).zip(counts.to_array()) {
        chunk.copy_from_slice(&count.to_le_bytes());
    }
    bytes
}

fn decode_counts(bytes: &[u8]) -> Result<UsageCounts, StoreError> {
    if bytes.len() != 64 {
        return Err(StoreError::corrupt("a usage bucket cannot be read"));
    }
    let mut counts = [0u64; 8];
    for (count, chunk) in counts.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        *count = u64::from_le_bytes(word);
    }
    Ok(UsageCounts::from_array(counts))
}

/// Adds `delta`'s outcomes to its key's bucket at every granularity.
fn add_to_series(
    series: &mut SeriesTable<'_>,
    times: &mut SeriesTimesTable<'_>,
    delta: &UsageDelta,
) -> Result<(), StoreError> {
    let outcomes = delta.outcomes();
    let id = delta.key_id.as_str();
    for (granularity, start) in bucket_starts(delta.minute) {
        let tag = granularity_tag(granularity);
        let mut counts = match series
            .get((tag, id, start))
            .map_err(|error| redb_error("cannot read a usage bucket", error))?
        {
            Some(stored) => decode_counts(stored.value())?,
            None => UsageCounts::default(),
        };
        counts.add(&outcomes);
        series
            .insert((tag, id, start), encode_counts(&counts).as_slice())
            .map_err(|error| redb_error("cannot write a usage bucket", error))?;
        times
            .insert((tag, start, id), ())
            .map_err(|error| redb_error("cannot write a usage bucket", error))?;
    }
    Ok(())
}

/// Drops up to [`PRUNE_PER_WRITE`] buckets per granularity that are past
/// retention at `now`.
fn prune_series(
    series: &mut SeriesTable<'_>,
    times: &mut SeriesTimesTable<'_>,
    now: Timestamp,
) -> Result<(), StoreError> {
    for granularity in UsageGranularity::ALL {
        let tag = granularity_tag(granularity);
        let cutoff = retention_cutoff(granularity, now.as_second());
        let old: Vec<(i64, String)> = times
            .range((tag, i64::MIN, "")..(tag, cutoff, ""))
            .map_err(|error| redb_error("cannot scan the usage buckets", error))?
            .take(PRUNE_PER_WRITE)
            .map(|entry| {
                entry
                    .map(|(key, _)| {
                        let (_, start, id) = key.value();
                        (start, id.to_owned())
                    })
                    .map_err(|error| redb_error("cannot scan the usage buckets", error))
            })
            .collect::<Result<_, _>>()?;
        for (start, id) in old {
            times
                .remove((tag, start, id.as_str()))
                .map_err(|error| redb_error("cannot drop a usage bucket", error))?;
            series
                .remove((tag, id.as_str(), start))
                .map_err(|error| redb_error("cannot drop a usage bucket", error))?;
        }
    }
    Ok(())
}

/// Drops the `usage_applied` rows of every node that has had nothing applied
/// for the [`USAGE_DEDUP_WINDOW`]. Nodes are few (one per process run), so
/// reading `usage_nodes` whole on every flush is cheap.
fn forget_idle_usage_nodes(
    nodes: &mut redb::Table<'_, u64, i128>,
    applied: &mut redb::Table<'_, (u64, &'static str), u64>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let window = i128::try_from(USAGE_DEDUP_WINDOW.as_nanos()).unwrap_or(i128::MAX);
    let cutoff = now.as_nanosecond().saturating_sub(window);
    let mut idle = Vec::new();
    for entry in nodes
        .iter()
        .map_err(|error| redb_error("cannot scan the usage nodes", error))?
    {
        let (node, last_applied) =
            entry.map_err(|error| redb_error("cannot scan the usage nodes", error))?;
        if last_applied.value() < cutoff {
            idle.push(node.value());
        }
    }
    for node in idle {
        let forget = |_: (u64, &str), _: u64| false;
        match node.checked_add(1) {
            Some(next) => applied.retain_in((node, "")..(next, ""), forget),
            None => applied.retain_in((node, "").., forget),
        }
        .map_err(|error| redb_error("cannot forget a usage node", error))?;
        nodes
            .remove(node)
            .map_err(|error| redb_error("cannot forget a usage node", error))?;
    }
    Ok(())
}

/// The whole of `KeyStore::commit` inside one write transaction: every check
/// first, then every write. Returning early drops the transaction, which
/// aborts it, so a failed check writes nothing.
fn commit_batch(db: &Database, batch: &KeyBatch) -> Result<(), StoreError> {
    let txn = begin_write(db)?;
    {
        let mut keys = open_write(&txn, KEYS)?;
        let mut hashes = open_write(&txn, KEY_HASHES)?;
        let mut account_keys = open_write(&txn, ACCOUNT_KEYS)?;
        let mut audit = open_write(&txn, AUDIT)?;

        let mut previous = Vec::with_capacity(batch.writes.len());
        for write in &batch.writes {
            let record = &write.record;
            if record.account_id != batch.account_id {
                return Err(StoreError::corrupt("a batch may only touch one account"));
            }
            let stored = read_record(&keys, record.id.as_str())?;
            let expected = match (write.expected_version, &stored) {
                (None, None) => hashes
                    .get(record.hash.as_bytes().as_slice())
                    .map_err(|error| redb_error("cannot read the hash index", error))?
                    .is_none(),
                // The hash is the key's identity: a record never changes it.
                (Some(version), Some(stored)) => {
                    stored.version == version && stored.hash == record.hash
                }
                _ => false,
            };
            if !expected {
                return Err(StoreError::Conflict);
            }
            previous.push(stored);
        }

        for (write, stored) in batch.writes.iter().zip(previous) {
            let record = &write.record;
            let json = serde_json::to_vec(record).map_err(|error| {
                StoreError::corrupt(format!("key {} cannot be encoded", record.id)).caused_by(error)
            })?;
            keys.insert(record.id.as_str(), json.as_slice())
                .map_err(|error| redb_error("cannot write a key record", error))?;
            hashes
                .insert(record.hash.as_bytes().as_slice(), record.id.as_str())
                .map_err(|error| redb_error("cannot write the hash index", error))?;
            // Creation time never changes today, but if it ever did, a stale
            // index entry would list the key twice.
            if let Some(stored) = stored {
                account_keys
                    .remove((
                        stored.account_id.as_str(),
                        stored.created_at.as_nanosecond(),
                        stored.id.as_str(),
                    ))
                    .map_err(|error| redb_error("cannot update the account index", error))?;
            }
            account_keys
                .insert(
                    (
                        record.account_id.as_str(),
                        record.created_at.as_nanosecond(),
                        record.id.as_str(),
                    ),
                    (),
                )
                .map_err(|error| redb_error("cannot write the account index", error))?;
        }
        for event in &batch.audit {
            insert_event(&mut audit, event)?;
        }
    }
    let records: Vec<&KeyRecord> = batch.writes.iter().map(|w| &w.record).collect();
    embedded_webhooks::enqueue(&txn, &OutboxEvent::of_commit(&batch.audit, &records)?)?;
    embedded_notices::schedule(&txn, &records)?;
    commit(txn)
}

fn insert_event(
    audit: &mut redb::Table<'_, TimeIndexKey, &'static [u8]>,
    event: &AuditEvent,
) -> Result<(), StoreError> {
    let json = serde_json::to_vec(event).map_err(|error| {
        StoreError::corrupt("an audit event cannot be encoded").caused_by(error)
    })?;
    audit
        .insert(
            (
                event.account_id.as_str(),
                event.at.as_nanosecond(),
                event.id.as_str(),
            ),
            json.as_slice(),
        )
        .map_err(|error| redb_error("cannot write the audit log", error))?;
    Ok(())
}

/// Where a newest-first scan stops (exclusive): just before the cursor, or
/// above any real time on the first page.
fn upper_bound(page: &PageRequest) -> (i128, &str) {
    match &page.after {
        Some(cursor) => (cursor.at.as_nanosecond(), cursor.id.as_str()),
        None => (i128::MAX, ""),
    }
}

fn read_record(
    keys: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<KeyRecord>, StoreError> {
    let Some(json) = keys
        .get(id)
        .map_err(|error| redb_error("cannot read a key record", error))?
    else {
        return Ok(None);
    };
    serde_json::from_slice(json.value())
        .map(Some)
        .map_err(|error| StoreError::corrupt(format!("key {id} cannot be read")).caused_by(error))
}

fn read_usage(
    usage: &impl ReadableTable<&'static str, (u64, Option<i128>)>,
    id: &str,
) -> Result<KeyUsage, StoreError> {
    let Some(stored) = usage
        .get(id)
        .map_err(|error| redb_error("cannot read usage", error))?
    else {
        return Ok(KeyUsage::default());
    };
    let (count, last_used) = stored.value();
    let last_used_at = last_used
        .map(Timestamp::from_nanosecond)
        .transpose()
        .map_err(|error| {
            StoreError::corrupt(format!("the last use of key {id} cannot be read")).caused_by(error)
        })?;
    Ok(KeyUsage {
        last_used_at,
        count,
    })
}

fn read_plan(
    plans: &impl ReadableTable<&'static str, &'static str>,
    account: &AccountId,
) -> Result<Option<PlanName>, StoreError> {
    let Some(stored) = plans
        .get(account.as_str())
        .map_err(|error| redb_error("cannot read the account plan", error))?
    else {
        return Ok(None);
    };
    let name = stored.value();
    PlanName::new(name).map(Some).map_err(|error| {
        StoreError::corrupt(format!("the plan of account {account} cannot be read"))
            .caused_by(error)
    })
}

pub(super) fn begin_read(db: &Database) -> Result<redb::ReadTransaction, StoreError> {
    db.begin_read()
        .map_err(|error| redb_error("cannot start a read transaction", error))
}

pub(super) fn begin_write(db: &Database) -> Result<WriteTransaction, StoreError> {
    let mut txn = db
        .begin_write()
        .map_err(|error| redb_error("cannot start a write transaction", error))?;
    // Already the default; stated so that SPEC §8 does not hang on a default.
    txn.set_durability(Durability::Immediate)
        .map_err(|error| redb_error("cannot make the transaction durable", error))?;
    Ok(txn)
}

pub(super) fn commit(txn: WriteTransaction) -> Result<(), StoreError> {
    txn.commit()
        .map_err(|error| redb_error("cannot commit a write", error))
}

pub(super) fn open_read<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    table: TableDefinition<K, V>,
) -> Result<redb::ReadOnlyTable<K, V>, StoreError> {
    txn.open_table(table)
        .map_err(|error| redb_error(format!("cannot open table {table}"), error))
}

pub(super) fn open_write<'txn, K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &'txn WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<redb::Table<'txn, K, V>, StoreError> {
    txn.open_table(table)
        .map_err(|error| redb_error(format!("cannot open table {table}"), error))
}

/// Sorts redb's errors into the contract's two failures: data this version
/// cannot read is `Corrupt` (retrying will not help); anything else, mostly
/// I/O, is `Unavailable`.
pub(super) fn redb_error(
    action: impl Into<Cow<'static, str>>,
    error: impl Into<redb::Error>,
) -> StoreError {
    let error = error.into();
    let failure = match &error {
        redb::Error::Corrupted(_)
        | redb::Error::UpgradeRequired(_)
        | redb::Error::TableTypeMismatch { .. }
        | redb::Error::TypeDefinitionChanged { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_)
        | redb::Error::TableDoesNotExist(_) => StoreError::corrupt(action),
        _ => StoreError::unavailable(action),
    };
    failure.caused_by(error)
}

/// redb fsyncs the file but not the directory entry that names it: without
/// this, a power cut soon after the first start could lose the new file and
/// every write acknowledged into it.
#[cfg(unix)]
fn sync_directory(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| {
            StoreError::unavailable(format!("cannot sync the data directory {}", dir.display()))
                .caused_by(error)
        })
}

#[cfg(not(unix))]
fn sync_directory(_dir: &Path) -> Result<(), StoreError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use cloro_auth_core::KeyId;
    use jiff::SignedDuration;
    use redb::ReadableTableMetadata;

    use super::*;
    use crate::store::UsageDelta;

    fn batch(account: &str, node_id: u64, sequence: u64, at: Timestamp) -> UsageBatch {
        UsageBatch {
            account_id: AccountId::new(account).unwrap(),
            node_id,
            sequence,
            deltas: vec![UsageDelta {
                key_id: KeyId::new(&format!("key_{account}")).unwrap(),
                last_used_at: at,
                count: 1,
                minute: 0,
                refused: Default::default(),
            }],
        }
    }

    fn applied_rows(db: &Database) -> Vec<(u64, String, u64)> {
        let txn = begin_read(db).unwrap();
        open_read(&txn, USAGE_APPLIED)
            .unwrap()
            .iter()
            .unwrap()
            .map(|entry| {
                let (tag, sequence) = entry.unwrap();
                let (node, account) = tag.value();
                (node, account.to_owned(), sequence.value())
            })
            .collect()
    }

    #[test]
    fn redb_failures_keep_redb_error_as_source() {
        let dir = tempfile::tempdir().unwrap();
        let _first = EmbeddedStore::open(dir.path()).unwrap();
        let error = EmbeddedStore::open(dir.path()).unwrap_err();
        assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
        let source = std::error::Error::source(&error).expect("a cause");
        assert!(
            source.downcast_ref::<DatabaseError>().is_some(),
            "{source:?}"
        );
        // The message still names the file, then redb's own words.
        assert!(error.to_string().contains(&source.to_string()), "{error}");
    }

    #[test]
    fn nodes_idle_for_the_usage_memory_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let start = Timestamp::from_second(1_800_000_000).unwrap();
        let hours = |h| start + SignedDuration::from_hours(h);
        // The highest node id, so the range removal without an end is used.
        let old_node = u64::MAX;
        apply_usage(
            &store.db,
            &[
                batch("acct_a", old_node, 1, start),
                batch("acct_b", old_node, 1, start),
            ],
            start,
        )
        .unwrap();
        apply_usage(&store.db, &[batch("acct_a", 7, 1, hours(23))], hours(23)).unwrap();
        assert_eq!(
            applied_rows(&store.db),
            [
                (7, "acct_a".to_owned(), 1),
                (old_node, "acct_a".to_owned(), 1),
                (old_node, "acct_b".to_owned(), 1),
            ]
        );
        apply_usage(&store.db, &[batch("acct_a", 7, 2, hours(25))], hours(25)).unwrap();
        assert_eq!(applied_rows(&store.db), [(7, "acct_a".to_owned(), 2)]);
        let txn = begin_read(&store.db).unwrap();
        let nodes = open_read(&txn, USAGE_NODES).unwrap();
        assert_eq!(nodes.len().unwrap(), 1);
        // The counts themselves are kept: only the memory of batches goes.
        let usage = read_usage(&open_read(&txn, USAGE).unwrap(), "key_acct_a").unwrap();
        assert_eq!(usage.count, 3);
    }
}
