//! What every request the server itself sends shares: the TLS client
//! configuration (rustls with the ring provider and the webpki roots), so
//! fetching partners' keys and delivering webhooks trust the same roots.

use std::sync::Arc;

/// A rustls client configuration that trusts the Mozilla roots of
/// `webpki-roots`.
pub(crate) fn tls_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|config| config.with_root_certificates(roots).with_no_client_auth())
        // The ring provider supports the default versions; this cannot fail.
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
}
