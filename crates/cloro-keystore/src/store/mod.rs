//! The `KeyStore` contract every backend keeps: a few reads and one atomic,
//! per-account `commit`. The lifecycle rules (what create, update, revoke
//! and rotate mean) live once in [`crate::KeyAdmin`], above the backends, so
//! the embedded store and the Redis store cannot drift apart.
//!
//! Beside the contract: why a call fails (`error`), what stores hold
//! (`record`), and the backends that need nothing else, [`MemoryStore`]
//! (tests) and [`EmbeddedStore`] (redb, one node). The Redis backend sits
//! with the rest of the Redis code, in `crate::redis`.
//!
//! Beside it, the [`IdempotencyStore`] contract (`idempotency`): what an
//! admin `Idempotency-Key` remembers; the memory and embedded stores keep
//! it too (`memory`, `embedded_idempotency`).

mod admin_tokens;
mod counters;
mod embedded;
mod embedded_admin_tokens;
mod embedded_idempotency;
mod embedded_notices;
mod embedded_sessions;
mod embedded_webhooks;
mod error;
mod expiry_notices;
mod idempotency;
mod memory;
mod memory_admin_tokens;
mod memory_sessions;
mod memory_webhooks;
mod record;
mod sessions;
mod usage_series;
mod webhooks;

pub(crate) use admin_tokens::newest_first as newest_admin_tokens_first;
pub use admin_tokens::{AdminTokenRecord, AdminTokenStore};
pub use counters::CounterStore;
pub use embedded::EmbeddedStore;
pub(crate) use error::within;
pub use error::{StoreError, StoreFailure};
pub use expiry_notices::{ExpiryNotice, NoticeStage, ScheduledNotice};
pub use idempotency::{
    Claim, ClaimToken, IDEMPOTENCY_LEASE, IDEMPOTENCY_WINDOW, IdempotencySlot, IdempotencyStore,
    RequestFingerprint, StoredAnswer,
};
pub use memory::MemoryStore;
pub use record::{AccountRecord, KeyLookup, KeyRecord, KeyUsage, UsageBatch, UsageDelta};
pub use sessions::{MAX_SESSIONS, SessionRecord, SessionStore, SessionSubject};
pub(crate) use sessions::{decode as decode_session, encode as encode_session};
pub use usage_series::SeriesPoint;
pub(crate) use usage_series::{PRUNE_PER_WRITE, bucket_starts, retention_cutoff};
pub use webhooks::{
    DELIVERY_RETENTION, Delivery, OutboxEvent, WEBHOOK_LEASE, WebhookRecord, WebhookStore,
};

use core::fmt;
use core::time::Duration;

use async_trait::async_trait;
use cloro_auth_core::wire::{AuditEvent, UsageGranularity};
use cloro_auth_core::{AccountId, KeyHash, KeyId, PlanName};
use jiff::Timestamp;

/// The least time a store remembers the last usage batch it applied from a
/// node for an account (see [`KeyStore::record_usage`]). A node must stop
/// retrying a batch well within it, or a late retry could count twice.
pub const USAGE_DEDUP_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// One record write inside a [`KeyBatch`].
#[derive(Clone, Debug, PartialEq)]
pub struct RecordWrite {
    /// The record as it should be after the commit.
    pub record: KeyRecord,
    /// `None`: the record must not exist yet. `Some(v)`: the stored version
    /// must be `v` (and `record.version` is `v + 1`).
    pub expected_version: Option<u64>,
}

/// Everything one admin action changes, committed atomically: all writes and
/// audit events, or none. All records belong to `account_id`, which is what
/// lets the Redis store keep a batch inside one cluster slot.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyBatch {
    /// The account every record belongs to.
    pub account_id: AccountId,
    /// Record writes, each checked against its expected version.
    pub writes: Vec<RecordWrite>,
    /// Audit events to append.
    pub audit: Vec<AuditEvent>,
}

/// Which page of a newest-first listing to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// At most this many items.
    pub limit: usize,
    /// Continue after this position; `None` starts at the newest.
    pub after: Option<Cursor>,
}

/// A page of a newest-first listing.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    /// The items, newest first.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// A position in a newest-first listing: the last item's time and id. Ties
/// in time are broken by id, so the order is total and pages never repeat
/// or skip an item.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    /// The item's time.
    pub at: Timestamp,
    /// The item's id (a key id or an audit event id).
    pub id: String,
}

impl Cursor {
    /// The opaque, URL-safe text clients pass back: `<nanoseconds>.<id>`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.at.as_nanosecond(), self.id)
    }

    /// Reads [`Cursor::encode`]'s text; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        let (nanos, id) = text.split_once('.')?;
        let at = Timestamp::from_nanosecond(nanos.parse().ok()?).ok()?;
        let id_ok = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        id_ok.then(|| Cursor {
            at,
            id: id.to_owned(),
        })
    }

    /// Whether an item at `(at, id)` comes after this cursor in newest-first order.
    pub fn is_before(&self, at: Timestamp, id: &str) -> bool {
        (at, id) < (self.at, self.id.as_str())
    }
}

/// A durable home for keys, accounts and the audit log.
///
/// Implementations must make `commit` atomic and durable before returning
/// `Ok`, and must answer `Unavailable` within their timeout rather than hang.
#[async_trait]
pub trait KeyStore: Send + Sync + fmt::Debug + 'static {
    /// The verifier's read: the key with this hash and its account's plan.
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<KeyLookup>, StoreError>;

    /// One key by id, usage included.
    async fn key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError>;

    /// An account's keys, newest first, usage included; revoked keys only
    /// when `include_revoked`.
    async fn keys_of_account(
        &self,
        account: &AccountId,
        page: &PageRequest,
        include_revoked: bool,
    ) -> Result<Page<KeyRecord>, StoreError>;

    /// Applies a batch atomically; [`StoreError::Conflict`] when any version
    /// check fails, in which case nothing was written.
    async fn commit(&self, batch: KeyBatch) -> Result<(), StoreError>;

    /// An account's audit events, newest first.
    async fn audit_events(
        &self,
        account: &AccountId,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>, StoreError>;

    /// The account, if it has a key or a plan.
    async fn account(&self, account: &AccountId) -> Result<Option<AccountRecord>, StoreError>;

    /// Puts the account on a plan and appends the audit event, atomically.
    async fn set_account_plan(
        &self,
        account: &AccountId,
        plan: &PlanName,
        event: AuditEvent,
    ) -> Result<(), StoreError>;

    /// Adds batches of usage, each at most once, and answers one result per
    /// batch, in the order given.
    ///
    /// - **Once.** The store remembers, per account and node, the highest
    ///   `sequence` it applied, for at least the [`USAGE_DEDUP_WINDOW`]
    ///   after applying it, and skips (answers `Ok` for) a batch whose
    ///   sequence is not higher. So a batch retried after an unknown outcome
    ///   counts once, and an older batch after a newer one changes nothing.
    ///   `last_used_at` only ever moves forwards.
    /// - **In order.** Batches of one account are applied in the order
    ///   given; once one fails, the later ones of that account are not
    ///   applied and fail too (applying them would make the failed one look
    ///   old when it is retried).
    /// - **Independent.** Batches of different accounts succeed or fail
    ///   independently where the store can do so (the Redis store writes
    ///   each account on its own; the embedded store commits all in one
    ///   transaction). An `Err` means the batch may or may not have been
    ///   applied: retry it unchanged.
    /// - **Series.** Each delta's outcomes are added to its key's usage
    ///   series (SPEC §10) at every granularity, in the buckets holding the
    ///   delta's `minute`, in the same write as the counts (so once, too);
    ///   buckets older than their granularity's retention, measured from
    ///   the store's own clock, are dropped as the store goes.
    async fn record_usage(&self, batches: &[UsageBatch]) -> Vec<Result<(), StoreError>>;

    /// The usage series of `keys` (all of `account`) at `granularity`:
    /// every bucket with any count whose start (Unix seconds) is in
    /// `from..to`, as (key, start, counts), in no particular order.
    async fn usage_series(
        &self,
        account: &AccountId,
        keys: &[KeyId],
        granularity: UsageGranularity,
        from: i64,
        to: i64,
    ) -> Result<Vec<SeriesPoint>, StoreError>;

    /// Claims up to `limit` entries of the expiry-notice schedule whose
    /// time has come at `now`, earliest first, that no other caller holds
    /// a claim on: like the webhook outbox, each is kept from every other
    /// caller for [`WEBHOOK_LEASE`] unless finished first. Every `commit`
    /// adds the entry of each record it writes that has a notice to come
    /// ([`ScheduledNotice::of`]); see the `expiry_notices` module.
    async fn expiry_notices_due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<ScheduledNotice>, StoreError>;

    /// Removes a handled entry from the schedule.
    async fn finish_expiry_notice(&self, notice: &ScheduledNotice) -> Result<(), StoreError>;

    /// A cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Splits a sorted newest-first iterator into one page: skips to the cursor,
/// keeps up to `limit` items that pass `keep`, and notes the next cursor.
pub(crate) fn paginate<T>(
    items: impl Iterator<Item = T>,
    page: &PageRequest,
    position: impl Fn(&T) -> (Timestamp, &str),
    keep: impl Fn(&T) -> bool,
) -> Page<T> {
    let mut selected = Vec::new();
    let mut more = false;
    for item in items {
        let (at, id) = position(&item);
        if page
            .after
            .as_ref()
            .is_some_and(|cursor| !cursor.is_before(at, id))
            || !keep(&item)
        {
            continue;
        }
        if selected.len() == page.limit {
            more = true;
            break;
        }
        selected.push(item);
    }
    let next = if more {
        selected.last().map(|last| {
            let (at, id) = position(last);
            Cursor {
                at,
                id: id.to_owned(),
            }
        })
    } else {
        None
    };
    Page {
        items: selected,
        next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_is_url_safe() {
        let cursor = Cursor {
            at: "2026-01-15T12:00:00.123456789Z".parse().unwrap(),
            id: "key_ab12".to_owned(),
        };
        let text = cursor.encode();
        assert!(
            text.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c)),
            "{text}"
        );
        assert_eq!(Cursor::decode(&text), Some(cursor));
        assert_eq!(Cursor::decode("nope"), None);
        assert_eq!(Cursor::decode("12.key/1"), None);
    }
}
