//! Test harnesses shared by the Cloro crates.
