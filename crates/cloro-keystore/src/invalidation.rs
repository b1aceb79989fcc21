//! Telling caches that a key or an account changed. On one node the admin
//! action invalidates the local cache directly; with Redis the change is
//! also published so every other node drops its copy within a second.

use core::fmt;
use core::time::Duration;

use async_trait::async_trait;
use cloro_auth_core::{AccountId, KeyHash};

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// One key (by hash: that is what caches are keyed by).
    Key(KeyHash),
    /// An account's plan: every cached key of the account.
    Account(AccountId),
    /// Anything may have changed: after a lost pub/sub connection, the
    /// messages missed meanwhile are unknown, so the whole cache goes.
    Everything,
}

/// Announces changes to every cache that may hold the changed data.
#[async_trait]
pub trait ChangeNotifier: Send + Sync + fmt::Debug + 'static {
    /// Announces one change. Must not fail the admin action that caused it:
    /// a lost announcement is bounded by the cache TTL (SPEC §8).
    async fn publish(&self, change: Invalidation);
}

/// Receives announced changes: the verify cache implements this.
pub trait InvalidationSink: Send + Sync + fmt::Debug + 'static {
    /// Drops whatever `change` makes stale.
    fn invalidate(&self, change: Invalidation);

    /// Drops whatever `change` makes stale, as heard from pub/sub:
    /// `delay` is how long the change took from its publication to this
    /// node (by the two nodes' wall clocks, so clock skew counts; `None`
    /// for a message without a publication time). Sinks that measure
    /// propagation override this; the default only invalidates.
    fn invalidate_published(&self, change: Invalidation, delay: Option<Duration>) {
        let _ = delay;
        self.invalidate(change);
    }
}

/// The single-node notifier: applies each change to local sinks only.
#[derive(Debug, Default)]
pub struct LocalNotifier {
    sinks: Vec<std::sync::Arc<dyn InvalidationSink>>,
}

impl LocalNotifier {
    /// A notifier that forwards to `sinks`.
    pub fn new(sinks: Vec<std::sync::Arc<dyn InvalidationSink>>) -> Self {
        LocalNotifier { sinks }
    }
}

#[async_trait]
impl ChangeNotifier for LocalNotifier {
    async fn publish(&self, change: Invalidation) {
        for sink in &self.sinks {
            sink.invalidate(change);
        }
    }
}
