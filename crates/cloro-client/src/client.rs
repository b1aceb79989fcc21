//! [`Client`]: calls to the public API (`/v1/*`) with an API key.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use cloro_auth_core::wire::KeyInfo;
use cloro_auth_core::{ApiKey, RedactedKey};
use http::header::AUTHORIZATION;
use http::{HeaderName, HeaderValue, Method};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::builder::ClientBuilder;
use crate::error::{ConfigError, Error};
use crate::response::Response;
use crate::transport::{Call, Transport, decode};

/// A client of the Cloro API, holding one API key. Cheap to clone: clones
/// share the connection pool.
#[derive(Clone)]
pub struct Client {
    transport: Arc<Transport>,
    key: Arc<ApiKey>,
    authorization: HeaderValue,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // By hand, so the header value (the key in full) is never a field.
        f.debug_struct("Client")
            .field("key", &self.key.redacted())
            .field("transport", &self.transport)
            .finish()
    }
}

impl Client {
    pub(crate) fn new(transport: Arc<Transport>, key: ApiKey, authorization: HeaderValue) -> Self {
        Client {
            transport,
            key: Arc::new(key),
            authorization,
        }
    }

    /// A client configured by `CLORO_API_KEY` and `CLORO_BASE_URL`
    /// (default [`DEFAULT_BASE_URL`](crate::DEFAULT_BASE_URL)).
    ///
    /// # Errors
    /// [`ConfigError`] when the key is missing or malformed (checked with
    /// the core's key parser, so a truncated key never reaches the network)
    /// or the URL is unusable.
    pub fn from_env() -> Result<Self, Error> {
        ClientBuilder::from_env().build()
    }

    /// A builder, for other settings.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// The redacted key, `sk_live_1a2b...`, for logs and messages.
    pub fn key(&self) -> RedactedKey {
        self.key.redacted()
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        self.transport.base.as_str()
    }

    /// `GET /v1/whoami`: the calling key's record.
    ///
    /// # Errors
    /// Any [`Error`]; an invalid, expired or revoked key is an
    /// [`Error::Api`] with its SPEC §4 code.
    pub async fn whoami(&self) -> Result<Response<KeyInfo>, Error> {
        self.request(Method::GET, "/v1/whoami").send_json().await
    }

    /// Any `/v1/*` route, authenticated with the key.
    ///
    /// ```no_run
    /// # async fn example(client: cloro_client::Client) -> Result<(), cloro_client::Error> {
    /// let answer = client
    ///     .request(http::Method::POST, "/v1/monitor")
    ///     .json(&serde_json::json!({"url": "https://example.com"}))
    ///     .idempotent(true)
    ///     .send()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn request(&self, method: Method, path: &str) -> ApiRequest<'_> {
        let call = if is_api_path(path) {
            Ok(Call::new(method, path))
        } else {
            Err(ConfigError::NotApiPath {
                path: path.to_owned(),
            }
            .into())
        };
        ApiRequest { client: self, call }
    }
}

/// Whether `path` stays under `/v1/`: the key must not reach other routes,
/// and a `..` segment could lead there through a proxy that resolves it.
fn is_api_path(path: &str) -> bool {
    let path_only = path.split(['?', '#']).next().unwrap_or_default();
    path_only.starts_with("/v1/")
        && !path_only
            .split('/')
            .any(|segment| segment == "." || segment == "..")
}

/// A request to a `/v1/*` route, being built; see [`Client::request`].
///
/// GET, HEAD, PUT, DELETE and OPTIONS are retried; other methods only
/// after [`ApiRequest::idempotent`]`(true)`.
#[derive(Debug)]
#[must_use = "a request does nothing until it is sent"]
pub struct ApiRequest<'a> {
    client: &'a Client,
    call: Result<Call, Error>,
}

impl ApiRequest<'_> {
    /// Sends `body` as JSON.
    pub fn json<B: Serialize + ?Sized>(mut self, body: &B) -> Self {
        self.call = self.call.and_then(|call| call.json(body));
        self
    }

    /// Adds a header. `Authorization` is the client's and cannot be set.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        if name != AUTHORIZATION
            && let Ok(call) = &mut self.call
        {
            call.headers.append(name, value);
        }
        self
    }

    /// Declares whether sending the request twice is harmless (for
    /// example a POST the server deduplicates), which allows retries.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.call = self.call.map(|call| call.idempotent(idempotent));
        self
    }

    /// Sends it; any 2xx body comes back as bytes.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn send(self) -> Result<Response<Bytes>, Error> {
        let call = self.call?;
        self.client
            .transport
            .send(&call, &self.client.authorization)
            .await
    }

    /// Sends it and decodes a 2xx body from JSON.
    ///
    /// # Errors
    /// Any [`Error`]; [`Error::Decode`] when the body is not a `T`.
    pub async fn send_json<T: DeserializeOwned>(self) -> Result<Response<T>, Error> {
        decode(self.send().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_api_paths_get_the_key() {
        assert!(is_api_path("/v1/whoami"));
        assert!(is_api_path("/v1/monitor?url=x/../y"));
        for path in [
            "/admin/v1/keys",
            "/v1",
            "v1/whoami",
            "/v1/../admin/v1/plans",
            "/v1/./x",
        ] {
            assert!(!is_api_path(path), "{path}");
        }
    }
}
