//! An in-memory `KeyStore` for unit tests and benchmarks. It keeps the same
//! contract as the durable stores (the contract suite runs against it) and
//! can be switched "down" to exercise outage handling without a network.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use core::time::Duration;

use async_trait::async_trait;
use cloro_auth_core::wire::{AuditEvent, UsageCounts, UsageGranularity};
use cloro_auth_core::{AccountId, KeyHash, KeyId, PlanName};
use jiff::Timestamp;

use super::idempotency::{
    Claim, ClaimToken, IdempotencyRecord, IdempotencySlot, IdempotencyStore, RequestFingerprint,
    StoredAnswer,
};
use super::memory_webhooks::WebhookState;
use super::record::{AccountRecord, KeyLookup, KeyRecord, KeyUsage, UsageBatch};
use super::webhooks::OutboxEvent;
use super::{
    KeyBatch, KeyStore, Page, PageRequest, ScheduledNotice, SeriesPoint, StoreError, WEBHOOK_LEASE,
    bucket_starts, paginate, retention_cutoff,
};

/// A `KeyStore` in a mutex: simple and obviously correct, not fast.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    down: AtomicBool,
    lookups: AtomicU64,
}

#[derive(Debug, Default)]
pub(super) struct State {
    keys: HashMap<KeyId, KeyRecord>,
    by_hash: HashMap<KeyHash, KeyId>,
    plans: HashMap<AccountId, PlanName>,
    audit: Vec<AuditEvent>,
    usage: HashMap<KeyId, KeyUsage>,
    /// The last usage batch applied per (account, node). Never forgotten:
    /// this store lives as long as a test.
    usage_applied: HashMap<(AccountId, u64), u64>,
    /// `Idempotency-Key` records by slot name; expired ones are dropped on
    /// every claim.
    idempotency: HashMap<String, IdempotencyRecord>,
    /// Endpoints, outbox and deliveries (`memory_webhooks`).
    pub(super) webhooks: WebhookState,
    /// The expiry-notice schedule: entry → the end of its claim (or
    /// `Timestamp::MIN` while free), earliest entry first.
    notices: BTreeMap<(Timestamp, String), (ScheduledNotice, Timestamp)>,
    /// Named admin tokens (`memory_admin_tokens`).
    pub(super) admin_tokens: Vec<super::AdminTokenRecord>,
    /// Dashboard and portal sessions (`memory_sessions`).
    pub(super) sessions: HashMap<KeyHash, super::SessionRecord>,
    /// Usage series: (granularity, key, bucket start) → counts.
    series: BTreeMap<(UsageGranularity, KeyId, i64), UsageCounts>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every call fail with `Unavailable` (or work again), as a store
    /// outage would.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// How many `lookup` calls reached the store: the verifier's tests and
    /// benches count store calls with this.
    pub fn lookup_count(&self) -> u64 {
        self.lookups.load(Ordering::SeqCst)
    }

    pub(super) fn state(&self) -> Result<std::sync::MutexGuard<'_, State>, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable(
                "the in-memory store is switched off",
            ));
        }
        self.state
            .lock()
            .map_err(|_| StoreError::corrupt("a writer panicked"))
    }
}

impl State {
    fn with_usage(&self, record: &KeyRecord) -> KeyRecord {
        let mut record = record.clone();
        record.usage = self.usage.get(&record.id).copied().unwrap_or_default();
        record
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<KeyLookup>, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let state = self.state()?;
        Ok(state
            .by_hash
            .get(hash)
            .and_then(|id| state.keys.get(id))
            .map(|record| KeyLookup {
                record: record.clone(),
                account_plan: state.plans.get(&record.account_id).copied(),
            }))
    }

    async fn key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let state = self.state()?;
        Ok(state.keys.get(id).map(|record| state.with_usage(record)))
    }

    async fn keys_of_account(
        &self,
        account: &AccountId,
        page: &PageRequest,
        include_revoked: bool,
    ) -> Result<Page<KeyRecord>, StoreError> {
        let state = self.state()?;
        let mut keys: Vec<&KeyRecord> = state
            .keys
            .values()
            .filter(|r| r.account_id == *account)
            .collect();
        keys.sort_by(|a, b| (b.created_at, b.id.as_str()).cmp(&(a.created_at, a.id.as_str())));
        let page = paginate(
            keys.into_iter(),
            page,
            |r| (r.created_at, r.id.as_str()),
            |r| include_revoked || r.revoked_at.is_none(),
        );
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|r| state.with_usage(r))
                .collect(),
            next: page.next,
        })
    }

    async fn commit(&self, batch: KeyBatch) -> Result<(), StoreError> {
        let mut state = self.state()?;
        for write in &batch.writes {
            let record = &write.record;
            if record.account_id != batch.account_id {
                return Err(StoreError::corrupt("a batch may only touch one account"));
            }
            let stored = state.keys.get(&record.id);
            match (write.expected_version, stored) {
                (None, None) if !state.by_hash.contains_key(&record.hash) => {}
                (Some(expected), Some(stored))
                    if stored.version == expected && stored.hash == record.hash => {}
                _ => return Err(StoreError::Conflict),
            }
        }
        let records: Vec<&KeyRecord> = batch.writes.iter().map(|w| &w.record).collect();
        let events = OutboxEvent::of_commit(&batch.audit, &records)?;
        state.webhooks.enqueue(events);
        for notice in batch
            .writes
            .iter()
            .filter_map(|w| ScheduledNotice::of(&w.record))
        {
            state
                .notices
                .entry((notice.at, notice.encode()))
                .or_insert((notice, Timestamp::MIN));
        }
        for write in batch.writes {
            state.by_hash.insert(write.record.hash, write.record.id);
            state.keys.insert(write.record.id, write.record);
        }
        state.audit.extend(batch.audit);
        Ok(())
    }

    async fn audit_events(
        &self,
        account: &AccountId,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>, StoreError> {
        let state = self.state()?;
        let mut events: Vec<&AuditEvent> = state
            .audit
            .iter()
            .filter(|e| e.account_id == *account)
            .collect();
        events.sort_by(|a, b| (b.at, b.id.as_str()).cmp(&(a.at, a.id.as_str())));
        let page = paginate(
            events.into_iter(),
            page,
            |e| (e.at, e.id.as_str()),
            |_| true,
        );
        Ok(Page {
            items: page.items.into_iter().cloned().collect(),
            next: page.next,
        })
    }

    async fn account(&self, account: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        let state = self.state()?;
        let key_count = state
            .keys
            .values()
            .filter(|r| r.account_id == *account)
            .count() as u64;
        let plan = state.plans.get(account).copied();
        Ok(AccountRecord::if_exists(*account, plan, key_count))
    }

    async fn set_account_plan(
        &self,
        account: &AccountId,
        plan: &PlanName,
        event: AuditEvent,
    ) -> Result<(), StoreError> {
        let outbox = OutboxEvent::of_audit(&event, None)?;
        let mut state = self.state()?;
        state.plans.insert(*account, *plan);
        state.audit.push(event);
        state.webhooks.enqueue(vec![outbox]);
        Ok(())
    }

    async fn record_usage(&self, batches: &[UsageBatch]) -> Vec<Result<(), StoreError>> {
        let mut state = match self.state() {
            Ok(state) => state,
            Err(error) => return vec![Err(error); batches.len()],
        };
        // One lock for the whole call: every batch applies, none fails.
        for batch in batches {
            let tag = (batch.account_id, batch.node_id);
            if state
                .usage_applied
                .get(&tag)
                .is_some_and(|applied| batch.sequence <= *applied)
            {
                continue;
            }
            state.usage_applied.insert(tag, batch.sequence);
            for delta in &batch.deltas {
                let entry = state.usage.entry(delta.key_id).or_default();
                entry.count = entry.count.saturating_add(delta.count);
                if delta.count > 0 {
                    entry.last_used_at = entry.last_used_at.max(Some(delta.last_used_at));
                }
                for (granularity, start) in bucket_starts(delta.minute) {
                    state
                        .series
                        .entry((granularity, delta.key_id, start))
                        .or_default()
                        .add(&delta.outcomes());
                }
            }
        }
        let now = Timestamp::now().as_second();
        state
            .series
            .retain(|(granularity, _, start), _| *start >= retention_cutoff(*granularity, now));
        vec![Ok(()); batches.len()]
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.state().map(drop)
    }

    async fn usage_series(
        &self,
        _account: &AccountId,
        keys: &[KeyId],
        granularity: UsageGranularity,
        from: i64,
        to: i64,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        let state = self.state()?;
        let mut points = Vec::new();
        for key_id in keys {
            for ((_, _, start), counts) in state
                .series
                .range((granularity, *key_id, from)..(granularity, *key_id, to))
            {
                points.push(SeriesPoint {
                    key_id: *key_id,
                    start: *start,
                    counts: *counts,
                });
            }
        }
        Ok(points)
    }

    async fn expiry_notices_due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<ScheduledNotice>, StoreError> {
        let mut state = self.state()?;
        let until = now.checked_add(WEBHOOK_LEASE).unwrap_or(now);
        let mut claimed = Vec::new();
        for ((at, _), (notice, claim_end)) in state.notices.iter_mut() {
            if *at > now || claimed.len() == limit {
                break;
            }
            if *claim_end <= now {
                *claim_end = until;
                claimed.push(notice.clone());
            }
        }
        Ok(claimed)
    }

    async fn finish_expiry_notice(&self, notice: &ScheduledNotice) -> Result<(), StoreError> {
        self.state()?.notices.remove(&(notice.at, notice.encode()));
        Ok(())
    }
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn claim(
        &self,
        slot: &IdempotencySlot,
        fingerprint: &RequestFingerprint,
        token: &ClaimToken,
        now: Timestamp,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let mut state = self.state()?;
        // Whole-map sweep: this store holds a test's worth of records.
        let now_ns = now.as_nanosecond();
        state.idempotency.retain(|_, record| record.until > now_ns);
        let (claim, write) = IdempotencyRecord::claim(
            state.idempotency.get(slot.as_str()),
            fingerprint,
            token,
            now,
            lease,
        );
        if let Some(record) = write {
            state.idempotency.insert(slot.as_str().to_owned(), record);
        }
        Ok(claim)
    }

    async fn complete(
        &self,
        slot: &IdempotencySlot,
        token: &ClaimToken,
        answer: &StoredAnswer,
        now: Timestamp,
        keep: Duration,
    ) -> Result<bool, StoreError> {
        let mut state = self.state()?;
        let Some(record) = IdempotencyRecord::complete(
            state.idempotency.get(slot.as_str()),
            token,
            answer,
            now,
            keep,
        ) else {
            return Ok(false);
        };
        state.idempotency.insert(slot.as_str().to_owned(), record);
        Ok(true)
    }

    async fn release(&self, slot: &IdempotencySlot, token: &ClaimToken) -> Result<(), StoreError> {
        let mut state = self.state()?;
        if IdempotencyRecord::releases(state.idempotency.get(slot.as_str()), token) {
            state.idempotency.remove(slot.as_str());
        }
        Ok(())
    }
}
