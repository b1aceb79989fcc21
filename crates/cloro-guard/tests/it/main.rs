//! Integration tests of cloro-guard: the tower layer driven directly as a
//! service, as an embedding service would use it.

// A test that meets the unexpected should stop right there, loudly.
#![allow(clippy::unwrap_used)]

mod layer;
