//! Expiry notices (SPEC §12): `key.expiring` 7 days and one day before a
//! key's `expires_at`, and `key.expired` when it comes, each once.
//!
//! "Once" is kept by the record itself: [`KeyRecord::expiry_notice`] says
//! which notice was last sent and for which `expires_at`. A notice is sent
//! by a versioned commit that moves that marker forward and writes the
//! audit event (and so the outbox event) in the same transaction; two
//! nodes racing to send it conflict, and the loser finds it sent. A restart
//! changes nothing, and a new `expires_at` starts its notices afresh.
//!
//! When several notices have come at once (a key made to expire within a
//! day, a server that was down for a week), only the latest is sent: a
//! stale "expires in 7 days" after the key has expired helps nobody.
//!
//! A store finds the keys with a notice due through a **schedule**: an
//! entry ([`ScheduledNotice`]) per key and notice time, added by every
//! commit whose record has a notice to come
//! ([`KeyRecord::next_expiry_notice`]), claimed like the outbox (see
//! [`KeyStore::expiry_notices_due`](super::KeyStore::expiry_notices_due))
//! and removed once handled. Entries are only ever added by commits and
//! removed after their time, never moved, so an entry for every notice to
//! come exists however commits and handlers interleave; an entry whose
//! notice no longer applies (the key was revoked, its expiry moved) is
//! handled by finding nothing to send.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use cloro_auth_core::{AccountId, KeyId};

use super::KeyRecord;

/// The notices of one `expires_at`, in the order they come.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeStage {
    /// `key.expiring`, 7 days ahead.
    SevenDays,
    /// `key.expiring`, a day ahead.
    OneDay,
    /// `key.expired`.
    Expired,
}

impl NoticeStage {
    const ALL: [NoticeStage; 3] = [
        NoticeStage::SevenDays,
        NoticeStage::OneDay,
        NoticeStage::Expired,
    ];

    /// How long before `expires_at` it comes.
    fn ahead(self) -> SignedDuration {
        match self {
            NoticeStage::SevenDays => SignedDuration::from_hours(7 * 24),
            NoticeStage::OneDay => SignedDuration::from_hours(24),
            NoticeStage::Expired => SignedDuration::ZERO,
        }
    }

    /// When it comes for a key that expires at `expires_at`.
    pub fn at(self, expires_at: Timestamp) -> Timestamp {
        expires_at
            .checked_sub(self.ahead())
            .unwrap_or(Timestamp::MIN)
    }

    /// The audit `details` value of a `key.expiring` notice; `None` for
    /// `key.expired`.
    pub fn label(self) -> Option<&'static str> {
        match self {
            NoticeStage::SevenDays => Some("7d"),
            NoticeStage::OneDay => Some("1d"),
            NoticeStage::Expired => None,
        }
    }
}

/// The last notice sent for a key, and the `expires_at` it was about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiryNotice {
    /// The expiry the notice was about.
    pub expires_at: Timestamp,
    /// Which notice it was.
    pub stage: NoticeStage,
}

/// An entry of a store's notice schedule: `key_id` may have a notice due
/// at `at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledNotice {
    /// The key.
    pub key_id: KeyId,
    /// Its account (the Redis store reads the record in its slot).
    pub account_id: AccountId,
    /// When the notice comes.
    pub at: Timestamp,
}

impl ScheduledNotice {
    /// The entry for `record`'s next notice, if it has one to come. Its
    /// time is rounded up to the millisecond (the Redis store scores in
    /// ms): an entry is never due before its notice is.
    pub fn of(record: &KeyRecord) -> Option<Self> {
        record.next_expiry_notice().map(|(_, at)| {
            let nanos = at.as_nanosecond();
            let millis = nanos.div_euclid(1_000_000) + i128::from(nanos.rem_euclid(1_000_000) != 0);
            ScheduledNotice {
                key_id: record.id,
                account_id: record.account_id,
                at: i64::try_from(millis)
                    .ok()
                    .and_then(|millis| Timestamp::from_millisecond(millis).ok())
                    .unwrap_or(Timestamp::MAX),
            }
        })
    }

    /// Its member text in a store index: `<key_id>.<account_id>.<ms>`
    /// (ids never hold a `.`).
    pub fn encode(&self) -> String {
        format!(
            "{}.{}.{}",
            self.key_id,
            self.account_id,
            self.at.as_millisecond()
        )
    }

    /// Reads [`ScheduledNotice::encode`]'s text.
    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, '.');
        let key_id = KeyId::new(parts.next()?).ok()?;
        let account_id = AccountId::new(parts.next()?).ok()?;
        let at = Timestamp::from_millisecond(parts.next()?.parse().ok()?).ok()?;
        Some(ScheduledNotice {
            key_id,
            account_id,
            at,
        })
    }
}

impl KeyRecord {
    /// The notices still to be sent for the current `expires_at`, in
    /// order: none for a key without one, revoked, or rotated out (its
    /// `key.rotated` event already said when its grace ends).
    fn unsent_notices(&self) -> impl Iterator<Item = NoticeStage> + '_ {
        let expires_at = self
            .expires_at
            .filter(|_| self.revoked_at.is_none() && self.rotated_to.is_none());
        let sent = self
            .expiry_notice
            .filter(|notice| Some(notice.expires_at) == expires_at)
            .map(|notice| notice.stage);
        NoticeStage::ALL
            .into_iter()
            .filter(move |stage| expires_at.is_some() && sent.is_none_or(|sent| *stage > sent))
    }

    /// The next notice to send and when it comes.
    pub fn next_expiry_notice(&self) -> Option<(NoticeStage, Timestamp)> {
        let expires_at = self.expires_at?;
        self.unsent_notices()
            .next()
            .map(|stage| (stage, stage.at(expires_at)))
    }

    /// The notice to send at `now`: the latest of those whose time has come.
    pub fn due_expiry_notice(&self, now: Timestamp) -> Option<NoticeStage> {
        let expires_at = self.expires_at?;
        self.unsent_notices()
            .take_while(|stage| stage.at(expires_at) <= now)
            .last()
    }
}
