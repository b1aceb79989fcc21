//! The [`AdminTokenStore`] contract (SPEC §13): named admin tokens, kept
//! as SHA-256 only, found by that hash when a request presents one.

use core::fmt;

use async_trait::async_trait;
use cloro_auth_core::KeyHash;
use cloro_auth_core::wire::AdminTokenInfo;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// A named token as stored: its record and the SHA-256 of the token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminTokenRecord {
    /// Everything an operator may see.
    pub info: AdminTokenInfo,
    /// SHA-256 of the token; the token itself is never stored.
    #[serde(with = "super::record::hash_hex")]
    pub hash: KeyHash,
}

impl fmt::Debug for AdminTokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hash is no secret, but nothing needs it in a log either.
        f.debug_struct("AdminTokenRecord")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Named admin tokens.
///
/// Implementations must make every write durable before returning `Ok` and
/// answer `Unavailable` within their timeout rather than hang.
#[async_trait]
pub trait AdminTokenStore: Send + Sync + fmt::Debug + 'static {
    /// Adds a token. `Conflict` if its name (or id, or hash) is taken or
    /// `limit` tokens exist already, checked in the same step as the add.
    async fn add_token(&self, record: &AdminTokenRecord, limit: usize) -> Result<(), StoreError>;

    /// Every token, newest first.
    async fn tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError>;

    /// The token with this hash.
    async fn token_by_hash(&self, hash: &KeyHash) -> Result<Option<AdminTokenRecord>, StoreError>;

    /// Removes a token; `false` if there was none.
    async fn remove_token(&self, id: &str) -> Result<bool, StoreError>;

    /// Notes that the token was used at `at` (nothing if it is gone).
    async fn touch_token(&self, id: &str, at: Timestamp) -> Result<(), StoreError>;
}

/// Newest first, ties by id: the one listing order of every store.
pub(crate) fn newest_first(tokens: &mut [AdminTokenRecord]) {
    tokens.sort_by(|a, b| (b.info.created_at, &b.info.id).cmp(&(a.info.created_at, &a.info.id)));
}

/// Whether `record` may join `existing` (see [`AdminTokenStore::add_token`]).
pub(crate) fn may_add(
    existing: &[AdminTokenRecord],
    record: &AdminTokenRecord,
    limit: usize,
) -> bool {
    existing.len() < limit
        && !existing.iter().any(|other| {
            other.info.name == record.info.name
                || other.info.id == record.info.id
                || other.hash == record.hash
        })
}
