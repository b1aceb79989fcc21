//! Revoking leaked keys by their plaintext (SPEC §12): the SDK against the
//! real server and against a scripted one (how lists are split and merged,
//! what is sent), and `cloro keys revoke-leaked` reading standard input.
//!
//! The tests against the real server need its route
//! `POST /admin/v1/keys/revoke-leaked`.

use clap::Parser;
use cloro_client::cli::{Cli, EXIT_USAGE, Input};
use cloro_client::cloro_auth_core::wire::{CreateKeyRequest, MAX_LEAKED_KEYS};
use cloro_client::cloro_auth_core::{AccountId, Environment, KeyId, KeyStatus};
use cloro_client::{
    AdminClient, AdminToken, ApiKey, ClientBuilder, CreatedKey, ErrorCode, LeakedKey,
};
use http::Method;

use crate::cli::{ADMIN, cloro_fed};
use crate::support::{ADMIN_TOKEN, Canned, KEY_INFO, Scripted, Server, admin, unknown_key};

async fn create_keys(admin: &AdminClient, account: &str, names: &[&str]) -> Vec<CreatedKey> {
    let account = AccountId::new(account).unwrap();
    let mut created = Vec::new();
    for name in names {
        let request = CreateKeyRequest::new(account, *name);
        created.push(admin.create_key(&request).await.unwrap().into_value());
    }
    created
}

/// `count` well-formed keys that no server issued, all different.
fn made_up_keys(count: usize) -> Vec<ApiKey> {
    (0..count)
        .map(|index| {
            let mut random = [0xa5; 16];
            random[..8].copy_from_slice(&u64::try_from(index).unwrap().to_be_bytes());
            ApiKey::from_random_bytes(Environment::Test, random)
        })
        .collect()
}

/// Fails if `text` holds any of `secrets`, or the random tail of one (the
/// redacted start shows its first digits, by design).
fn assert_shows_none(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "a plaintext key in {text}");
        assert!(
            !text.contains(&secret[secret.len() - 12..]),
            "part of a plaintext key in {text}"
        );
    }
}

/// [`KEY_INFO`] revoked, as the server lists it.
fn revoked_key_info() -> String {
    KEY_INFO
        .replace(r#""status": "active""#, r#""status": "revoked""#)
        .replace(
            r#""revoked_at": null"#,
            r#""revoked_at": "2026-01-15T12:00:00Z""#,
        )
}

fn leaked_answer(revoked: &[&str], not_found: u64) -> Canned {
    Canned::ok(&format!(
        r#"{{"revoked": [{}], "not_found": {not_found}}}"#,
        revoked.join(",")
    ))
}

#[tokio::test]
async fn leaked_keys_are_revoked_by_plaintext() {
    let server = Server::start().await;
    let admin = server.admin();
    let created = create_keys(&admin, "acct_leak", &["one", "two", "kept"]).await;
    let leaked = [
        LeakedKey::from(&created[0].key),
        LeakedKey::new(created[1].key.expose_secret()),
        // Well-formed but never issued, and not a key at all.
        LeakedKey::from(unknown_key()),
        LeakedKey::new("password123"),
    ];

    let answer = admin
        .revoke_leaked_keys(&leaked, Some("pasted in a ticket"))
        .await
        .unwrap();
    let secrets: Vec<&str> = created.iter().map(|c| c.key.expose_secret()).collect();
    assert_shows_none(&format!("{answer:?}"), &secrets);
    assert_eq!(answer.meta().attempts, 1);
    let answer = answer.into_value();
    assert_eq!(answer.not_found, 2);
    let ids: Vec<KeyId> = answer.revoked.iter().map(|key| key.id).collect();
    assert_eq!(ids, [created[0].key_info.id, created[1].key_info.id]);
    for listed in &answer.revoked {
        assert_eq!(listed.status, KeyStatus::Revoked);
        let fetched = admin.get_key(&listed.id).await.unwrap().into_value();
        assert_eq!(fetched.status, KeyStatus::Revoked);
        assert_eq!(
            fetched.revoked_reason.as_deref(),
            Some("pasted in a ticket")
        );
    }

    // A revoked key no longer verifies; the one not named still does.
    for (created, works) in created.iter().zip([false, false, true]) {
        let client = server
            .builder()
            .api_key(created.key.clone())
            .build()
            .unwrap();
        match client.whoami().await {
            Ok(me) => assert!(works, "{:?} still works", me.value().id),
            Err(error) => {
                assert!(!works, "{error}");
                assert_eq!(error.code(), Some(ErrorCode::RevokedApiKey), "{error}");
            }
        }
    }

    // Again: harmless, both listed once more (already revoked), each once.
    let again = admin
        .revoke_leaked_keys(
            &[leaked[0].clone(), leaked[1].clone(), leaked[0].clone()],
            None,
        )
        .await
        .unwrap()
        .into_value();
    let ids: Vec<KeyId> = again.revoked.iter().map(|key| key.id).collect();
    assert_eq!(ids, [created[0].key_info.id, created[1].key_info.id]);
    assert_eq!(again.not_found, 0);
}

#[tokio::test]
async fn over_a_thousand_leaked_keys_go_in_several_requests() {
    let server = Server::start().await;
    let admin = server.admin();
    let created = create_keys(&admin, "acct_many", &["real"]).await;
    let mut leaked: Vec<LeakedKey> = made_up_keys(MAX_LEAKED_KEYS)
        .iter()
        .map(LeakedKey::from)
        .collect();
    // Last, so that it travels in the second request.
    leaked.push(LeakedKey::from(&created[0].key));

    let answer = admin.revoke_leaked_keys(&leaked, None).await.unwrap();
    assert_eq!(answer.meta().attempts, 2, "two requests, each sent once");
    let answer = answer.into_value();
    assert_eq!(answer.revoked.len(), 1);
    assert_eq!(answer.revoked[0].id, created[0].key_info.id);
    assert_eq!(answer.revoked[0].status, KeyStatus::Revoked);
    assert_eq!(answer.not_found, 1000);
}

#[tokio::test]
async fn a_long_list_is_split_and_the_answers_merged() {
    let server = Scripted::start(vec![
        leaked_answer(&[&revoked_key_info()], 999),
        // The same key again (named in both requests): listed once.
        leaked_answer(&[&revoked_key_info()], 1),
    ])
    .await;
    let keys = made_up_keys(MAX_LEAKED_KEYS + 1);
    let mut leaked: Vec<LeakedKey> = keys.iter().map(LeakedKey::from).collect();
    leaked.push(LeakedKey::new("not a key"));

    let answer = admin(&server.base_url)
        .revoke_leaked_keys(&leaked, Some("found in a log"))
        .await
        .unwrap();
    assert_eq!(answer.meta().attempts, 2);
    let answer = answer.into_value();
    assert_eq!(answer.revoked.len(), 1);
    assert_eq!(answer.revoked[0].id.as_str(), "key_scripted");
    assert_eq!(
        answer.not_found,
        999 + 1 + 1,
        "the server's, and the text that is no key"
    );

    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    let mut sent = Vec::new();
    for request in &seen {
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.path, "/admin/v1/keys/revoke-leaked");
        let body = request.json();
        assert_eq!(body["reason"], "found in a log");
        let batch = body["keys"].as_array().unwrap();
        sent.extend(batch.iter().map(|key| key.as_str().unwrap().to_owned()));
    }
    assert_eq!(
        seen[0].json()["keys"].as_array().unwrap().len(),
        MAX_LEAKED_KEYS
    );
    assert_eq!(seen[1].json()["keys"].as_array().unwrap().len(), 1);
    let expected: Vec<&str> = keys.iter().map(ApiKey::expose_secret).collect();
    assert_eq!(sent, expected, "every key once, in order, and nothing else");
}

#[tokio::test]
async fn text_that_is_no_key_is_never_sent() {
    let server = Scripted::start(vec![leaked_answer(&[], 0)]).await;
    let leaked = [
        LeakedKey::new("ghp_someoneElsesToken0123456789abcdefABCD"),
        LeakedKey::new("sk_live_short"),
        LeakedKey::new(""),
    ];
    let answer = admin(&server.base_url)
        .revoke_leaked_keys(&leaked, None)
        .await
        .unwrap();
    assert_eq!(answer.meta().attempts, 0, "nothing was sent");
    assert_eq!(answer.value().not_found, 3);
    assert!(answer.value().revoked.is_empty());
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn the_cli_revokes_keys_read_from_stdin() {
    let server = Server::start().await;
    let created = create_keys(&server.admin(), "acct_leak_cli", &["leaked", "kept"]).await;
    let (leaked, kept) = (&created[0], &created[1]);
    let made_up = unknown_key();
    let secrets = [
        leaked.key.expose_secret(),
        kept.key.expose_secret(),
        made_up.expose_secret(),
    ];
    // Blank lines and surrounding whitespace are ignored; two lines name
    // no key.
    let stdin = format!(
        "\n  {}  \r\n\n{}\nsk_live_not_even_close\n",
        secrets[0], secrets[2]
    );

    let run = cloro_fed(
        &server.base_url,
        ADMIN,
        &["keys", "revoke-leaked", "--reason", "leaked in CI logs"],
        &stdin,
    )
    .await
    .ok();
    assert!(run.stdout.starts_with("ID"), "{run:?}");
    assert!(run.stdout.contains(leaked.key_info.id.as_str()), "{run:?}");
    assert!(run.stdout.contains(&leaked.key_info.start), "{run:?}");
    assert!(run.stdout.contains("revoked"), "{run:?}");
    assert!(!run.stdout.contains(kept.key_info.id.as_str()), "{run:?}");
    assert!(run.stdout.contains("2 strings matched no key"), "{run:?}");
    assert_eq!(run.stderr, "", "no prompt when stdin is not a terminal");
    assert_shows_none(&run.stdout, &secrets);

    // --json: the merged answer, as the API has it.
    let run = cloro_fed(
        &server.base_url,
        ADMIN,
        &["--json", "keys", "revoke-leaked"],
        &format!("{}\n", secrets[0]),
    )
    .await
    .ok();
    assert_shows_none(&run.stdout, &secrets);
    assert_shows_none(&run.stderr, &secrets);
    let json = run.json();
    assert_eq!(json["revoked"][0]["id"], leaked.key_info.id.as_str());
    assert_eq!(json["revoked"][0]["status"], "revoked");
    assert_eq!(json["not_found"], 0);

    let admin = server.admin();
    let kept_now = admin.get_key(&kept.key_info.id).await.unwrap().into_value();
    assert_eq!(kept_now.status, KeyStatus::Active);
}

#[tokio::test]
async fn the_cli_takes_no_key_as_an_argument_and_sends_nothing_without_keys() {
    let server = Server::start().await;
    let created = create_keys(&server.admin(), "acct_leak_args", &["typed"]).await;
    let secret = created[0].key.expose_secret();

    // A key as an argument: refused by the parser, without repeating it.
    let run = cloro_fed(
        &server.base_url,
        ADMIN,
        &["keys", "revoke-leaked", secret],
        "",
    )
    .await;
    assert_eq!(run.code, i32::from(EXIT_USAGE), "{run:?}");
    assert!(run.stderr.contains("standard input"), "{run:?}");
    assert_eq!(run.stdout, "");
    assert_shows_none(&run.stderr, &[secret]);
    let still = server
        .admin()
        .get_key(&created[0].key_info.id)
        .await
        .unwrap()
        .into_value();
    assert_eq!(still.status, KeyStatus::Active);

    // No keys at all (blank lines only): exit 2, said plainly, nothing sent.
    let scripted = Scripted::start(vec![leaked_answer(&[], 0)]).await;
    let run = cloro_fed(
        &scripted.base_url,
        ADMIN,
        &["keys", "revoke-leaked"],
        "\n  \n",
    )
    .await;
    assert_eq!(run.code, i32::from(EXIT_USAGE), "{run:?}");
    assert!(
        run.stderr
            .starts_with("USAGE_ERROR: no keys on standard input"),
        "{run:?}"
    );
    assert!(scripted.seen().is_empty());
}

#[tokio::test]
async fn at_a_terminal_the_cli_says_how_to_end_the_input() {
    let server = Scripted::start(vec![leaked_answer(&[&revoked_key_info()], 1)]).await;
    let [real, made_up] = [made_up_keys(1).remove(0), unknown_key()];
    let typed = format!(
        "{}\n{}\nnot a key\n",
        real.expose_secret(),
        made_up.expose_secret()
    );
    let cli = Cli::try_parse_from(["cloro", "keys", "revoke-leaked"]).unwrap();
    let builder = ClientBuilder::new()
        .base_url(&server.base_url)
        .admin_token(AdminToken::new(ADMIN_TOKEN).unwrap());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut reader = typed.as_bytes();
    let input = Input::new(&mut reader, true);
    let code = cloro_client::cli::run(cli, builder, input, &mut out, &mut err).await;
    let (out, err) = (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.starts_with("paste keys, one per line, then Ctrl-"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(
        out,
        "ID            ACCOUNT        KEY              STATUS\n\
         key_scripted  acct_scripted  sk_test_0000...  revoked\n\
         2 strings matched no key\n"
    );
    // The two well-formed keys were sent; the line that is no key was not.
    let sent = server.seen()[0].json();
    assert_eq!(
        sent["keys"],
        serde_json::json!([real.expose_secret(), made_up.expose_secret()])
    );
}
