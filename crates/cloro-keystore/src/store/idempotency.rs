//! The `IdempotencyStore` contract (SPEC §11): what an `Idempotency-Key`
//! remembers, and the two-phase protocol every backend keeps.
//!
//! A request with a key first *claims* it: an atomic insert-if-absent of an
//! "in progress" record holding the request's fingerprint, with a short
//! lease, so a node that dies mid-request does not lock the key for the
//! whole window. The request then either *completes* (its answer is stored
//! for the window) or *releases* the claim (the answer is not worth
//! remembering; a retry may run). A second request meets the record: the
//! stored answer when the fingerprint matches, "in progress" while the first
//! still runs, "reused" when the fingerprint differs. Nothing here knows
//! HTTP: the server decides which answers to keep and what they hold.
//!
//! Records name neither the key nor the request: the slot is the SHA-256 of
//! the key and the fingerprint is the SHA-256 of the request, so the body
//! (which may hold anything) is never at rest. The answer is stored as the
//! server gives it, which is why the server strips the plaintext of a new
//! key from it first.
//!
//! Time is the caller's `now` (the verifier's [`Clock`](crate::Clock)), so
//! a test moves a manual clock past the window instead of waiting. Backends
//! also drop expired records physically: Redis by TTL, the embedded store
//! by sweeping on each claim.
//!
//! Backends: `MemoryStore` (`memory.rs`), `EmbeddedStore`
//! (`embedded_idempotency.rs`) and `RedisIdempotencyStore` (in `crate::redis`).

use core::fmt;
use core::time::Duration;

use async_trait::async_trait;
use cloro_auth_core::KeyHash;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// How long a completed answer is remembered (SPEC §11: 24 h).
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a claim holds while its request runs. Admin actions finish
/// within the store timeout; this only bounds how long a request that died
/// mid-way (its node crashed) keeps its key locked.
pub const IDEMPOTENCY_LEASE: Duration = Duration::from_secs(60);

/// Where one `Idempotency-Key`'s record lives: a scope (whose keys these
/// are) and the SHA-256 of the key, as `<scope>:<64 hex>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencySlot {
    name: String,
}

impl IdempotencySlot {
    /// The slot of `key` within `scope`. The scope keeps callers apart (two
    /// admin identities may pick the same key); characters other than
    /// ASCII letters, digits, `_` and `-` are written as `_`, so a scope
    /// cannot break the Redis key's hash tag.
    pub fn new(scope: &str, key: &[u8]) -> Self {
        let scope: String = scope
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let hex = KeyHash::of(key).to_hex();
        let mut name = scope;
        name.push(':');
        // Hex digits are ASCII.
        name.extend(hex.iter().map(|&digit| char::from(digit)));
        IdempotencySlot { name }
    }

    /// `<scope>:<64 hex>`: how stores name the record.
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

/// The key itself is never kept, but its hash is as good as the key to a
/// reader of logs that also has the client's: print neither.
impl fmt::Debug for IdempotencySlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdempotencySlot(..)")
    }
}

/// The SHA-256 of a request, in 64 hex digits: two requests with the same
/// fingerprint are "the same request" for an `Idempotency-Key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestFingerprint(String);

impl RequestFingerprint {
    /// The fingerprint of a request made of `parts` (method, path, body,
    /// ...). Each part is preceded by its length, so no two different lists
    /// of parts hash the same bytes.
    pub fn of(parts: &[&[u8]]) -> Self {
        let total = parts.iter().map(|part| part.len() + 8).sum();
        let mut bytes = Vec::with_capacity(total);
        for part in parts {
            bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
            bytes.extend_from_slice(part);
        }
        RequestFingerprint(hex_text(&KeyHash::of(&bytes)))
    }

    /// The 64 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who holds a claim: random, so that only the request that claimed a slot
/// can complete or release it, even after its lease ran out and another
/// request claimed the slot anew.
#[derive(Clone, PartialEq, Eq)]
pub struct ClaimToken(String);

impl ClaimToken {
    /// A new random token (128 bits, hex).
    ///
    /// # Errors
    /// `Unavailable` when the system has no randomness to give.
    pub fn generate() -> Result<Self, StoreError> {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(|error| {
            StoreError::unavailable(format!("no randomness for an idempotency claim: {error}"))
        })?;
        Ok(ClaimToken(
            random.iter().map(|b| format!("{b:02x}")).collect(),
        ))
    }

    /// The token's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClaimToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClaimToken(..)")
    }
}

/// An answer as remembered: enough to send it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer {
    /// The HTTP status.
    pub status: u16,
    /// `Content-Type`, if the answer had one.
    pub content_type: Option<String>,
    /// The SPEC §4 code of an error answer (for metrics), if any.
    pub code: Option<String>,
    /// The body, secrets already removed by the caller.
    pub body: String,
}

/// What a claim found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// The slot is this request's: run it, then complete or release.
    Claimed(ClaimToken),
    /// The same request was answered within the window: send this again.
    Replay(StoredAnswer),
    /// The same request is still running under another claim.
    InProgress,
    /// The key was used for another request within the window.
    Reused,
}

/// Where `Idempotency-Key` records live. Implementations make `claim`
/// atomic (two concurrent claims of one slot: exactly one is `Claimed`),
/// answer `Unavailable` within their timeout, and drop expired records by
/// themselves, so space stays bounded by the keys of the last window.
///
/// A record is live while `now` is before its end: the lease's end while
/// in progress, `now + keep` once completed. An expired record is as good
/// as none.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + fmt::Debug + 'static {
    /// Claims `slot` for the request with `fingerprint` for `lease`, or says
    /// why not. A claim retried with the same token (a write whose answer
    /// was lost) finds the slot its own and answers `Claimed` again.
    async fn claim(
        &self,
        slot: &IdempotencySlot,
        fingerprint: &RequestFingerprint,
        token: &ClaimToken,
        now: Timestamp,
        lease: Duration,
    ) -> Result<Claim, StoreError>;

    /// Stores `answer` in the slot claimed with `token`, live for `keep`
    /// from `now`. `Ok(false)` when the claim is no longer this token's (its
    /// lease ran out and the slot was claimed again, or it expired away):
    /// nothing is written then.
    async fn complete(
        &self,
        slot: &IdempotencySlot,
        token: &ClaimToken,
        answer: &StoredAnswer,
        now: Timestamp,
        keep: Duration,
    ) -> Result<bool, StoreError>;

    /// Gives up the claim made with `token`, so the next request with the
    /// key runs. Does nothing when the slot holds another claim or an answer.
    async fn release(&self, slot: &IdempotencySlot, token: &ClaimToken) -> Result<(), StoreError>;
}

/// One slot's record, as the memory and embedded stores keep it (the Redis
/// store keeps the same fields in a hash, decided in Lua).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IdempotencyRecord {
    pub(crate) fingerprint: String,
    pub(crate) token: String,
    /// The end of the lease, or of the window once answered, in Unix ns.
    pub(crate) until: i128,
    /// `None` while the request runs.
    pub(crate) answer: Option<StoredAnswer>,
}

impl IdempotencyRecord {
    fn live(&self, now: Timestamp) -> bool {
        self.until > now.as_nanosecond()
    }

    /// The claim rule, once for the stores that run it in Rust: what a
    /// claim finds given the slot's record, and the record to write, if any.
    pub(crate) fn claim(
        stored: Option<&IdempotencyRecord>,
        fingerprint: &RequestFingerprint,
        token: &ClaimToken,
        now: Timestamp,
        lease: Duration,
    ) -> (Claim, Option<IdempotencyRecord>) {
        match stored.filter(|record| record.live(now)) {
            Some(record) if record.fingerprint != fingerprint.as_str() => (Claim::Reused, None),
            Some(record) => match &record.answer {
                Some(answer) => (Claim::Replay(answer.clone()), None),
                None if record.token == token.as_str() => (Claim::Claimed(token.clone()), None),
                None => (Claim::InProgress, None),
            },
            None => (
                Claim::Claimed(token.clone()),
                Some(IdempotencyRecord {
                    fingerprint: fingerprint.as_str().to_owned(),
                    token: token.as_str().to_owned(),
                    until: end_of(now, lease),
                    answer: None,
                }),
            ),
        }
    }

    /// The completion rule: the record with `answer`, if `token` still
    /// holds the slot.
    pub(crate) fn complete(
        stored: Option<&IdempotencyRecord>,
        token: &ClaimToken,
        answer: &StoredAnswer,
        now: Timestamp,
        keep: Duration,
    ) -> Option<IdempotencyRecord> {
        let record = stored.filter(|record| record.token == token.as_str())?;
        Some(IdempotencyRecord {
            until: end_of(now, keep),
            answer: Some(answer.clone()),
            ..record.clone()
        })
    }

    /// The release rule: whether `token` holds a claim that is still running.
    pub(crate) fn releases(stored: Option<&IdempotencyRecord>, token: &ClaimToken) -> bool {
        stored.is_some_and(|record| record.token == token.as_str() && record.answer.is_none())
    }
}

/// `now + span` in Unix ns, saturating.
fn end_of(now: Timestamp, span: Duration) -> i128 {
    now.as_nanosecond()
        .saturating_add(i128::try_from(span.as_nanos()).unwrap_or(i128::MAX))
}

fn hex_text(hash: &KeyHash) -> String {
    hash.to_hex()
        .iter()
        .map(|&digit| char::from(digit))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_hash_the_key_and_keep_the_scope_tame() {
        let slot = IdempotencySlot::new("admin", b"retry-1");
        assert!(slot.as_str().starts_with("admin:"));
        assert_eq!(slot.as_str().len(), "admin:".len() + 64);
        assert!(!slot.as_str().contains("retry-1"));
        assert_ne!(slot, IdempotencySlot::new("admin", b"retry-2"));
        assert_ne!(slot, IdempotencySlot::new("other", b"retry-1"));
        let odd = IdempotencySlot::new("a{b}:c", b"k");
        assert!(odd.as_str().starts_with("a_b__c:"), "{}", odd.as_str());
        assert_eq!(format!("{slot:?}"), "IdempotencySlot(..)");
    }

    #[test]
    fn fingerprints_tell_part_boundaries_apart() {
        let a = RequestFingerprint::of(&[b"POST", b"/a", b"bc"]);
        assert_eq!(a, RequestFingerprint::of(&[b"POST", b"/a", b"bc"]));
        assert_ne!(a, RequestFingerprint::of(&[b"POST", b"/ab", b"c"]));
        assert_eq!(a.as_str().len(), 64);
    }

    #[test]
    fn tokens_are_random_and_print_redacted() {
        let one = ClaimToken::generate().unwrap();
        assert_ne!(one, ClaimToken::generate().unwrap());
        assert_eq!(one.as_str().len(), 32);
        assert_eq!(format!("{one:?}"), "ClaimToken(..)");
    }
}
