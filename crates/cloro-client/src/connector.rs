//! The connector under the connection pool: TCP (hyper-util) and TLS
//! (hyper-rustls) under one deadline, the builder's connect timeout.
//!
//! hyper-util's own connect timeout covers only the TCP connect, and
//! hyper-rustls has none for the handshake, so a server that accepts the
//! connection and then never speaks TLS would hold a connect for ever. The
//! request timeout bounds the caller's wait, but hyper-util finishes a
//! started connect in the background for the pool when another request
//! freed a connection first, and that task would wait without bound.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

/// [`HttpsConnector`] with a deadline over name resolution, TCP and TLS.
#[derive(Clone, Debug)]
pub(crate) struct BoundedConnector {
    inner: HttpsConnector<HttpConnector>,
    timeout: Duration,
}

impl BoundedConnector {
    pub(crate) fn new(inner: HttpsConnector<HttpConnector>, timeout: Duration) -> Self {
        BoundedConnector { inner, timeout }
    }
}

impl tower_service::Service<Uri> for BoundedConnector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected,
                // hyper-util reports it as a connect error: nothing was
                // sent, so the retry rules may try again.
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting (TCP and TLS) took longer than {timeout:?}"),
                )
                .into()),
            }
        })
    }
}
