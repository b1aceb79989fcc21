//! The public keys a secret-scanning partner signs its reports with
//! (SPEC §12): read from a file or fetched from the partner's URL, kept by
//! their identifier, and looked for again (at most once a minute) when a
//! report names an identifier we do not know, which is how a partner's key
//! rotation reaches us. A flood of reports with made-up identifiers thus
//! costs one fetch a minute, not one per report.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use cloro_config::KeySource;
use cloro_keystore::Clock;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jiff::Timestamp;
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;

/// How soon an unknown identifier may cause another fetch.
const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// A fetch that takes longer than this fails (the report is answered 401
/// and the partner retries).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The key list is a few KiB; anything much larger is not it.
const MAX_KEYS_BYTES: usize = 256 * 1024;

/// The DER head of a P-256 `SubjectPublicKeyInfo` (RFC 5480): SEQUENCE,
/// AlgorithmIdentifier {id-ecPublicKey, prime256v1}, and the BIT STRING
/// header of the 65-byte uncompressed point that follows. DER has one
/// encoding per value, so every P-256 key starts with exactly these bytes.
const P256_SPKI_HEAD: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The JSON both partners serve.
#[derive(Deserialize)]
struct KeyList {
    public_keys: Vec<ListedKey>,
}

#[derive(Deserialize)]
struct ListedKey {
    key_identifier: String,
    /// PEM `PUBLIC KEY`.
    key: String,
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// One partner's keys, by identifier: the uncompressed P-256 point `ring`
/// verifies with.
pub(crate) struct PartnerKeys {
    source: KeySource,
    known: RwLock<HashMap<String, Arc<[u8]>>>,
    /// When the keys were last loaded; held across a load, so concurrent
    /// reports with one new identifier cause one fetch.
    last_load: tokio::sync::Mutex<Option<Timestamp>>,
    /// The server's clock (tests move it past the refetch interval).
    clock: Clock,
    client: HttpsClient,
}

impl std::fmt::Debug for PartnerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartnerKeys")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl PartnerKeys {
    /// Keys from `source`, loaded when a report first needs them.
    pub(crate) fn new(source: KeySource, clock: Clock) -> Self {
        PartnerKeys {
            source,
            known: RwLock::new(HashMap::new()),
            last_load: tokio::sync::Mutex::new(None),
            clock,
            client: https_client(),
        }
    }

    /// The key named `identifier`, loading the list again if it is not
    /// known and the last load was over a minute ago (or never happened).
    pub(crate) async fn key(&self, identifier: &str) -> Option<Arc<[u8]>> {
        if let Some(key) = self.known(identifier) {
            return Some(key);
        }
        let mut last_load = self.last_load.lock().await;
        // Another report may have loaded it while this one waited.
        if let Some(key) = self.known(identifier) {
            return Some(key);
        }
        let now = self.clock.now();
        let interval = jiff::SignedDuration::try_from(REFETCH_INTERVAL).unwrap_or_default();
        if last_load.is_some_and(|at| now.duration_since(at) < interval) {
            return None;
        }
        *last_load = Some(now);
        match self.load().await {
            Ok(keys) => {
                if let Ok(mut known) = self.known.write() {
                    *known = keys;
                }
            }
            Err(why) => {
                tracing::warn!(source = ?self.source, %why, "loading secret-scanning public keys failed")
            }
        }
        self.known(identifier)
    }

    fn known(&self, identifier: &str) -> Option<Arc<[u8]>> {
        self.known.read().ok()?.get(identifier).cloned()
    }

    async fn load(&self) -> Result<HashMap<String, Arc<[u8]>>, String> {
        let bytes = match &self.source {
            KeySource::File(path) => tokio::fs::read(path)
                .await
                .map_err(|error| format!("reading {}: {error}", path.display()))?,
            KeySource::Url(url) => tokio::time::timeout(FETCH_TIMEOUT, self.fetch(url))
                .await
                .map_err(|_| format!("no answer within {FETCH_TIMEOUT:?}"))??,
        };
        parse_key_list(&bytes)
    }

    async fn fetch(&self, url: &Uri) -> Result<Vec<u8>, String> {
        let request = Request::get(url.clone())
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "cloro-auth")
            .body(Empty::new())
            .map_err(|error| error.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|error| format!("fetching: {error}"))?;
        if response.status() != StatusCode::OK {
            return Err(format!("the key list answered {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_KEYS_BYTES)
            .collect()
            .await
            .map_err(|error| format!("reading the key list: {error}"))?;
        Ok(body.to_bytes().to_vec())
    }
}

/// The identifiers and points of a key list; keys that are not P-256 are
/// skipped (nothing signed with them could verify).
fn parse_key_list(bytes: &[u8]) -> Result<HashMap<String, Arc<[u8]>>, String> {
    let list: KeyList =
        serde_json::from_slice(bytes).map_err(|error| format!("not a key list: {error}"))?;
    let mut keys = HashMap::new();
    for listed in list.public_keys {
        match p256_point(&listed.key) {
            Some(point) => {
                keys.insert(listed.key_identifier, point);
            }
            None => tracing::warn!(
                identifier = %listed.key_identifier.escape_default(),
                "skipping a secret-scanning public key that is not a P-256 PEM key"
            ),
        }
    }
    Ok(keys)
}

/// The uncompressed point of a PEM P-256 public key.
pub(crate) fn p256_point(pem: &str) -> Option<Arc<[u8]>> {
    let der = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()).ok()?;
    let point = der.as_ref().strip_prefix(&P256_SPKI_HEAD)?;
    (point.len() == 65 && point[0] == 0x04).then(|| Arc::from(point))
}

fn https_client() -> HttpsClient {
    let tls = crate::outbound::tls_config();
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_connect_timeout(Some(FETCH_TIMEOUT));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        // Plain HTTP only reaches the loopback mirrors the config allows.
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Client::builder(TokioExecutor::new()).build(connector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_list_as_github_serves_it() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let list = serde_json::json!({"public_keys": [
            {"key_identifier": "id1", "key": pair.public_key_pem(), "is_current": true},
            {"key_identifier": "bad", "key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"},
        ]});
        let keys = parse_key_list(list.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(&keys["id1"][..], pair.public_key_raw());
        assert!(parse_key_list(b"[]").is_err());
    }
}
