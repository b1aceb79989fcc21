//! Webhooks (SPEC §12): the admin routes that register endpoints and list
//! their deliveries (`admin.rs`), the key that seals their secrets
//! (`sealing.rs`), where deliveries may go (`target.rs`), and the worker
//! that sends what the store's outbox holds (`worker.rs`).
//!
//! What is kept, and how an event gets from a change to an endpoint at
//! least once, is the keystore's [`WebhookStore`] contract; this module
//! only speaks HTTP on both sides of it.

mod admin;
mod sealing;
mod target;
mod worker;

use std::sync::Arc;

pub(crate) use admin::answer;
pub use sealing::SealingKeyError;
pub(crate) use worker::Worker;

use cloro_keystore::WebhookStore;

use sealing::SealingKey;

/// What the admin routes and the worker share.
#[derive(Debug)]
pub(crate) struct Webhooks {
    pub(crate) store: Arc<dyn WebhookStore>,
    key: SealingKey,
    allow_private: bool,
}

impl Webhooks {
    /// Webhooks kept in `store`, secrets sealed with the key in `key_file`
    /// (made if missing).
    ///
    /// # Errors
    /// The key file cannot be read or made.
    pub(crate) fn open(
        store: Arc<dyn WebhookStore>,
        key_file: &std::path::Path,
        allow_private: bool,
    ) -> Result<Self, SealingKeyError> {
        Ok(Webhooks {
            store,
            key: SealingKey::load_or_create(key_file)?,
            allow_private,
        })
    }
}
