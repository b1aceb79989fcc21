//! `cargo xtask fuzz`: builds the libFuzzer targets of `fuzz/` (cargo-fuzz,
//! nightly, or the pinned stable where nightly is missing) and runs each
//! from its committed seeds for a bounded time, reporting runs, coverage
//! and crashes per target; any crash fails it.
//!
//! Targets run side by side, one per core, each as its own process, so a
//! budget of N seconds in all gives every target as much time as the
//! machine allows. Without a sanitizer: every crate of ours forbids
//! `unsafe`, so what a target can find is a panic or a broken property,
//! and AddressSanitizer would halve the runs for nothing (run
//! `cargo +nightly fuzz run <target>` by hand to fuzz with it).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every target in `fuzz/Cargo.toml`, in the order they are reported.
const TARGETS: &[&str] = &[
    "authorization",
    "api_key",
    "path",
    "original_uri",
    "admin_bodies",
    "config",
    "leak_report",
    "webhook_signature",
];

/// The toolchain cargo-fuzz is made for. Without a sanitizer it needs no
/// `-Z` flag, so where nightly is missing the workspace's pinned stable
/// builds the targets as well (a new machine may have only that one).
const NIGHTLY: &str = "nightly";

/// Seconds per target when none are given.
const DEFAULT_SECONDS: u64 = 60;

/// What to run: per target or in all, and which targets.
struct Plan {
    seconds_each: u64,
    targets: Vec<&'static str>,
}

/// `cargo xtask fuzz [--seconds N | --total N] [TARGET…]`.
///
/// # Errors
/// A bad argument, a missing toolchain, a failed build, or a crash (named,
/// with its artifact and the command that reproduces it).
pub(crate) fn run(cargo: &str, args: &[String]) -> Result<(), String> {
    let jobs = std::thread::available_parallelism().map_or(1, usize::from);
    let plan = parse_args(args, jobs)?;
    let root = workspace_root();
    let started = Instant::now();

    let toolchain = toolchain(&root)?;
    provision_cargo_fuzz(cargo, &toolchain)?;
    eprintln!("==> building the fuzz targets ({toolchain}, release, no sanitizer)");
    let build_started = Instant::now();
    let status = toolchain_cargo(&root, &toolchain)
        .args(["fuzz", "build", "--sanitizer", "none"])
        .status()
        .map_err(|error| format!("cannot run cargo fuzz: {error}"))?;
    if !status.success() {
        return Err(format!("cargo fuzz build failed ({status})"));
    }
    eprintln!("    built in {:.0}s", build_started.elapsed().as_secs_f64());

    let bin_dir = root
        .join("fuzz/target")
        .join(host_triple(&toolchain)?)
        .join("release");
    eprintln!(
        "==> fuzzing {} target(s) for {}s each, {} at a time",
        plan.targets.len(),
        plan.seconds_each,
        jobs
    );
    let mut outcomes = Vec::new();
    for batch in plan.targets.chunks(jobs) {
        let running = batch
            .iter()
            .map(|&target| Running::start(&root, &bin_dir, target, plan.seconds_each))
            .collect::<Result<Vec<_>, _>>()?;
        for run in running {
            outcomes.push(run.finish(&root)?);
        }
    }

    eprintln!("==> fuzz results");
    for outcome in &outcomes {
        eprintln!("    {}", outcome.summary());
    }
    let crashed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.passed).collect();
    eprintln!(
        "    {} target(s) in {:.0}s (build included)",
        outcomes.len(),
        started.elapsed().as_secs_f64()
    );
    if crashed.is_empty() {
        return Ok(());
    }
    for outcome in &crashed {
        eprintln!("\n--- {} ---\n{}", outcome.target, outcome.failure);
        match &outcome.artifact {
            Some(artifact) => eprintln!(
                "reproduce: cargo +nightly fuzz run --sanitizer none {} {}\n\
                 then add it as a regression test where the property lives",
                outcome.target,
                artifact.display()
            ),
            None => eprintln!("full log: {}", outcome.log.display()),
        }
    }
    Err(format!(
        "{} fuzz target(s) failed: {}",
        crashed.len(),
        crashed
            .iter()
            .map(|o| o.target)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn parse_args(args: &[String], jobs: usize) -> Result<Plan, String> {
    let mut seconds_each = None;
    let mut total = None;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" | "--total" => {
                let value = args
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|&v| v > 0)
                    .ok_or_else(|| format!("{arg} needs a whole number of seconds"))?;
                if arg == "--seconds" {
                    seconds_each = Some(value);
                } else {
                    total = Some(value);
                }
            }
            name => match TARGETS.iter().find(|&&t| t == name) {
                Some(&target) => targets.push(target),
                None => {
                    return Err(format!(
                        "unknown fuzz target `{name}`; the targets are {}",
                        TARGETS.join(", ")
                    ));
                }
            },
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    let seconds_each = match (seconds_each, total) {
        (Some(_), Some(_)) => return Err("give --seconds or --total, not both".to_owned()),
        (Some(seconds), None) => seconds,
        // Batches of `jobs` run one after another within the total.
        (None, Some(total)) => {
            let batches = targets.len().div_ceil(jobs) as u64;
            (total / batches).max(1)
        }
        (None, None) => DEFAULT_SECONDS,
    };
    Ok(Plan {
        seconds_each,
        targets,
    })
}

/// Nightly when it is installed, else the toolchain `rust-toolchain.toml`
/// pins.
fn toolchain(root: &Path) -> Result<String, String> {
    if rustup_runs(NIGHTLY, &["rustc", "--version"]) {
        return Ok(NIGHTLY.to_owned());
    }
    let pinned = fs::read_to_string(root.join("rust-toolchain.toml"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.trim().strip_prefix("channel"))
                .and_then(|rest| rest.split('"').nth(1).map(str::to_owned))
        })
        .ok_or("no nightly toolchain and no channel in rust-toolchain.toml")?;
    eprintln!("xtask: no {NIGHTLY} toolchain; building the fuzz targets with {pinned}");
    Ok(pinned)
}

/// Installs cargo-fuzz when it is missing (one binary serves every
/// toolchain).
fn provision_cargo_fuzz(cargo: &str, toolchain: &str) -> Result<(), String> {
    if rustup_runs(toolchain, &["cargo", "fuzz", "--version"]) {
        return Ok(());
    }
    eprintln!("xtask: cargo install cargo-fuzz --locked");
    let status = Command::new(cargo)
        .args(["install", "cargo-fuzz", "--locked", "--quiet"])
        .status()
        .map_err(|error| format!("cannot run cargo install: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`cargo install cargo-fuzz --locked` failed ({status})"
        ))
    }
}

/// Whether `rustup run <toolchain> <args>` runs and succeeds.
fn rustup_runs(toolchain: &str, args: &[&str]) -> bool {
    Command::new("rustup")
        .args(["run", toolchain])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `cargo` of `toolchain`, in the workspace root (where cargo-fuzz looks
/// for `fuzz/`). `rustup run` overrides `rust-toolchain.toml` for this
/// command only.
fn toolchain_cargo(root: &Path, toolchain: &str) -> Command {
    let mut command = Command::new("rustup");
    command
        .args(["run", toolchain, "cargo"])
        .current_dir(root)
        // Set by the `cargo xtask` that runs us; they name the stable tools.
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC");
    command
}

fn host_triple(toolchain: &str) -> Result<String, String> {
    let output = Command::new("rustup")
        .args(["run", toolchain, "rustc", "-vV"])
        .output()
        .map_err(|error| format!("cannot run rustc: {error}"))?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or_else(|| "rustc -vV names no host".to_owned())
}

fn workspace_root() -> PathBuf {
    // xtask/ sits in the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// One target's libFuzzer process, its output going to a log file.
struct Running {
    target: &'static str,
    child: Child,
    log: PathBuf,
    deadline: Instant,
}

impl Running {
    fn start(
        root: &Path,
        bin_dir: &Path,
        target: &'static str,
        seconds: u64,
    ) -> Result<Self, String> {
        let fuzz = root.join("fuzz");
        // Grown corpus (ignored by git) first: libFuzzer writes new inputs
        // to the first directory and only reads the committed seeds.
        let corpus = fuzz.join("corpus").join(target);
        let seeds = fuzz.join("seeds").join(target);
        let artifacts = fuzz.join("artifacts").join(target);
        for dir in [&corpus, &artifacts] {
            fs::create_dir_all(dir)
                .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
        }
        let log = artifacts.join("fuzz.log");
        let log_file = fs::File::create(&log)
            .map_err(|error| format!("cannot create {}: {error}", log.display()))?;
        let child = Command::new(bin_dir.join(target))
            .arg(format!("-max_total_time={seconds}"))
            .arg("-print_final_stats=1")
            // One input may take this long before it counts as a hang.
            .arg("-timeout=10")
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg(&corpus)
            .arg(&seeds)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|error| format!("cannot start the {target} fuzzer: {error}"))?;
        Ok(Running {
            target,
            child,
            log,
            // libFuzzer stops itself; this only catches one that does not.
            deadline: Instant::now() + Duration::from_secs(seconds + 120),
        })
    }

    fn finish(mut self, root: &Path) -> Result<Outcome, String> {
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() > self.deadline => {
                    let _ = self.child.kill();
                    return Err(format!("the {} fuzzer did not stop", self.target));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(200)),
                Err(error) => {
                    return Err(format!("waiting for the {} fuzzer: {error}", self.target));
                }
            }
        };
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        Ok(Outcome::read(
            self.target,
            status.success(),
            &log,
            self.log.strip_prefix(root).unwrap_or(&self.log),
        ))
    }
}

/// What one target's run found, read from libFuzzer's output.
struct Outcome {
    target: &'static str,
    passed: bool,
    runs: Option<u64>,
    /// The last status line's `cov: … ft: … corp: …`.
    coverage: String,
    failure: String,
    artifact: Option<PathBuf>,
    log: PathBuf,
}

impl Outcome {
    fn read(target: &'static str, passed: bool, log: &str, log_path: &Path) -> Self {
        let stat = |name: &str| {
            log.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|value| value.trim().parse::<u64>().ok())
        };
        let coverage = log
            .lines()
            .rev()
            .find(|line| line.starts_with('#') && line.contains("cov:"))
            .and_then(|line| line.find("cov:").map(|at| &line[at..]))
            .map(|rest| {
                // `cov: 316 ft: 1338 corp: 302/59Kb` and no more.
                rest.split_whitespace()
                    .take(6)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        // The panic message (or libFuzzer's own report), not the backtrace.
        let failure = log
            .lines()
            .skip_while(|line| !(line.contains("panicked at") || line.starts_with("==")))
            .take_while(|line| !line.starts_with("stack backtrace"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n");
        let artifact = log
            .lines()
            .find_map(|line| line.split_once("Test unit written to "))
            .map(|(_, path)| PathBuf::from(path.trim()));
        Outcome {
            target,
            passed,
            runs: stat("stat::number_of_executed_units:"),
            coverage,
            failure,
            artifact,
            log: log_path.to_path_buf(),
        }
    }

    fn summary(&self) -> String {
        let runs = self
            .runs
            .map_or_else(|| "?".to_owned(), |runs| runs.to_string());
        let verdict = match (&self.artifact, self.passed) {
            (_, true) => "no crash".to_owned(),
            (Some(artifact), false) => format!("CRASH {}", artifact.display()),
            (None, false) => format!("FAILED, see {}", self.log.display()),
        };
        format!(
            "{:<14} {:>10} runs  {:<36} {verdict}",
            self.target, runs, self.coverage
        )
    }
}
