//! Test harnesses shared by the Cloro crates.
//!
//! - [`RedisServer`]: a private `redis-server` on a free loopback port, for
//!   tests that need a real Redis and must never touch one they did not
//!   start (a developer's or the system's Redis on 6379 stays untouched).

#![forbid(unsafe_code)]

mod redis_server;

pub use redis_server::RedisServer;
