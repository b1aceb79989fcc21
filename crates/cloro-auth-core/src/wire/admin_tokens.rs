//! Named admin tokens (SPEC §13): operators each get their own token, with
//! a role, instead of sharing the bootstrap one.

use alloc::string::String;
use alloc::vec::Vec;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The most named admin tokens a server keeps.
pub const MAX_ADMIN_TOKENS: usize = 100;

/// The name of the token from `CLORO_ADMIN_TOKEN` (or the data directory's
/// token file): configured, never stored, always `admin`.
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap";

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
#[serde(deny_unknown_fields)]
pub struct CreateAdminTokenRequest {
    /// Who holds it: `[a-z0-9_.-]{1,64}`, unique, not `bootstrap`; it is
    /// the `actor` of every audit event the token causes.
    pub name: String,
    /// What it may do.
    pub role: AdminRole,
}

/// A named token, as every answer shows it (never the token itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminTokenInfo {
    /// `tok_…`.
    pub id: String,
    /// Who holds it.
    pub name: String,
    /// What it may do.
    pub role: AdminRole,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it last opened the admin API (to the minute).
    pub last_used_at: Option<Timestamp>,
}

/// `201` of `POST /admin/v1/tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAdminTokenResponse {
    /// The token, `cloro_admin_…`: in this answer only. `null` in a replay
    /// of the request under its `Idempotency-Key` (it is never stored):
    /// delete that token and create another.
    pub token: Option<String>,
    /// The token's record.
    pub token_info: AdminTokenInfo,
}

/// `GET /admin/v1/tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListAdminTokensResponse {
    /// Every named token, newest first (the bootstrap token is configured,
    /// not stored, and not listed).
    pub tokens: Vec<AdminTokenInfo>,
}
