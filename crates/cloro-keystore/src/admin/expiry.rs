//! Expiry notices (SPEC §12), sent from the store's schedule: for each
//! entry whose time has come, the key's due notice is written as an audit
//! event (`key.expiring` or `key.expired`, and so a webhook event) by a
//! versioned commit that marks it sent. See the store's `expiry_notices`
//! module for why each is sent once across nodes and restarts.

use cloro_auth_core::wire::AuditAction;
use jiff::Timestamp;

use super::{AdminError, KeyAdmin};
use crate::store::{ExpiryNotice, NoticeStage, ScheduledNotice};

/// The audit actor of every expiry notice: no person or token sent it.
pub const EXPIRY_NOTICE_ACTOR: &str = "expiry-schedule";

impl KeyAdmin {
    /// Sends the expiry notices due at `now`, taking at most `limit`
    /// entries of the schedule; answers how many notices were sent. An
    /// entry whose notice could not be written stays claimed until its
    /// lease ends, and is tried again then.
    ///
    /// # Errors
    /// `Store` when the schedule cannot be read or a notice written.
    pub async fn send_due_expiry_notices(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<usize, AdminError> {
        let mut sent = 0;
        for entry in self.store.expiry_notices_due(now, limit).await? {
            if self.send_expiry_notice(&entry, now).await? {
                sent += 1;
            }
            self.store.finish_expiry_notice(&entry).await?;
        }
        Ok(sent)
    }

    /// Sends `entry`'s key the notice due at `now`, if one is: `false`
    /// when there is none (the key is gone, revoked, rotated out, or its
    /// expiry moved; a commit that moved it scheduled its own entry).
    async fn send_expiry_notice(
        &self,
        entry: &ScheduledNotice,
        now: Timestamp,
    ) -> Result<bool, AdminError> {
        let current = match self.stored(&entry.key_id).await {
            Ok(record) => record,
            Err(AdminError::KeyNotFound) => return Ok(false),
            Err(error) => return Err(error),
        };
        let (Some(stage), Some(expires_at)) = (current.due_expiry_notice(now), current.expires_at)
        else {
            return Ok(false);
        };
        let action = match stage {
            NoticeStage::Expired => AuditAction::KeyExpired,
            NoticeStage::SevenDays | NoticeStage::OneDay => AuditAction::KeyExpiring,
        };
        // Set by the last run of the closure: the one whose answer counted.
        let mut wrote = false;
        self.change_or_keep(&entry.key_id, EXPIRY_NOTICE_ACTOR, now, action, |current| {
            wrote = false;
            // Re-checked on the record as it is now: a node that
            // won the race has sent it already.
            if current.due_expiry_notice(now) != Some(stage)
                || current.expires_at != Some(expires_at)
            {
                return Ok(None);
            }
            let mut next = current.clone();
            next.expiry_notice = Some(ExpiryNotice { expires_at, stage });
            let mut details = vec![("expires_at", expires_at.to_string())];
            if let Some(label) = stage.label() {
                details.push(("notice", label.to_owned()));
            }
            wrote = true;
            Ok(Some((next, Vec::new(), details)))
        })
        .await?;
        Ok(wrote)
    }
}
