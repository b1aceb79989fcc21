//! The Rust SDK for the Cloro API and its admin API, and the library behind
//! the `cloro` CLI.
//!
//! ```no_run
//! # async fn example() -> Result<(), cloro_client::Error> {
//! // CLORO_API_KEY=sk_live_… and optionally CLORO_BASE_URL.
//! let client = cloro_client::Client::from_env()?;
//! let me = client.whoami().await?;
//! println!("{} on account {}", me.value().id, me.value().account_id);
//! if let Some(limit) = me.rate_limit() {
//!     println!("{} of {} requests left", limit.remaining, limit.limit);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Request and response bodies are the wire types of
//! [`cloro_auth_core::wire`], the same the server uses, so the two cannot
//! drift apart. Secrets (API keys, the admin token) are held in types whose
//! `Debug` is redacted, and never appear in an error or a log line.
//!
//! Failed requests are retried with exponential backoff and jitter on 429,
//! 503 and connection failures, honouring `Retry-After`, but only when the
//! request is safe to repeat; see [`RetryPolicy`]. Admin calls that act
//! anew each time (create, rotate, credits) carry an [`IdempotencyKey`],
//! which makes them safe to repeat. A `QUOTA_EXCEEDED` that lasts past the
//! retry budget comes back at once, typed ([`Error::quota_exceeded`]).

#![forbid(unsafe_code)]

mod admin;
mod builder;
pub mod cli;
mod client;
mod connector;
mod credentials;
mod error;
mod idempotency;
mod response;
mod retry;
mod transport;
pub mod webhooks;

pub use admin::{
    AdminClient, AuditQuery, CreatedKey, KeyListQuery, LeakedKey, MAX_PAGES, Page, Pager,
    RotatedKey, UsageQuery, WithIdempotencyKey,
};
pub use builder::{ClientBuilder, DEFAULT_BASE_URL, TlsRoots};
pub use client::{ApiRequest, Client};
pub use credentials::AdminToken;
pub use error::{
    ApiError, ConfigError, DecodeError, Error, KeyNotShown, QuotaExceeded, TransportError,
    TransportErrorKind,
};
pub use idempotency::{IdempotencyKey, IdempotencyKeyError, MAX_IDEMPOTENCY_KEY_LEN};
pub use response::{ConcurrencyLimit, RateLimit, Response, ResponseMeta};
pub use retry::{MAX_SERVER_DELAY, RetryPolicy};
pub use transport::MAX_RESPONSE_BODY;

/// The shared wire types and names (`wire::CreateKeyRequest`, `AccountId`,
/// …), re-exported so callers need no direct dependency to name them.
pub use cloro_auth_core;
pub use cloro_auth_core::{ApiKey, ErrorCode, QuotaLimit};
/// A DER certificate, for [`ClientBuilder::add_root_certificate`].
pub use rustls_pki_types::CertificateDer;
