//! `cloro-server`: parse flags, set up logging, run. Everything else lives
//! in the library so tests can drive it.

use std::process::ExitCode;

use clap::Parser;
use cloro_server::config::{Flags, Settings};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    limit_malloc_arenas();
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
    let settings = match Settings::load(flags) {
        Ok(settings) => settings,
        Err(error) => return fail(&cloro_server::RunError::from(error)),
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = settings.workers {
        runtime.worker_threads(workers.get());
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cloro-server: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cloro_server::run_with(settings, admin_token)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

/// Logs why the server stopped, also on stderr for a person, and fails.
fn fail(error: &cloro_server::RunError) -> ExitCode {
    tracing::error!("{error}");
    eprintln!("cloro-server: {error}");
    ExitCode::FAILURE
}

/// The environment variable that caps glibc's malloc arenas.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENA_MAX: &str = "MALLOC_ARENA_MAX";

/// Set in the environment of the second start, so it never starts a third:
/// glibc deletes `MALLOC_ARENA_MAX` itself from the environment of a
/// "secure" process (setuid, or given file capabilities to bind port 443),
/// so that variable alone cannot stop the loop.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const RESTARTED: &str = "CLORO_MALLOC_ARENAS_SET";

/// Caps glibc's malloc arenas at one per core (at least two), by running
/// this binary again with `MALLOC_ARENA_MAX` set, unless it is set already
/// (an operator's own value wins) or this is that second start.
///
/// Why: glibc gives threads that contend for the heap arenas of their own,
/// up to 8 per core, and memory freed in one arena is not reused by the
/// others. The server's blocking threads (every embedded-store call) come
/// and go, so each arena ends up holding its own fragments: a 6-minute
/// embedded soak grew 41 % after its warm-up with glibc's default and
/// 5.5 % with one arena per core, in the same run. glibc reads the cap only
/// from the environment at start-up (`mallopt` would need the unsafe FFI
/// this workspace forbids), hence the `exec`; it keeps the process id.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    use std::os::unix::process::CommandExt;

    if std::env::var_os(MALLOC_ARENA_MAX).is_some() || std::env::var_os(RESTARTED).is_some() {
        return;
    }
    let arenas = std::thread::available_parallelism().map_or(2, |cores| cores.get().max(2));
    let mut args = std::env::args_os();
    let name = args.next().unwrap_or_else(|| "cloro-server".into());
    // `/proc/self/exe` is this very binary, even if its file was replaced
    // since it started. `exec` returns only if it failed; the server then
    // runs as it is.
    let error = std::process::Command::new("/proc/self/exe")
        .arg0(name)
        .args(args)
        .env(MALLOC_ARENA_MAX, arenas.to_string())
        .env(RESTARTED, "1")
        .exec();
    eprintln!(
        "cloro-server: cannot restart with {MALLOC_ARENA_MAX}={arenas} ({error}); running with glibc's default malloc arenas"
    );
}
