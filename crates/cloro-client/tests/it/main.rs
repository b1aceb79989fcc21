//! Integration tests of cloro-client: the SDK and the `cloro` binary against
//! a real cloro-server run in-process on a free loopback port (embedded
//! store in a temp dir), plus small scripted servers for the retry rules
//! and a raw TCP one that breaks every rule (`hostile`).

// A test that meets the unexpected should stop right there, loudly.
#![allow(clippy::unwrap_used)]

mod cli;
mod hostile;
mod leaked;
mod quota_server;
mod quotas;
mod redaction;
mod retries;
mod sdk;
mod support;
mod tls;
mod tokens;
mod usage;
mod webhooks;
