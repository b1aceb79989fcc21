//! A key's status as `KeyInfo.status` reports it, and the refusal it earns.

use core::fmt;

use crate::error::{AuthError, RevocationReason};

/// `active`, `expired`, `revoked` or `disabled` (SPEC §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum KeyStatus {
    /// Usable.
    Active,
    /// Past `expires_at`.
    Expired,
    /// Revoked for good.
    Revoked,
    /// Switched off by an administrator.
    Disabled,
}

impl KeyStatus {
    /// The status from the three facts, with SPEC §4's precedence: revoked
    /// wins over expired, and expired over disabled.
    pub const fn from_facts(revoked: bool, expired: bool, enabled: bool) -> Self {
        if revoked {
            KeyStatus::Revoked
        } else if expired {
            KeyStatus::Expired
        } else if !enabled {
            KeyStatus::Disabled
        } else {
            KeyStatus::Active
        }
    }

    /// The error a request with a key in this status gets, if any.
    pub const fn refusal(self) -> Option<AuthError> {
        match self {
            KeyStatus::Active => None,
            KeyStatus::Expired => Some(AuthError::ExpiredApiKey),
            KeyStatus::Revoked => Some(AuthError::RevokedApiKey(RevocationReason::Revoked)),
            KeyStatus::Disabled => Some(AuthError::RevokedApiKey(RevocationReason::Disabled)),
        }
    }

    /// The word used on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Expired => "expired",
            KeyStatus::Revoked => "revoked",
            KeyStatus::Disabled => "disabled",
        }
    }
}

impl fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_revoked_expired_disabled() {
        assert_eq!(KeyStatus::from_facts(true, true, false), KeyStatus::Revoked);
        assert_eq!(
            KeyStatus::from_facts(false, true, false),
            KeyStatus::Expired
        );
        assert_eq!(
            KeyStatus::from_facts(false, false, false),
            KeyStatus::Disabled
        );
        assert_eq!(KeyStatus::from_facts(false, false, true), KeyStatus::Active);
        assert_eq!(KeyStatus::Active.refusal(), None);
    }
}
