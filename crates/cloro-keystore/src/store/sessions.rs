//! The [`SessionStore`] contract (SPEC §13): dashboard sign-ins, portal
//! links and portal sessions, each found by the SHA-256 of a random secret
//! the browser holds (a cookie or a link), live until `expires_at`.
//!
//! The secret is never stored, so a reader of the store cannot take over a
//! session. Sessions live in the store, not in a node's memory, so a
//! sign-in on one node is good on every node and a sign-out ends it on all.

use core::fmt;

use async_trait::async_trait;
use cloro_auth_core::wire::AdminRole;
use cloro_auth_core::{AccountId, KeyHash};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// The most sessions of all kinds a store holds at once. Only holders of an
/// admin token (and operators making portal links) can make sessions, so
/// this bound only stops a runaway script from filling the store.
pub const MAX_SESSIONS: usize = 100_000;

/// Whom a session speaks for.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SessionSubject {
    /// An operator signed in with an admin token.
    Operator {
        /// The token's name (the audit actor).
        name: String,
        /// What the token may do.
        role: AdminRole,
        /// SHA-256 of the token that signed in: the session holds only while
        /// that token still exists.
        #[serde(with = "super::record::hash_hex")]
        token: KeyHash,
    },
    /// A portal link not yet opened: single use.
    PortalLink {
        /// The one account it opens.
        account_id: AccountId,
    },
    /// An opened portal: one account's keys and usage, nothing else.
    Portal {
        /// The one account it may see and change.
        account_id: AccountId,
    },
}

impl fmt::Debug for SessionSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionSubject::Operator { name, role, .. } => f
                .debug_struct("Operator")
                .field("name", name)
                .field("role", role)
                .finish_non_exhaustive(),
            SessionSubject::PortalLink { account_id } => f
                .debug_struct("PortalLink")
                .field("account_id", account_id)
                .finish(),
            SessionSubject::Portal { account_id } => f
                .debug_struct("Portal")
                .field("account_id", account_id)
                .finish(),
        }
    }
}

/// A session as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Whom it speaks for.
    pub subject: SessionSubject,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it ends by itself; from then on it is as good as none.
    pub expires_at: Timestamp,
}

impl SessionRecord {
    /// Whether the session still holds at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }
}

/// Sessions, by the SHA-256 of their secret.
///
/// Implementations drop expired sessions by themselves (space stays bounded
/// by the sessions of the last 12 hours), answer an expired one as none, and
/// answer `Unavailable` within their timeout rather than hang.
#[async_trait]
pub trait SessionStore: Send + Sync + fmt::Debug + 'static {
    /// Stores a new session. The memory and embedded stores answer
    /// `Conflict` when [`MAX_SESSIONS`] live sessions exist already; Redis,
    /// where a count would scan a cluster, lets them expire by themselves.
    async fn put_session(
        &self,
        id: &KeyHash,
        record: &SessionRecord,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// The live session with this id.
    async fn session(
        &self,
        id: &KeyHash,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError>;

    /// Removes the session and answers it if it was live, in one step: of
    /// two concurrent takes, one gets it (a portal link opens once).
    async fn take_session(
        &self,
        id: &KeyHash,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError>;
}

pub(crate) fn decode(json: &[u8]) -> Result<SessionRecord, StoreError> {
    serde_json::from_slice(json)
        .map_err(|error| StoreError::corrupt("a session cannot be read").caused_by(error))
}

pub(crate) fn encode(record: &SessionRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record)
        .map_err(|error| StoreError::corrupt("a session cannot be encoded").caused_by(error))
}
