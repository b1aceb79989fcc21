//! Test harnesses shared by the Cloro crates.
//!
//! - [`RedisServer`]: a private `redis-server` on a free loopback port, for
//!   tests that need a real Redis and must never touch one they did not
//!   start (a developer's or the system's Redis on 6379 stays untouched).
//! - [`RedisCluster`]: a private Redis Cluster of such servers, with
//!   replicas when a test needs a failover.
//! - [`ChromeDriver`]: a private `chromedriver` driving headless Chromium,
//!   for the dashboard's browser tests.

#![forbid(unsafe_code)]

mod chrome_driver;
mod redis_cluster;
mod redis_server;

pub use chrome_driver::ChromeDriver;
pub use redis_cluster::RedisCluster;
pub use redis_server::RedisServer;
