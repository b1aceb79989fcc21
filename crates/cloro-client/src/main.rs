//! `cloro`: the command line for Cloro API keys. Only parses the arguments;
//! everything else lives in [`cloro_client::cli`] where tests can reach it.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cloro_client::cli::main(cloro_client::cli::Cli::parse())
}
