//! Named admin tokens (SPEC §13): operators each get their own token, with
//! a role, instead of sharing the bootstrap one.

use alloc::string::String;
#[cfg(feature = "schema")]
use alloc::string::ToString; // `schemars(regex(…))` calls `to_string`
use alloc::vec::Vec;
use core::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The most named admin tokens a server keeps.
pub const MAX_ADMIN_TOKENS: usize = 100;

/// The name of the token from `CLORO_ADMIN_TOKEN` (or the data directory's
/// token file): configured, never stored, always `admin`.
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap";

/// What a token's name may be: 1 to 64 of `a-z 0-9 _ . -` (it is the
/// audit log's `actor` of everything the token does).
pub const TOKEN_NAME_PATTERN: &str = "^[a-z0-9_.-]{1,64}$";

/// Whether `name` is a well-formed token name ([`TOKEN_NAME_PATTERN`]; a
/// test holds the two together). Reserved names are the server's to refuse.
pub fn is_token_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-')
        })
}

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum AdminRole {
    /// Everything.
    Admin,
    /// Only read: anything that changes state is 403.
    Read,
}

impl AdminRole {
    /// `admin` or `read`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AdminRole::Admin => "admin",
            AdminRole::Read => "read",
        }
    }
}

/// `POST /admin/v1/tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateAdminTokenRequest {
    /// Who holds it: `[a-z0-9_.-]{1,64}`, unique, not `bootstrap`; it is
    /// the `actor` of every audit event the token causes.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = TOKEN_NAME_PATTERN)))]
    pub name: String,
    /// What it may do.
    pub role: AdminRole,
}

/// A named token, as every answer shows it (never the token itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AdminTokenInfo {
    /// `tok_` and 24 hex digits.
    pub id: String,
    /// Who holds it: the audit `actor` of everything the token does.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = TOKEN_NAME_PATTERN)))]
    pub name: String,
    /// What it may do.
    pub role: AdminRole,
    /// When it was made.
    #[cfg_attr(feature = "schema", schemars(with = "super::schema::Rfc3339"))]
    pub created_at: Timestamp,
    /// When it last opened the admin API (to the minute).
    #[cfg_attr(feature = "schema", schemars(with = "Option<super::schema::Rfc3339>"))]
    pub last_used_at: Option<Timestamp>,
}

/// `201` of `POST /admin/v1/tokens`: the token, shown this once.
// Its `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateAdminTokenResponse {
    /// The token, `cloro_admin_…`: in this answer only. `null` in a replay
    /// of the request under its `Idempotency-Key` (it is never stored):
    /// delete that token and create another.
    pub token: Option<String>,
    /// The token's record.
    pub token_info: AdminTokenInfo,
}

impl fmt::Debug for CreateAdminTokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateAdminTokenResponse")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("token_info", &self.token_info)
            .finish()
    }
}

/// `GET /admin/v1/tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ListAdminTokensResponse {
    /// Every named token, newest first (the bootstrap token is configured,
    /// not stored, and not listed).
    pub tokens: Vec<AdminTokenInfo>,
}

#[cfg(test)]
mod tests {
    use alloc::format;
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn the_name_pattern_is_the_name_rule() {
        crate::name::assert_pattern_is_parser(TOKEN_NAME_PATTERN, is_token_name);
        assert!(!is_token_name("Ops") && !is_token_name("a b") && is_token_name("ci.deploy-1"));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let token = "cloro_admin_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let created = CreateAdminTokenResponse {
            token: Some(token.to_string()),
            token_info: AdminTokenInfo {
                id: "tok_0123456789abcdef01234567".to_string(),
                name: "ops".to_string(),
                role: AdminRole::Admin,
                created_at: Timestamp::UNIX_EPOCH,
                last_used_at: None,
            },
        };
        let shown = format!("{created:?}");
        assert!(
            !shown.contains("00112233") && shown.contains("[redacted]"),
            "{shown}"
        );
        assert!(shown.contains("ops"));
    }
}
