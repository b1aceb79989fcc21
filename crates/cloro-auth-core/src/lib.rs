//! The bottom layer of Cloro auth: what an API key is, how the `Authorization`
//! header is read, how keys are hashed, and every error a client can see.
//!
//! Everything here is `no_std`. The `alloc` feature adds owned names, `serde`
//! adds the wire types that client and server share, `getrandom` adds key
//! generation from the OS CSPRNG, and `std` adds `std::error::Error` glue.
//!
//! The hot path of a request is, in order: [`bearer_token`] (header grammar),
//! [`ApiKey::parse_token`] (prefix, length, hex, CRC-32, no store needed) and
//! [`KeyHash::of`] (SHA-256, the only form a store ever sees).

#![no_std]
#![forbid(unsafe_code)]
// Here and not in the workspace table: only this crate must build without
// std, and tests, benches and the std crates above use std paths freely.
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

mod error;
mod hash;
mod header;
mod hex;
mod key;
mod name;
mod path;
mod query;
mod status;
mod units;
#[cfg(feature = "alloc")]
pub mod webhook;
#[cfg(feature = "serde")]
pub mod wire;

pub use error::{
    AuthError, Challenge, ErrorCode, FormatError, Malformed, QuotaLimit, RevocationReason,
};
pub use hash::KeyHash;
pub use header::{
    MAX_TOKEN_LEN, MIN_ADMIN_TOKEN_LEN, bearer_token, bearer_token_from_value,
    is_admin_token_shaped, is_b64token,
};
#[cfg(feature = "alloc")]
pub use key::redact_keys_in;
pub use key::{ApiKey, Environment, KEY_LEN, RedactedKey};
pub use name::{AccountId, KeyId, NameError, PlanName, Scope};
#[cfg(feature = "alloc")]
pub use path::normalise_path;
pub use path::{PathError, check_path, split_origin_form};
pub use query::query_carries_key;
pub use status::KeyStatus;
pub use units::{UnitsError, parse_byte_size, parse_duration, parse_rate};
