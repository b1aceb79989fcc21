//! What can go wrong talking to Cloro, kept in four kinds a caller handles
//! differently: configuration (fix the environment), an API error (the
//! server answered with a SPEC §4 code), transport (no answer at all) and
//! decoding (an answer the SDK cannot read).
//!
//! No variant holds a key or a token: messages come from the server (which
//! never echoes a secret), from the key parser (which names the broken rule,
//! not the text), or from the network stack (which never sees the headers).
//!
//! A hostile or broken server (SPEC §9) ends in one of these too, never in a
//! panic or an endless wait: garbage bytes and oversized headers are
//! [`TransportErrorKind::Protocol`], an oversized body
//! [`TransportErrorKind::BodyTooLarge`], a slow or silent server
//! [`TransportErrorKind::Timeout`], a 200 of the wrong shape a
//! [`DecodeError`]. Transport and decoding errors keep the error that
//! caused them as their `source()`.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use cloro_auth_core::wire::{ErrorDetails, LimitDetail};
use cloro_auth_core::{ErrorCode, FormatError, KeyId, PlanName, QuotaLimit};
use http::StatusCode;
use jiff::Timestamp;

use crate::response::RateLimit;

/// Every failure of the SDK.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Found before any request: a missing or malformed key, token, URL or
    /// certificate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server answered with a SPEC §4 error.
    #[error(transparent)]
    Api(Box<ApiError>),
    /// No answer: the connection, the TLS handshake or the timeout failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// An answer that is not what the API promises.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The request body could not be encoded as JSON.
    #[error("cannot encode the request body as JSON: {0}")]
    Encode(String),
    /// A create or rotate that the server answered as a repeat of an
    /// earlier one with the same `Idempotency-Key` (SPEC §11): the key was
    /// made then, but its secret is shown only once and never stored, so
    /// this answer has none. Rotate [`KeyNotShown::key_id`] to get a
    /// usable secret.
    #[error(transparent)]
    KeyNotShown(#[from] KeyNotShown),
}

impl From<ApiError> for Error {
    fn from(error: ApiError) -> Self {
        Error::Api(Box::new(error))
    }
}

impl Error {
    /// The server's error, if it answered with one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Error::Api(error) => Some(error),
            _ => None,
        }
    }

    /// The SPEC §4 code, if the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        self.api_error().map(|error| error.code)
    }

    /// The HTTP status of the answer, if there was one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Api(error) => Some(error.status),
            Error::Decode(error) => Some(error.status),
            Error::KeyNotShown(error) => Some(error.status),
            _ => None,
        }
    }

    /// How long the server asked the client to wait (429, 503).
    pub fn retry_after(&self) -> Option<Duration> {
        self.api_error().and_then(|error| error.retry_after)
    }

    /// The request id the server gave the answer, for a support request.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Api(error) => error.request_id.as_deref(),
            Error::Decode(error) => error.request_id.as_deref(),
            Error::KeyNotShown(error) => error.request_id.as_deref(),
            _ => None,
        }
    }

    /// The particulars of a `QUOTA_EXCEEDED` answer, typed; `None` for
    /// every other failure.
    pub fn quota_exceeded(&self) -> Option<QuotaExceeded> {
        self.api_error().and_then(ApiError::quota_exceeded)
    }

    /// A short upper-case label: the SPEC §4 code for an API error, else
    /// one of `CONFIGURATION_ERROR`, `CONNECTION_FAILED`, `TLS_ERROR`,
    /// `TIMEOUT`, `PROTOCOL_ERROR`, `RESPONSE_TOO_LARGE`,
    /// `UNEXPECTED_RESPONSE`, `INVALID_REQUEST_BODY`, `KEY_NOT_SHOWN`.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Api(error) => error.code.as_str(),
            Error::Config(_) => "CONFIGURATION_ERROR",
            Error::Transport(error) => match error.kind {
                TransportErrorKind::Tls => "TLS_ERROR",
                TransportErrorKind::Timeout => "TIMEOUT",
                TransportErrorKind::Protocol => "PROTOCOL_ERROR",
                TransportErrorKind::BodyTooLarge => "RESPONSE_TOO_LARGE",
                TransportErrorKind::Connect | TransportErrorKind::Io => "CONNECTION_FAILED",
            },
            Error::Decode(_) => "UNEXPECTED_RESPONSE",
            Error::Encode(_) => "INVALID_REQUEST_BODY",
            Error::KeyNotShown(_) => "KEY_NOT_SHOWN",
        }
    }
}

/// A SPEC §4 error answer.
#[non_exhaustive]
#[derive(Clone, Debug, thiserror::Error)]
#[error("{code} ({status}): {message}")]
pub struct ApiError {
    /// The code, e.g. [`ErrorCode::RevokedApiKey`]: what programs match on.
    pub code: ErrorCode,
    /// The HTTP status.
    pub status: StatusCode,
    /// What happened and what to do, for people.
    pub message: String,
    /// The `X-Request-Id` of the answer.
    pub request_id: Option<String>,
    /// How long to wait before trying again (429, 503), from `Retry-After`.
    pub retry_after: Option<Duration>,
    /// Machine-readable particulars: the field at fault, the scope needed,
    /// the plan whose limit was hit.
    pub details: ErrorDetails,
    /// The rate-limit state the answer reported (429).
    pub rate_limit: Option<RateLimit>,
    /// How many times the request was sent, retries included.
    pub attempts: u32,
}

impl ApiError {
    /// The particulars of a `QUOTA_EXCEEDED` answer, typed; `None` for
    /// any other code.
    pub fn quota_exceeded(&self) -> Option<QuotaExceeded> {
        if self.code != ErrorCode::QuotaExceeded {
            return None;
        }
        let limit = match &self.details.limit {
            Some(LimitDetail::Name(name)) if name == QuotaLimit::Credits.as_str() => {
                Some(QuotaLimit::Credits)
            }
            Some(LimitDetail::Name(name)) if name == QuotaLimit::Quota.as_str() => {
                Some(QuotaLimit::Quota)
            }
            _ => None,
        };
        Some(QuotaExceeded {
            limit,
            plan: self.details.plan,
            resets_at: self.details.resets_at.flatten(),
            retry_after: self.retry_after,
        })
    }
}

/// What a `QUOTA_EXCEEDED` answer (429, SPEC §11) says: which allowance
/// ran out, whose, and when it comes back. From
/// [`Error::quota_exceeded`].
///
/// The SDK retries such an answer only when it refills within the retry
/// budget ([`RetryPolicy::max_elapsed`](crate::RetryPolicy::max_elapsed));
/// a quota that starts again in hours, or credits that never refill, come
/// back at once for the caller to decide.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaExceeded {
    /// The key's credits or the (plan's or key's) quota; `None` when the
    /// server named neither.
    pub limit: Option<QuotaLimit>,
    /// The plan whose quota was hit; `None` for a key's own quota and for
    /// credits.
    pub plan: Option<PlanName>,
    /// When the allowance is refilled or its period starts again; `None`
    /// when nothing refills (ask an administrator for credits).
    pub resets_at: Option<Timestamp>,
    /// The wait until then, from `Retry-After` (at most
    /// [`MAX_SERVER_DELAY`](crate::MAX_SERVER_DELAY)); `None` when nothing
    /// refills.
    pub retry_after: Option<Duration>,
}

/// A create or rotate answered as a replay (see [`Error::KeyNotShown`]).
#[non_exhaustive]
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "the server answered a repeat of an earlier request: key {key_id} was made then, \
     but its secret is shown only once; rotate key {key_id} to get a usable secret"
)]
pub struct KeyNotShown {
    /// The key that was made (for a rotation, the new key): the one to
    /// rotate.
    pub key_id: KeyId,
    /// The HTTP status of the replayed answer.
    pub status: StatusCode,
    /// Its `X-Request-Id`, if any.
    pub request_id: Option<String>,
}

/// A problem found before any request was sent.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No API key was given.
    #[error("no API key: set CLORO_API_KEY=sk_live_… in your environment")]
    MissingApiKey,
    /// The API key is not a well-formed Cloro key (SPEC §2).
    #[error(
        "CLORO_API_KEY is not a Cloro API key: {0}; set CLORO_API_KEY=sk_live_… in your environment"
    )]
    MalformedApiKey(FormatError),
    /// No admin token was given.
    #[error("no admin token: set CLORO_ADMIN_TOKEN=<admin token> in your environment")]
    MissingAdminToken,
    /// The admin token cannot be sent as a bearer token.
    #[error("CLORO_ADMIN_TOKEN is not usable: {0}")]
    MalformedAdminToken(&'static str),
    /// The base URL cannot be used.
    #[error("CLORO_BASE_URL {url} is not usable: {why}")]
    BaseUrl {
        /// The URL as given (credentials in it are masked).
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Plain `http://` to a host that is not this machine, without an
    /// explicit opt-in: the key would cross the network in clear text.
    #[error(
        "refusing to send credentials over plain http to {host}; use https, or allow insecure http explicitly"
    )]
    InsecureHttp {
        /// The host.
        host: String,
    },
    /// A generic request outside `/v1/`, where the API key must not go.
    #[error(
        "{path} is not an API route: the API key is sent only to /v1/ paths without . or .. segments"
    )]
    NotApiPath {
        /// The path asked for.
        path: String,
    },
    /// A certificate or the TLS configuration is unusable.
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// What kind of transport failure it was; decides whether a retry can help.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportErrorKind {
    /// No connection could be made (refused, unreachable, name not
    /// resolved): nothing was sent, so a retry is safe.
    Connect,
    /// The TLS handshake failed: a retry will fail the same way.
    Tls,
    /// No full answer, head and body, within the request timeout: a server
    /// that never answers or drips its answer.
    Timeout,
    /// The connection broke after the request was sent.
    Io,
    /// What came back is not HTTP the SDK accepts: another protocol or
    /// garbage, a header section over the SDK's limit, a malformed
    /// chunked body.
    Protocol,
    /// The answer's body is larger than the SDK reads
    /// ([`MAX_RESPONSE_BODY`](crate::MAX_RESPONSE_BODY)); reading stopped
    /// there.
    BodyTooLarge,
}

/// No answer from the server.
#[non_exhaustive]
#[derive(Clone, Debug, thiserror::Error)]
#[error("{}", self.describe())]
pub struct TransportError {
    /// What failed.
    pub kind: TransportErrorKind,
    /// The server's base URL.
    pub target: String,
    /// The cause, as the network stack put it.
    pub message: String,
    /// How many times the request was tried.
    pub attempts: u32,
    /// The error of the network stack (hyper, `io::Error`, rustls) that
    /// `message` describes, for `source()`.
    source: Option<Cause>,
}

/// A cause kept for `source()`; shared, so the errors stay `Clone`.
type Cause = Arc<dyn StdError + Send + Sync>;

impl TransportError {
    pub(crate) fn new(kind: TransportErrorKind, target: &str, message: String) -> Self {
        TransportError {
            kind,
            target: target.to_owned(),
            message,
            attempts: 1,
            source: None,
        }
    }

    /// The same error with `cause` as its `source()`.
    pub(crate) fn caused_by(mut self, cause: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        self.source = Some(Arc::from(cause.into()));
        self
    }

    /// Classifies a failure of hyper-util's client, flattens its causes
    /// into the message and keeps it as the source.
    pub(crate) fn from_client(error: hyper_util::client::legacy::Error, target: &str) -> Self {
        let causes = causes(&error);
        let kind = if causes.iter().any(|cause| cause.is::<rustls::Error>()) {
            TransportErrorKind::Tls
        } else if error.is_connect() {
            TransportErrorKind::Connect
        } else if causes.iter().any(|cause| is_protocol_violation(*cause)) {
            TransportErrorKind::Protocol
        } else {
            TransportErrorKind::Io
        };
        let message = flatten(&causes);
        TransportError::new(kind, target, message).caused_by(error)
    }

    /// Classifies a failure while reading the body (after the head came).
    pub(crate) fn from_body(error: Box<dyn StdError + Send + Sync>, target: &str) -> Self {
        let causes = causes(&*error);
        let kind = if causes.iter().any(|cause| is_protocol_violation(*cause)) {
            TransportErrorKind::Protocol
        } else {
            TransportErrorKind::Io
        };
        let message = format!("reading the answer failed: {}", flatten_all(&causes));
        TransportError::new(kind, target, message).caused_by(error)
    }

    fn describe(&self) -> String {
        let tries = match self.attempts {
            1 => String::new(),
            n => format!(" after {n} attempts"),
        };
        match self.kind {
            TransportErrorKind::Connect => {
                format!("cannot connect to {}{tries}: {}", self.target, self.message)
            }
            TransportErrorKind::Tls => {
                format!(
                    "TLS handshake with {} failed: {}",
                    self.target, self.message
                )
            }
            TransportErrorKind::Timeout => {
                format!(
                    "no full answer from {}{tries}: {}",
                    self.target, self.message
                )
            }
            TransportErrorKind::Io => format!(
                "the connection to {} failed{tries}: {}",
                self.target, self.message
            ),
            TransportErrorKind::Protocol => format!(
                "{} did not answer in HTTP the SDK accepts{tries}: {}",
                self.target, self.message
            ),
            TransportErrorKind::BodyTooLarge => format!(
                "the answer from {} is too large{tries}: {}",
                self.target, self.message
            ),
        }
    }
}

/// An answer the SDK could not read: not JSON, not the documented shape,
/// or an error body without a known code (a proxy's HTML 502, say).
#[non_exhaustive]
#[derive(Clone, Debug, thiserror::Error)]
#[error("cannot read the {status} answer: {message}")]
pub struct DecodeError {
    /// The HTTP status of the answer.
    pub status: StatusCode,
    /// Its `X-Request-Id`, if any.
    pub request_id: Option<String>,
    /// What did not fit.
    pub message: String,
    /// The parser's error, for `source()` (absent for a body that held a
    /// secret: a JSON error can quote the text it choked on).
    source: Option<Cause>,
}

impl DecodeError {
    pub(crate) fn new(status: StatusCode, request_id: Option<String>, message: String) -> Self {
        DecodeError {
            status,
            request_id,
            message,
            source: None,
        }
    }

    /// The same error with `cause` as its `source()`.
    pub(crate) fn caused_by(mut self, cause: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        self.source = Some(Arc::from(cause.into()));
        self
    }
}

/// Whether `cause` says the peer broke HTTP itself (hyper's parse errors,
/// and the `io::Error`s its body decoder reports for bad chunk framing),
/// as opposed to a connection that merely broke.
fn is_protocol_violation(cause: &(dyn StdError + 'static)) -> bool {
    if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
        return hyper.is_parse();
    }
    cause.downcast_ref::<std::io::Error>().is_some_and(|io| {
        matches!(
            io.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
        )
    })
}

/// Every cause of `error`, outermost first. `io::Error` hides the error it
/// wraps from `source()` (it returns the inner error's source instead), so
/// it is unwrapped by hand; otherwise a TLS failure inside two `io::Error`
/// layers could not be recognised.
fn causes<'a>(error: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    // Cause chains are short; the bound only guards against a cycle.
    const MAX_DEPTH: usize = 16;
    let mut found = Vec::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        found.push(cause);
        if found.len() == MAX_DEPTH {
            break;
        }
        next = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
            None => cause.source(),
        };
    }
    found
}

/// `a: b: c` from the causes, without hyper-util's generic outer layer and
/// without the repeats that wrapping in `io::Error` produces.
fn flatten(causes: &[&(dyn StdError + 'static)]) -> String {
    let skip = usize::from(causes.len() > 1);
    flatten_all(causes.get(skip..).unwrap_or_default())
}

/// `a: b: c` from every cause, repeats dropped.
fn flatten_all(causes: &[&(dyn StdError + 'static)]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in causes {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_wrapping_is_seen_through() {
        let inner =
            std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        let outer = std::io::Error::other(inner);
        let found = causes(&outer);
        assert!(
            found
                .iter()
                .any(|cause| cause.downcast_ref::<rustls::Error>().is_some())
        );
    }
}
