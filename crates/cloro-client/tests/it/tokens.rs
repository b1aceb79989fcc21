//! Named admin tokens (SPEC §13) from the SDK and the CLI against the real
//! server: made once, read tokens refused any change, deleted for good.

use cloro_client::cloro_auth_core::AccountId;
use cloro_client::cloro_auth_core::wire::{AdminRole, CreateKeyRequest};
use cloro_client::{AdminToken, ErrorCode};

use crate::cli::{ADMIN, cloro};
use crate::support::Server;

#[tokio::test]
async fn tokens_are_made_listed_limited_by_role_and_deleted() {
    let server = Server::start().await;
    let admin = server.admin();
    let made = admin
        .create_admin_token("auditor", AdminRole::Read)
        .await
        .unwrap()
        .into_value();
    let token = made.token.unwrap();
    assert!(token.starts_with("cloro_admin_"));
    let reader = server
        .builder()
        .admin_token(AdminToken::new(&token).unwrap())
        .build_admin()
        .unwrap();
    assert_eq!(reader.admin_tokens().await.unwrap().value().tokens.len(), 1);
    let refused = reader
        .create_key(&CreateKeyRequest::new(
            AccountId::new("acct_tok").unwrap(),
            "no",
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::InsufficientPermissions));
    let as_reader = [("CLORO_ADMIN_TOKEN", token.as_str())];
    let cli_refused = cloro(
        &server,
        &as_reader,
        &["keys", "create", "--account", "acct_tok", "--name", "no"],
    )
    .await;
    assert_ne!(cli_refused.code, 0);
    assert!(
        cli_refused.stderr.contains("read role") && cli_refused.stderr.contains("--role admin"),
        "{cli_refused:?}"
    );

    // The CLI: the token alone on stdout, the rest on stderr.
    let created = cloro(
        &server,
        ADMIN,
        &["tokens", "create", "ops", "--role", "admin"],
    )
    .await
    .ok();
    let ops = created.stdout.trim();
    assert!(
        ops.starts_with("cloro_admin_") && !ops.contains(' '),
        "{created:?}"
    );
    assert!(created.stderr.contains("named ops (admin)"), "{created:?}");
    let listed = cloro(&server, ADMIN, &["tokens", "list"]).await.ok();
    assert!(listed.stdout.contains("auditor") && listed.stdout.contains("ops"));
    assert!(!listed.stdout.contains(ops) && !listed.stdout.contains(&token));

    let deleted = cloro(&server, ADMIN, &["tokens", "delete", &made.token_info.id])
        .await
        .ok();
    assert!(
        deleted.stderr.contains("deleted admin token"),
        "{deleted:?}"
    );
    let gone = reader.admin_tokens().await.unwrap_err();
    assert_eq!(gone.code(), Some(ErrorCode::InvalidAdminToken));
}

#[tokio::test]
async fn a_portal_link_comes_from_the_sdk_and_the_cli_and_never_prints_in_debug() {
    let server = Server::start().await;
    let account = AccountId::new("acct_portal_sdk").unwrap();
    let link = server
        .admin()
        .create_portal_session(&account)
        .await
        .unwrap()
        .into_value();
    let url = link.url.clone().unwrap();
    assert!(url.contains("/portal/enter?link="), "{url}");
    let secret = url.rsplit('=').next().unwrap();
    assert_eq!(secret.len(), 64);
    assert!(!format!("{link:?}").contains(secret), "{link:?}");

    let printed = cloro(&server, ADMIN, &["accounts", "portal", "acct_portal_sdk"])
        .await
        .ok();
    let cli_url = printed.stdout.trim();
    assert!(
        cli_url.contains("/portal/enter?link=") && !cli_url.contains(' '),
        "{printed:?}"
    );
    assert_ne!(cli_url, url, "each call makes a new link");
    assert!(printed.stderr.contains("opens once"), "{printed:?}");
}
