//! Building responses: the SPEC §4 error body with its status, challenge and
//! `Retry-After`, JSON bodies, and the SPEC §5 limit headers. Every error
//! answer of the server comes from here, so they cannot disagree.

use bytes::Bytes;
use cloro_auth_core::wire::{ErrorBody, ErrorDetails, ErrorObject};
use cloro_auth_core::{AuthError, Challenge, ErrorCode};
use cloro_keystore::{ConcurrencyState, QuotaState, RateState};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
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
    // Sized for a key's info or an error body at once, so the buffer is not
    // grown (and copied) field by field.
    let mut bytes = Vec::with_capacity(768);
    match serde_json::to_writer(&mut bytes, value) {
        Ok(()) => {
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

// Header names, parsed once: a name given as text is checked and hashed
// again on every insert.
pub(crate) const X_CLORO_KEY_ID: HeaderName = HeaderName::from_static("x-cloro-key-id");
pub(crate) const X_CLORO_ACCOUNT_ID: HeaderName = HeaderName::from_static("x-cloro-account-id");
pub(crate) const X_CLORO_ENVIRONMENT: HeaderName = HeaderName::from_static("x-cloro-environment");
pub(crate) const X_CLORO_SCOPES: HeaderName = HeaderName::from_static("x-cloro-scopes");
const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const X_CONCURRENT_LIMIT: HeaderName = HeaderName::from_static("x-concurrent-limit");
const X_CONCURRENT_CURRENT: HeaderName = HeaderName::from_static("x-concurrent-current");
const X_CONCURRENT_REMAINING: HeaderName = HeaderName::from_static("x-concurrent-remaining");

/// One IETF list member, `"name";a=N;b=M`, appended to `out` (numbers
/// written with `itoa`: no formatting machinery, no temporary strings).
fn push_member(out: &mut Vec<u8>, name: &str, a: (&str, u64), b: (&str, u64)) {
    let mut digits = itoa::Buffer::new();
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\";");
    out.extend_from_slice(a.0.as_bytes());
    out.push(b'=');
    out.extend_from_slice(digits.format(a.1).as_bytes());
    out.push(b';');
    out.extend_from_slice(b.0.as_bytes());
    out.push(b'=');
    out.extend_from_slice(digits.format(b.1).as_bytes());
}

/// Adds `X-RateLimit-*` and the IETF `RateLimit-Policy`/`RateLimit` fields.
///
/// All five values are written into one buffer and each header holds a
/// slice of it: one allocation for the five, where a value each would
/// cost five.
pub fn add_rate_headers(headers: &mut HeaderMap, rate: &RateState, quota: Option<&QuotaState>) {
    let mut text = Vec::with_capacity(if quota.is_some() { 176 } else { 96 });
    let mut digits = itoa::Buffer::new();
    let mut ends = [0usize; 5];
    text.extend_from_slice(digits.format(rate.limit).as_bytes());
    ends[0] = text.len();
    text.extend_from_slice(digits.format(rate.remaining).as_bytes());
    ends[1] = text.len();
    text.extend_from_slice(digits.format(rate.reset_seconds).as_bytes());
    ends[2] = text.len();
    push_member(
        &mut text,
        "default",
        ("q", u64::from(rate.limit)),
        ("w", u64::from(rate.window_seconds)),
    );
    // SPEC §11: the quota is the second policy of the same fields.
    if let Some(quota) = quota {
        text.extend_from_slice(b", ");
        push_member(
            &mut text,
            "quota",
            ("q", quota.limit),
            ("w", quota.window_seconds),
        );
    }
    ends[3] = text.len();
    push_member(
        &mut text,
        "default",
        ("r", u64::from(rate.remaining)),
        ("t", rate.reset_seconds),
    );
    if let Some(quota) = quota {
        text.extend_from_slice(b", ");
        push_member(
            &mut text,
            "quota",
            ("r", quota.remaining),
            ("t", quota.reset_seconds),
        );
    }
    ends[4] = text.len();
    let text = Bytes::from(text);
    let names = [
        X_RATELIMIT_LIMIT,
        X_RATELIMIT_REMAINING,
        X_RATELIMIT_RESET,
        RATELIMIT_POLICY,
        RATELIMIT,
    ];
    let mut start = 0;
    for (name, end) in names.into_iter().zip(ends) {
        // Digits, quotes, `;`, `=`, `,` and letters: always a valid value.
        if let Ok(value) = HeaderValue::from_maybe_shared(text.slice(start..end)) {
            headers.insert(name, value);
        }
        start = end;
    }
}

/// Adds `X-Concurrent-Limit`, `-Current` and `-Remaining`.
pub fn add_concurrency_headers(headers: &mut HeaderMap, state: &ConcurrencyState) {
    headers.insert(X_CONCURRENT_LIMIT, HeaderValue::from(state.limit));
    headers.insert(X_CONCURRENT_CURRENT, HeaderValue::from(state.current));
    headers.insert(X_CONCURRENT_REMAINING, HeaderValue::from(state.remaining));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_headers_are_the_ietf_lists_byte_for_byte() {
        let rate = RateState {
            limit: 1000,
            window_seconds: 3600,
            remaining: 999,
            reset_seconds: 4,
        };
        let quota = QuotaState {
            limit: 10_000,
            window_seconds: 2_678_400,
            remaining: 0,
            reset_seconds: 86_399,
        };
        let mut headers = HeaderMap::new();
        add_rate_headers(&mut headers, &rate, None);
        assert_eq!(headers["ratelimit-policy"], "\"default\";q=1000;w=3600");
        assert_eq!(headers["ratelimit"], "\"default\";r=999;t=4");
        assert_eq!(headers["x-ratelimit-limit"], "1000");
        add_rate_headers(&mut headers, &rate, Some(&quota));
        assert_eq!(
            headers["ratelimit-policy"],
            "\"default\";q=1000;w=3600, \"quota\";q=10000;w=2678400"
        );
        assert_eq!(
            headers["ratelimit"],
            "\"default\";r=999;t=4, \"quota\";r=0;t=86399"
        );
        assert_eq!(headers.get_all("ratelimit").iter().count(), 1);
    }
}
