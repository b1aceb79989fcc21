//! Webhooks on the wire (SPEC §12): the admin requests that register an
//! endpoint, the answers that list endpoints and their deliveries, and the
//! body every delivery carries. The endpoint's secret is in exactly one
//! answer, [`CreateWebhookResponse`], whose `Debug` hides it.

use alloc::collections::BTreeMap;
use alloc::string::String;
#[cfg(feature = "schema")]
use alloc::string::ToString; // `schemars(regex(…))` calls `to_string`
use alloc::vec::Vec;
use core::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{AuditAction, AuditEvent, KeyInfo};
use crate::name::{AccountId, KeyId};

/// The longest endpoint URL accepted.
pub const MAX_WEBHOOK_URL_LEN: usize = 2048;
/// The most endpoints one server keeps.
pub const MAX_WEBHOOKS: usize = 100;

/// What a delivery is about (SPEC §12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum WebhookEventType {
    /// A key was created.
    #[serde(rename = "key.created")]
    KeyCreated,
    /// A key's settings changed.
    #[serde(rename = "key.updated")]
    KeyUpdated,
    /// A key was revoked.
    #[serde(rename = "key.revoked")]
    KeyRevoked,
    /// A key was rotated.
    #[serde(rename = "key.rotated")]
    KeyRotated,
    /// A key was reported leaked.
    #[serde(rename = "key.leaked")]
    KeyLeaked,
    /// A key expires within 7 days, or within 1 day.
    #[serde(rename = "key.expiring")]
    KeyExpiring,
    /// A key expired.
    #[serde(rename = "key.expired")]
    KeyExpired,
    /// 80 % of a period's quota is used.
    #[serde(rename = "quota.warning")]
    QuotaWarning,
    /// A period's quota is used up.
    #[serde(rename = "quota.exhausted")]
    QuotaExhausted,
    /// An account changed (its plan).
    #[serde(rename = "account.updated")]
    AccountUpdated,
}

impl WebhookEventType {
    /// Every type, in the order of SPEC §12.
    pub const ALL: [WebhookEventType; 10] = [
        WebhookEventType::KeyCreated,
        WebhookEventType::KeyUpdated,
        WebhookEventType::KeyRevoked,
        WebhookEventType::KeyRotated,
        WebhookEventType::KeyLeaked,
        WebhookEventType::KeyExpiring,
        WebhookEventType::KeyExpired,
        WebhookEventType::QuotaWarning,
        WebhookEventType::QuotaExhausted,
        WebhookEventType::AccountUpdated,
    ];

    /// Its name on the wire (`key.created`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEventType::KeyCreated => "key.created",
            WebhookEventType::KeyUpdated => "key.updated",
            WebhookEventType::KeyRevoked => "key.revoked",
            WebhookEventType::KeyRotated => "key.rotated",
            WebhookEventType::KeyLeaked => "key.leaked",
            WebhookEventType::KeyExpiring => "key.expiring",
            WebhookEventType::KeyExpired => "key.expired",
            WebhookEventType::QuotaWarning => "quota.warning",
            WebhookEventType::QuotaExhausted => "quota.exhausted",
            WebhookEventType::AccountUpdated => "account.updated",
        }
    }

    /// The event an audited change sends: each audit action has one.
    pub fn of_audit(action: AuditAction) -> Self {
        match action {
            AuditAction::KeyCreated => WebhookEventType::KeyCreated,
            AuditAction::KeyUpdated => WebhookEventType::KeyUpdated,
            AuditAction::KeyRevoked => WebhookEventType::KeyRevoked,
            AuditAction::KeyRotated => WebhookEventType::KeyRotated,
            AuditAction::KeyLeaked => WebhookEventType::KeyLeaked,
            AuditAction::KeyExpiring => WebhookEventType::KeyExpiring,
            AuditAction::KeyExpired => WebhookEventType::KeyExpired,
            AuditAction::QuotaWarning => WebhookEventType::QuotaWarning,
            AuditAction::QuotaExhausted => WebhookEventType::QuotaExhausted,
            AuditAction::AccountUpdated => WebhookEventType::AccountUpdated,
        }
    }
}

impl fmt::Display for WebhookEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /admin/v1/webhooks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// Where deliveries are posted: `https://` or `http://` with a host and
    /// no `user:password@`, at most 2048 bytes. Loopback, private,
    /// link-local and metadata addresses are refused (also when a name
    /// resolves to one at delivery) unless the server runs with
    /// `--allow-private-webhooks`.
    #[cfg_attr(feature = "schema", schemars(url, length(max = MAX_WEBHOOK_URL_LEN), regex(pattern = r"^https?://")))]
    pub url: String,
    /// Which events it receives; at least one, each once.
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    #[cfg_attr(feature = "schema", schemars(extend("uniqueItems" = true)))]
    pub events: Vec<WebhookEventType>,
    /// Only this account's events; all accounts' when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<AccountId>,
}

/// An endpoint, as every answer but the creating one shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WebhookInfo {
    /// `wh_…`.
    pub id: String,
    /// Where deliveries go.
    pub url: String,
    /// What it receives.
    pub events: Vec<WebhookEventType>,
    /// Whose events; `null`: every account's.
    pub account_id: Option<AccountId>,
    /// When it was registered.
    #[cfg_attr(feature = "schema", schemars(with = "super::schema::Rfc3339"))]
    pub created_at: Timestamp,
}

/// The answer to `CreateWebhookRequest`: the only one with the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateWebhookResponse {
    /// The endpoint.
    pub webhook: WebhookInfo,
    /// `whsec_…`: signs every delivery (Standard Webhooks:
    /// `webhook-signature: v1,` and the base64 HMAC-SHA256 of
    /// `id.timestamp.body`). Shown in this answer only, and stored sealed:
    /// `null` in a replay under the same `Idempotency-Key`.
    #[cfg_attr(
        feature = "schema",
        schemars(regex(pattern = r"^whsec_[A-Za-z0-9+/]+={0,2}$"))
    )]
    pub secret: Option<String>,
}

impl fmt::Debug for CreateWebhookResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateWebhookResponse")
            .field("webhook", &self.webhook)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// `GET /admin/v1/webhooks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ListWebhooksResponse {
    /// Newest first.
    pub webhooks: Vec<WebhookInfo>,
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not yet answered with a 2xx; `next_attempt_at` says when it is tried.
    Pending,
    /// An attempt was answered with a 2xx.
    Delivered,
    /// Every attempt within 24 hours failed; it is not tried again.
    Failed,
}

/// One event's delivery to one endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeliveryInfo {
    /// The event's id: `webhook-id` of every attempt.
    pub event_id: String,
    /// What the event is.
    pub event_type: WebhookEventType,
    /// `pending` until a 2xx; `failed` after 24 hours of failed attempts.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the event happened.
    #[cfg_attr(feature = "schema", schemars(with = "super::schema::Rfc3339"))]
    pub created_at: Timestamp,
    /// When it was last tried.
    #[cfg_attr(feature = "schema", schemars(with = "Option<super::schema::Rfc3339>"))]
    pub last_attempt_at: Option<Timestamp>,
    /// The HTTP status of the last attempt, if it got one.
    pub last_status: Option<u16>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// When it is tried next, while pending.
    #[cfg_attr(feature = "schema", schemars(with = "Option<super::schema::Rfc3339>"))]
    pub next_attempt_at: Option<Timestamp>,
}

/// `GET /admin/v1/webhooks/{id}/deliveries`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ListDeliveriesResponse {
    /// Newest event first.
    pub deliveries: Vec<DeliveryInfo>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The body of every delivery: `{"type", "timestamp", "data"}` (Standard
/// Webhooks). Never holds a secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WebhookPayload {
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: WebhookEventType,
    /// When.
    pub timestamp: Timestamp,
    /// About what.
    pub data: WebhookData,
}

/// What an event is about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WebhookData {
    /// The event's id (the audit event's, for a change).
    pub event_id: String,
    /// The account concerned.
    pub account_id: AccountId,
    /// The key concerned, if any.
    pub key_id: Option<KeyId>,
    /// Who caused it (`admin`, `github-secret-scanning`, `system`).
    pub actor: String,
    /// What changed, as the audit log says it.
    pub details: BTreeMap<String, String>,
    /// The key as it was right after the change, if the event is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyInfo>,
}

impl WebhookPayload {
    /// The payload of an audited change, with the key as it became.
    pub fn of_audit(event: &AuditEvent, key: Option<KeyInfo>) -> Self {
        WebhookPayload {
            event_type: WebhookEventType::of_audit(event.action),
            timestamp: event.at,
            data: WebhookData {
                event_id: event.id.clone(),
                account_id: event.account_id,
                key_id: event.key_id,
                actor: event.actor.clone(),
                details: event.details.clone(),
                key,
            },
        }
    }
}
