//! What the tests need besides cargo, installed when missing, so that the
//! README's test command alone works on a fresh machine: the programs the
//! integration tests start themselves (a private `redis-server` per test, a
//! real nginx and Caddy, headless Chromium and its chromedriver for the
//! dashboard, `prlimit` for the descriptor-limit test) and
//! `cargo-deny` for the licence check.
//!
//! As root with `apt-get` (Debian, as CI is) a missing package is installed;
//! anywhere else the step stops and prints the exact command to run. Nothing
//! is installed that is already there, so a second run does nothing.

use std::process::{Command, Stdio};

/// A program the tests run, and the Debian package that brings it.
pub(crate) struct Needed {
    program: &'static str,
    package: &'static str,
    why: &'static str,
}

const PROGRAMS: &[Needed] = &[
    Needed {
        program: "redis-server",
        package: "redis-server",
        why: "each Redis test starts its own private server",
    },
    Needed {
        program: "redis-cli",
        package: "redis-tools",
        why: "the Redis Cluster tests create their cluster with it",
    },
    Needed {
        program: "nginx",
        package: "nginx",
        why: "the nginx auth_request example is run against a real nginx",
    },
    Needed {
        program: "caddy",
        package: "caddy",
        why: "the Caddy forward_auth example is run against a real Caddy",
    },
    Needed {
        program: "chromium",
        package: "chromium",
        why: "the dashboard's browser tests drive a headless Chromium",
    },
    Needed {
        program: "chromedriver",
        package: "chromium-driver",
        why: "the dashboard's browser tests speak WebDriver to chromedriver",
    },
    Needed {
        program: "prlimit",
        package: "util-linux",
        why: "the connection-flood test starts the server with a low descriptor limit",
    },
];

/// `wrk`, which only `cargo xtask bench` needs.
pub(crate) const WRK: Needed = Needed {
    program: "wrk",
    package: "wrk",
    why: "the load comparison of `cargo xtask bench`",
};

/// `nginx`, the static baseline of `cargo xtask bench`.
pub(crate) const NGINX: Needed = Needed {
    program: "nginx",
    package: "nginx",
    why: "the static-answer baseline of `cargo xtask bench`",
};

/// `redis-server`, for the soak's Redis-backed server.
pub(crate) const REDIS: Needed = Needed {
    program: "redis-server",
    package: "redis-server",
    why: "the Redis-backed server of `cargo xtask soak`",
};

/// Installs whatever the tests need and this machine lacks.
///
/// # Errors
/// What is missing and the command that installs it, when it cannot be
/// installed from here (not root, no apt-get) or the install failed.
pub(crate) fn provision_tests() -> Result<(), String> {
    provision(PROGRAMS)?;
    provision_cargo_deny()
}

/// Installs the programs in `needed` that are missing.
///
/// # Errors
/// As [`provision_tests`].
pub(crate) fn provision(needed: &[Needed]) -> Result<(), String> {
    let missing: Vec<&Needed> = needed.iter().filter(|n| !on_path(n.program)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|n| n.package).collect();
    let command = format!("apt-get install -y {}", packages.join(" "));
    for need in &missing {
        eprintln!("xtask: `{}` is missing ({})", need.program, need.why);
    }
    if !(is_root() && on_path("apt-get")) {
        return Err(format!(
            "install the missing programs first: sudo apt-get update && sudo {command}"
        ));
    }
    eprintln!("xtask: {command}");
    run("apt-get", &["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&packages);
    run("apt-get", &args)?;
    match missing.iter().find(|n| !on_path(n.program)) {
        Some(still) => Err(format!(
            "`{}` is still missing after installing {}",
            still.program, still.package
        )),
        None => Ok(()),
    }
}

fn provision_cargo_deny() -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let present = Command::new(&cargo)
        .args(["deny", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask: cargo install cargo-deny --locked");
    run(&cargo, &["install", "cargo-deny", "--locked", "--quiet"])
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let status = Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", args.join(" ")))
    }
}

/// Whether `program` is an executable file in a `PATH` directory (or, for
/// the admin tools Debian keeps in `sbin`, there: a non-root `PATH` often
/// lacks it, while the tests look there too).
fn on_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(Into::into))
        .any(|dir| {
            let candidate = dir.join(program);
            std::fs::metadata(&candidate).is_ok_and(|meta| {
                meta.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0
            })
        })
}

fn is_root() -> bool {
    // The effective uid, without libc: the `Uid:` line of /proc/self/status
    // lists real, effective, saved and filesystem ids.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
