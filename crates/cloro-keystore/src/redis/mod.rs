//! Everything that talks to Redis: the connection over a single Redis or a
//! Redis Cluster (`connection`), the [`RedisStore`] backend of the
//! [`KeyStore`](crate::KeyStore) contract (`store`), the shared rate limiter
//! (`limiter`) and invalidation over pub/sub (`invalidation`).

mod connection;
mod invalidation;
mod limiter;
mod store;

pub use invalidation::{
    INVALIDATION_CHANNEL, InvalidationListener, RedisNotifier, spawn_cluster_invalidation_listener,
    spawn_invalidation_listener,
};
pub use limiter::RedisRateLimiter;
pub use store::{RedisOptions, RedisStore};
