//! The Cloro auth server: guards `/v1/*` and forwards authenticated
//! requests upstream, answers verify sub-requests from other gateways,
//! serves the admin API, and exposes health, readiness and metrics
//! (SPEC §6). `main.rs` only parses flags and calls [`run`].

#![forbid(unsafe_code)]

use std::sync::Arc;

mod admin_api;
mod admin_token;
mod api;
mod app;
mod background;
mod body_timeout;
mod connection;
mod dashboard;
mod expiry_notices;
mod gateway;
mod held_body;
mod idempotency;
mod metrics;
mod operators;
mod outbound;
pub mod routes;
pub mod secret_scanning;
mod serve;
mod webhooks;

/// The server's settings: the `cloro-config` crate, which reads them.
pub use cloro_config as config;

pub use admin_token::{AdminToken, AdminTokenError, MIN_ADMIN_TOKEN_LEN};
pub use app::{App, Background, StartError};
pub use body_timeout::BodyTimeout;
pub use serve::{TlsError, serve, shutdown_signal, tls_acceptor};
pub use webhooks::SealingKeyError;

/// Everything that can stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The application could not be built.
    #[error(transparent)]
    Start(#[from] StartError),
    /// TLS files unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the server with these flags and the admin token from the
/// environment, until SIGTERM or SIGINT.
///
/// # Errors
/// Anything that stops it from starting.
pub async fn run(flags: config::Flags, admin_token: Option<String>) -> Result<(), RunError> {
    run_with(config::Settings::load(flags)?, admin_token).await
}

/// [`run`] with settings already loaded (the binary reads them before it
/// starts the runtime, whose thread count is one of them). Both run on the
/// caller's runtime, so `workers` is the caller's to apply.
///
/// # Errors
/// As [`run`], but for the configuration.
pub async fn run_with(
    settings: config::Settings,
    admin_token: Option<String>,
) -> Result<(), RunError> {
    let tls = match &settings.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let address = settings.listen;
    let (app, background) = App::build(settings, admin_token.as_deref()).await?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| RunError::Listen { address, source })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(address = %listener.local_addr().unwrap_or(address), scheme, "listening");
    let result = serve(Arc::clone(&app), listener, tls, shutdown_signal()).await;
    background.stop().await;
    app.flush_usage().await;
    result.map_err(|source| RunError::Listen { address, source })
}
