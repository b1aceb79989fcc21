//! `ApiKeyLayer` driven directly as a tower service, without a socket: the
//! inner service sees only accepted requests and their identity; refusals
//! are the SPEC §4 answers; the concurrency slot lasts as long as the inner
//! future.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use cloro_auth_core::AccountId;
use cloro_auth_core::wire::CreateKeyRequest;
use cloro_guard::{ApiKeyBody, ApiKeyLayer, Guard, Identity, PeerAddr, RouteScopes};
use cloro_keystore::{
    KeyAdmin, KeyStore, LocalNotifier, MemoryStore, Plans, Verifier, VerifierConfig,
};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::Notify;
use tower_layer::Layer;
use tower_service::Service;

/// A guard over a fresh in-memory store, and a way to issue keys in it.
fn guard() -> (Guard, KeyAdmin) {
    let store: Arc<dyn KeyStore> = Arc::new(MemoryStore::new());
    let plans = Arc::new(Plans::builtin());
    let verifier = Verifier::new(
        store.clone(),
        plans.clone(),
        None,
        &VerifierConfig::default(),
    );
    let notifier = Arc::new(LocalNotifier::new(vec![verifier.cache().clone()]));
    let admin = KeyAdmin::new(store, plans, notifier);
    (
        Guard::new(verifier, RouteScopes::default(), Vec::new()),
        admin,
    )
}

async fn issue(admin: &KeyAdmin, edit: impl FnOnce(&mut CreateKeyRequest)) -> String {
    let mut request = CreateKeyRequest::new(AccountId::new("acct_layer").unwrap(), "layer");
    edit(&mut request);
    let issued = admin
        .create(request, "test", jiff::Timestamp::now())
        .await
        .unwrap();
    issued.key.expose_secret().to_owned()
}

/// The inner service: records the identity of each call, and optionally
/// waits for a go-ahead before answering.
#[derive(Clone, Default)]
struct Inner {
    seen: Arc<Mutex<Vec<String>>>,
    hold: Option<Arc<Notify>>,
}

impl Service<Request<Full<Bytes>>> for Inner {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        let identity = request.extensions().get::<Identity>().cloned();
        self.seen.lock().unwrap().push(
            identity
                .map(|i| format!("{} {}", i.account_id(), i.environment().as_str()))
                .unwrap_or_default(),
        );
        let hold = self.hold.clone();
        Box::pin(async move {
            if let Some(hold) = hold {
                hold.notified().await;
            }
            Ok(Response::new(Full::new(Bytes::from_static(b"hello"))))
        })
    }
}

fn request(authorization: Option<&str>) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().uri("/v1/monitor");
    if let Some(value) = authorization {
        builder = builder.header("authorization", value);
    }
    let mut request = builder.body(Full::new(Bytes::new())).unwrap();
    request
        .extensions_mut()
        .insert(PeerAddr("192.0.2.7:4000".parse().unwrap()));
    request
}

/// `poll_ready` then `call`, as tower's `oneshot` does.
async fn oneshot<S, R>(service: &mut S, request: R) -> S::Response
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    poll_fn(|cx| service.poll_ready(cx)).await.unwrap();
    service.call(request).await.unwrap()
}

async fn body_of(response: Response<ApiKeyBody<Full<Bytes>>>) -> Bytes {
    response.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn a_valid_key_reaches_the_inner_service_with_its_identity() {
    let (guard, admin) = guard();
    let key = issue(&admin, |_| {}).await;
    let inner = Inner::default();
    let mut service = ApiKeyLayer::new(guard).layer(inner.clone());

    let response = oneshot(&mut service, request(Some(&format!("Bearer {key}")))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-ratelimit-limit"], "1000");
    assert_eq!(response.headers()["x-ratelimit-remaining"], "999");
    assert_eq!(body_of(response).await, "hello");
    assert_eq!(*inner.seen.lock().unwrap(), ["acct_layer live"]);
}

#[tokio::test]
async fn a_bad_key_is_refused_before_the_inner_service() {
    let (guard, _admin) = guard();
    let inner = Inner::default();
    let mut service = ApiKeyLayer::new(guard).layer(inner.clone());
    let stranger = cloro_auth_core::ApiKey::generate(cloro_auth_core::Environment::Test).unwrap();

    let unknown = oneshot(
        &mut service,
        request(Some(&format!("Bearer {}", stranger.expose_secret()))),
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.headers()["content-type"], "application/json");
    assert!(
        unknown.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    assert!(unknown.headers().contains_key("x-request-id"));
    let body: serde_json::Value = serde_json::from_slice(&body_of(unknown).await).unwrap();
    assert_eq!(body["error"]["code"], "INVALID_API_KEY");

    let missing = oneshot(&mut service, request(None)).await;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = serde_json::from_slice(&body_of(missing).await).unwrap();
    assert_eq!(body["error"]["code"], "MISSING_API_KEY");

    let mut dotted = request(None);
    *dotted.uri_mut() = "/v1/a/../admin".parse().unwrap();
    let dotted = oneshot(&mut service, dotted).await;
    assert_eq!(dotted.status(), StatusCode::BAD_REQUEST);

    assert!(inner.seen.lock().unwrap().is_empty(), "inner never called");
}

#[tokio::test]
async fn the_concurrency_slot_is_held_until_the_inner_future_ends() {
    let (guard, admin) = guard();
    let key = issue(&admin, |r| {
        r.concurrency_limit = std::num::NonZeroU32::new(1)
    })
    .await;
    let hold = Arc::new(Notify::new());
    let inner = Inner {
        hold: Some(hold.clone()),
        ..Inner::default()
    };
    let seen = inner.seen.clone();
    let mut service = ApiKeyLayer::new(guard).layer(inner);
    let auth = format!("Bearer {key}");

    let mut first_service = service.clone();
    let first_request = request(Some(&auth));
    let first = tokio::spawn(async move { oneshot(&mut first_service, first_request).await });
    // Let the first request take its slot and park in the inner service.
    while seen.lock().unwrap().is_empty() {
        tokio::task::yield_now().await;
    }

    let second = oneshot(&mut service, request(Some(&auth))).await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(second.headers()["x-concurrent-limit"], "1");
    let body: serde_json::Value = serde_json::from_slice(&body_of(second).await).unwrap();
    assert_eq!(body["error"]["code"], "CONCURRENT_LIMIT_EXCEEDED");

    hold.notify_one();
    let first = first.await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["x-concurrent-current"], "1");

    hold.notify_one();
    let third = oneshot(&mut service, request(Some(&auth))).await;
    assert_eq!(third.status(), StatusCode::OK, "the slot was given back");
}
