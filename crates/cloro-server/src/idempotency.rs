//! `Idempotency-Key` on every admin `POST` (SPEC §11), in one place: the
//! admin API hands each authenticated `POST` here with the action to run,
//! so a new `POST` route is covered without a line of its own.
//!
//! A request with a key claims it in the [`IdempotencyStore`] before the
//! action runs (an atomic insert-if-absent, so two concurrent duplicates
//! never both run), then stores the answer or releases the claim:
//!
//! - 2xx and 4xx answers are remembered for [`IDEMPOTENCY_WINDOW`] (a retry
//!   of a 400 gets the same 400), except 401 and 429, which say nothing
//!   about the request itself;
//! - 5xx answers release the claim: nothing may have happened, and the
//!   client should be able to try again.
//!
//! A repeat within the window gets the first answer with
//! `Idempotent-Replayed: true`; the key with another request, or while the
//! first still runs, is 409 `IDEMPOTENCY_KEY_REUSED`. Time comes from the
//! verifier's clock, so tests move it past the window.
//!
//! The plaintext key of a create or rotate answer, and a new webhook's
//! secret, a named admin token and a portal link exist once (SPEC §6, §12,
//! §13): the top-level `key`, `secret`, `token` and `url` are set to `null`
//! before the answer is stored, so a replay carries `null` there and
//! nothing secret is ever at rest.

use bytes::Bytes;
use cloro_auth_core::ErrorCode;
use cloro_guard::{AnsweredCode, ApiError, Body, full};
use cloro_keystore::LogLimit;
use cloro_keystore::{
    Claim, ClaimToken, IDEMPOTENCY_LEASE, IDEMPOTENCY_WINDOW, IdempotencySlot, RequestFingerprint,
    StoreError, StoredAnswer,
};
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;

use crate::app::App;

/// The request header (SPEC §11).
pub(crate) const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The header a replayed answer carries.
pub(crate) const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// The longest key accepted (SPEC §11).
const MAX_KEY_LEN: usize = 255;

/// Whose keys these are. One admin token today, so one scope; a per-token
/// scope would return, say, the token's id here, and nothing else changes.
fn scope(_parts: &Parts) -> &'static str {
    "admin"
}

/// The request's `Idempotency-Key`, if it sent one; a field that is not one
/// valid key is a 400 naming the field.
pub(crate) fn key_of(headers: &HeaderMap) -> Result<Option<&[u8]>, Box<ApiError>> {
    let mut fields = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = fields.next() else {
        return Ok(None);
    };
    if fields.next().is_some() {
        return Err(refuse(
            "Idempotency-Key was sent more than once; send one field with one key",
        ));
    }
    let key = value.as_bytes();
    if key.is_empty() {
        return Err(refuse(
            "Idempotency-Key is empty; send 1 to 255 visible ASCII characters, e.g. a UUID",
        ));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(refuse(format!(
            "Idempotency-Key is {} bytes long; use at most {MAX_KEY_LEN} visible ASCII characters, e.g. a UUID",
            key.len()
        )));
    }
    if !key.iter().all(|byte| (0x21..=0x7e).contains(byte)) {
        return Err(refuse(
            "Idempotency-Key may hold only visible ASCII characters (no spaces, no control \
             or non-ASCII characters); a UUID is a good key",
        ));
    }
    Ok(Some(key))
}

fn refuse(message: impl Into<String>) -> Box<ApiError> {
    Box::new(ApiError::invalid_field("Idempotency-Key", message))
}

/// Runs `action` at most once per key and request within the window (see
/// the module docs). `body` is the request body already read; `action`
/// gets it and answers the request.
pub(crate) async fn once<F, Fut>(
    app: &App,
    parts: &Parts,
    key: &[u8],
    body: Bytes,
    request_id: &str,
    action: F,
) -> Response<Body>
where
    F: FnOnce(Bytes) -> Fut,
    Fut: Future<Output = Response<Body>>,
{
    let slot = IdempotencySlot::new(scope(parts), key);
    // The normal path (routing normalised it) and the query as sent: a
    // request is the same only if everything the action reads is.
    let fingerprint = RequestFingerprint::of(&[
        parts.method.as_str().as_bytes(),
        parts.uri.path().as_bytes(),
        parts.uri.query().unwrap_or_default().as_bytes(),
        &body,
    ]);
    let store = app.idempotency();
    let claim = match ClaimToken::generate() {
        Ok(token) => {
            let now = app.clock().now();
            store
                .claim(&slot, &fingerprint, &token, now, IDEMPOTENCY_LEASE)
                .await
        }
        Err(error) => Err(error),
    };
    let token = match claim {
        Ok(Claim::Claimed(token)) => token,
        Ok(Claim::Replay(answer)) => return replay(answer),
        Ok(Claim::InProgress) => {
            return ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "a request with this Idempotency-Key is still in progress; retry shortly",
            )
            .into_response(request_id);
        }
        Ok(Claim::Reused) => {
            return ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was used for another request (method, path or body) in \
                 the last 24 h; use a new key for a new request",
            )
            .into_response(request_id);
        }
        Ok(_) => return unavailable(None, request_id),
        Err(error) => return unavailable(Some(&error), request_id),
    };

    let response = action(body).await;
    let status = response.status();
    if !remembered(status) {
        if let Err(error) = store.release(&slot, &token).await {
            // The lease ends the claim soon anyway.
            warn_store(&error, "an idempotency claim could not be released");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    // Our answers are whole JSON bodies; one that fails to collect is a bug.
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            tracing::error!(%error, "an admin answer could not be read back");
            let _ = store.release(&slot, &token).await;
            return ApiError::new(ErrorCode::InternalError, "the answer could not be produced")
                .into_response(request_id);
        }
    };
    let answer = StoredAnswer {
        status: status.as_u16(),
        content_type: parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
        code: parts
            .extensions
            .get::<AnsweredCode>()
            .map(|code| code.0.as_str().to_owned()),
        body: without_secret(&bytes),
    };
    let now = app.clock().now();
    match store
        .complete(&slot, &token, &answer, now, IDEMPOTENCY_WINDOW)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("an idempotency claim ran out before its answer was stored");
        }
        // The action ran: answer it. Until the lease ends a retry is told
        // the request is in progress; after that it runs again.
        Err(error) => warn_store(&error, "an idempotency answer could not be stored"),
    }
    Response::from_parts(parts, full(bytes))
}

/// Whether an answer with `status` is kept for replays.
fn remembered(status: StatusCode) -> bool {
    (status.is_success() || status.is_client_error())
        && status != StatusCode::UNAUTHORIZED
        && status != StatusCode::TOO_MANY_REQUESTS
}

/// The top-level fields that hold a secret shown once: `key` (the
/// plaintext of a key create or rotate), `secret` (a webhook's), `token`
/// (a named admin token) and `url` (a portal link, which holds its secret).
const SHOWN_ONCE: [&str; 4] = ["key", "secret", "token", "url"];

/// The body as stored: a top-level `key` or `secret` string becomes
/// `null`; anything else is kept byte for byte.
fn without_secret(body: &[u8]) -> String {
    if let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(body)
        && SHOWN_ONCE
            .iter()
            .any(|field| object.get(*field).is_some_and(serde_json::Value::is_string))
    {
        for field in SHOWN_ONCE {
            if object.get(field).is_some_and(serde_json::Value::is_string) {
                object.insert(field.to_owned(), serde_json::Value::Null);
            }
        }
        // Failing is unreachable for a map just parsed; never store a secret.
        return serde_json::to_string(&object).unwrap_or_else(|_| "{\"key\":null}".to_owned());
    }
    String::from_utf8_lossy(body).into_owned()
}

/// The first answer again, marked as a replay.
fn replay(answer: StoredAnswer) -> Response<Body> {
    let mut response = Response::new(full(answer.body));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    if let Some(value) = answer
        .content_type
        .and_then(|text| HeaderValue::from_str(&text).ok())
    {
        headers.insert(CONTENT_TYPE, value);
    }
    headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    if let Some(code) = answer.code.as_deref().and_then(ErrorCode::from_code) {
        response.extensions_mut().insert(AnsweredCode(code));
    }
    response
}

/// 503 when the record cannot be read or written: the action did not run.
fn unavailable(error: Option<&StoreError>, request_id: &str) -> Response<Body> {
    if let Some(error) = error {
        warn_store(error, "an idempotency key could not be claimed");
    }
    ApiError::new(
        ErrorCode::AuthUnavailable,
        "the store that remembers Idempotency-Key is unavailable; nothing was changed, retry shortly",
    )
    .with_retry_after(1)
    .into_response(request_id)
}

fn warn_store(error: &StoreError, what: &'static str) {
    // Any client can make these happen while the store is down.
    static STORE_DOWN: LogLimit = LogLimit::per_second();
    if let Some(suppressed) = STORE_DOWN.admit() {
        tracing::warn!(%error, suppressed, "{what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(IDEMPOTENCY_KEY, HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    #[test]
    fn keys_are_visible_ascii_up_to_255() {
        assert_eq!(key_of(&HeaderMap::new()).unwrap(), None);
        let long = [b'k'; 255];
        for good in [&b"a"[..], b"0d3c-uuid", b"!~{}\"\\", &long] {
            assert_eq!(key_of(&headers(&[good])).unwrap(), Some(good));
        }
        let too_long = [b'k'; 256];
        for bad in [&b""[..], b"a b", b"tab\there", b"caf\xc3\xa9", &too_long] {
            let error = key_of(&headers(&[bad])).unwrap_err();
            assert_eq!(error.code(), ErrorCode::InvalidRequest, "{bad:?}");
            assert_eq!(error.field(), Some("Idempotency-Key"), "{bad:?}");
        }
        let twice = key_of(&headers(&[b"a", b"a"])).unwrap_err();
        assert_eq!(twice.field(), Some("Idempotency-Key"));
    }

    #[test]
    fn which_answers_are_remembered() {
        for kept in [200, 201, 204, 400, 404, 409] {
            assert!(remembered(StatusCode::from_u16(kept).unwrap()), "{kept}");
        }
        for released in [401, 429, 500, 502, 503, 504] {
            assert!(
                !remembered(StatusCode::from_u16(released).unwrap()),
                "{released}"
            );
        }
    }

    #[test]
    fn the_plaintext_key_never_reaches_the_record() {
        let created = br#"{"key":"sk_live_secret","key_info":{"id":"key_1"}}"#;
        let stored: serde_json::Value = serde_json::from_str(&without_secret(created)).unwrap();
        assert_eq!(stored["key"], serde_json::Value::Null);
        assert_eq!(stored["key_info"]["id"], "key_1");
        let info = br#"{"id":"key_1","name":"key"}"#;
        assert_eq!(without_secret(info).as_bytes(), info);
        let error = br#"{"error":{"code":"INVALID_REQUEST"}}"#;
        assert_eq!(without_secret(error).as_bytes(), error);
        let webhook = br#"{"webhook":{"id":"wh_1"},"secret":"whsec_c2VjcmV0"}"#;
        let stored: serde_json::Value = serde_json::from_str(&without_secret(webhook)).unwrap();
        assert_eq!(stored["secret"], serde_json::Value::Null);
        assert_eq!(stored["webhook"]["id"], "wh_1");
        let portal =
            br#"{"url":"http://h/portal/enter?link=ab","expires_at":"2026-12-04T00:00:00Z"}"#;
        let stored: serde_json::Value = serde_json::from_str(&without_secret(portal)).unwrap();
        assert_eq!(stored["url"], serde_json::Value::Null);
        assert_eq!(stored["expires_at"], "2026-12-04T00:00:00Z");
    }
}
