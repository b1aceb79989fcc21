//! Embeds the Cloro API-key check in a plain hyper service with
//! `ApiKeyLayer`: an in-memory store with one key, printed once, and a
//! "hello" service on a free loopback port that only that key can call.
//!
//! ```text
//! cargo run -p cloro-guard --example embed_layer
//! curl -H "Authorization: Bearer <printed key>" http://127.0.0.1:<port>/v1/hello
//! ```

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use cloro_auth_core::AccountId;
use cloro_auth_core::wire::CreateKeyRequest;
use cloro_guard::{ApiKeyLayer, ApiKeyService, Guard, Identity, PeerAddr, RouteScopes};
use cloro_keystore::{
    KeyAdmin, KeyStore, LocalNotifier, MemoryStore, Plans, Verifier, VerifierConfig,
};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tower_layer::Layer;
use tower_service::Service;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The service being protected: greets the caller's account.
#[derive(Clone, Debug)]
struct Hello;

impl Service<Request<Incoming>> for Hello {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        // The layer put the caller here; it only lets requests with one through.
        let account = request
            .extensions()
            .get::<Identity>()
            .map(|identity| identity.account_id().to_string())
            .unwrap_or_default();
        Box::pin(async move {
            Ok(Response::new(Full::new(Bytes::from(format!(
                "hello, {account}\n"
            )))))
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // The same pieces the server builds, over an in-memory store.
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
    let issued = admin
        .create(
            CreateKeyRequest::new(AccountId::new("acct_demo")?, "embed_layer example"),
            "example",
            jiff::Timestamp::now(),
        )
        .await?;
    let guard = Guard::new(verifier, RouteScopes::default(), Vec::new());
    let service = ApiKeyLayer::new(guard).layer(Hello);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    // A demo prints its key so it can be tried; a real service never does.
    println!("key: {}", issued.key.expose_secret());
    println!("listening on http://{address}");
    println!(
        "try: curl -H \"Authorization: Bearer {}\" http://{address}/v1/hello",
        issued.key.expose_secret()
    );

    loop {
        let (stream, peer) = listener.accept().await?;
        tokio::spawn(serve_connection(stream, peer, service.clone()));
    }
}

/// Serves one connection. hyper's own `Service` trait differs from tower's,
/// so each request is adapted, and given the peer for the layer's
/// failed-attempt guard.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    service: ApiKeyService<Hello>,
) {
    let adapter = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(PeerAddr(peer));
        let mut service = service.clone();
        async move {
            poll_fn(|cx| service.poll_ready(cx)).await?;
            service.call(request).await
        }
    });
    if let Err(error) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), adapter)
        .await
    {
        eprintln!("connection from {peer} failed: {error}");
    }
}
