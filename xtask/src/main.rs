//! `cargo xtask`: the project's automation, in Rust so it runs wherever cargo
//! does. `ci` is the single test command of the README: if it passes locally,
//! CI is green.

mod api_check;
mod bench;
mod fuzz;
mod harness;
mod provision;
mod soak;

use std::env;
use std::process::{Command, ExitCode};
use std::time::Instant;

/// One check of `cargo xtask ci`: a name to report and the cargo arguments.
struct Step {
    name: &'static str,
    args: &'static [&'static str],
    /// Extra environment for this step only.
    env: &'static [(&'static str, &'static str)],
}

/// Every check, cheapest and most likely to fail first, so a typo costs
/// seconds rather than a full test build.
const CI_STEPS: &[Step] = &[
    Step {
        name: "rustfmt",
        args: &["fmt", "--all", "--", "--check"],
        env: &[],
    },
    Step {
        name: "no_std build of cloro-auth-core",
        args: &[
            "check",
            "--package",
            "cloro-auth-core",
            "--no-default-features",
        ],
        env: &[],
    },
    Step {
        name: "cloro-auth-core with alloc only",
        args: &[
            "check",
            "--package",
            "cloro-auth-core",
            "--no-default-features",
            "--features",
            "alloc",
        ],
        env: &[],
    },
    Step {
        name: "clippy",
        args: &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
        env: &[],
    },
    Step {
        name: "tests",
        args: &["test", "--workspace", "--all-features"],
        env: &[],
    },
    Step {
        name: "cloro-auth-core tests without default features",
        args: &[
            "test",
            "--package",
            "cloro-auth-core",
            "--no-default-features",
            "--lib",
        ],
        env: &[],
    },
    // Right after the tests, whose debug build of the server it reuses:
    // schemathesis against /openapi.json, every operation and check (two
    // minutes, half a minute more to install it on a fresh machine).
    Step {
        name: "api-check",
        args: &["xtask", "api-check", "--debug"],
        env: &[],
    },
    Step {
        name: "docs",
        args: &["doc", "--workspace", "--no-deps", "--all-features"],
        env: &[("RUSTDOCFLAGS", "-D warnings")],
    },
    // Advisories need the advisory database from the network, which CI
    // machines here do not reach; bans, licences and sources are checked.
    Step {
        name: "cargo deny",
        args: &[
            "deny",
            "--all-features",
            "check",
            "bans",
            "licenses",
            "sources",
        ],
        env: &[],
    },
    // Last, as the dearest: every fuzz target from its committed seeds,
    // 100 s of fuzzing in all (CI allows at most 3 minutes; from the seeds
    // this is a regression check, real fuzzing is `cargo xtask fuzz`),
    // after a nightly build of the fuzz crate into its own target dir.
    Step {
        name: "fuzz",
        args: &["xtask", "fuzz", "--total", "100"],
        env: &[],
    },
];

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => match provision::provision_tests() {
            Ok(()) => run_steps(CI_STEPS),
            Err(error) => {
                eprintln!("xtask: {error}");
                ExitCode::FAILURE
            }
        },
        Some(command @ ("openapi" | "fuzz" | "api-check" | "soak" | "bench")) => {
            let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let rest = &args[1..];
            let outcome = match command {
                "openapi" => write_openapi(&cargo),
                "fuzz" => fuzz::run(&cargo, rest),
                "api-check" => api_check::run(&cargo, rest),
                "soak" => soak::run(&cargo, rest),
                _ if rest.first().map(String::as_str) == Some("propagation") => {
                    bench::run_propagation(&cargo)
                }
                _ if rest.first().map(String::as_str) == Some("load") => {
                    let binary = match rest.get(1..) {
                        Some([flag, path]) if flag == "--server" => Some(path.as_str()),
                        _ => None,
                    };
                    bench::run_load(&cargo, binary)
                }
                _ => bench::run(&cargo),
            };
            match outcome {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("xtask {command}: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("usage: cargo xtask <ci|openapi|fuzz|api-check|bench|soak>");
            eprintln!(
                "  ci     every check CI runs: installs what the tests need, then fmt, no_std, clippy, tests, api-check, docs, cargo deny, fuzz"
            );
            eprintln!(
                "  fuzz   [--seconds N | --total N] [TARGET...]: every fuzz target from its seeds, N s each (default 60)"
            );
            eprintln!(
                "         or N s in all; needs the nightly toolchain, installs cargo-fuzz; fails on a crash"
            );
            eprintln!(
                "  openapi  writes the OpenAPI document's schemas, generated from the wire types"
            );
            eprintln!(
                "  api-check [--debug]: schemathesis against /openapi.json of a release (or debug) server, every operation and check"
            );
            eprintln!(
                "  bench  criterion benchmarks, then a wrk load comparison of the server (needs wrk),"
            );
            eprintln!(
                "         then revocation propagation across two nodes (`bench propagation`: only that;"
            );
            eprintln!(
                "         `bench load [--server PATH]`: only the load comparison, with nginx beside us)"
            );
            eprintln!(
                "  soak   [--minutes N] [--store embedded|redis|both] [--server PATH]: the release server (or PATH) under mixed traffic"
            );
            eprintln!(
                "         for N minutes (default 10), checking every answer, its memory and descriptors"
            );
            ExitCode::from(2)
        }
    }
}

/// `cargo xtask openapi`: the server test that compares the committed
/// document's `components.schemas` with the wire types' writes them
/// instead (with the features CI tests with, so it reuses that build).
fn write_openapi(cargo: &str) -> Result<(), String> {
    let status = Command::new(cargo)
        .args([
            "test",
            "--package",
            "cloro-server",
            "--all-features",
            "--test",
            "it",
            "--",
            "--exact",
            "ops::openapi_schemas_are_the_wire_types",
        ])
        .env("CLORO_WRITE_OPENAPI", "1")
        .status()
        .map_err(|error| format!("could not start cargo: {error}"))?;
    if !status.success() {
        return Err(format!("the generator test failed ({status})"));
    }
    eprintln!("xtask openapi: wrote crates/cloro-server/openapi.json");
    Ok(())
}

/// Runs the steps in order and stops at the first failure, naming it.
fn run_steps(steps: &[Step]) -> ExitCode {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let started = Instant::now();
    for (index, step) in steps.iter().enumerate() {
        eprintln!(
            "==> [{}/{}] {}: cargo {}",
            index + 1,
            steps.len(),
            step.name,
            step.args.join(" ")
        );
        let step_started = Instant::now();
        let status = Command::new(&cargo)
            .args(step.args)
            .envs(step.env.iter().copied())
            .status();
        match status {
            Ok(status) if status.success() => {
                eprintln!("    ok in {:.1}s", step_started.elapsed().as_secs_f64());
            }
            Ok(status) => {
                eprintln!("xtask: step `{}` failed ({status})", step.name);
                return ExitCode::FAILURE;
            }
            Err(error) => {
                eprintln!("xtask: step `{}` could not start cargo: {error}", step.name);
                return ExitCode::FAILURE;
            }
        }
    }
    eprintln!(
        "xtask: all {} steps passed in {:.0}s",
        steps.len(),
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
