//! Usage analytics (SPEC §10) from the SDK and the CLI against the real
//! server: real calls, then the counts back as values, a table with
//! sparklines, and JSON.

use cloro_client::UsageQuery;
use cloro_client::cloro_auth_core::AccountId;
use cloro_client::cloro_auth_core::wire::{CreateKeyRequest, UsageGranularity};

use crate::cli::{ADMIN, cloro};
use crate::support::Server;

#[tokio::test]
async fn usage_is_read_by_the_sdk_and_shown_by_the_cli() {
    let server = Server::start().await;
    let admin = server.admin();
    let account = AccountId::new("acct_usage_cli").unwrap();
    let created = admin
        .create_key(&CreateKeyRequest::new(account, "counted"))
        .await
        .unwrap()
        .into_value();
    let client = server
        .builder()
        .api_key(created.key.clone())
        .build()
        .unwrap();
    for _ in 0..3 {
        client.whoami().await.unwrap();
    }
    server.app.flush_usage().await;

    let id = created.key_info.id;
    let minute = UsageQuery {
        granularity: Some(UsageGranularity::Minute),
        ..UsageQuery::default()
    };
    let usage = admin.key_usage(&id, minute).await.unwrap().into_value();
    assert_eq!(usage.totals.valid, 3);
    assert_eq!(usage.granularity, UsageGranularity::Minute);
    let by_account = admin
        .account_usage(&account, UsageQuery::default())
        .await
        .unwrap()
        .into_value();
    assert_eq!(by_account.keys[0].key_id, id);

    let id_text = id.to_string();
    let table = cloro(
        &server,
        ADMIN,
        &[
            "keys",
            "usage",
            &id_text,
            "--since",
            "1h",
            "--granularity",
            "minute",
        ],
    )
    .await
    .ok();
    let valid = table
        .stdout
        .lines()
        .find(|line| line.starts_with("valid"))
        .unwrap_or_else(|| panic!("{table:?}"));
    assert!(valid.contains(" 3 "), "{valid}");
    assert!(valid.contains('█'), "a sparkline: {valid}");
    assert!(table.stdout.contains("by minute"), "{table:?}");
    let refused = table
        .stdout
        .lines()
        .find(|line| line.starts_with("revoked"))
        .unwrap();
    assert!(!refused.contains('█') && refused.contains('·'), "{refused}");

    let json = cloro(&server, ADMIN, &["--json", "keys", "usage", &id_text])
        .await
        .ok()
        .json();
    assert_eq!(json["totals"]["valid"], 3);
    assert_eq!(json["granularity"], "hour");

    let accounts = cloro(&server, ADMIN, &["accounts", "usage", "acct_usage_cli"])
        .await
        .ok();
    assert!(accounts.stdout.contains(&id_text), "{accounts:?}");

    // Too far back for minutes: the server's 400, said plainly.
    let refused = cloro(
        &server,
        ADMIN,
        &[
            "keys",
            "usage",
            &id_text,
            "--since",
            "3d",
            "--granularity",
            "minute",
        ],
    )
    .await;
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("48 hours"), "{refused:?}");
}
