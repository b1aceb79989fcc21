//! The `cloro` binary against the real server: the key lifecycle, every
//! command, `--json` output, stdout/stderr and exit codes.

use std::process::Stdio;

use cloro_client::ApiKey;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::support::{ADMIN_TOKEN, Server};

/// What one run of `cloro` left behind.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|why| panic!("stdout is not JSON ({why}): {self:?}"))
    }

    pub(crate) fn ok(self) -> Self {
        assert_eq!(self.code, 0, "{self:?}");
        self
    }
}

/// Runs `cloro args…` against `server`, with only the `CLORO_*` variables in `env`.
pub(crate) async fn cloro(server: &Server, env: &[(&str, &str)], args: &[&str]) -> Run {
    cloro_at(&server.base_url, env, args).await
}

/// Runs `cloro args…` against the server at `base_url`.
pub(crate) async fn cloro_at(base_url: &str, env: &[(&str, &str)], args: &[&str]) -> Run {
    let output = command(base_url, env, args).output().await.unwrap();
    Run::of(output)
}

/// Runs `cloro args…` against the server at `base_url` with `stdin` on its
/// standard input.
pub(crate) async fn cloro_fed(
    base_url: &str,
    env: &[(&str, &str)],
    args: &[&str],
    stdin: &str,
) -> Run {
    let mut child = command(base_url, env, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let stdin = stdin.to_owned();
    // Written alongside the wait, so a long input cannot fill the pipe
    // while cloro waits to be read; a cloro that quit early (a usage error)
    // closes it, which is no failure here.
    let writer = tokio::spawn(async move {
        let _ = pipe.write_all(stdin.as_bytes()).await;
    });
    let output = child.wait_with_output().await.unwrap();
    writer.await.unwrap();
    Run::of(output)
}

fn command(base_url: &str, env: &[(&str, &str)], args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_cloro"));
    command
        .args(args)
        .env_clear()
        .env("CLORO_BASE_URL", base_url);
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

impl Run {
    fn of(output: std::process::Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }
}

pub(crate) const ADMIN: &[(&str, &str)] = &[("CLORO_ADMIN_TOKEN", ADMIN_TOKEN)];

#[tokio::test]
async fn key_lifecycle_through_the_cli() {
    let server = Server::start().await;

    // Create: the key alone on stdout, the reminder on stderr.
    let created = cloro(
        &server,
        ADMIN,
        &[
            "keys",
            "create",
            "--account",
            "acct_cli",
            "--name",
            "ci key",
            "--purpose",
            "ci",
            "--env",
            "test",
            "--expires-in",
            "90d",
            "--scope",
            "*",
            "--rate-limit",
            "1000/hour",
            "--concurrency",
            "10",
            "--metadata",
            "team=payments",
        ],
    )
    .await
    .ok();
    let key = created.stdout.trim().to_owned();
    let parsed = ApiKey::parse_token(&key).unwrap();
    assert_eq!(created.stdout, format!("{key}\n"));
    assert!(key.starts_with("sk_test_"));
    assert!(
        created.stderr.contains("environment variable"),
        "{created:?}"
    );
    assert!(created.stderr.contains("CLORO_API_KEY"), "{created:?}");
    assert!(
        !created.stderr.contains(&key),
        "the key goes to stdout only"
    );

    // Create with --json: {"key", "key_info"}.
    let second = cloro(
        &server,
        ADMIN,
        &[
            "--json",
            "keys",
            "create",
            "--account",
            "acct_cli",
            "--name",
            "second",
        ],
    )
    .await
    .ok()
    .json();
    let second_key = second["key"].as_str().unwrap().to_owned();
    assert!(second_key.starts_with("sk_live_"));
    assert_eq!(second["key_info"]["name"], "second");
    assert_eq!(second["key_info"]["environment"], "live");

    // Whoami, as a table and as JSON.
    let me = cloro(&server, &[("CLORO_API_KEY", &key)], &["whoami"])
        .await
        .ok();
    assert!(me.stdout.contains(parsed.redacted().as_str()), "{me:?}");
    assert!(me.stdout.contains("1000/hour"), "{me:?}");
    assert!(me.stdout.contains("rate now"), "{me:?}");
    assert!(!me.stdout.contains(&key));
    let me = cloro(&server, &[("CLORO_API_KEY", &key)], &["whoami", "--json"])
        .await
        .ok()
        .json();
    let id = me["id"].as_str().unwrap().to_owned();
    assert_eq!(me["purpose"], "ci");
    assert_eq!(me["concurrency_limit"], 10);
    assert_eq!(me["metadata"]["team"], "payments");

    // List: a table with redacted starts only; JSON with both keys.
    let list = cloro(&server, ADMIN, &["keys", "list", "--account", "acct_cli"])
        .await
        .ok();
    assert!(list.stdout.starts_with("ID"), "{list:?}");
    assert!(list.stdout.contains(&id), "{list:?}");
    assert!(list.stdout.contains(parsed.redacted().as_str()));
    assert!(!list.stdout.contains(&key) && !list.stdout.contains(&second_key));
    let paged = cloro(
        &server,
        ADMIN,
        &["keys", "list", "--account", "acct_cli", "--limit", "1"],
    )
    .await
    .ok();
    assert!(paged.stderr.contains("--cursor"), "{paged:?}");
    let all = cloro(
        &server,
        ADMIN,
        &[
            "--json",
            "keys",
            "list",
            "--account",
            "acct_cli",
            "--limit",
            "1",
            "--all",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(all["keys"].as_array().unwrap().len(), 2);
    assert_eq!(all["next_cursor"], Value::Null);

    // Show and update.
    let shown = cloro(&server, ADMIN, &["--json", "keys", "show", &id])
        .await
        .ok()
        .json();
    assert_eq!(shown["status"], "active");
    let updated = cloro(
        &server,
        ADMIN,
        &[
            "--json",
            "keys",
            "update",
            &id,
            "--name",
            "renamed",
            "--no-expiry",
            "--remove-metadata",
            "team",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(updated["name"], "renamed");
    assert_eq!(updated["expires_at"], Value::Null);
    assert_eq!(updated["metadata"], serde_json::json!({}));

    // Rotate with grace: key, key_info and previous; both keys work.
    let rotated = cloro(
        &server,
        ADMIN,
        &[
            "--json",
            "keys",
            "rotate",
            &id,
            "--grace",
            "24h",
            "--expires-in",
            "30d",
        ],
    )
    .await
    .ok();
    assert!(rotated.stderr.contains("CLORO_API_KEY"), "{rotated:?}");
    let rotated = rotated.json();
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    let new_id = rotated["key_info"]["id"].as_str().unwrap().to_owned();
    assert_eq!(rotated["previous"]["id"], id.as_str());
    assert!(rotated["previous"]["expires_at"].is_string());
    assert!(rotated["key_info"]["expires_at"].is_string());
    cloro(&server, &[("CLORO_API_KEY", &key)], &["whoami"])
        .await
        .ok();
    cloro(&server, &[("CLORO_API_KEY", &new_key)], &["whoami"])
        .await
        .ok();

    // Revoke the new key: whoami fails with the code and a one-line fix.
    let revoked = cloro(
        &server,
        ADMIN,
        &["keys", "revoke", &new_id, "--reason", "done"],
    )
    .await
    .ok();
    assert!(revoked.stdout.contains("revoked"), "{revoked:?}");
    let refused = cloro(&server, &[("CLORO_API_KEY", &new_key)], &["whoami"]).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert_eq!(refused.stdout, "");
    assert_eq!(
        refused.stderr.lines().next(),
        Some("REVOKED_API_KEY: this key was revoked; create a new one with cloro keys create"),
        "{refused:?}"
    );
    assert!(!refused.stderr.contains(&new_key));
    let refused = cloro(
        &server,
        &[("CLORO_API_KEY", &new_key)],
        &["--json", "whoami"],
    )
    .await;
    assert_eq!(refused.code, 1);
    let error: Value = serde_json::from_str(refused.stderr.trim()).unwrap();
    assert_eq!(error["error"]["code"], "REVOKED_API_KEY");
    assert_eq!(error["error"]["status"], 401);

    // Rotating the revoked key is a 409.
    let again = cloro(&server, ADMIN, &["keys", "rotate", &new_id]).await;
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stderr.starts_with("KEY_REVOKED: "), "{again:?}");
    assert_eq!(again.stdout, "");

    // Audit, plans, accounts.
    let audit = cloro(
        &server,
        ADMIN,
        &["--json", "audit", "--account", "acct_cli", "--all"],
    )
    .await
    .ok()
    .json();
    let actions: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["action"].as_str().unwrap())
        .collect();
    for action in ["key.created", "key.updated", "key.rotated", "key.revoked"] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
    let table = cloro(&server, ADMIN, &["audit", "--account", "acct_cli"])
        .await
        .ok();
    assert!(table.stdout.contains("key.rotated"), "{table:?}");
    let plans = cloro(&server, ADMIN, &["plans"]).await.ok();
    assert!(plans.stdout.contains("1000/hour"), "{plans:?}");
    assert!(plans.stdout.contains("pro"), "{plans:?}");
    let account = cloro(&server, ADMIN, &["--json", "accounts", "show", "acct_cli"])
        .await
        .ok()
        .json();
    assert_eq!(account["plan"], "free");
    assert_eq!(account["key_count"], 3);
    let moved = cloro(&server, ADMIN, &["accounts", "set-plan", "acct_cli", "pro"])
        .await
        .ok();
    assert!(moved.stdout.contains("pro"), "{moved:?}");
}

#[tokio::test]
async fn configuration_and_usage_failures() {
    let server = Server::start().await;

    // No key at all: said before any request, exit 2.
    let run = cloro(&server, &[], &["whoami"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("set CLORO_API_KEY=sk_live_… in your environment"),
        "{run:?}"
    );
    // A malformed key: named as such, never echoed.
    let bad = "sk_live_0000000000000000000000000000000000000000";
    let run = cloro(&server, &[("CLORO_API_KEY", bad)], &["whoami"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("checksum"), "{run:?}");
    assert!(!run.stderr.contains(bad));
    // No admin token.
    let run = cloro(&server, &[], &["plans"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("CLORO_ADMIN_TOKEN"), "{run:?}");
    // A wrong admin token is the server's answer: exit 1.
    let run = cloro(
        &server,
        &[(
            "CLORO_ADMIN_TOKEN",
            "wrong_token_0123456789abcdefghijklmnop",
        )],
        &["plans"],
    )
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.starts_with("INVALID_ADMIN_TOKEN: "), "{run:?}");
    // Bad arguments: clap's usage error.
    let run = cloro(
        &server,
        ADMIN,
        &[
            "keys",
            "create",
            "--account",
            "acct",
            "--name",
            "n",
            "--rate-limit",
            "fast",
        ],
    )
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    // Nobody listening: exit 3, with what to check.
    let run = cloro(
        &server,
        &[
            ("CLORO_ADMIN_TOKEN", ADMIN_TOKEN),
            ("CLORO_BASE_URL", "http://127.0.0.1:1"),
        ],
        &["plans"],
    )
    .await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.starts_with("CONNECTION_FAILED: "), "{run:?}");
    assert!(run.stderr.contains("CLORO_BASE_URL"), "{run:?}");
}
