//! What the stores hold: key records (never a plaintext key), accounts and
//! usage. Records are versioned so that every change is a compare-and-set
//! and two admins editing one key cannot silently overwrite each other.

use core::num::NonZeroU32;

use cloro_auth_core::wire::{
    KeyInfo, KeyPurpose, Metadata, QuotaPolicy, RateLimitPolicy, Refill, UsageCounts,
};
use cloro_auth_core::{AccountId, Environment, KeyHash, KeyId, KeyStatus, PlanName, Scope};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::ExpiryNotice;

/// One API key as stored: everything `KeyInfo` shows plus the SHA-256 of
/// the key, the rotation link and a version for compare-and-set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Opaque id, `key_…`.
    pub id: KeyId,
    /// SHA-256 of the key; the plaintext is never stored.
    #[serde(with = "hash_hex")]
    pub hash: KeyHash,
    /// The owning account.
    pub account_id: AccountId,
    /// A person's label.
    pub name: String,
    /// What the key is for.
    pub purpose: KeyPurpose,
    /// `live` or `test`.
    pub environment: Environment,
    /// The redacted key, `sk_live_1a2b...`.
    pub start: String,
    /// Scopes held.
    pub scopes: Vec<Scope>,
    /// Client labels.
    #[serde(default)]
    pub metadata: Metadata,
    /// The key's own rate limit; `None` means its account's plan's.
    pub rate_limit: Option<RateLimitPolicy>,
    /// Requests in flight at once; `None` means the plan's, if any.
    pub concurrency_limit: Option<NonZeroU32>,
    /// The key's own quota; `None` means its plan's, if any.
    #[serde(default)]
    pub quota: Option<QuotaPolicy>,
    /// Whether the key spends credits. The balance itself is not part of
    /// the record: requests spend it, so it lives in the ledger
    /// (`crate::quota`), which admin reads fill into [`KeyRecord::credits`].
    #[serde(default)]
    pub credits_limited: bool,
    /// How the credits are refilled.
    #[serde(default)]
    pub refill: Option<Refill>,
    /// Whose quota counter and credit balance this key draws on: the first
    /// key of its rotation chain (`None`: its own id). A rotation hands it
    /// on, so rotating never buys a fresh quota or balance.
    #[serde(default)]
    pub meter_id: Option<KeyId>,
    /// `false` while disabled.
    pub enabled: bool,
    /// Creation time.
    pub created_at: Timestamp,
    /// When it stops working; for a rotated key, the end of its grace.
    pub expires_at: Option<Timestamp>,
    /// When it was revoked.
    pub revoked_at: Option<Timestamp>,
    /// Why it was revoked.
    pub revoked_reason: Option<String>,
    /// The key that replaced this one in a rotation.
    #[serde(default)]
    pub rotated_to: Option<KeyId>,
    /// When it was first reported leaked (SPEC §12); a later report of the
    /// same key changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaked_at: Option<Timestamp>,
    /// The last expiry notice sent (SPEC §12), so that each is sent once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_notice: Option<ExpiryNotice>,
    /// Starts at 1; every committed change adds one.
    pub version: u64,
    /// Batched usage, filled in by the store on reads and never written
    /// through a commit (so usage never conflicts with an admin change).
    #[serde(skip)]
    pub usage: KeyUsage,
    /// The credit balance at the time of an admin read (`None` when the
    /// key's credits are unlimited, or on the verifier's path); never stored.
    #[serde(skip)]
    pub credits: Option<u64>,
}

impl KeyRecord {
    /// The status at `now` (SPEC §4 precedence: revoked, expired, disabled).
    pub fn status(&self, now: Timestamp) -> KeyStatus {
        let expired = self.expires_at.is_some_and(|end| end <= now);
        KeyStatus::from_facts(self.revoked_at.is_some(), expired, self.enabled)
    }

    /// Whose quota counter and credit balance the key draws on.
    pub fn meter_id(&self) -> KeyId {
        self.meter_id.unwrap_or(self.id)
    }

    /// The public view of the record at `now`.
    pub fn to_info(&self, now: Timestamp) -> KeyInfo {
        KeyInfo {
            id: self.id,
            account_id: self.account_id,
            name: self.name.clone(),
            purpose: self.purpose,
            environment: self.environment,
            start: self.start.clone(),
            scopes: self.scopes.clone(),
            metadata: self.metadata.clone(),
            rate_limit: self.rate_limit,
            concurrency_limit: self.concurrency_limit,
            quota: self.quota,
            // A limited key whose balance was never read has none to show.
            credits: self.credits_limited.then(|| self.credits.unwrap_or(0)),
            refill: self.refill,
            enabled: self.enabled,
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            revoked_reason: self.revoked_reason.clone(),
            leaked_at: self.leaked_at,
            last_used_at: self.usage.last_used_at,
            status: self.status(now),
        }
    }
}

/// Usage of one key, written in batches off the request path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUsage {
    /// Latest successful verification.
    pub last_used_at: Option<Timestamp>,
    /// Successful verifications counted so far.
    pub count: u64,
}

/// A usage increment for one key, as the recorder adds it up between flushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageDelta {
    /// The key.
    pub key_id: KeyId,
    /// Latest successful use in this batch; meaningful only when `count`
    /// is above 0 (a delta of refusals alone leaves `last_used_at` alone).
    pub last_used_at: Timestamp,
    /// Successful uses in this batch (the `valid` outcome of SPEC §10).
    pub count: u64,
    /// The minute (its start, Unix seconds) the batch's counts are filed
    /// under in the usage series.
    pub minute: i64,
    /// Refused requests by outcome (`valid` is always 0 here: that is
    /// `count`).
    pub refused: UsageCounts,
}

impl UsageDelta {
    /// Every outcome's count, `valid` included.
    pub fn outcomes(&self) -> UsageCounts {
        let mut outcomes = self.refused;
        outcomes.valid = self.count;
        outcomes
    }
}

/// The usage of one account's keys from one flush of one node: the unit a
/// store applies at most once (see [`crate::KeyStore::record_usage`]).
///
/// `(node_id, sequence)` names the batch. A node numbers its flushes upwards
/// and retries a batch whose write failed with the same name, so a store that
/// has applied `sequence` for this node and account skips it, and a write
/// whose outcome was unknown (it timed out after Redis applied it) is not
/// counted twice. The name belongs to the batch, not to a counter, so what a
/// batch carries may grow (SPEC §10: per-minute counts by outcome) without
/// touching how it is applied once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageBatch {
    /// The account every delta belongs to (the Redis store keeps usage in the
    /// account's slot).
    pub account_id: AccountId,
    /// The node that counted this usage; random per process.
    pub node_id: u64,
    /// Which of the node's flushes made the batch; later flushes are higher.
    pub sequence: u64,
    /// One entry per key used.
    pub deltas: Vec<UsageDelta>,
}

/// What the verifier needs from one lookup: the record and its account's
/// plan, read together so a cache entry is one consistent snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyLookup {
    /// The key.
    pub record: KeyRecord,
    /// The account's plan; `None` means the default plan.
    pub account_plan: Option<PlanName>,
}

/// An account: it exists once it has a key or a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRecord {
    /// The account.
    pub account_id: AccountId,
    /// Its plan; `None` means the default plan.
    pub plan: Option<PlanName>,
    /// Keys created for it, revoked ones included.
    pub key_count: u64,
}

impl AccountRecord {
    /// The account as stored facts describe it, if it exists: SPEC §6 says
    /// an account exists once it has a key or a plan. Every store answers
    /// `KeyStore::account` through this, so the rule lives in one place.
    pub fn if_exists(
        account_id: AccountId,
        plan: Option<PlanName>,
        key_count: u64,
    ) -> Option<Self> {
        (key_count > 0 || plan.is_some()).then_some(AccountRecord {
            account_id,
            plan,
            key_count,
        })
    }
}

/// `KeyHash` as 64 hex digits in JSON: readable in a Redis `GET`, and the
/// same text the Redis key names use.
pub(super) mod hash_hex {
    use cloro_auth_core::KeyHash;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(in crate::store) fn serialize<S: Serializer>(
        hash: &KeyHash,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let hex = hash.to_hex();
        serializer.serialize_str(core::str::from_utf8(&hex).map_err(serde::ser::Error::custom)?)
    }

    pub(in crate::store) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<KeyHash, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        KeyHash::from_hex(&text)
            .ok_or_else(|| D::Error::custom("a key hash is 64 lower-case hex digits"))
    }
}
