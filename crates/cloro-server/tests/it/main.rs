//! Integration tests of cloro-server over real sockets: the server runs
//! in-process on a free loopback port (or as the real binary where a test
//! needs signals), and every request goes through TCP; only the tower
//! layer's tests call the service directly, as an embedding service would.

// A test that meets the unexpected should stop right there, loudly.
#![allow(clippy::unwrap_used)]

mod admin_api;
mod browser;
mod caddy;
mod cluster;
mod dashboard;
mod flood;
mod gateway;
mod hostile;
mod idempotency;
mod leaked;
mod nginx;
mod operators;
mod ops;
mod process;
mod public_api;
mod quota;
mod spec_rules;
mod support;
mod tls;
mod usage;
mod webhooks;
