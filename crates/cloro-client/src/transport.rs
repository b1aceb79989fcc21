//! One logical request: build it, send it, retry it when that is safe and
//! useful, and turn the answer into a [`Response`] or a typed [`Error`].
//!
//! [`Client`](crate::Client) and [`AdminClient`](crate::AdminClient) share
//! this; they differ only in the `Authorization` value they pass in.
//!
//! Every attempt is bounded (SPEC §9, "the SDK survives a hostile server"):
//! the request timeout covers sending, the head and the last byte of the
//! body, so a server that never answers or drips a byte a second ends in
//! [`TransportErrorKind::Timeout`]; the body is read up to
//! [`MAX_RESPONSE_BODY`]; waits between attempts come from
//! [`RetryPolicy::next_wait`], which never sleeps past the policy's budget.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cloro_auth_core::ErrorCode;
use cloro_auth_core::wire::ErrorBody;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use zeroize::Zeroize;

use crate::connector::BoundedConnector;
use crate::error::{ApiError, ConfigError, DecodeError, Error, TransportError, TransportErrorKind};
use crate::idempotency::{IDEMPOTENCY_KEY, IdempotencyKey};
use crate::response::{Response, ResponseMeta};
use crate::retry::{RetryPolicy, retry_after, server_delay};

/// The most the SDK reads of an answer's body: 4 MiB. Cloro answers are
/// small JSON documents (a page of 100 keys is some 70 KiB); the cap stops
/// a misdirected base URL (a file server, say) or a hostile server from
/// filling memory. A longer body is [`TransportErrorKind::BodyTooLarge`].
pub const MAX_RESPONSE_BODY: usize = 4 * 1024 * 1024;

/// The largest header section the SDK accepts, HTTP/1.1 and HTTP/2 alike;
/// a larger one is [`TransportErrorKind::Protocol`]. Cloro answers carry
/// under 2 KiB of headers and a proxy in front adds some; 64 KiB leaves
/// ample room and is a sixth of what hyper buffers for an HTTP/1.1 head by
/// default (about 400 KiB).
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// `cloro-client/<version>`, so server logs can tell SDK traffic apart.
const USER_AGENT_VALUE: &str = concat!("cloro-client/", env!("CARGO_PKG_VERSION"));

/// hyper-util's pooled client over rustls (or plain TCP for `http://`).
pub(crate) type HttpClient = hyper_util::client::legacy::Client<BoundedConnector, Full<Bytes>>;

/// The connection pool and the settings every request shares.
pub(crate) struct Transport {
    pub(crate) http: HttpClient,
    pub(crate) base: BaseUrl,
    pub(crate) retry: RetryPolicy,
    pub(crate) request_timeout: Duration,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("base_url", &self.base.as_str())
            .field("retry", &self.retry)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// A request before it is sent: everything but the credentials.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    pub(crate) method: Method,
    /// Path and query, starting with `/`.
    pub(crate) path: String,
    pub(crate) body: Option<Bytes>,
    pub(crate) headers: HeaderMap,
    /// Whether sending it twice has the same effect as sending it once.
    pub(crate) idempotent: bool,
    /// Whether it carries an `Idempotency-Key`, which makes it idempotent
    /// and lets a 409 `IDEMPOTENCY_KEY_REUSED` for a repeat still running
    /// be waited out.
    pub(crate) keyed: bool,
}

impl Call {
    /// A request without a body; idempotent exactly when its method is
    /// (RFC 9110 §9.2.2).
    pub(crate) fn new(method: Method, path: impl Into<String>) -> Self {
        let idempotent = matches!(
            method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        );
        Call {
            method,
            path: path.into(),
            body: None,
            headers: HeaderMap::new(),
            idempotent,
            keyed: false,
        }
    }

    /// With `body` as JSON.
    pub(crate) fn json<B: Serialize + ?Sized>(mut self, body: &B) -> Result<Self, Error> {
        let bytes = serde_json::to_vec(body).map_err(|why| Error::Encode(why.to_string()))?;
        self.body = Some(Bytes::from(bytes));
        self.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(self)
    }

    /// Marks the request safe (or not) to repeat.
    pub(crate) fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// Wipes a body that held secrets, once the call is done with (best
    /// effort, as in [`decode_secret`]: only while the buffer is ours alone).
    pub(crate) fn wipe_body(&mut self) {
        if let Some(Ok(mut owned)) = self.body.take().map(Bytes::try_into_mut) {
            owned.as_mut().zeroize();
        }
    }

    /// Sends `key` as `Idempotency-Key` on every attempt. The server then
    /// acts on the first attempt that reaches it and answers the others
    /// with that answer (SPEC §11), so the request may be retried.
    pub(crate) fn idempotency_key(mut self, key: &IdempotencyKey) -> Self {
        self.headers
            .insert(HeaderName::from_static(IDEMPOTENCY_KEY), key.header_value());
        self.idempotent = true;
        self.keyed = true;
        self
    }
}

/// An answer, read in full.
struct Raw {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Raw {
    /// Whether the server said "try later", and the wait it named: `None`
    /// when this answer is not to be retried, `Some(None)` when it may be
    /// after the policy's backoff. See [`retry_hint`].
    fn retry_hint(&self, keyed: bool, attempt: u32) -> Option<Option<Duration>> {
        retry_hint(self.status, &self.headers, &self.body, keyed, attempt)
    }
}

/// Which answers are worth sending again, given that the request is safe
/// to repeat, and the wait the server asked for (`Retry-After`, or
/// `details.retry_after` when a proxy dropped the header; either at most
/// [`MAX_SERVER_DELAY`](crate::MAX_SERVER_DELAY)).
///
/// - 429 and 503: the server says "later".
/// - But a 429 `QUOTA_EXCEEDED` only with a wait: credits that never
///   refill answer no `Retry-After`, and no backoff makes them come back.
///   (A wait past the policy's budget, a monthly quota's say, is not
///   slept either: [`RetryPolicy::next_wait`] hands it to the caller.)
/// - A 409 `IDEMPOTENCY_KEY_REUSED` to a request with an
///   `Idempotency-Key`, when it answers a repeat of ours (`attempt` > 1:
///   the same key and the same bytes, so not "another body" but "the
///   first is still running"), or when the server names a wait. The next
///   attempt then gets the first one's answer.
fn retry_hint(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    keyed: bool,
    attempt: u32,
) -> Option<Option<Duration>> {
    if !matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE | StatusCode::CONFLICT
    ) {
        return None;
    }
    let error = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|body| body.error);
    let code = error.as_ref().map(|error| error.code);
    let wait =
        retry_after(headers).or_else(|| error.as_ref()?.details.retry_after.map(server_delay));
    match status {
        StatusCode::TOO_MANY_REQUESTS if code == Some(ErrorCode::QuotaExceeded) => wait.map(Some),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => Some(wait),
        StatusCode::CONFLICT
            if keyed
                && code == Some(ErrorCode::IdempotencyKeyReused)
                && (attempt > 1 || wait.is_some()) =>
        {
            Some(wait)
        }
        _ => None,
    }
}

impl Transport {
    /// Sends `call` with `authorization`, retrying per the policy.
    pub(crate) async fn send(
        &self,
        call: &Call,
        authorization: &HeaderValue,
    ) -> Result<Response<Bytes>, Error> {
        let uri = self.base.join(&call.path)?;
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            let outcome = self.attempt(call, &uri, authorization).await;
            let retryable = match &outcome {
                Ok(raw) => raw.retry_hint(call.keyed, attempt),
                Err(error) if error.kind == TransportErrorKind::Connect => Some(None),
                _ => None,
            };
            if let Some(retry_after) = retryable
                && call.idempotent
                && let Some(delay) = self
                    .retry
                    .next_wait(attempt, started.elapsed(), retry_after)
            {
                tracing::debug!(
                    method = %call.method,
                    path = %call.path,
                    attempt,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    status = outcome.as_ref().map(|raw| raw.status.as_u16()).ok(),
                    "retrying"
                );
                tokio::time::sleep(delay).await;
                // next_wait allowed another send, so attempt < max_attempts.
                attempt += 1;
                continue;
            }
            return match outcome {
                Ok(raw) => answer(raw, attempt),
                Err(mut error) => {
                    error.attempts = attempt;
                    Err(error.into())
                }
            };
        }
    }

    /// One send and the whole answer, head and body, within the request
    /// timeout.
    async fn attempt(
        &self,
        call: &Call,
        uri: &Uri,
        authorization: &HeaderValue,
    ) -> Result<Raw, TransportError> {
        let mut request = Request::new(Full::new(call.body.clone().unwrap_or_default()));
        *request.method_mut() = call.method.clone();
        *request.uri_mut() = uri.clone();
        let headers = request.headers_mut();
        headers.extend(call.headers.clone());
        headers.insert(AUTHORIZATION, authorization.clone());
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        let target = self.base.as_str();
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|error| TransportError::from_client(error, target))?;
            let (parts, body) = response.into_parts();
            let head = head_size(&parts.headers);
            if head > MAX_RESPONSE_HEAD {
                return Err(TransportError::new(
                    TransportErrorKind::Protocol,
                    target,
                    format!(
                        "its header section is {head} bytes; the SDK reads at most {MAX_RESPONSE_HEAD}"
                    ),
                ));
            }
            let body = read_body(body, target).await?;
            Ok(Raw {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.request_timeout, exchange).await {
            Ok(result) => result,
            Err(elapsed) => Err(TransportError::new(
                TransportErrorKind::Timeout,
                target,
                format!("timed out after {:?}", self.request_timeout),
            )
            .caused_by(elapsed)),
        }
    }
}

/// The size of a header section as HTTP/1.1 writes it (`name: value\r\n`).
fn head_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .fold(0, usize::saturating_add)
}

/// The whole body, at most [`MAX_RESPONSE_BODY`] bytes. Each piece is
/// copied into one buffer as it comes, rather than collected as hyper's
/// pieces: a body sent as a million one-byte chunks then costs a million
/// bytes, not a million buffer handles.
async fn read_body(mut body: Incoming, target: &str) -> Result<Bytes, TransportError> {
    let too_large =
        |message: String| TransportError::new(TransportErrorKind::BodyTooLarge, target, message);
    // A Content-Length over the cap fails before a byte of the body is read.
    let declared = body.size_hint().lower();
    if declared > MAX_RESPONSE_BODY as u64 {
        return Err(too_large(format!(
            "it declares {declared} bytes; the SDK reads at most {MAX_RESPONSE_BODY}"
        )));
    }
    let mut buffer =
        BytesMut::with_capacity(usize::try_from(declared).map_or(0, |n| n.min(MAX_RESPONSE_BODY)));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| TransportError::from_body(Box::new(error), target))?;
        let Ok(data) = frame.into_data() else {
            continue; // Trailers: nothing the SDK reads.
        };
        if data.len() > MAX_RESPONSE_BODY.saturating_sub(buffer.len()) {
            return Err(too_large(format!(
                "the body goes past the {MAX_RESPONSE_BODY} bytes the SDK reads"
            )));
        }
        buffer.extend_from_slice(&data);
    }
    Ok(buffer.freeze())
}

/// A 2xx as a response, anything else as the error it carries.
fn answer(raw: Raw, attempts: u32) -> Result<Response<Bytes>, Error> {
    let meta = ResponseMeta::new(raw.status, &raw.headers, attempts);
    if raw.status.is_success() {
        return Ok(Response::new(raw.body, meta));
    }
    match serde_json::from_slice::<ErrorBody>(&raw.body) {
        Ok(ErrorBody { error }) => {
            let retry_after =
                retry_after(&raw.headers).or_else(|| error.details.retry_after.map(server_delay));
            let request_id = Some(error.request_id)
                .filter(|id| !id.is_empty())
                .or(meta.request_id);
            Err(ApiError {
                code: error.code,
                status: raw.status,
                message: error.message,
                request_id,
                retry_after,
                details: error.details,
                rate_limit: meta.rate_limit,
                attempts,
            }
            .into())
        }
        Err(why) => Err(DecodeError::new(
            raw.status,
            meta.request_id,
            format!("the body is not a Cloro error ({why})"),
        )
        .caused_by(why)
        .into()),
    }
}

/// The body of a successful answer as `T`.
pub(crate) fn decode<T: DeserializeOwned>(response: Response<Bytes>) -> Result<Response<T>, Error> {
    let (body, meta) = response.into_parts();
    match serde_json::from_slice(&body) {
        Ok(value) => Ok(Response::new(value, meta)),
        Err(why) => Err(DecodeError::new(
            meta.status,
            meta.request_id,
            format!("the body is not what the API documents ({why})"),
        )
        .caused_by(why)
        .into()),
    }
}

/// Like [`decode`] for a body that holds a plaintext key: its bytes are
/// wiped afterwards where the buffer is ours alone (best effort: the
/// connection's own buffers are out of reach). A JSON error can quote the
/// text it choked on, so a failure says only where and what kind, and
/// keeps no source.
pub(crate) fn decode_secret<T: DeserializeOwned>(
    response: Response<Bytes>,
) -> Result<Response<T>, Error> {
    let (body, meta) = response.into_parts();
    let decoded = match serde_json::from_slice(&body) {
        Ok(value) => Ok(Response::new(value, meta)),
        Err(why) => {
            let what = match why.classify() {
                serde_json::error::Category::Syntax => "not JSON",
                serde_json::error::Category::Data => "not the documented shape",
                serde_json::error::Category::Eof => "cut short",
                serde_json::error::Category::Io => "unreadable",
            };
            Err(DecodeError::new(
                meta.status,
                meta.request_id,
                format!(
                    "the body is not what the API documents ({what} at line {} column {})",
                    why.line(),
                    why.column()
                ),
            )
            .into())
        }
    };
    if let Ok(mut owned) = body.try_into_mut() {
        owned.as_mut().zeroize();
    }
    decoded
}

/// A checked base URL: scheme, host, port and an optional path prefix,
/// without credentials, query or trailing slash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BaseUrl {
    text: String,
}

impl BaseUrl {
    /// Checks `text`. Plain `http://` is accepted only for this machine
    /// unless `allow_insecure_http`: anywhere else the key would cross the
    /// network readable by anyone on the path.
    pub(crate) fn parse(text: &str, allow_insecure_http: bool) -> Result<Self, ConfigError> {
        let refuse = |why| ConfigError::BaseUrl {
            url: mask_credentials(text),
            why,
        };
        let uri: Uri = text.trim().parse().map_err(|_| refuse("it is not a URL"))?;
        let scheme = match uri.scheme_str() {
            Some(scheme @ ("http" | "https")) => scheme,
            Some(_) => return Err(refuse("only http:// and https:// are supported")),
            None => return Err(refuse("it has no scheme; start it with https://")),
        };
        let authority = uri.authority().ok_or_else(|| refuse("it has no host"))?;
        if authority.as_str().contains('@') {
            return Err(refuse(
                "it carries credentials; give the API key in CLORO_API_KEY instead",
            ));
        }
        if uri.query().is_some() {
            return Err(refuse(
                "it has a query; give only scheme, host, port and path",
            ));
        }
        let host = authority.host();
        if scheme == "http" && !allow_insecure_http && !is_loopback(host) {
            return Err(ConfigError::InsecureHttp {
                host: host.to_owned(),
            });
        }
        let prefix = uri.path().trim_end_matches('/');
        Ok(BaseUrl {
            text: format!("{scheme}://{authority}{prefix}"),
        })
    }

    /// The URL, e.g. `https://auth.example.com`.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// The URL of `path` (which starts with `/`) under this base.
    fn join(&self, path: &str) -> Result<Uri, ConfigError> {
        let url = format!("{}{path}", self.text);
        url.parse().map_err(|_| ConfigError::BaseUrl {
            url,
            why: "the request path does not make a valid URL",
        })
    }
}

/// `localhost`, `*.localhost` (RFC 6761) or a loopback address.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let lower = host.to_ascii_lowercase();
    lower == "localhost"
        || lower.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `scheme://***@host…` in place of `scheme://user:password@host…`.
fn mask_credentials(text: &str) -> String {
    let text = text.trim();
    match (text.find("://"), text.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}***{}", &text[..scheme_end + 3], &text[at..])
        }
        (None, Some(_)) => "<a URL with credentials>".to_owned(),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let ok = |text: &str| BaseUrl::parse(text, false).unwrap().as_str().to_owned();
        assert_eq!(ok("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(ok("http://localhost:8080/"), "http://localhost:8080");
        assert_eq!(ok("http://[::1]:8080"), "http://[::1]:8080");
        assert_eq!(
            ok("https://auth.example.com/cloro/"),
            "https://auth.example.com/cloro"
        );
        assert_eq!(
            BaseUrl::parse("https://auth.example.com", false)
                .unwrap()
                .join("/v1/whoami")
                .unwrap()
                .to_string(),
            "https://auth.example.com/v1/whoami"
        );
        assert!(matches!(
            BaseUrl::parse("http://auth.example.com", false),
            Err(ConfigError::InsecureHttp { .. })
        ));
        assert!(BaseUrl::parse("http://auth.example.com", true).is_ok());
        for bad in [
            "auth.example.com",
            "ftp://auth.example.com",
            "https://auth.example.com/?a=b",
            "not a url",
        ] {
            assert!(
                matches!(BaseUrl::parse(bad, false), Err(ConfigError::BaseUrl { .. })),
                "{bad}"
            );
        }
        let error = BaseUrl::parse("https://user:hunter2@auth.example.com", false).unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    fn error_body(code: &str, details: &str) -> Vec<u8> {
        format!(
            r#"{{"error": {{"code": "{code}", "message": "m", "details": {details}, "timestamp": "2026-01-15T12:00:00Z", "request_id": "r"}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn which_answers_are_retried() {
        let none = HeaderMap::new();
        let mut after = HeaderMap::new();
        after.insert("retry-after", "3".parse().unwrap());
        let three = Some(Duration::from_secs(3));
        let hint = |status: u16, headers: &HeaderMap, body: &[u8], keyed, attempt| {
            retry_hint(
                StatusCode::from_u16(status).unwrap(),
                headers,
                body,
                keyed,
                attempt,
            )
        };
        let rate = error_body("RATE_LIMIT_EXCEEDED", "{}");
        assert_eq!(hint(429, &after, &rate, false, 1), Some(three));
        assert_eq!(hint(429, &none, &rate, false, 1), Some(None));
        assert_eq!(hint(503, &none, b"<html>", false, 1), Some(None));
        assert_eq!(
            hint(401, &none, &error_body("INVALID_API_KEY", "{}"), true, 2),
            None
        );
        assert_eq!(hint(500, &none, b"", true, 1), None);

        // A quota only with a wait to take: credits that never refill say none.
        let quota = error_body(
            "QUOTA_EXCEEDED",
            r#"{"limit": "credits", "resets_at": null}"#,
        );
        assert_eq!(hint(429, &none, &quota, false, 1), None);
        assert_eq!(hint(429, &none, &quota, true, 2), None);
        let monthly = error_body(
            "QUOTA_EXCEEDED",
            r#"{"limit": "quota", "plan": "free", "resets_at": "2026-02-01T00:00:00Z", "retry_after": 7200}"#,
        );
        let hours = Some(Some(Duration::from_secs(7200)));
        assert_eq!(hint(429, &none, &monthly, false, 1), hours);
        // ... which the policy then refuses to sleep: past its budget.
        assert_eq!(
            RetryPolicy::default().next_wait(1, Duration::ZERO, Some(Duration::from_secs(7200))),
            None
        );

        // 409 IDEMPOTENCY_KEY_REUSED: a repeat of ours is one still running.
        let reused = error_body("IDEMPOTENCY_KEY_REUSED", "{}");
        assert_eq!(hint(409, &none, &reused, true, 1), None);
        assert_eq!(hint(409, &none, &reused, true, 2), Some(None));
        assert_eq!(hint(409, &after, &reused, true, 1), Some(three));
        assert_eq!(hint(409, &none, &reused, false, 2), None);
        assert_eq!(
            hint(409, &none, &error_body("KEY_REVOKED", "{}"), true, 2),
            None
        );
    }

    #[test]
    fn an_idempotency_key_makes_a_post_repeatable() {
        let key = IdempotencyKey::new("k-1").unwrap();
        let call = Call::new(Method::POST, "/admin/v1/keys").idempotency_key(&key);
        assert!(call.idempotent && call.keyed);
        assert_eq!(call.headers.get("idempotency-key").unwrap(), "k-1");
        let plain = Call::new(Method::POST, "/admin/v1/keys");
        assert!(!plain.idempotent && !plain.keyed);
    }

    #[test]
    fn idempotence_follows_the_method() {
        assert!(Call::new(Method::GET, "/").idempotent);
        assert!(Call::new(Method::PUT, "/").idempotent);
        assert!(!Call::new(Method::POST, "/").idempotent);
        assert!(!Call::new(Method::PATCH, "/").idempotent);
        assert!(Call::new(Method::POST, "/").idempotent(true).idempotent);
    }
}
