//! Leaked keys (SPEC §12): a key reported by a secret-scanning partner, or
//! named by an operator who found it somewhere, is marked leaked and
//! revoked, disabled or only reported, as configured. A report is
//! idempotent: a key already handled is answered as it is, with no new
//! write, audit event or invalidation.

use std::collections::HashSet;

use cloro_auth_core::wire::{AuditAction, MAX_LEAKED_KEYS};
use cloro_auth_core::{ApiKey, KeyHash};
use jiff::Timestamp;
use serde::Deserialize;

use super::{AdminError, KeyAdmin, MAX_REASON_CHARS};
use crate::store::KeyRecord;

/// The most characters of a report's `url` or `source` kept in the audit
/// log: enough for any real location, and a report cannot grow the log.
const MAX_REPORT_FIELD_CHARS: usize = 2048;

/// What a leak report does to the key (`leaked_key_action`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeakedKeyAction {
    /// Revoke it: whoever found it can no longer use it.
    #[default]
    Revoke,
    /// Disable it: it stops working, and an operator can enable it again.
    Disable,
    /// Only record and report it; the key keeps working.
    Notify,
}

impl LeakedKeyAction {
    fn as_str(self) -> &'static str {
        match self {
            LeakedKeyAction::Revoke => "revoke",
            LeakedKeyAction::Disable => "disable",
            LeakedKeyAction::Notify => "notify",
        }
    }
}

/// Where a leaked key was found, for the audit event.
#[derive(Clone, Copy, Debug, Default)]
pub struct LeakReport<'a> {
    /// Where it was found (a partner report's `url`).
    pub url: Option<&'a str>,
    /// What kind of place (a partner report's `source`).
    pub source: Option<&'a str>,
    /// The revocation reason to record; a default names the leak.
    pub reason: Option<&'a str>,
}

/// The answer to [`KeyAdmin::revoke_leaked`].
#[derive(Clone, Debug, PartialEq)]
pub struct RevokedLeaked {
    /// The keys now revoked, in the order named, each once.
    pub revoked: Vec<KeyRecord>,
    /// How many of the strings named no key we issued.
    pub not_found: u64,
}

impl KeyAdmin {
    /// Marks the key with `hash` leaked and applies `action`. `Ok(None)`
    /// when no key has that hash.
    ///
    /// # Errors
    /// `Store`, or `Randomness` for the audit event's id.
    pub async fn report_leaked(
        &self,
        hash: &KeyHash,
        action: LeakedKeyAction,
        report: &LeakReport<'_>,
        actor: &str,
        now: Timestamp,
    ) -> Result<Option<KeyRecord>, AdminError> {
        let Some(found) = self.store.lookup(hash).await? else {
            return Ok(None);
        };
        let reason = report.reason.map_or_else(
            || "leaked: reported by secret scanning".to_owned(),
            str::to_owned,
        );
        let (record, _) = self
            .change_or_keep(
                &found.record.id,
                actor,
                now,
                AuditAction::KeyLeaked,
                |current| {
                    let mut next = current.clone();
                    next.leaked_at.get_or_insert(now);
                    match action {
                        LeakedKeyAction::Revoke if next.revoked_at.is_none() => {
                            next.revoked_at = Some(now);
                            next.revoked_reason = Some(reason.clone());
                        }
                        LeakedKeyAction::Disable => next.enabled = false,
                        _ => {}
                    }
                    // Reported before and already handled this way: the same
                    // answer, and nothing new in the log.
                    if next == *current {
                        return Ok(None);
                    }
                    let mut details = vec![("action", action.as_str().to_owned())];
                    for (field, value) in [("url", report.url), ("source", report.source)] {
                        if let Some(value) = value {
                            details.push((
                                field,
                                value.chars().take(MAX_REPORT_FIELD_CHARS).collect(),
                            ));
                        }
                    }
                    Ok(Some((next, Vec::new(), details)))
                },
            )
            .await?;
        Ok(Some(record))
    }

    /// Revokes keys by their plaintext (`POST /admin/v1/keys/revoke-leaked`).
    /// A string that is not a well-formed key, or names none we issued,
    /// counts in `not_found`; a key named twice is revoked and listed once.
    ///
    /// # Errors
    /// `InvalidField` (`keys` empty or over [`MAX_LEAKED_KEYS`], `reason`
    /// too long), `Store`, or `Randomness`.
    pub async fn revoke_leaked(
        &self,
        keys: &[String],
        reason: Option<&str>,
        actor: &str,
        now: Timestamp,
    ) -> Result<RevokedLeaked, AdminError> {
        if keys.is_empty() || keys.len() > MAX_LEAKED_KEYS {
            return Err(AdminError::invalid(
                "keys",
                format!("name between 1 and {MAX_LEAKED_KEYS} keys; send more in further requests"),
            ));
        }
        if reason.is_some_and(|r| r.chars().count() > MAX_REASON_CHARS) {
            return Err(AdminError::invalid(
                "reason",
                format!("must be at most {MAX_REASON_CHARS} characters"),
            ));
        }
        let report = LeakReport {
            url: None,
            source: Some("operator"),
            reason: Some(reason.unwrap_or("leaked: reported by an operator")),
        };
        let mut seen = HashSet::new();
        let mut revoked = Vec::new();
        let mut not_found = 0;
        for text in keys {
            let Ok(key) = ApiKey::parse_token(text.trim()) else {
                not_found += 1;
                continue;
            };
            let hash = key.hash();
            if !seen.insert(hash) {
                continue;
            }
            match self
                .report_leaked(&hash, LeakedKeyAction::Revoke, &report, actor, now)
                .await?
            {
                Some(record) => revoked.push(record),
                None => not_found += 1,
            }
        }
        Ok(RevokedLeaked { revoked, not_found })
    }
}
