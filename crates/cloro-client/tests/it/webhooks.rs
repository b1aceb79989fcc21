//! Webhooks from the SDK and the CLI against the real server (SPEC §12):
//! register an endpoint, receive a delivery on loopback and check it with
//! `cloro_client::webhooks::verify`, list deliveries, and `cloro webhooks`
//! printing the secret once, on stdout only.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloro_client::cloro_auth_core::AccountId;
use cloro_client::cloro_auth_core::wire::{
    CreateKeyRequest, CreateWebhookRequest, DeliveryStatus, WebhookEventType,
};
use cloro_client::webhooks::{WebhookSecret, verify};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::cli::{ADMIN, cloro};
use crate::support::Server;

type Deliveries = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A receiver on loopback that keeps every request and answers 204.
async fn receiver() -> (String, Deliveries) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/in", listener.local_addr().unwrap());
    let seen: Deliveries = Arc::default();
    let kept = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let kept = kept.clone();
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let kept = kept.clone();
                async move {
                    let headers = request.headers().clone();
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    kept.lock().unwrap().push((headers, body));
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(204)
                            .body(Full::new(Bytes::new()))
                            .unwrap(),
                    )
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, seen)
}

async fn first_delivery(seen: &Deliveries) -> (HeaderMap, Bytes) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(first) = seen.lock().unwrap().first().cloned() {
            return first;
        }
        assert!(Instant::now() < deadline, "no delivery arrived");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn the_sdk_registers_an_endpoint_and_verifies_what_it_receives() {
    let server = Server::start_allowing_private_webhooks().await;
    let admin = server.admin();
    let (url, seen) = receiver().await;
    let created = admin
        .create_webhook(&CreateWebhookRequest {
            url: url.clone(),
            events: vec![WebhookEventType::KeyCreated],
            account_id: Some(AccountId::new("acct_hooked").unwrap()),
        })
        .await
        .unwrap()
        .into_value();
    let secret = WebhookSecret::parse(created.secret.as_deref().unwrap()).unwrap();
    assert!(!format!("{created:?}").contains(created.secret.as_deref().unwrap()));
    let id = created.webhook.id.clone();
    assert_eq!(
        admin.webhooks().await.unwrap().value().webhooks,
        vec![created.webhook.clone()]
    );
    assert_eq!(
        admin.webhook(&id).await.unwrap().into_value(),
        created.webhook
    );

    let key = admin
        .create_key(&CreateKeyRequest::new(
            AccountId::new("acct_hooked").unwrap(),
            "k",
        ))
        .await
        .unwrap()
        .into_value();
    let (headers, body) = first_delivery(&seen).await;
    let payload = verify(&secret, &headers, &body).unwrap();
    assert_eq!(payload.event_type, WebhookEventType::KeyCreated);
    assert_eq!(payload.data.key_id, Some(key.key_info.id));
    assert!(!String::from_utf8_lossy(&body).contains(key.key.expose_secret()));
    // The same delivery under another secret, or changed, is refused.
    assert!(
        verify(
            &WebhookSecret::from_bytes(&[1; 32]).unwrap(),
            &headers,
            &body
        )
        .is_err()
    );
    let mut changed = body.to_vec();
    changed[10] ^= 1;
    assert!(verify(&secret, &headers, &changed).is_err());

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = admin
            .webhook_deliveries(&id, Some(10), None)
            .await
            .unwrap()
            .into_value();
        if page
            .deliveries
            .first()
            .is_some_and(|d| d.status == DeliveryStatus::Delivered)
        {
            assert_eq!(page.deliveries.len(), 1);
            assert_eq!(page.next_cursor, None);
            break;
        }
        assert!(Instant::now() < deadline, "never delivered: {page:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    admin.delete_webhook(&id).await.unwrap();
    let gone = admin.webhook(&id).await.unwrap_err();
    assert_eq!(gone.code().map(|c| c.as_str()), Some("NOT_FOUND"));
}

#[tokio::test]
async fn cloro_webhooks_prints_the_secret_once_on_stdout() {
    let server = Server::start_allowing_private_webhooks().await;
    let (url, _) = receiver().await;
    let created = cloro(
        &server,
        ADMIN,
        &[
            "webhooks",
            "create",
            "--url",
            &url,
            "--event",
            "key.revoked",
            "--event",
            "key.leaked",
        ],
    )
    .await
    .ok();
    let secret = created.stdout.trim().to_owned();
    assert!(
        secret.starts_with("whsec_") && created.stdout.lines().count() == 1,
        "{created:?}"
    );
    WebhookSecret::parse(&secret).unwrap();
    assert!(created.stderr.contains("not shown again"), "{created:?}");
    assert!(!created.stderr.contains(&secret));

    let listed = cloro(&server, ADMIN, &["--json", "webhooks", "list"])
        .await
        .ok();
    let hooks = listed.json()["webhooks"].as_array().unwrap().clone();
    assert_eq!(hooks.len(), 1);
    assert_eq!(
        hooks[0]["events"],
        serde_json::json!(["key.revoked", "key.leaked"])
    );
    assert!(!listed.stdout.contains(&secret[6..]));
    let id = hooks[0]["id"].as_str().unwrap().to_owned();

    let table = cloro(&server, ADMIN, &["webhooks", "list"]).await.ok();
    assert!(
        table.stdout.contains(&id) && table.stdout.contains(&url),
        "{table:?}"
    );
    let deliveries = cloro(&server, ADMIN, &["webhooks", "deliveries", &id])
        .await
        .ok();
    assert!(deliveries.stdout.starts_with("EVENT"), "{deliveries:?}");

    let unknown = cloro(
        &server,
        ADMIN,
        &[
            "webhooks",
            "create",
            "--url",
            &url,
            "--event",
            "key.exploded",
        ],
    )
    .await;
    assert_eq!(
        unknown.code,
        i32::from(cloro_client::cli::EXIT_USAGE),
        "{unknown:?}"
    );
    assert!(unknown.stderr.contains("key.revoked"), "{unknown:?}");

    cloro(&server, ADMIN, &["webhooks", "delete", &id])
        .await
        .ok();
    let gone = cloro(&server, ADMIN, &["webhooks", "show", &id]).await;
    assert_ne!(gone.code, 0);
    assert!(gone.stderr.contains("NOT_FOUND"), "{gone:?}");
}
