//! Account portal links (SPEC §13): what an operator's site asks for to
//! hand one customer a page of their own keys.

use alloc::format;
use alloc::string::String;
use core::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// How long a portal link may wait to be opened, in seconds.
pub const PORTAL_LINK_SECONDS: i64 = 10 * 60;

/// How long an opened portal stays open, in seconds.
pub const PORTAL_SESSION_SECONDS: i64 = 60 * 60;

/// `POST /admin/v1/accounts/{id}/portal-sessions` → 201: a single-use link
/// into the portal of that account.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PortalSessionResponse {
    /// The link. It holds the secret that opens the portal: hand it to the
    /// account's own user only, and only once. `null` in a replay of the
    /// request (same `Idempotency-Key`): the link is never stored.
    #[cfg_attr(feature = "schema", schemars(url))]
    pub url: Option<String>,
    /// When the link stops opening anything if unused: 10 minutes after it
    /// was made.
    #[cfg_attr(feature = "schema", schemars(with = "super::schema::Rfc3339"))]
    pub expires_at: Timestamp,
}

impl fmt::Debug for PortalSessionResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The link is as good as a session: never print its secret.
        let shown = self
            .url
            .as_deref()
            .map(|url| url.split_once('?').map_or(url, |(page, _)| page));
        f.debug_struct("PortalSessionResponse")
            .field("url", &shown.map(|page| format!("{page}?link=…")))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}
