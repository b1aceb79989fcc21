//! Building responses: the SPEC §4 error body with its status, challenge and
//! `Retry-After`, JSON bodies, and the SPEC §5 limit headers. Every error
//! answer of the server comes from here, so they cannot disagree.

use bytes::Bytes;
use cloro_auth_core::wire::{ErrorBody, ErrorDetails, ErrorObject};
use cloro_auth_core::{AuthError, Challenge, ErrorCode};
use cloro_keystore::{ConcurrencyState, QuotaState, RateState};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use serde::Serialize;

/// Errors a response body may fail with (upstream bodies, mostly).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response the server sends.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body with these bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut response = Response::new(full(bytes));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(error) => {
            tracing::error!(%error, "a response could not be serialised");
            ApiError::new(
                ErrorCode::InternalError,
                "the response could not be produced; this is a bug",
            )
            .into_response("")
        }
    }
}

/// The SPEC §4 code of an error answer, set by [`ApiError::into_response`]
/// as a response extension so that whoever counts answers (the server's
/// metrics) need not parse its own JSON. Answers without one (successes,
/// and whatever an upstream said) raised no error here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnsweredCode(pub ErrorCode);

/// An error answer under construction: code, message, details, and the
/// headers the code calls for.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    details: ErrorDetails,
    challenge: Option<String>,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: ErrorDetails::default(),
            challenge: None,
            retry_after: None,
        }
    }

    /// `INVALID_REQUEST` naming the field at fault.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut error = ApiError::new(ErrorCode::InvalidRequest, message);
        error.details.field = Some(field.into());
        error
    }

    /// The answer for an authentication failure: its challenge, retry
    /// delay and details exactly as SPEC §4 says.
    pub fn from_auth(error: &AuthError) -> Self {
        ApiError {
            code: error.code(),
            message: error.to_string(),
            details: ErrorDetails::of_auth_error(error),
            challenge: error.challenge().map(|challenge| challenge.to_string()),
            retry_after: error.retry_after(),
        }
    }

    /// `INVALID_ADMIN_TOKEN` with the admin realm's challenge.
    pub fn admin_token() -> Self {
        let mut error = ApiError::new(
            ErrorCode::InvalidAdminToken,
            "send the admin token as `Authorization: Bearer <admin token>`; API keys are not accepted here",
        );
        error.challenge = Some(Challenge::admin_invalid_token().to_string());
        error
    }

    /// Sets the `WWW-Authenticate` challenge of a 401 outside the API-key
    /// and admin realms (a signed partner report).
    pub fn with_challenge(mut self, challenge: &'static str) -> Self {
        self.challenge = Some(challenge.to_owned());
        self
    }

    /// Sets `Retry-After` (at least 1 s), as 503s need.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self.details.retry_after = Some(seconds.max(1));
        self
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The finished response.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: ErrorObject {
                code: self.code,
                message: self.message,
                details: self.details,
                timestamp: jiff::Timestamp::now(),
                request_id: request_id.to_owned(),
            },
        };
        let mut response = json(status, &body);
        let headers = response.headers_mut();
        if let Some(challenge) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(WWW_AUTHENTICATE, challenge);
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // For the `code` label of `cloro_requests_total`.
        response.extensions_mut().insert(AnsweredCode(self.code));
        response
    }
}

/// Adds `X-RateLimit-*` and the IETF `RateLimit-Policy`/`RateLimit` fields.
pub fn add_rate_headers(headers: &mut HeaderMap, rate: &RateState, quota: Option<&QuotaState>) {
    headers.insert("x-ratelimit-limit", HeaderValue::from(rate.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(rate.remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(rate.reset_seconds));
    let mut policy = format!("\"default\";q={};w={}", rate.limit, rate.window_seconds);
    let mut state = format!("\"default\";r={};t={}", rate.remaining, rate.reset_seconds);
    // SPEC §11: the quota is the second policy of the same fields.
    if let Some(quota) = quota {
        policy.push_str(&format!(
            ", \"quota\";q={};w={}",
            quota.limit, quota.window_seconds
        ));
        state.push_str(&format!(
            ", \"quota\";r={};t={}",
            quota.remaining, quota.reset_seconds
        ));
    }
    for (name, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}

/// Adds `X-Concurrent-Limit`, `-Current` and `-Remaining`.
pub fn add_concurrency_headers(headers: &mut HeaderMap, state: &ConcurrencyState) {
    headers.insert("x-concurrent-limit", HeaderValue::from(state.limit));
    headers.insert("x-concurrent-current", HeaderValue::from(state.current));
    headers.insert("x-concurrent-remaining", HeaderValue::from(state.remaining));
}

impl ApiError {
    /// The same error with another message, for when the code's usual
    /// message would mislead (an API key sent as the admin token).
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// The message: what went wrong and what to do.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// `details.field`, if the error names one.
    pub fn field(&self) -> Option<&str> {
        self.details.field.as_deref()
    }
}
