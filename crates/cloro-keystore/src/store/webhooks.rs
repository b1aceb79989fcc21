//! The [`WebhookStore`] contract (SPEC §12): registered endpoints, the
//! outbox of events, and each event's delivery to each endpoint.
//!
//! # The outbox
//!
//! Every audit event a [`KeyStore`](super::KeyStore) commits is also put in
//! the outbox, **in the same transaction** (the same redb write, the same
//! Redis script in the account's slot): a change and the event it causes
//! are stored together or not at all, so a `kill -9` between the change and
//! its delivery loses nothing. [`OutboxEvent::of_audit`] renders the event
//! once, at commit time, with the key as the change left it.
//!
//! # Delivery
//!
//! A delivery worker takes events from the outbox ([`WebhookStore::outbox`]),
//! turns each into one pending [`Delivery`] per endpoint that wants it and
//! takes it off the outbox ([`WebhookStore::fan_out`], idempotent: a fan-out
//! repeated after a crash adds nothing twice), then sends what is due
//! ([`WebhookStore::due`]) and writes each attempt's outcome
//! ([`WebhookStore::record_attempt`]).
//!
//! Both reads **claim** what they return for [`WEBHOOK_LEASE`]: no caller,
//! on this node or another sharing the store, is given the same event or
//! delivery again until that lease ends, unless the claimer records it
//! first. So in normal operation each event is sent by one node, and a
//! node that died holding a claim only delays its work by the lease.

use core::fmt;
use core::time::Duration;

use async_trait::async_trait;
use cloro_auth_core::AccountId;
use cloro_auth_core::wire::{
    AuditEvent, DeliveryInfo, DeliveryStatus, WebhookEventType, WebhookInfo, WebhookPayload,
};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{KeyRecord, Page, PageRequest, StoreError};

/// How long [`WebhookStore::outbox`] and [`WebhookStore::due`] keep what
/// they returned from every other caller: longer than one attempt may take
/// (the worker bounds each to a few seconds), short enough that a dead
/// node's work is picked up soon.
pub const WEBHOOK_LEASE: Duration = Duration::from_secs(30);

/// How long a finished delivery (delivered or failed) stays in its
/// endpoint's log: long enough to look into last month's incident, and the
/// log stays bounded however many events an endpoint gets.
pub const DELIVERY_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// An endpoint as the store keeps it: its secret only sealed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRecord {
    /// Everything an operator may see.
    pub info: WebhookInfo,
    /// The signing secret, sealed under the server's webhook key (a nonce
    /// and the AEAD ciphertext): never at rest in plaintext.
    pub sealed_secret: Vec<u8>,
}

impl fmt::Debug for WebhookRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookRecord")
            .field("info", &self.info)
            .field(
                "sealed_secret",
                &format_args!("[{} bytes]", self.sealed_secret.len()),
            )
            .finish()
    }
}

impl WebhookRecord {
    /// Whether this endpoint wants `event`.
    pub fn wants(&self, event: &OutboxEvent) -> bool {
        self.info.events.contains(&event.event_type)
            && self
                .info
                .account_id
                .is_none_or(|account| account == event.account_id)
    }
}

/// One event waiting to be fanned out to the endpoints that want it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// Its id (`evt_…`): `webhook-id` of every attempt, so a receiver can
    /// drop a repeat.
    pub id: String,
    /// Whose event it is (the Redis store keeps it in this account's slot).
    pub account_id: AccountId,
    /// What it is.
    pub event_type: WebhookEventType,
    /// When it happened.
    pub at: Timestamp,
    /// The JSON body of every delivery ([`WebhookPayload`]), rendered once.
    pub body: String,
}

impl OutboxEvent {
    /// The event of an audited change: `key` is the record as the same
    /// commit writes it, if the event is about a key.
    ///
    /// # Errors
    /// `Corrupt` if the payload cannot be encoded (it always can).
    pub fn of_audit(event: &AuditEvent, key: Option<&KeyRecord>) -> Result<Self, StoreError> {
        let payload = WebhookPayload::of_audit(event, key.map(|record| record.to_info(event.at)));
        let body = serde_json::to_string(&payload).map_err(|error| {
            StoreError::corrupt("a webhook payload cannot be encoded").caused_by(error)
        })?;
        Ok(OutboxEvent {
            id: event.id.clone(),
            account_id: event.account_id,
            event_type: payload.event_type,
            at: event.at,
            body,
        })
    }

    /// The outbox events of a commit: one per audit event, with the key
    /// the same commit writes.
    ///
    /// # Errors
    /// As [`OutboxEvent::of_audit`].
    pub fn of_commit(
        audit: &[AuditEvent],
        records: &[&KeyRecord],
    ) -> Result<Vec<Self>, StoreError> {
        audit
            .iter()
            .map(|event| {
                let key = event
                    .key_id
                    .and_then(|id| records.iter().copied().find(|record| record.id == id));
                Self::of_audit(event, key)
            })
            .collect()
    }
}

/// One event's delivery to one endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The endpoint.
    pub webhook_id: String,
    /// The event, body included.
    pub event: OutboxEvent,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// When it was last tried.
    pub last_attempt_at: Option<Timestamp>,
    /// The HTTP status of the last attempt, if it got one.
    pub last_status: Option<u16>,
    /// Why the last attempt failed (never a secret: no URL, no body).
    pub last_error: Option<String>,
    /// When it is due, while pending.
    pub next_attempt_at: Option<Timestamp>,
}

impl Delivery {
    /// A new delivery of `event` to `webhook_id`, due at `now`.
    pub fn pending(webhook_id: &str, event: &OutboxEvent, now: Timestamp) -> Self {
        Delivery {
            webhook_id: webhook_id.to_owned(),
            event: event.clone(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            last_attempt_at: None,
            last_status: None,
            last_error: None,
            next_attempt_at: Some(now),
        }
    }

    /// What an operator sees of it.
    pub fn to_info(&self) -> DeliveryInfo {
        DeliveryInfo {
            event_id: self.event.id.clone(),
            event_type: self.event.event_type,
            status: self.status,
            attempts: self.attempts,
            created_at: self.event.at,
            last_attempt_at: self.last_attempt_at,
            last_status: self.last_status,
            last_error: self.last_error.clone(),
            next_attempt_at: self.next_attempt_at,
        }
    }

    /// Where it sorts in the newest-first listing: the event's time and id.
    pub fn position(&self) -> (Timestamp, &str) {
        (self.event.at, self.event.id.as_str())
    }
}

/// Endpoints, outbox and deliveries (see the module documentation).
///
/// Implementations must make every write durable before returning `Ok` and
/// answer `Unavailable` within their timeout rather than hang.
#[async_trait]
pub trait WebhookStore: Send + Sync + fmt::Debug + 'static {
    /// Registers an endpoint; `Conflict` if its id is taken.
    async fn add_webhook(&self, record: &WebhookRecord) -> Result<(), StoreError>;

    /// Every endpoint, newest first.
    async fn webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError>;

    /// Removes an endpoint and its deliveries; `false` if there was none.
    async fn remove_webhook(&self, id: &str) -> Result<bool, StoreError>;

    /// Claims up to `limit` events of the outbox, oldest first, that no
    /// other caller holds a claim on (see [`WEBHOOK_LEASE`]).
    async fn outbox(&self, now: Timestamp, limit: usize) -> Result<Vec<OutboxEvent>, StoreError>;

    /// Adds a pending delivery of `event`, due at `now`, for each of
    /// `webhook_ids` that has none yet, then takes `event` off the outbox.
    /// Repeating it changes nothing.
    async fn fan_out(
        &self,
        event: &OutboxEvent,
        webhook_ids: &[String],
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Claims up to `limit` pending deliveries due at `now`, earliest first.
    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Delivery>, StoreError>;

    /// Writes a delivery after an attempt: its status, counts and, while
    /// pending, when it is due next. Ignored if its endpoint is gone.
    async fn record_attempt(&self, delivery: &Delivery) -> Result<(), StoreError>;

    /// Removes up to `limit` finished (not pending) deliveries, of every
    /// endpoint, whose event happened before `before`; answers how many.
    async fn prune_deliveries(&self, before: Timestamp, limit: usize) -> Result<usize, StoreError>;

    /// One endpoint's deliveries, newest event first.
    async fn deliveries(
        &self,
        webhook_id: &str,
        page: &PageRequest,
    ) -> Result<Page<Delivery>, StoreError>;
}
