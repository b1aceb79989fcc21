//! The `cloro` command line (SPEC §7, §11): `whoami`, `keys` (credits
//! included), `audit`, `plans` and `accounts` (quota included), over the
//! SDK.
//!
//! Credentials come only from the environment (`CLORO_API_KEY`,
//! `CLORO_ADMIN_TOKEN`), never from flags: a flag would put the secret in
//! the shell history and in every process listing. For the same reason
//! `keys revoke-leaked` reads the keys it revokes from standard input
//! ([`Input`]) and refuses them as arguments. Output is a table for
//! people, or JSON with `--json` for scripts; a new key is the only thing a
//! human-mode create or rotate prints on stdout, so `KEY=$(cloro keys
//! create …)` works.
//!
//! Exit codes: 0 success, 1 the server refused, or answered a repeated
//! create or rotate without its secret ([`EXIT_API_ERROR`]), 2 bad
//! usage or configuration ([`EXIT_USAGE`], as clap uses), 3 no usable
//! answer (connection, TLS, timeout, unreadable answer) or no way to write
//! the output ([`EXIT_UNREACHABLE`]).

mod advice;
mod args;
mod commands;
mod output;

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

pub use advice::advice;
pub use args::{
    AccountsCommand, AppliesToArg, AuditArgs, Cli, Command, CreateArgs, CreditsArgs,
    EnvironmentArg, KeysCommand, ListArgs, PurposeArg, RevokeLeakedArgs, RotateArgs, UpdateArgs,
};

use crate::builder::ClientBuilder;
use crate::error::Error;

/// The server answered with an error.
pub const EXIT_API_ERROR: u8 = 1;
/// The command line or the environment is wrong.
pub const EXIT_USAGE: u8 = 2;
/// No usable answer came back.
pub const EXIT_UNREACHABLE: u8 = 3;

/// Why a command failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// From the SDK.
    Sdk(Error),
    /// Writing the output failed (a closed pipe, say).
    Output(std::io::Error),
    /// A local file, argument or standard input was unusable.
    Usage(String),
}

/// Standard input, or what a test puts in its place.
pub struct Input<'a> {
    reader: &'a mut dyn BufRead,
    terminal: bool,
}

impl<'a> Input<'a> {
    /// `reader`; `terminal` when a person types into it, so that a command
    /// reading it first says how to end.
    pub fn new(reader: &'a mut dyn BufRead, terminal: bool) -> Self {
        Input { reader, terminal }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Sdk(error)
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Failure::Output(error)
    }
}

/// Runs `cli` on a single-threaded runtime with the process environment
/// and standard streams; what `main` calls.
pub fn main(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cloro: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let code = runtime.block_on(run(
        cli,
        ClientBuilder::from_env(),
        Input::new(&mut stdin.lock(), terminal),
        &mut stdout.lock(),
        &mut stderr.lock(),
    ));
    ExitCode::from(code)
}

/// Runs `cli` with `builder` (credentials and base URL already read),
/// reading `input` (only `keys revoke-leaked` does), writing results to
/// `out` and messages to `err`; returns the exit code.
pub async fn run(
    cli: Cli,
    builder: ClientBuilder,
    input: Input<'_>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let json = cli.json;
    match commands::execute(cli, builder, input, out, err).await {
        Ok(()) => 0,
        Err(failure) => {
            // Nothing more can be said if stderr itself is gone.
            let _ = output::report(&failure, json, err);
            exit_code(&failure)
        }
    }
}

fn exit_code(failure: &Failure) -> u8 {
    match failure {
        // A replayed create or rotate is the server's answer too: it
        // refused to show the secret again.
        Failure::Sdk(Error::Api(_) | Error::KeyNotShown(_)) => EXIT_API_ERROR,
        Failure::Sdk(Error::Config(_) | Error::Encode(_)) | Failure::Usage(_) => EXIT_USAGE,
        Failure::Sdk(_) | Failure::Output(_) => EXIT_UNREACHABLE,
    }
}
