//! Integration tests of cloro-keystore: one contract suite run against
//! every store, then the verifier, limiters and failure behaviour.

// A test that meets the unexpected should stop right there, loudly.
#![allow(clippy::unwrap_used)]

mod admin_tokens;
mod contract;
mod embedded;
mod idempotency;
mod ledger;
mod memory;
mod redis;
mod redis_cluster;
mod redis_quota;
mod redis_verifier;
mod sessions;
mod usage;
mod verifier;
mod webhooks;
