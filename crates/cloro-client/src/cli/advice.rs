//! What the `cloro` command tells a person to do about a failure: one line
//! per SPEC §4 code and per transport failure, naming the `cloro` command or
//! setting that fixes it. It lives with the CLI, not the SDK: the advice
//! speaks of CLI commands and environment variables, which a program using
//! the SDK does not have.

use cloro_auth_core::{ErrorCode, QuotaLimit};

use crate::error::{ApiError, Error, TransportErrorKind};

/// One line telling a person what to do about `error`, e.g. `this key was
/// revoked; create a new one with cloro keys create`.
pub fn advice(error: &Error) -> String {
    match error {
        Error::Api(error) => api_advice(error),
        Error::Config(error) => error.to_string(),
        Error::Transport(error) => match error.kind {
            TransportErrorKind::Tls => {
                format!("{error}; check the server certificate, or trust its CA with --ca-cert")
            }
            TransportErrorKind::Timeout => {
                format!("{error}; the server may be overloaded, retry shortly")
            }
            TransportErrorKind::Protocol | TransportErrorKind::BodyTooLarge => format!(
                "{error}; check that CLORO_BASE_URL points at a Cloro server, with https:// where it serves TLS"
            ),
            TransportErrorKind::Connect | TransportErrorKind::Io => {
                format!("{error}; check CLORO_BASE_URL and that the server is running")
            }
        },
        Error::Decode(error) => {
            format!("{error}; check that CLORO_BASE_URL points at a Cloro server")
        }
        Error::Encode(message) => format!("cannot encode the request body: {message}"),
        Error::KeyNotShown(error) => format!(
            "key {id} was made by an earlier run of this request and its secret is shown only once; get a usable one with cloro keys rotate {id}",
            id = error.key_id
        ),
    }
}

/// One line telling a person what to do about a SPEC §4 answer, by code.
fn api_advice(error: &ApiError) -> String {
    let wait = error
        .retry_after
        .map(|after| format!("wait {} s", after.as_secs().max(1)))
        .unwrap_or_else(|| "wait a moment".to_owned());
    match error.code {
            ErrorCode::MissingApiKey => "set CLORO_API_KEY=sk_live_… in your environment".into(),
            ErrorCode::MissingBearerPrefix => {
                "send the key as `Authorization: Bearer sk_live_…`".into()
            }
            ErrorCode::MalformedAuthorization => {
                "send exactly one `Authorization: Bearer <key>` header and never put a key in the URL"
                    .into()
            }
            ErrorCode::InvalidApiKeyFormat => {
                "CLORO_API_KEY is not a Cloro key; copy it again exactly".into()
            }
            ErrorCode::InvalidApiKey => {
                "this key does not exist; check CLORO_API_KEY or create one with cloro keys create"
                    .into()
            }
            ErrorCode::ExpiredApiKey => {
                "this key has expired; create a new one with cloro keys create, or rotate it with cloro keys rotate"
                    .into()
            }
            ErrorCode::RevokedApiKey if error.details.reason.as_deref() == Some("disabled") => {
                "this key is disabled; enable it with cloro keys update ID --enable".into()
            }
            ErrorCode::RevokedApiKey => {
                "this key was revoked; create a new one with cloro keys create".into()
            }
            ErrorCode::InsufficientPermissions => match &error.details.required_scope {
                Some(scope) => format!(
                    "this key lacks the scope {scope}; use a key that has it, or add it with cloro keys update ID --scope {scope}"
                ),
                // The admin API's refusal of a `read` token names no scope.
                None if error.message.contains("read role") => {
                    "this admin token has the read role and may only read; use a token with the admin role (cloro tokens create NAME --role admin)".into()
                }
                None => "this key lacks the scope the route needs; use a key that has it".into(),
            },
            ErrorCode::RateLimitExceeded => match &error.details.plan {
                Some(plan) => format!(
                    "the rate limit of plan {plan} is spent; {wait}, or move the account to a larger plan with cloro accounts set-plan"
                ),
                None => format!("the key's rate limit is spent; {wait} and retry"),
            },
            ErrorCode::ConcurrentLimitExceeded => {
                "too many requests in flight for this key; let some finish, then retry".into()
            }
            ErrorCode::QuotaExceeded => quota_advice(error, &wait),
            ErrorCode::IdempotencyKeyReused => {
                "this idempotency key was used for another request, or its first request is still running; wait a moment and retry, or pass a new --idempotency-key"
                    .into()
            }
            ErrorCode::TooManyFailedAttempts => {
                format!("too many unknown keys from this address; fix CLORO_API_KEY, then {wait}")
            }
            ErrorCode::AuthUnavailable => {
                format!("the key store is unavailable; {wait} and retry")
            }
            ErrorCode::InvalidRequest => match &error.details.field {
                Some(field) => format!("fix the field `{field}`: {}", error.message),
                None => format!("fix the request: {}", error.message),
            },
            ErrorCode::InvalidAdminToken => {
                "set CLORO_ADMIN_TOKEN to the server's admin token (API keys are not admin tokens)"
                    .into()
            }
            ErrorCode::InvalidSignature => {
                "the server did not believe a signed report; check the partner's public keys in [secret_scanning]".into()
            }
            ErrorCode::KeyNotFound => {
                "no key has this id; find it with cloro keys list --account ACCOUNT".into()
            }
            ErrorCode::AccountNotFound => {
                "no such account; an account exists once it has a key or a plan".into()
            }
            ErrorCode::NotFound => "no such route; check CLORO_BASE_URL and the path".into(),
            ErrorCode::MethodNotAllowed => "this route does not take that method".into(),
            ErrorCode::KeyRevoked => {
                "the key is revoked and cannot change; create a new one with cloro keys create"
                    .into()
            }
            ErrorCode::UpstreamUnavailable => {
                "the API behind the gateway did not answer; retry shortly".into()
            }
            ErrorCode::UpstreamTimeout => {
                "the API behind the gateway took too long to answer; retry shortly".into()
            }
            ErrorCode::InternalError => {
                "the server failed; retry, or report it with the request id".into()
            }
            // A code added to the core after this SDK: the server's message
            // is the best advice there is.
            _ => error.message.clone(),
        }
}

/// `QUOTA_EXCEEDED`: when it comes back, and who can give more.
fn quota_advice(error: &ApiError, wait: &str) -> String {
    let Some(quota) = error.quota_exceeded() else {
        return error.message.clone();
    };
    let back = match (quota.resets_at, quota.retry_after) {
        (Some(at), _) => format!(
            "it comes back at {}",
            at.round(jiff::Unit::Second).unwrap_or(at)
        ),
        (None, Some(_)) => wait.to_owned(),
        (None, None) => "nothing refills it".to_owned(),
    };
    match (quota.limit, quota.plan) {
        (Some(QuotaLimit::Credits), _) => format!(
            "this key's credits are used up; {back}, or add some with cloro keys credits ID --add N"
        ),
        (_, Some(plan)) => format!(
            "the quota of plan {plan} is used up for this period; {back}, or move the account to a larger plan with cloro accounts set-plan"
        ),
        _ => format!(
            "this key's quota is used up for this period; {back}, or raise it with cloro keys update ID --quota N/month"
        ),
    }
}

#[cfg(test)]
mod tests {
    use cloro_auth_core::wire::ErrorDetails;
    use http::StatusCode;

    use super::*;

    #[test]
    fn advice_follows_the_code() {
        let error = ApiError {
            code: ErrorCode::RevokedApiKey,
            status: StatusCode::UNAUTHORIZED,
            message: "revoked".into(),
            request_id: None,
            retry_after: None,
            details: ErrorDetails::default(),
            rate_limit: None,
            attempts: 1,
        };
        assert_eq!(
            api_advice(&error),
            "this key was revoked; create a new one with cloro keys create"
        );
        let disabled = ApiError {
            details: ErrorDetails {
                reason: Some("disabled".into()),
                ..ErrorDetails::default()
            },
            ..error
        };
        assert!(api_advice(&disabled).contains("--enable"));
    }
}
