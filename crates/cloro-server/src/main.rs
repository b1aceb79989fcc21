//! `cloro-server`: parse flags, set up logging, run. Everything else lives
//! in the library so tests can drive it.

use std::process::ExitCode;

use clap::Parser;
use cloro_server::config::Flags;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let flags = Flags::parse();
    let filter = EnvFilter::try_from_env("CLORO_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr, coloured only for a person at a terminal: a file or
    // a log collector gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .init();
    // Read once, then never kept in plaintext: the library hashes it.
    let admin_token = std::env::var("CLORO_ADMIN_TOKEN").ok();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cloro-server: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cloro_server::run(flags, admin_token)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("cloro-server: {error}");
            ExitCode::FAILURE
        }
    }
}
