//! Integration tests of cloro-auth-core: the SPEC §3 grammar as properties,
//! the SPEC §4 table row by row, and the wire types' JSON.

// A test that meets the unexpected should stop right there, loudly.
#![allow(clippy::unwrap_used)]

mod errors;
mod header_props;
mod key_props;
mod path_props;
mod reference;
mod wire;
