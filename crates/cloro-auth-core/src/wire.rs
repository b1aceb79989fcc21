//! Request and response bodies of the HTTP API (SPEC §4, §6), shared by the
//! server and the client so the two can never disagree about a field.
//!
//! Requests refuse unknown fields: a typo such as `expire_at` must be a 400,
//! not a key that silently never expires. Validation that needs the clock
//! (an `expires_at` in the future) is the server's.
//!
//! The two answers that carry a plaintext key ([`CreateKeyResponse`],
//! [`RotateKeyResponse`]) have a hand-written `Debug` that shows it only in
//! the redacted form of SPEC §2, so a `{:?}` in a log line or a test
//! failure never prints a working key.

use alloc::collections::BTreeMap;
use alloc::string::String;
#[cfg(feature = "schema")]
use alloc::string::ToString; // `schemars(regex(…))` calls `to_string`
use alloc::vec::Vec;
use core::fmt;
use core::num::NonZeroU32;

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod admin_tokens;
mod leaked;
pub mod limits;
mod portal;
#[cfg(feature = "schema")]
pub mod schema;
mod usage;
mod webhook;

pub use admin_tokens::{
    AdminRole, AdminTokenInfo, BOOTSTRAP_TOKEN_NAME, CreateAdminTokenRequest,
    CreateAdminTokenResponse, ListAdminTokensResponse, MAX_ADMIN_TOKENS, TOKEN_NAME_PATTERN,
    is_token_name,
};
pub use leaked::{
    LeakFeedback, LeakLabel, LeakedToken, MAX_LEAKED_KEYS, RevokeLeakedRequest,
    RevokeLeakedResponse,
};
pub use portal::{PORTAL_LINK_SECONDS, PORTAL_SESSION_SECONDS, PortalSessionResponse};
pub use usage::{
    AccountUsageResponse, KeyUsageResponse, KeyUsageTotals, MAX_USAGE_BUCKETS, UsageBucket,
    UsageCounts, UsageGranularity, UsageOutcome,
};
pub use webhook::{
    CreateWebhookRequest, CreateWebhookResponse, DeliveryInfo, DeliveryStatus,
    ListDeliveriesResponse, ListWebhooksResponse, MAX_WEBHOOK_URL_LEN, MAX_WEBHOOKS, WebhookData,
    WebhookEventType, WebhookInfo, WebhookPayload,
};

use crate::error::ErrorCode;
use crate::key::{ApiKey, Environment};
use crate::name::{AccountId, KeyId, PlanName, Scope};
use crate::status::KeyStatus;

/// Free-form string labels a client attaches to a key.
pub type Metadata = BTreeMap<String, String>;

/// What a key is for; informational, shown in lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum KeyPurpose {
    /// Production traffic.
    Production,
    /// A developer's machine.
    Development,
    /// Continuous integration.
    Ci,
    /// A person's own key.
    TeamMember,
    /// Anything else.
    #[default]
    Other,
}

/// Who shares a rate-limit allowance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum AppliesTo {
    /// Each key has its own allowance (the Cloro API limits "per API key").
    #[default]
    Key,
    /// All of an account's keys share one allowance.
    Account,
}

impl AppliesTo {
    fn is_key(&self) -> bool {
        *self == AppliesTo::Key
    }
}

/// A GCRA rate limit (SPEC §5): `burst` requests back to back, then one
/// every `per_seconds / requests` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimitPolicy {
    /// Requests allowed per period.
    #[serde(deserialize_with = "whole::nonzero_u32")]
    pub requests: NonZeroU32,
    /// The period in seconds.
    #[serde(deserialize_with = "whole::nonzero_u32")]
    pub per_seconds: NonZeroU32,
    /// How many may come back to back; `requests` when absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::optional_nonzero_u32"
    )]
    pub burst: Option<NonZeroU32>,
    /// Each key has its own allowance (`key`), or all of an account's keys
    /// share one (`account`). Omitted when `key`.
    #[serde(default, skip_serializing_if = "AppliesTo::is_key")]
    #[cfg_attr(feature = "schema", schemars(extend("default" = "key")))]
    pub applies_to: AppliesTo,
}

impl RateLimitPolicy {
    /// A per-key policy of `requests` per `per_seconds`, burst = requests.
    pub const fn new(requests: NonZeroU32, per_seconds: NonZeroU32) -> Self {
        RateLimitPolicy {
            requests,
            per_seconds,
            burst: None,
            applies_to: AppliesTo::Key,
        }
    }

    /// The burst in force: `burst`, or `requests` when unset.
    pub fn effective_burst(&self) -> NonZeroU32 {
        self.burst.unwrap_or(self.requests)
    }
}

/// The largest count a quota or a credit balance may hold: 2^53 − 1, the
/// largest integer a JSON number (and a Lua number in the Redis scripts)
/// holds exactly.
pub const MAX_QUOTA_COUNT: u64 = (1 << 53) - 1;

/// A calendar period in UTC (SPEC §11): a day starts at 00:00 UTC, a month
/// on the 1st at 00:00 UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum QuotaPeriod {
    /// A UTC day.
    Day,
    /// A UTC calendar month.
    Month,
}

impl QuotaPeriod {
    /// `day` or `month`.
    pub const fn as_str(self) -> &'static str {
        match self {
            QuotaPeriod::Day => "day",
            QuotaPeriod::Month => "month",
        }
    }
}

/// How many requests (in cost units) fit in each calendar period (SPEC §11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct QuotaPolicy {
    /// Units per period, 1 to 2^53 − 1.
    #[serde(deserialize_with = "whole::quota_count")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_QUOTA_COUNT)))]
    pub requests: u64,
    /// `day` or `month`.
    pub period: QuotaPeriod,
    /// Who shares it. Absent means the default of where the quota is set:
    /// a plan's quota applies to the account, a key's own to the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applies_to: Option<AppliesTo>,
}

impl QuotaPolicy {
    /// Who shares the quota, given the default of where it is set.
    pub fn applies_to_or(&self, default: AppliesTo) -> AppliesTo {
        self.applies_to.unwrap_or(default)
    }
}

/// Credits set (not added) to `amount` at the start of each period (SPEC §11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Refill {
    /// The balance at each period start, 0 to 2^53 − 1.
    #[serde(deserialize_with = "whole::credit_count")]
    #[cfg_attr(feature = "schema", schemars(range(max = MAX_QUOTA_COUNT)))]
    pub amount: u64,
    /// `day` or `month`.
    pub interval: QuotaPeriod,
}

/// Everything a client may know about a key; never the secret (SPEC §6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct KeyInfo {
    /// Opaque id, `key_…`.
    pub id: KeyId,
    /// The owning account.
    pub account_id: AccountId,
    /// A person's label for the key.
    pub name: String,
    /// What the key is for.
    pub purpose: KeyPurpose,
    /// `live` or `test`.
    pub environment: Environment,
    /// The redacted key: its prefix and the first 4 random digits,
    /// `sk_live_1a2b...`.
    #[cfg_attr(
        feature = "schema",
        schemars(regex(pattern = schema::redacted_key_pattern()))
    )]
    pub start: String,
    /// Scopes the key holds.
    pub scopes: Vec<Scope>,
    /// Free-form string labels.
    #[cfg_attr(feature = "schema", schemars(schema_with = "schema::metadata"))]
    pub metadata: Metadata,
    /// The key's own rate limit; `null` means the plan's.
    pub rate_limit: Option<RateLimitPolicy>,
    /// Requests in flight at once; `null` means no limit.
    pub concurrency_limit: Option<NonZeroU32>,
    /// The key's own quota; `null` means its plan's, if any.
    #[serde(default)]
    pub quota: Option<QuotaPolicy>,
    /// Credits left; `null` means unlimited.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(max = MAX_QUOTA_COUNT)))]
    pub credits: Option<u64>,
    /// How the credits are refilled; `null` means never.
    #[serde(default)]
    pub refill: Option<Refill>,
    /// `false` once disabled.
    pub enabled: bool,
    /// When it was created.
    #[cfg_attr(feature = "schema", schemars(with = "schema::Rfc3339"))]
    pub created_at: Timestamp,
    /// When it stops working, if ever.
    #[cfg_attr(feature = "schema", schemars(with = "Option<schema::Rfc3339>"))]
    pub expires_at: Option<Timestamp>,
    /// When it was revoked.
    #[cfg_attr(feature = "schema", schemars(with = "Option<schema::Rfc3339>"))]
    pub revoked_at: Option<Timestamp>,
    /// Why, as the revoker said.
    pub revoked_reason: Option<String>,
    /// When it was first reported leaked (SPEC §12: by a secret-scanning
    /// partner or through `revoke-leaked`), if ever.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Option<schema::Rfc3339>"))]
    pub leaked_at: Option<Timestamp>,
    /// Last successful use (batched, so up to a few seconds behind).
    #[cfg_attr(feature = "schema", schemars(with = "Option<schema::Rfc3339>"))]
    pub last_used_at: Option<Timestamp>,
    /// Derived from the fields above at the time of the answer.
    pub status: KeyStatus,
}

/// `POST /admin/v1/keys`. Unknown fields are refused with 400
/// `INVALID_REQUEST`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// The owning account, `[A-Za-z0-9_-]{1,64}`.
    pub account_id: AccountId,
    /// A label for people: 1 to 200 characters, no control characters (C0,
    /// DEL or C1).
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = limits::MAX_NAME_CHARS), pattern(schema::NO_CONTROL_CHARACTERS)))]
    pub name: String,
    /// Default `other`.
    #[serde(default)]
    pub purpose: KeyPurpose,
    /// Default `live`.
    #[serde(default = "live")]
    pub environment: Environment,
    /// In the future, or absent/null for never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<schema::Rfc3339>"))]
    pub expires_at: Option<Timestamp>,
    /// Default `["*"]`.
    #[serde(default = "all_scopes")]
    #[cfg_attr(feature = "schema", schemars(length(max = limits::MAX_SCOPES)))]
    pub scopes: Vec<Scope>,
    /// The key's own rate limit; absent for the plan's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitPolicy>,
    /// Requests in flight at once; absent or `null`: no limit.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::optional_nonzero_u32"
    )]
    pub concurrency_limit: Option<NonZeroU32>,
    /// The key's own quota; absent for the plan's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaPolicy>,
    /// Starting credits; absent or `null` for unlimited (with `refill`
    /// alone: the refill amount).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::optional_credit_count"
    )]
    #[cfg_attr(feature = "schema", schemars(range(max = MAX_QUOTA_COUNT)))]
    pub credits: Option<u64>,
    /// How the credits are refilled; given alone, the balance starts at the
    /// refill amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill: Option<Refill>,
    /// Free-form string labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "schema", schemars(schema_with = "schema::metadata"))]
    pub metadata: Metadata,
}

impl CreateKeyRequest {
    /// A request with every optional field at its default.
    pub fn new(account_id: AccountId, name: impl Into<String>) -> Self {
        CreateKeyRequest {
            account_id,
            name: name.into(),
            purpose: KeyPurpose::default(),
            environment: Environment::Live,
            expires_at: None,
            scopes: all_scopes(),
            rate_limit: None,
            concurrency_limit: None,
            quota: None,
            credits: None,
            refill: None,
            metadata: Metadata::new(),
        }
    }
}

fn live() -> Environment {
    Environment::Live
}

fn all_scopes() -> Vec<Scope> {
    alloc::vec![Scope::wildcard()]
}

/// `201` from create: the plaintext key, shown this once.
// `Debug` shows the key redacted.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateKeyResponse {
    /// The plaintext API key, shown only in this answer: store it now.
    /// `null` in an answer replayed for a repeated `Idempotency-Key`
    /// (`Idempotent-Replayed: true`): the plaintext is never stored, so a
    /// client that lost it rotates the key.
    #[cfg_attr(
        feature = "schema",
        schemars(regex(pattern = schema::plaintext_key_pattern()))
    )]
    pub key: Option<String>,
    /// The new key's record.
    pub key_info: KeyInfo,
}

impl fmt::Debug for CreateKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateKeyResponse")
            .field("key", &self.key.as_deref().map(SecretKeyText))
            .field("key_info", &self.key_info)
            .finish()
    }
}

/// A plaintext key held as text, for `Debug`: the key's own redacted form
/// ([`ApiKey::redacted`], the one redactor) when the text is a well-formed
/// key, else nothing of it at all. A malformed text may still be most of a
/// real key (one digit mistyped, or cut short), so not even its start is
/// shown then.
struct SecretKeyText<'a>(&'a str);

impl fmt::Debug for SecretKeyText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match ApiKey::parse_token(self.0) {
            Ok(key) => fmt::Debug::fmt(&key.redacted(), f),
            Err(_) => f.write_str("<redacted>"),
        }
    }
}

/// A field of a JSON merge patch (RFC 7396): absent (leave it), `null`
/// (clear it) or a new value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Patch<T> {
    /// Not in the document: unchanged.
    #[default]
    Absent,
    /// `null`: cleared.
    Null,
    /// A new value.
    Value(T),
}

impl<T> Patch<T> {
    /// Whether the field was left out.
    pub fn is_absent(&self) -> bool {
        matches!(self, Patch::Absent)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Only called when the field is present (`#[serde(default)]` covers absence).
        Ok(match Option::<T>::deserialize(deserializer)? {
            Some(value) => Patch::Value(value),
            None => Patch::Null,
        })
    }
}

impl<T: Serialize> Serialize for Patch<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Patch::Value(value) => serializer.serialize_some(value),
            Patch::Absent | Patch::Null => serializer.serialize_none(),
        }
    }
}

/// `PATCH /admin/v1/keys/{id}`: a JSON merge patch (RFC 7396). `null`
/// clears `expires_at`, `rate_limit` (back to the plan's),
/// `concurrency_limit`, `quota`, `credits`, `refill` and `metadata`; `null`
/// elsewhere is 400. A new `rate_limit` or `quota` replaces the old object;
/// a new `expires_at` must be in the future.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyRequest {
    /// A new label, as in `CreateKeyRequest`; `null` is refused.
    #[serde(default, skip_serializing_if = "Patch::is_absent")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = limits::MAX_NAME_CHARS), pattern(schema::NO_CONTROL_CHARACTERS)))]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub name: Patch<String>,
    /// A new expiry in the future, or `null` for never.
    #[serde(default, skip_serializing_if = "Patch::is_absent")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<schema::Rfc3339>"))]
    pub expires_at: Patch<Timestamp>,
    /// New scopes; `null` is refused.
    #[serde(default, skip_serializing_if = "Patch::is_absent")]
    #[cfg_attr(feature = "schema", schemars(length(max = limits::MAX_SCOPES)))]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<Scope>"))]
    pub scopes: Patch<Vec<Scope>>,
    /// A new policy (replaces the old object), or `null` for the plan's.
    #[serde(default, skip_serializing_if = "Patch::is_absent")]
    pub rate_limit: Patch<RateLimitPolicy>,
    /// A new limit, or `null` for none.
    #[serde(
        default,
        skip_serializing_if = "Patch::is_absent",
        deserialize_with = "whole::patch_nonzero_u32"
    )]
    pub concurrency_limit: Patch<NonZeroU32>,
    /// A new quota (replaces the old object), or `null` for the plan's.
    #[serde(default, skip_serializing_if = "Patch::is_absent")]
    pub quota: Patch<QuotaPolicy>,
    /// A new credit balance, or `null` for unlimited.
    #[serde(
        default,
        skip_serializing_if = "Patch::is_absent",
        deserialize_with = "whole::patch_credit_count"
    )]
    #[cfg_attr(feature = "schema", schemars(range(max = MAX_QUOTA_COUNT)))]
    pub credits: Patch<u64>,
    /// A new refill, or `null` for none.
    #[serde(default, skip_serializing_if = "Patch::is_absent")]
    pub refill: Patch<Refill>,
    /// Labels merged in per RFC 7396: a `null` member removes that label,
    /// and `null` clears them all. After the merge, at most 32 labels.
    #[serde(default, skip_serializing_if = "Patch::is_absent")]
    #[cfg_attr(feature = "schema", schemars(schema_with = "schema::metadata_patch"))]
    pub metadata: Patch<BTreeMap<String, Option<String>>>,
    /// Disable or enable; `null` is refused.
    #[serde(default, skip_serializing_if = "Patch::is_absent")]
    #[cfg_attr(feature = "schema", schemars(with = "bool"))]
    pub enabled: Patch<bool>,
}

impl UpdateKeyRequest {
    /// The first field set to `null` that may not be cleared, if any.
    pub fn null_in_required_field(&self) -> Option<&'static str> {
        [
            ("name", matches!(self.name, Patch::Null)),
            ("scopes", matches!(self.scopes, Patch::Null)),
            ("enabled", matches!(self.enabled, Patch::Null)),
        ]
        .into_iter()
        .find_map(|(field, null)| null.then_some(field))
    }
}

/// `POST /admin/v1/keys/{id}/revoke`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RevokeKeyRequest {
    /// Why; kept in the key and the audit log. Absent or `null`: no reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(max = limits::MAX_REASON_CHARS)))]
    pub reason: Option<String>,
}

/// `POST /admin/v1/keys/{id}/rotate`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    /// How long the old key keeps working; 0 (the default) stops it at
    /// once. The old key ends at the earlier of its own expiry and now +
    /// grace.
    #[serde(default, deserialize_with = "whole::u64")]
    #[cfg_attr(feature = "schema", schemars(range(max = limits::MAX_GRACE_SECONDS)))]
    pub grace_period_seconds: u64,
    /// The new key's expiry: absent inherits, `null` never expires.
    #[serde(default, skip_serializing_if = "Patch::is_absent")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<schema::Rfc3339>"))]
    pub expires_at: Patch<Timestamp>,
}

/// `201` from rotate: the new plaintext key, shown this once.
// `Debug` shows the new key redacted.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RotateKeyResponse {
    /// The new plaintext key, shown only in this answer; `null` in a
    /// replay, as in `CreateKeyResponse`.
    #[cfg_attr(
        feature = "schema",
        schemars(regex(pattern = schema::plaintext_key_pattern()))
    )]
    pub key: Option<String>,
    /// The new key's record.
    pub key_info: KeyInfo,
    /// The old key's record, with its new end.
    pub previous: KeyInfo,
}

impl fmt::Debug for RotateKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotateKeyResponse")
            .field("key", &self.key.as_deref().map(SecretKeyText))
            .field("key_info", &self.key_info)
            .field("previous", &self.previous)
            .finish()
    }
}

/// `POST /admin/v1/keys/{id}/credits`: exactly one of `set` (the new
/// balance) and `add` (credits to add; the key's credits must already be
/// limited).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", schemars(extend("minProperties" = 1, "maxProperties" = 1)))]
pub struct CreditsRequest {
    /// The new balance.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::present_credit_count"
    )]
    #[cfg_attr(feature = "schema", schemars(with = "u64", range(max = MAX_QUOTA_COUNT)))]
    pub set: Option<u64>,
    /// Credits to add to the balance.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::present_credit_count"
    )]
    #[cfg_attr(feature = "schema", schemars(with = "u64", range(max = MAX_QUOTA_COUNT)))]
    pub add: Option<u64>,
}

/// `GET /admin/v1/accounts/{account_id}/quota`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AccountQuotaResponse {
    /// The account.
    pub account_id: AccountId,
    /// Its plan.
    pub plan: PlanName,
    /// The plan's quota; `null` when the plan has none.
    pub quota: Option<QuotaPolicy>,
    /// Units used in the current period by the account; `null` when there
    /// is no account-wide quota (none, or one per key).
    pub used: Option<u64>,
    /// Units left in the current period; `null` as for `used`.
    pub remaining: Option<u64>,
    /// When the current period ends; `null` when there is no quota.
    #[cfg_attr(feature = "schema", schemars(with = "Option<schema::Rfc3339>"))]
    pub resets_at: Option<Timestamp>,
}

/// `GET /admin/v1/keys`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ListKeysResponse {
    /// Newest first.
    pub keys: Vec<KeyInfo>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// What an audit event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum AuditAction {
    /// A key was created.
    #[serde(rename = "key.created")]
    KeyCreated,
    /// A key was changed.
    #[serde(rename = "key.updated")]
    KeyUpdated,
    /// A key was revoked.
    #[serde(rename = "key.revoked")]
    KeyRevoked,
    /// A key was rotated.
    #[serde(rename = "key.rotated")]
    KeyRotated,
    /// A key was reported leaked (by a secret-scanning partner or an
    /// operator); the details say where and what was done.
    #[serde(rename = "key.leaked")]
    KeyLeaked,
    /// A key expires soon: a notice 7 days and one a day before its
    /// `expires_at` (details: `expires_at`, `notice` = `7d` or `1d`).
    #[serde(rename = "key.expiring")]
    KeyExpiring,
    /// A key reached its `expires_at`.
    #[serde(rename = "key.expired")]
    KeyExpired,
    /// A quota's period reached 80 % use (details: `subject`, `limit`,
    /// `used`, `period`, `resets_at`, and `plan` for a plan's quota).
    #[serde(rename = "quota.warning")]
    QuotaWarning,
    /// A quota's period was used up (details as `quota.warning`).
    #[serde(rename = "quota.exhausted")]
    QuotaExhausted,
    /// An account changed plan.
    #[serde(rename = "account.updated")]
    AccountUpdated,
}

/// One entry of the audit log; never holds a secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AuditEvent {
    /// Opaque id, `evt_…`.
    pub id: String,
    /// When it happened.
    #[cfg_attr(feature = "schema", schemars(with = "schema::Rfc3339"))]
    pub at: Timestamp,
    /// Who did it: an admin token's name (`admin` for the configured one),
    /// `github-secret-scanning` or `gitlab-secret-detection` for a partner
    /// report, `expiry-schedule` for an expiry notice, `portal:<id>` for
    /// the account portal.
    pub actor: String,
    /// What was done.
    pub action: AuditAction,
    /// The key concerned, if any.
    pub key_id: Option<KeyId>,
    /// The account concerned.
    pub account_id: AccountId,
    /// What changed: field names, reasons, the new key id of a rotation.
    pub details: BTreeMap<String, String>,
}

/// `GET /admin/v1/audit`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ListAuditResponse {
    /// Newest first.
    pub events: Vec<AuditEvent>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A plan from the config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PlanInfo {
    /// Its name.
    pub name: PlanName,
    /// Its rate limit.
    pub rate_limit: RateLimitPolicy,
    /// Its concurrency limit, if any.
    pub concurrency_limit: Option<NonZeroU32>,
    /// Its quota, if any.
    #[serde(default)]
    pub quota: Option<QuotaPolicy>,
}

/// `GET /admin/v1/plans`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PlansResponse {
    /// Every plan.
    pub plans: Vec<PlanInfo>,
    /// The plan of an account nobody put on one.
    pub default_plan: PlanName,
}

/// `GET`/`PUT /admin/v1/accounts/{account_id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AccountInfo {
    /// The account.
    pub account_id: AccountId,
    /// Its plan.
    pub plan: PlanName,
    /// How many keys it has, revoked ones included.
    pub key_count: u64,
}

/// `PUT /admin/v1/accounts/{account_id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SetPlanRequest {
    /// A plan named in the config; an unknown plan is 400.
    pub plan: PlanName,
}

/// `GET /healthz` and `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HealthResponse {
    /// `ok` or `degraded`.
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["ok", "degraded"])))]
    pub status: String,
}

/// The body of every error answer (SPEC §4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorObject,
}

/// `error` in an `ErrorBody`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorObject {
    /// The code, e.g. `INVALID_API_KEY`.
    #[serde(serialize_with = "code_as_str", deserialize_with = "code_from_str")]
    pub code: ErrorCode,
    /// What happened and what to do, for people.
    pub message: String,
    /// Machine-readable particulars.
    #[serde(default)]
    pub details: ErrorDetails,
    /// When the error was answered.
    #[cfg_attr(feature = "schema", schemars(with = "schema::Rfc3339"))]
    pub timestamp: Timestamp,
    /// The request's `X-Request-Id`.
    pub request_id: String,
}

/// `error.details`: machine-readable particulars; each field appears only
/// where it applies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorDetails {
    /// The request field at fault (`INVALID_REQUEST`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub field: Option<String>,
    /// `revoked` or `disabled` (`REVOKED_API_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "String", extend("enum" = ["revoked", "disabled"]))
    )]
    pub reason: Option<String>,
    /// The scope the route needs (`INSUFFICIENT_PERMISSIONS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "Scope"))]
    pub required_scope: Option<Scope>,
    /// The plan whose rate limit or quota was hit (`RATE_LIMIT_EXCEEDED`,
    /// `QUOTA_EXCEEDED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "PlanName"))]
    pub plan: Option<PlanName>,
    /// Seconds to wait, as in `Retry-After` (429, 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "u64", range(min = 1)))]
    pub retry_after: Option<u64>,
    /// The limit that was hit: a number for `CONCURRENT_LIMIT_EXCEEDED`,
    /// `credits` or `quota` for `QUOTA_EXCEEDED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "LimitDetail"))]
    pub limit: Option<LimitDetail>,
    /// When the exhausted allowance refills (`QUOTA_EXCEEDED`): present
    /// there, `null` when nothing refills; absent elsewhere.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_or_null"
    )]
    #[cfg_attr(feature = "schema", schemars(with = "Option<schema::Rfc3339>"))]
    pub resets_at: Option<Option<Timestamp>>,
}

/// `details.limit`: the concurrency limit's number, or which of the §11
/// allowances ran out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum LimitDetail {
    /// `CONCURRENT_LIMIT_EXCEEDED`: the key's concurrency limit.
    Count(#[cfg_attr(feature = "schema", schemars(range(min = 1)))] u32),
    /// `QUOTA_EXCEEDED`: `credits` or `quota`.
    Name(#[cfg_attr(feature = "schema", schemars(extend("enum" = ["credits", "quota"])))] String),
}

/// A field that is absent (`None`), `null` (`Some(None)`) or a value.
fn present_or_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

impl ErrorDetails {
    /// The details SPEC §4 asks for, for an authentication failure.
    pub fn of_auth_error(error: &crate::AuthError) -> Self {
        use crate::AuthError;
        let mut details = ErrorDetails {
            retry_after: error.retry_after(),
            ..ErrorDetails::default()
        };
        match error {
            AuthError::RevokedApiKey(reason) => details.reason = Some(reason.as_str().into()),
            AuthError::InsufficientPermissions { required } => {
                details.required_scope = Some(*required)
            }
            AuthError::RateLimitExceeded { plan, .. } => details.plan = *plan,
            AuthError::ConcurrentLimitExceeded { limit } => {
                details.limit = Some(LimitDetail::Count(*limit))
            }
            AuthError::QuotaExceeded {
                limit,
                plan,
                resets_at,
                ..
            } => {
                details.limit = Some(LimitDetail::Name(limit.as_str().into()));
                details.plan = *plan;
                details.resets_at =
                    Some(resets_at.and_then(|seconds| Timestamp::from_second(seconds).ok()));
            }
            _ => {}
        }
        details
    }
}

fn code_as_str<S: Serializer>(code: &ErrorCode, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(code.as_str())
}

fn code_from_str<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ErrorCode, D::Error> {
    let text = <alloc::borrow::Cow<'de, str>>::deserialize(deserializer)?;
    ErrorCode::from_code(&text).ok_or_else(|| {
        serde::de::Error::custom(format_args!(
            "unknown error code `{}`",
            text.escape_default()
        ))
    })
}

/// Whole numbers as JSON has them: `5`, and also `5.0` or `5e0`. JSON has
/// one number type and JSON Schema's `integer` is any number with no
/// fraction, so a client (or a generator working from our OpenAPI
/// document) that writes `5.0` sent a valid integer; serde alone would
/// refuse it as a float. Fractions, negatives and values out of range are
/// still refused, naming the range.
mod whole {
    use core::fmt;
    use core::num::NonZeroU32;

    use serde::Deserializer;
    use serde::de::{Error, Unexpected, Visitor};

    use super::Patch;

    /// Reads one whole number from 0 to `u64::MAX`.
    struct Whole;

    impl<'de> Visitor<'de> for Whole {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number")
        }

        fn visit_u64<E: Error>(self, value: u64) -> Result<u64, E> {
            Ok(value)
        }

        fn visit_i64<E: Error>(self, value: i64) -> Result<u64, E> {
            u64::try_from(value).map_err(|_| E::invalid_value(Unexpected::Signed(value), &self))
        }

        fn visit_f64<E: Error>(self, value: f64) -> Result<u64, E> {
            // `as` saturates, so the round trip holds only for a whole
            // number in range (2^64 itself rounds back to u64::MAX + 1).
            let whole = value as u64;
            if (0.0..18_446_744_073_709_551_616.0).contains(&value) && whole as f64 == value {
                Ok(whole)
            } else {
                Err(E::invalid_value(Unexpected::Float(value), &self))
            }
        }
    }

    /// A whole number, or `null` (`None`).
    struct OptionalWhole;

    impl<'de> Visitor<'de> for OptionalWhole {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number or null")
        }

        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Whole).map(Some)
        }
    }

    fn in_range<E: Error>(value: u64) -> Result<NonZeroU32, E> {
        u32::try_from(value)
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| {
                E::invalid_value(
                    Unexpected::Unsigned(value),
                    &"a whole number from 1 to 4294967295",
                )
            })
    }

    pub(super) fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(Whole)
    }

    pub(super) fn nonzero_u32<'de, D: Deserializer<'de>>(d: D) -> Result<NonZeroU32, D::Error> {
        in_range(d.deserialize_any(Whole)?)
    }

    pub(super) fn optional_nonzero_u32<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<NonZeroU32>, D::Error> {
        d.deserialize_option(OptionalWhole)?
            .map(in_range)
            .transpose()
    }

    fn count_in<E: Error>(value: u64, least: u64) -> Result<u64, E> {
        if (least..=super::MAX_QUOTA_COUNT).contains(&value) {
            return Ok(value);
        }
        Err(E::invalid_value(
            Unexpected::Unsigned(value),
            &if least == 0 {
                "a whole number from 0 to 9007199254740991"
            } else {
                "a whole number from 1 to 9007199254740991"
            },
        ))
    }

    /// A quota's size: 1 to 2^53 − 1.
    pub(super) fn quota_count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        count_in(d.deserialize_any(Whole)?, 1)
    }

    /// A credit balance or amount: 0 to 2^53 − 1.
    pub(super) fn credit_count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        count_in(d.deserialize_any(Whole)?, 0)
    }

    /// A credit count that is there: `null` is refused (absence is the
    /// field's `default`), where `null` would mean nothing.
    pub(super) fn present_credit_count<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<u64>, D::Error> {
        credit_count(d).map(Some)
    }

    pub(super) fn optional_credit_count<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<u64>, D::Error> {
        d.deserialize_option(OptionalWhole)?
            .map(|value| count_in(value, 0))
            .transpose()
    }

    pub(super) fn patch_credit_count<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Patch<u64>, D::Error> {
        Ok(match optional_credit_count(d)? {
            Some(value) => Patch::Value(value),
            None => Patch::Null,
        })
    }

    /// Only called when the field is present (`#[serde(default)]` covers
    /// absence), so `null` here is [`Patch::Null`].
    pub(super) fn patch_nonzero_u32<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Patch<NonZeroU32>, D::Error> {
        Ok(match optional_nonzero_u32(d)? {
            Some(value) => Patch::Value(value),
            None => Patch::Null,
        })
    }
}
