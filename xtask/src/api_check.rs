//! `cargo xtask api-check [--debug]`: schemathesis (from PyPI, pinned)
//! against the server's own `/openapi.json`: every operation, every check
//! (no 5xx; statuses, headers and bodies as documented; undocumented
//! statuses and methods flagged; schema-valid requests accepted and
//! invalid ones refused).
//!
//! The server runs on the embedded store with two plans, a route scope and
//! an upstream of this run's own, so `/v1/*` is forwarded rather than 404;
//! schemathesis gets an admin token and an API key, one per security
//! scheme of the document. The few checks that cannot apply to an
//! operation are turned off for it alone in `xtask/api-check/
//! schemathesis.toml`, each with its reason, and `hooks.py` moves a past
//! `expires_at` into the future (a rule about time no schema states).
//!
//! `--debug` checks the debug build the tests already made, which is what
//! `ci` does; without it, the release build.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

use crate::harness::{ADMIN_TOKEN, RELEASE_SERVER, ServerProcess, Store, create_key, free_port};

/// The schemathesis this check is written against.
const SCHEMATHESIS_VERSION: &str = "4.32.5";
/// Where its virtual environment lives (under `target/`, so `cargo clean`
/// removes it and git never sees it).
const VENV: &str = "target/xtask/schemathesis";
/// The committed configuration and hooks.
const CONFIG_DIR: &str = "xtask/api-check";

/// The server's configuration for the run: a second plan, so that `PUT
/// /admin/v1/accounts/{id}` has a choice, and one route scope.
const SERVER_CONFIG: &str = r#"
# Every run sends thousands of unknown keys, wrong tokens and unsigned
# reports from one address; the lockout has its own tests, and here it
# would only turn the answers under test into 429s.
max_failed_auth = "1000000/minute"
default_plan = "free"
[plans.free]
rate_limit = { requests = 1000000, per_seconds = 1 }
[plans.pro]
rate_limit = { requests = 500, per_seconds = 1, burst = 500 }
concurrency_limit = 10
[route_scopes]
"POST /v1/monitor" = "monitor:write"
"#;

pub(crate) fn run(cargo: &str, args: &[String]) -> Result<(), String> {
    let debug = match args {
        [] => false,
        [flag] if flag == "--debug" => true,
        _ => return Err("usage: cargo xtask api-check [--debug]".into()),
    };
    let schemathesis = provision_schemathesis()?;
    let binary = if debug {
        // The same selection as the test step, so nothing is rebuilt.
        crate::bench::step(
            "debug build of the binaries",
            cargo,
            &["build", "--workspace", "--all-features", "--bins"],
        )?;
        PathBuf::from("target/debug/cloro-server")
    } else {
        crate::bench::step(
            "release build of cloro-server",
            cargo,
            &["build", "--release", "--package", "cloro-server"],
        )?;
        PathBuf::from(RELEASE_SERVER)
    };

    let scratch = std::env::temp_dir().join(format!("cloro-api-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let result = check(&binary, &schemathesis, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn check(binary: &Path, schemathesis: &Path, scratch: &Path) -> Result<(), String> {
    let config = scratch.join("cloro.toml");
    // Both partners' keys from a file with none in it: the run never
    // reaches out to api.github.com, and every report is rightly unsigned.
    let partner_keys = scratch.join("partner-keys.json");
    std::fs::write(&partner_keys, r#"{"public_keys": []}"#).map_err(|e| e.to_string())?;
    let mut server_config = SERVER_CONFIG.to_owned();
    for partner in ["github", "gitlab"] {
        server_config.push_str(&format!(
            "[secret_scanning.{partner}]\npublic_keys_file = \"{}\"\n",
            partner_keys.display()
        ));
    }
    std::fs::write(&config, server_config).map_err(|e| e.to_string())?;
    let upstream = start_upstream()?;
    let port = free_port()?;
    let config_arg = config.to_string_lossy().into_owned();
    let upstream_arg = format!("http://127.0.0.1:{upstream}");
    let server = ServerProcess::start(
        binary,
        port,
        &Store::Embedded(&scratch.join("data")),
        &["--config", &config_arg, "--upstream", &upstream_arg],
    )?;
    let (api_key, _) = create_key(
        port,
        r#"{"account_id":"acct_api_check","name":"schemathesis","rate_limit":{"requests":1000000000,"per_seconds":1}}"#,
    )?;
    let base = format!("http://127.0.0.1:{port}");
    // Public and operational routes first: the admin run may well revoke
    // or disable the key it finds through `/v1/whoami`.
    let mut failed = Vec::new();
    for (what, tags) in [
        (
            "public and operational routes",
            &["public", "operational"][..],
        ),
        ("admin routes", &["admin"][..]),
        // Last: its unsigned reports use up this address's failed-attempt
        // allowance, which the admin run shares.
        ("partner routes", &["partners"][..]),
    ] {
        eprintln!("==> schemathesis {SCHEMATHESIS_VERSION}: {what}");
        let mut command = Command::new(schemathesis);
        command
            .arg("--config-file")
            .arg(Path::new(CONFIG_DIR).join("schemathesis.toml"))
            .args(["run", &format!("{base}/openapi.json"), "--url", &base]);
        for tag in tags {
            command.args(["--include-tag", tag]);
        }
        let status = command
            .env("CLORO_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("CLORO_API_KEY", &api_key)
            .env("SCHEMATHESIS_HOOKS", "hooks")
            .env("PYTHONPATH", CONFIG_DIR)
            .status()
            .map_err(|e| format!("cannot run {}: {e}", schemathesis.display()))?;
        if !status.success() {
            failed.push(what);
        }
    }
    drop(server);
    if failed.is_empty() {
        eprintln!("api-check passed");
        Ok(())
    } else {
        Err(format!(
            "schemathesis found failures on the {} (see its report above)",
            failed.join(" and the ")
        ))
    }
}

/// schemathesis in a virtual environment of its own, installed from PyPI
/// if it is missing or another version; its executable.
fn provision_schemathesis() -> Result<PathBuf, String> {
    let venv = Path::new(VENV);
    let executable = venv.join("bin/schemathesis");
    let installed = Command::new(&executable)
        .arg("--version")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(SCHEMATHESIS_VERSION));
    if installed {
        return Ok(executable);
    }
    eprintln!("xtask: python3 -m venv {VENV} && pip install schemathesis=={SCHEMATHESIS_VERSION}");
    let venv_made = Command::new("python3")
        .args(["-m", "venv", "--clear", VENV])
        .status()
        .map_err(|e| {
            format!(
                "cannot run python3 ({e}); install it with: apt-get install python3 python3-venv"
            )
        })?;
    if !venv_made.success() {
        return Err(
            "python3 -m venv failed; install the venv module with: apt-get install python3-venv"
                .into(),
        );
    }
    let pip = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            &format!("schemathesis=={SCHEMATHESIS_VERSION}"),
        ])
        .status()
        .map_err(|e| format!("cannot run pip: {e}"))?;
    if !pip.success() {
        return Err(format!(
            "pip install schemathesis=={SCHEMATHESIS_VERSION} failed (it needs PyPI)"
        ));
    }
    Ok(executable)
}

/// An upstream of the run's own on a free port: answers every request
/// `200 {}` over keep-alive connections, for as long as the process lives.
fn start_upstream() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || serve_upstream(stream));
        }
    });
    Ok(port)
}

fn serve_upstream(stream: TcpStream) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut chunked = false;
        let mut line = String::new();
        // The head, to its blank line; then the body, by its Content-Length
        // or in chunks.
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let field = line.trim_end();
            if field.is_empty() {
                break;
            }
            if let Some((name, value)) = field.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
                if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.to_ascii_lowercase().contains("chunked");
                }
            }
        }
        let read = if chunked {
            skip_chunks(&mut reader)
        } else {
            let mut body = vec![0; length];
            reader.read_exact(&mut body).ok()
        };
        if read.is_none() {
            return;
        }
        let answer =
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// Reads a chunked body to its end (trailers included); `None` on a broken one.
fn skip_chunks(reader: &mut BufReader<TcpStream>) -> Option<()> {
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let size_text = line.trim_end().split(';').next()?;
        let size = usize::from_str_radix(size_text.trim(), 16).ok()?;
        if size == 0 {
            // Trailers, to the blank line.
            loop {
                line.clear();
                if reader.read_line(&mut line).ok()? == 0 || line.trim_end().is_empty() {
                    return Some(());
                }
            }
        }
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).ok()?;
    }
}
