//! Integration tests of cloro-server over real sockets: the server runs
//! in-process on a free loopback port (or as the real binary where a test
//! needs signals), and every request goes through TCP.

// A test that meets the unexpected should stop right there, loudly.
#![allow(clippy::unwrap_used)]

mod gateway;
mod nginx;
mod public_api;
mod support;
