//! The bounds of request fields that no type states: the admin API refuses
//! a value beyond them with 400 `INVALID_REQUEST`, and the OpenAPI
//! document's schemas state them, both from these constants.

/// A key's `name`: characters, at least one, no control characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Scopes one key may hold.
pub const MAX_SCOPES: usize = 64;
/// Labels in a key's `metadata`.
pub const MAX_METADATA_ENTRIES: usize = 32;
/// Characters of a `metadata` label (at least one).
pub const MAX_METADATA_KEY_CHARS: usize = 64;
/// Characters of a `metadata` value.
pub const MAX_METADATA_VALUE_CHARS: usize = 512;
/// Characters of a revocation `reason`.
pub const MAX_REASON_CHARS: usize = 500;
/// A rotation's `grace_period_seconds`: a year; longer is almost certainly
/// a unit mistake.
pub const MAX_GRACE_SECONDS: u64 = 365 * 24 * 3600;
