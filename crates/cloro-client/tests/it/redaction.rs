//! No `Debug` or `Display` of a client, a builder, a result or an error
//! shows an API key or the admin token.

use cloro_client::cloro_auth_core::AccountId;
use cloro_client::cloro_auth_core::wire::{CreateKeyRequest, RotateKeyRequest};
use cloro_client::{AdminToken, ApiKey, ClientBuilder, Error};

use crate::support::{ADMIN_TOKEN, Canned, Scripted, Server, quick_retries, refused_url};

/// Fails if `text` holds the secret or any 12-character piece of its
/// random part (the redacted start shows 4 digits, by design).
fn assert_hides(text: &str, secret: &str) {
    assert!(!text.contains(secret), "secret in {text}");
    let tail = &secret[secret.len() - 12..];
    assert!(!text.contains(tail), "part of the secret in {text}");
}

fn assert_error_hides(error: &Error, secrets: &[&str]) {
    for secret in secrets {
        assert_hides(&format!("{error:?}"), secret);
        assert_hides(&error.to_string(), secret);
        assert_hides(&cloro_client::cli::advice(error), secret);
    }
}

#[tokio::test]
async fn debug_and_errors_show_no_secret() {
    let server = Server::start().await;
    let admin = server.admin();
    assert_hides(&format!("{admin:?}"), ADMIN_TOKEN);

    let created = admin
        .create_key(&CreateKeyRequest::new(
            AccountId::new("acct_r").unwrap(),
            "r",
        ))
        .await
        .unwrap();
    let secret = created.value().key.expose_secret().to_owned();
    assert_hides(&format!("{created:?}"), &secret);

    let builder = server
        .builder()
        .api_key(ApiKey::parse_token(&secret).unwrap())
        .admin_token(AdminToken::new(ADMIN_TOKEN).unwrap());
    let debug = format!("{builder:?}");
    assert_hides(&debug, &secret);
    assert_hides(&debug, ADMIN_TOKEN);
    let client = builder.build().unwrap();
    assert_hides(&format!("{client:?}"), &secret);
    assert!(
        format!("{client:?}").contains(&secret[..12]),
        "the redacted start helps"
    );
    let request = client.request(http::Method::GET, "/v1/whoami");
    assert_hides(&format!("{request:?}"), &secret);

    let rotated = admin
        .rotate_key(&created.value().key_info.id, &RotateKeyRequest::default())
        .await
        .unwrap();
    let new_secret = rotated.value().key.expose_secret().to_owned();
    assert_hides(&format!("{rotated:?}"), &new_secret);

    // API errors: the rotated-away key is refused.
    let error = client.whoami().await.unwrap_err();
    assert!(error.code().is_some(), "{error}");
    assert_error_hides(&error, &[&secret, &new_secret, ADMIN_TOKEN]);

    // A wrong admin token.
    let wrong = "wrong_admin_token_0123456789abcdefghijkl";
    let error = server
        .builder()
        .admin_token(AdminToken::new(wrong).unwrap())
        .build_admin()
        .unwrap()
        .plans()
        .await
        .unwrap_err();
    assert_error_hides(&error, &[wrong]);

    // Configuration: a key one character off fails its checksum.
    let mut typo = new_secret.clone();
    let last = if typo.ends_with('0') { "1" } else { "0" };
    typo.replace_range(typo.len() - 1.., last);
    let error = ClientBuilder::from_vars(|name| (name == "CLORO_API_KEY").then(|| typo.clone()))
        .build()
        .unwrap_err();
    assert_error_hides(&error, &[&typo]);
    let error = ClientBuilder::from_vars(|name| {
        (name == "CLORO_ADMIN_TOKEN").then(|| format!("{ADMIN_TOKEN} with spaces"))
    })
    .build_admin()
    .unwrap_err();
    assert_error_hides(&error, &[ADMIN_TOKEN]);

    // Transport and decoding.
    let key = ApiKey::parse_token(&new_secret).unwrap();
    let error = ClientBuilder::new()
        .base_url(refused_url().await)
        .retry_policy(quick_retries())
        .api_key(key.clone())
        .build()
        .unwrap()
        .whoami()
        .await
        .unwrap_err();
    assert_error_hides(&error, &[&new_secret]);
    let scripted = Scripted::start(vec![Canned::ok("not json")]).await;
    let error = ClientBuilder::new()
        .base_url(&scripted.base_url)
        .api_key(key)
        .build()
        .unwrap()
        .whoami()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Decode(_)));
    assert_error_hides(&error, &[&new_secret]);
}
