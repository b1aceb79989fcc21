//! Everything that talks to Redis, each backend of a contract the crate
//! names elsewhere: the [`RedisStore`] ([`KeyStore`](crate::KeyStore),
//! `store`), the [`RedisRateLimiter`]
//! ([`SharedRateLimiter`](crate::SharedRateLimiter), `limiter`) and the
//! [`RedisLedger`] ([`Ledger`](crate::Ledger), `ledger`: quotas and
//! credits, charged in the rate limiter's script), the
//! [`RedisNotifier`] with its listener
//! ([`ChangeNotifier`](crate::ChangeNotifier), `invalidation`), and the
//! [`RedisIdempotencyStore`] ([`IdempotencyStore`](crate::IdempotencyStore),
//! `idempotency`), and the [`WebhookStore`](crate::WebhookStore) of the
//! store (`webhooks`: endpoints, outbox and deliveries). They share
//! one [`RedisConnection`] over a single Redis or a Redis Cluster
//! (`connection`: the command timeout, the retry on a dropped connection)
//! and one way to show where it points without its password (`target`).

mod admin_tokens;
mod connection;
mod idempotency;
mod invalidation;
mod ledger;
mod limiter;
mod notices;
mod sessions;
mod store;
mod target;
mod webhooks;

pub use connection::{RedisConnection, RedisOptions};
pub use idempotency::RedisIdempotencyStore;
pub use invalidation::{
    INVALIDATION_CHANNEL, InvalidationListener, RedisNotifier, spawn_cluster_invalidation_listener,
    spawn_invalidation_listener,
};
pub use ledger::RedisLedger;
pub use limiter::RedisRateLimiter;
pub use store::RedisStore;
