//! Configuring a [`Client`] or an [`AdminClient`]: credentials, base URL,
//! timeouts, retries and the TLS roots to trust.
//!
//! Every check that can fail without the network happens in `build`, so a
//! missing or mistyped key is reported before the first request, with the
//! environment variable to fix.

use std::sync::Arc;
use std::time::Duration;

use cloro_auth_core::{ApiKey, FormatError};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use zeroize::Zeroizing;

use crate::admin::AdminClient;
use crate::client::Client;
use crate::connector::BoundedConnector;
use crate::credentials::{AdminToken, bearer_for_admin, bearer_for_key};
use crate::error::{ConfigError, Error};
use crate::retry::RetryPolicy;
use crate::transport::{BaseUrl, HttpClient, MAX_RESPONSE_HEAD, Transport};

/// Where the server is when `CLORO_BASE_URL` is not set: the server's own
/// default listen address.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8080";

/// Which certificate authorities a TLS connection trusts, besides any
/// added with [`ClientBuilder::add_root_certificate`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsRoots {
    /// Mozilla's root store, built into the binary: the same everywhere,
    /// no system files needed.
    #[default]
    WebPki,
    /// The operating system's store (for a company CA installed there).
    Native,
    /// Only the certificates added to the builder.
    CustomOnly,
}

/// Builds a [`Client`] (API key) or an [`AdminClient`] (admin token).
///
/// ```no_run
/// # fn example() -> Result<(), cloro_client::Error> {
/// use std::time::Duration;
/// let client = cloro_client::ClientBuilder::from_env()
///     .base_url("https://auth.example.com")
///     .request_timeout(Duration::from_secs(10))
///     .build()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ClientBuilder {
    base_url: String,
    api_key: Option<Result<ApiKey, FormatError>>,
    admin_token: Option<Result<AdminToken, ConfigError>>,
    connect_timeout: Duration,
    request_timeout: Duration,
    retry: RetryPolicy,
    roots: TlsRoots,
    extra_roots: Vec<CertificateDer<'static>>,
    extra_pem: Vec<Vec<u8>>,
    allow_insecure_http: bool,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientBuilder {
    /// A builder with no credentials, [`DEFAULT_BASE_URL`], a 5 s connect
    /// timeout, a 30 s request timeout and the default [`RetryPolicy`].
    pub fn new() -> Self {
        ClientBuilder {
            base_url: DEFAULT_BASE_URL.to_owned(),
            api_key: None,
            admin_token: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            roots: TlsRoots::default(),
            extra_roots: Vec::new(),
            extra_pem: Vec::new(),
            allow_insecure_http: false,
        }
    }

    /// A builder reading `CLORO_API_KEY`, `CLORO_ADMIN_TOKEN` and
    /// `CLORO_BASE_URL` from the process environment. A malformed value is
    /// reported by `build`, not here, so an admin tool is not stopped by a
    /// stale API key it never uses.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`ClientBuilder::from_env`] with the variables from `lookup`
    /// (for tests and for programs with their own configuration).
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let mut builder = Self::new();
        // Wiped once parsed: the key lives on only inside `ApiKey`.
        let read = |name| {
            lookup(name)
                .map(Zeroizing::new)
                .filter(|v| !v.trim().is_empty())
        };
        if let Some(text) = read("CLORO_API_KEY") {
            builder.api_key = Some(ApiKey::parse_token(text.trim()));
        }
        if let Some(text) = read("CLORO_ADMIN_TOKEN") {
            builder.admin_token = Some(AdminToken::new(&text));
        }
        if let Some(text) = read("CLORO_BASE_URL") {
            builder.base_url = text.trim().to_owned();
        }
        builder
    }

    /// The API key for [`ClientBuilder::build`].
    pub fn api_key(mut self, key: ApiKey) -> Self {
        self.api_key = Some(Ok(key));
        self
    }

    /// The admin token for [`ClientBuilder::build_admin`].
    pub fn admin_token(mut self, token: AdminToken) -> Self {
        self.admin_token = Some(Ok(token));
        self
    }

    /// The server, e.g. `https://auth.example.com` (a path prefix is kept).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// How long opening a connection may take: name resolution, TCP and
    /// the TLS handshake together (a server that accepts and then never
    /// speaks TLS is given up on after this).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one attempt may take, from sending to the last byte of the
    /// answer: head and body. A server that never answers, or drips its
    /// answer a byte at a time, ends in
    /// [`TransportErrorKind::Timeout`](crate::TransportErrorKind::Timeout)
    /// after this. With retries, a call takes at most the retry policy's
    /// `max_elapsed` plus one more request timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How failed requests are retried.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Which built-in roots TLS trusts.
    pub fn tls_roots(mut self, roots: TlsRoots) -> Self {
        self.roots = roots;
        self
    }

    /// Trusts one more certificate authority (DER).
    pub fn add_root_certificate(mut self, certificate: CertificateDer<'static>) -> Self {
        self.extra_roots.push(certificate);
        self
    }

    /// Trusts every certificate in a PEM document (read when building).
    pub fn add_root_certificates_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.extra_pem.push(pem.into());
        self
    }

    /// Allows `http://` to hosts other than this machine. Only for networks
    /// where nobody else can read the traffic: the key crosses it in clear.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// A client for the public API, with the API key.
    ///
    /// # Errors
    /// [`ConfigError`] when the key is missing or malformed, or the URL or
    /// TLS setup is unusable.
    pub fn build(self) -> Result<Client, Error> {
        let key = match &self.api_key {
            None => return Err(ConfigError::MissingApiKey.into()),
            Some(Err(why)) => return Err(ConfigError::MalformedApiKey(*why).into()),
            Some(Ok(key)) => key.clone(),
        };
        let authorization = bearer_for_key(&key)?;
        let transport = self.transport()?;
        Ok(Client::new(transport, key, authorization))
    }

    /// A client for the admin API, with the admin token.
    ///
    /// # Errors
    /// [`ConfigError`] when the token is missing or malformed, or the URL or
    /// TLS setup is unusable.
    pub fn build_admin(self) -> Result<AdminClient, Error> {
        let token = match &self.admin_token {
            None => return Err(ConfigError::MissingAdminToken.into()),
            Some(Err(why)) => return Err(why.clone().into()),
            Some(Ok(token)) => token,
        };
        let authorization = bearer_for_admin(token)?;
        let transport = self.transport()?;
        Ok(AdminClient::new(transport, authorization))
    }

    fn transport(&self) -> Result<Arc<Transport>, ConfigError> {
        let base = BaseUrl::parse(&self.base_url, self.allow_insecure_http)?;
        Ok(Arc::new(Transport {
            http: self.http_client()?,
            base,
            retry: RetryPolicy {
                max_attempts: self.retry.max_attempts.max(1),
                ..self.retry.clone()
            },
            request_timeout: self.request_timeout,
        }))
    }

    fn http_client(&self) -> Result<HttpClient, ConfigError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|why| ConfigError::Tls(why.to_string()))?
            .with_root_certificates(self.root_store()?)
            .with_no_client_auth();
        let mut tcp = HttpConnector::new();
        // The TLS layer above decides the scheme; this one only connects.
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(self.connect_timeout));
        tcp.set_nodelay(true);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let header_list_size = u32::try_from(MAX_RESPONSE_HEAD).unwrap_or(u32::MAX);
        Ok(HyperClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            // An HTTP/1.1 head must fit in hyper's read buffer, so this
            // bounds the memory a huge head takes (hyper checks it loosely,
            // and refuses over 100 fields; the transport checks the size
            // exactly once the head is in).
            .http1_max_buf_size(MAX_RESPONSE_HEAD)
            .http2_max_header_list_size(header_list_size)
            .build(BoundedConnector::new(connector, self.connect_timeout)))
    }

    fn root_store(&self) -> Result<RootCertStore, ConfigError> {
        let mut roots = RootCertStore::empty();
        match self.roots {
            TlsRoots::WebPki => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            TlsRoots::Native => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 && self.extra_roots.is_empty() && self.extra_pem.is_empty() {
                    return Err(ConfigError::Tls(
                        "no usable root certificate found in the system store".into(),
                    ));
                }
            }
            TlsRoots::CustomOnly => {}
        }
        for certificate in &self.extra_roots {
            roots.add(certificate.clone()).map_err(|why| {
                ConfigError::Tls(format!("cannot trust a root certificate: {why}"))
            })?;
        }
        for pem in &self.extra_pem {
            let mut any = false;
            for certificate in CertificateDer::pem_slice_iter(pem) {
                let certificate = certificate.map_err(|why| {
                    ConfigError::Tls(format!("cannot read a PEM certificate: {why}"))
                })?;
                roots.add(certificate).map_err(|why| {
                    ConfigError::Tls(format!("cannot trust a root certificate: {why}"))
                })?;
                any = true;
            }
            if !any {
                return Err(ConfigError::Tls(
                    "the PEM document holds no certificate".into(),
                ));
            }
        }
        if roots.is_empty() {
            return Err(ConfigError::Tls("no root certificate to trust".into()));
        }
        Ok(roots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk_test_00000000000000000000000000000000";

    fn valid_key() -> String {
        let key = ApiKey::from_random_bytes(cloro_auth_core::Environment::Test, [7; 16]);
        key.expose_secret().to_owned()
    }

    #[test]
    fn missing_and_malformed_keys_are_named() {
        let error = ClientBuilder::from_vars(|_| None).build().unwrap_err();
        assert!(
            error.to_string().contains("set CLORO_API_KEY=sk_live_"),
            "{error}"
        );
        let error = ClientBuilder::from_vars(|name| (name == "CLORO_API_KEY").then(|| KEY.into()))
            .build()
            .unwrap_err();
        assert!(matches!(
            error,
            Error::Config(ConfigError::MalformedApiKey(_))
        ));
        assert!(
            error.to_string().contains("set CLORO_API_KEY=sk_live_"),
            "{error}"
        );
        assert!(!error.to_string().contains(KEY));
        let error = ClientBuilder::from_vars(|_| None)
            .build_admin()
            .unwrap_err();
        assert!(matches!(
            error,
            Error::Config(ConfigError::MissingAdminToken)
        ));
    }

    #[test]
    fn env_values_are_read() {
        let key = valid_key();
        let client = ClientBuilder::from_vars(|name| match name {
            "CLORO_API_KEY" => Some(format!("{key}\n")),
            "CLORO_BASE_URL" => Some("https://auth.example.com/".into()),
            _ => None,
        })
        .build()
        .unwrap();
        assert_eq!(client.base_url(), "https://auth.example.com");
        let debug = format!("{client:?}");
        assert!(!debug.contains(&key), "{debug}");
    }

    #[test]
    fn pem_roots_are_checked() {
        let error = ClientBuilder::new()
            .add_root_certificates_pem("no certificate here")
            .api_key(ApiKey::parse_token(&valid_key()).unwrap())
            .build()
            .unwrap_err();
        assert!(
            matches!(error, Error::Config(ConfigError::Tls(_))),
            "{error}"
        );
    }
}
