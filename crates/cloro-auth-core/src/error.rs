//! The error taxonomy of SPEC §4: every code a client can see, its HTTP
//! status, its `WWW-Authenticate` challenge and a message that tells a person
//! what to do next.
//!
//! The code string is the API; the message is for people and may improve.

use core::fmt;

use crate::name::{PlanName, Scope};

/// Every error code of SPEC §4, authentication and otherwise.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No `Authorization` field, or an empty one.
    MissingApiKey,
    /// A field that does not use the `Bearer` scheme.
    MissingBearerPrefix,
    /// `Bearer` with a bad token, separator, parameters; several fields; a key in the URL.
    MalformedAuthorization,
    /// A token that is not a well-formed Cloro key.
    InvalidApiKeyFormat,
    /// A well-formed key that does not exist.
    InvalidApiKey,
    /// A key past its `expires_at`.
    ExpiredApiKey,
    /// A revoked or disabled key.
    RevokedApiKey,
    /// A valid key without the scope the route needs.
    InsufficientPermissions,
    /// The key's or account's rate limit is spent.
    RateLimitExceeded,
    /// Too many requests in flight for the key.
    ConcurrentLimitExceeded,
    /// This client address sent too many unknown keys.
    TooManyFailedAttempts,
    /// The key's credits or its (account's) quota for the period are used up (§11).
    QuotaExceeded,
    /// The key cannot be checked right now.
    AuthUnavailable,
    /// Bad JSON, an unknown or invalid field, a bad path.
    InvalidRequest,
    /// A missing or wrong admin token.
    InvalidAdminToken,
    /// A secret-scanning report whose signature is missing or does not
    /// verify (§12): nothing was changed.
    InvalidSignature,
    /// No key with that id.
    KeyNotFound,
    /// No account with that id.
    AccountNotFound,
    /// No such route.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// Changing or rotating a revoked key.
    KeyRevoked,
    /// An `Idempotency-Key` sent again with another request, or while its
    /// first request is still running (§11).
    IdempotencyKeyReused,
    /// The upstream API did not answer.
    UpstreamUnavailable,
    /// The upstream API sent no response head within `--upstream-timeout`.
    UpstreamTimeout,
    /// A bug or an unexpected failure on our side.
    InternalError,
}

impl ErrorCode {
    /// Every code, in SPEC §4 order.
    pub const ALL: [ErrorCode; 25] = [
        ErrorCode::MissingApiKey,
        ErrorCode::MissingBearerPrefix,
        ErrorCode::MalformedAuthorization,
        ErrorCode::InvalidApiKeyFormat,
        ErrorCode::InvalidApiKey,
        ErrorCode::ExpiredApiKey,
        ErrorCode::RevokedApiKey,
        ErrorCode::InsufficientPermissions,
        ErrorCode::RateLimitExceeded,
        ErrorCode::ConcurrentLimitExceeded,
        ErrorCode::TooManyFailedAttempts,
        ErrorCode::QuotaExceeded,
        ErrorCode::AuthUnavailable,
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidAdminToken,
        ErrorCode::InvalidSignature,
        ErrorCode::KeyNotFound,
        ErrorCode::AccountNotFound,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::KeyRevoked,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::UpstreamUnavailable,
        ErrorCode::UpstreamTimeout,
        ErrorCode::InternalError,
    ];

    /// The code as it appears in `error.code`, e.g. `INVALID_API_KEY`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MissingApiKey => "MISSING_API_KEY",
            ErrorCode::MissingBearerPrefix => "MISSING_BEARER_PREFIX",
            ErrorCode::MalformedAuthorization => "MALFORMED_AUTHORIZATION",
            ErrorCode::InvalidApiKeyFormat => "INVALID_API_KEY_FORMAT",
            ErrorCode::InvalidApiKey => "INVALID_API_KEY",
            ErrorCode::ExpiredApiKey => "EXPIRED_API_KEY",
            ErrorCode::RevokedApiKey => "REVOKED_API_KEY",
            ErrorCode::InsufficientPermissions => "INSUFFICIENT_PERMISSIONS",
            ErrorCode::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            ErrorCode::ConcurrentLimitExceeded => "CONCURRENT_LIMIT_EXCEEDED",
            ErrorCode::TooManyFailedAttempts => "TOO_MANY_FAILED_ATTEMPTS",
            ErrorCode::QuotaExceeded => "QUOTA_EXCEEDED",
            ErrorCode::AuthUnavailable => "AUTH_UNAVAILABLE",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::InvalidAdminToken => "INVALID_ADMIN_TOKEN",
            ErrorCode::InvalidSignature => "INVALID_SIGNATURE",
            ErrorCode::KeyNotFound => "KEY_NOT_FOUND",
            ErrorCode::AccountNotFound => "ACCOUNT_NOT_FOUND",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::KeyRevoked => "KEY_REVOKED",
            ErrorCode::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            ErrorCode::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            ErrorCode::UpstreamTimeout => "UPSTREAM_TIMEOUT",
            ErrorCode::InternalError => "INTERNAL_ERROR",
        }
    }

    /// The code named by `text`, if it is one of ours.
    pub fn from_code(text: &str) -> Option<Self> {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == text)
    }

    /// The HTTP status SPEC §4 gives this code.
    pub const fn status(self) -> u16 {
        match self {
            ErrorCode::MalformedAuthorization | ErrorCode::InvalidRequest => 400,
            ErrorCode::MissingApiKey
            | ErrorCode::MissingBearerPrefix
            | ErrorCode::InvalidApiKeyFormat
            | ErrorCode::InvalidApiKey
            | ErrorCode::ExpiredApiKey
            | ErrorCode::RevokedApiKey
            | ErrorCode::InvalidAdminToken
            | ErrorCode::InvalidSignature => 401,
            ErrorCode::InsufficientPermissions => 403,
            ErrorCode::KeyNotFound | ErrorCode::AccountNotFound | ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::KeyRevoked | ErrorCode::IdempotencyKeyReused => 409,
            ErrorCode::RateLimitExceeded
            | ErrorCode::ConcurrentLimitExceeded
            | ErrorCode::TooManyFailedAttempts
            | ErrorCode::QuotaExceeded => 429,
            ErrorCode::InternalError => 500,
            ErrorCode::UpstreamUnavailable => 502,
            ErrorCode::AuthUnavailable => 503,
            ErrorCode::UpstreamTimeout => 504,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an `Authorization` field (or the request around it) is malformed.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// `Bearer` and nothing after it.
    EmptyToken,
    /// Something other than spaces between `Bearer` and the token (a tab, a
    /// no-break space, a comma).
    BadSeparator,
    /// A character outside the RFC 6750 `b64token` alphabet, or `=` not at the end.
    InvalidCharacter,
    /// Text after the token: auth-params or a comma-separated list.
    TrailingData,
    /// More than one `Authorization` field.
    MultipleFields,
    /// A key in the query string (RFC 6750 §5.3).
    KeyInUrl,
}

impl Malformed {
    const fn message(self) -> &'static str {
        match self {
            Malformed::EmptyToken => {
                "the Authorization header says Bearer but carries no key; send `Authorization: Bearer sk_live_...`"
            }
            Malformed::BadSeparator => {
                "separate Bearer from the key with a plain space; tabs, no-break spaces and commas are not allowed"
            }
            Malformed::InvalidCharacter => {
                "the bearer token contains a character that no API key has; copy the key again without quotes or line breaks"
            }
            Malformed::TrailingData => {
                "the Authorization header has text after the key; send only `Bearer` followed by the key"
            }
            Malformed::MultipleFields => "send exactly one Authorization header",
            Malformed::KeyInUrl => {
                "API keys must not be sent in the URL, where logs keep them; send the key in the Authorization header and rotate the exposed key"
            }
        }
    }
}

/// Which rule of SPEC §2 a token broke.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FormatError {
    /// Not `sk_live_` or `sk_test_`.
    WrongPrefix,
    /// The right prefix but not 48 characters.
    WrongLength,
    /// A character after the prefix that is not `0-9a-f`.
    NotLowerHex,
    /// The CRC-32 does not match: a typo or an invented key.
    BadChecksum,
    /// Over 256 bytes, refused without a look at the rest.
    TooLong,
}

impl FormatError {
    const fn message(self) -> &'static str {
        match self {
            FormatError::WrongPrefix => {
                "this is not a Cloro API key: keys start with sk_live_ or sk_test_; check that you sent the right credential"
            }
            FormatError::WrongLength => {
                "this API key has the wrong length (a key is 48 characters); it was probably cut off when copied"
            }
            FormatError::NotLowerHex => {
                "this API key has characters a key never has (after the prefix only 0-9 and a-f); copy it again exactly"
            }
            FormatError::BadChecksum => {
                "this API key fails its checksum, so it was mistyped or altered; copy it again exactly"
            }
            FormatError::TooLong => {
                "the bearer token is far too long to be an API key (over 256 bytes)"
            }
        }
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl core::error::Error for FormatError {}

/// Why a key that exists is refused: it was revoked, or an administrator
/// disabled it (which can be undone).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RevocationReason {
    /// Revoked for good.
    Revoked,
    /// Switched off; `PATCH {"enabled": true}` switches it back on.
    Disabled,
}

impl RevocationReason {
    /// `revoked` or `disabled`, as in `details.reason`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Revoked => "revoked",
            RevocationReason::Disabled => "disabled",
        }
    }
}

/// Which allowance of SPEC §11 refused a request: `details.limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuotaLimit {
    /// The key's own credits.
    Credits,
    /// The plan's or the key's quota for the period.
    Quota,
}

impl QuotaLimit {
    /// `credits` or `quota`, as in `details.limit`.
    pub const fn as_str(self) -> &'static str {
        match self {
            QuotaLimit::Credits => "credits",
            QuotaLimit::Quota => "quota",
        }
    }
}

/// Why an API request was not authenticated: exactly one per failed request.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No credentials at all.
    MissingApiKey,
    /// Credentials without the `Bearer` scheme.
    MissingBearerPrefix,
    /// A `Bearer` field (or request) that breaks the grammar.
    MalformedAuthorization(Malformed),
    /// A token that is not a Cloro key.
    InvalidApiKeyFormat(FormatError),
    /// A well-formed key that does not exist.
    InvalidApiKey,
    /// A key past its expiry.
    ExpiredApiKey,
    /// A revoked or disabled key.
    RevokedApiKey(RevocationReason),
    /// The key lacks the route's scope.
    InsufficientPermissions {
        /// The scope the route needs.
        required: Scope,
    },
    /// The rate limit is spent.
    RateLimitExceeded {
        /// Seconds until one more request is allowed (at least 1).
        retry_after: u64,
        /// The plan whose policy was hit; `None` for a key's own policy.
        plan: Option<PlanName>,
    },
    /// Too many requests of this key in flight.
    ConcurrentLimitExceeded {
        /// The key's concurrency limit.
        limit: u32,
    },
    /// This client address sent too many unknown keys.
    TooManyFailedAttempts {
        /// Seconds until the next attempt is allowed (at least 1).
        retry_after: u64,
    },
    /// The key's credits, or its (account's) quota for the period, cannot
    /// pay for this request (SPEC §11).
    QuotaExceeded {
        /// Which allowance ran out.
        limit: QuotaLimit,
        /// The plan whose quota was hit; `None` for a key's own quota and
        /// for credits.
        plan: Option<PlanName>,
        /// When the allowance is next refilled or its period starts again,
        /// in seconds since the Unix epoch; `None` when nothing refills.
        resets_at: Option<i64>,
        /// Whole seconds until then, rounded up (at least 1); `None` when
        /// nothing refills, and then no `Retry-After` is sent.
        retry_after: Option<u64>,
    },
    /// The key store cannot be reached and the key is not cached.
    AuthUnavailable {
        /// Seconds after which a retry is sensible (at least 1).
        retry_after: u64,
    },
}

impl AuthError {
    /// The SPEC §4 code.
    pub const fn code(&self) -> ErrorCode {
        match self {
            AuthError::MissingApiKey => ErrorCode::MissingApiKey,
            AuthError::MissingBearerPrefix => ErrorCode::MissingBearerPrefix,
            AuthError::MalformedAuthorization(_) => ErrorCode::MalformedAuthorization,
            AuthError::InvalidApiKeyFormat(_) => ErrorCode::InvalidApiKeyFormat,
            AuthError::InvalidApiKey => ErrorCode::InvalidApiKey,
            AuthError::ExpiredApiKey => ErrorCode::ExpiredApiKey,
            AuthError::RevokedApiKey(_) => ErrorCode::RevokedApiKey,
            AuthError::InsufficientPermissions { .. } => ErrorCode::InsufficientPermissions,
            AuthError::RateLimitExceeded { .. } => ErrorCode::RateLimitExceeded,
            AuthError::ConcurrentLimitExceeded { .. } => ErrorCode::ConcurrentLimitExceeded,
            AuthError::TooManyFailedAttempts { .. } => ErrorCode::TooManyFailedAttempts,
            AuthError::QuotaExceeded { .. } => ErrorCode::QuotaExceeded,
            AuthError::AuthUnavailable { .. } => ErrorCode::AuthUnavailable,
        }
    }

    /// The HTTP status.
    pub const fn status(&self) -> u16 {
        self.code().status()
    }

    /// The `Retry-After` value, for 429 and 503 answers.
    pub const fn retry_after(&self) -> Option<u64> {
        match self {
            AuthError::RateLimitExceeded { retry_after, .. }
            | AuthError::TooManyFailedAttempts { retry_after }
            | AuthError::AuthUnavailable { retry_after } => {
                Some(if *retry_after == 0 { 1 } else { *retry_after })
            }
            // SPEC §5: a slot frees as soon as any request ends; one second is a fair guess.
            AuthError::ConcurrentLimitExceeded { .. } => Some(1),
            AuthError::QuotaExceeded {
                retry_after: Some(retry_after),
                ..
            } => Some(if *retry_after == 0 { 1 } else { *retry_after }),
            _ => None,
        }
    }

    /// The `WWW-Authenticate` challenge, for every 401, 400 and 403.
    pub fn challenge(&self) -> Option<Challenge> {
        let challenge = Challenge::api();
        match self {
            AuthError::MissingApiKey | AuthError::MissingBearerPrefix => Some(challenge),
            AuthError::MalformedAuthorization(_) => Some(
                challenge.with_error("invalid_request", "the Authorization header is malformed"),
            ),
            AuthError::InvalidApiKeyFormat(_) => {
                Some(challenge.with_error("invalid_token", "the API key is not well-formed"))
            }
            AuthError::InvalidApiKey => {
                Some(challenge.with_error("invalid_token", "the API key is not valid"))
            }
            AuthError::ExpiredApiKey => {
                Some(challenge.with_error("invalid_token", "the API key has expired"))
            }
            AuthError::RevokedApiKey(RevocationReason::Revoked) => {
                Some(challenge.with_error("invalid_token", "the API key was revoked"))
            }
            AuthError::RevokedApiKey(RevocationReason::Disabled) => {
                Some(challenge.with_error("invalid_token", "the API key is disabled"))
            }
            AuthError::InsufficientPermissions { required } => Some(
                challenge
                    .with_error(
                        "insufficient_scope",
                        "the API key lacks the scope this route needs",
                    )
                    .with_scope(*required),
            ),
            AuthError::RateLimitExceeded { .. }
            | AuthError::ConcurrentLimitExceeded { .. }
            | AuthError::TooManyFailedAttempts { .. }
            | AuthError::QuotaExceeded { .. }
            | AuthError::AuthUnavailable { .. } => None,
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::MissingApiKey => f.write_str(
                "no API key was sent; send it in the Authorization header as `Authorization: Bearer sk_live_...`",
            ),
            AuthError::MissingBearerPrefix => f.write_str(
                "the Authorization header does not use the Bearer scheme; put `Bearer ` before the key, as in `Authorization: Bearer sk_live_...`",
            ),
            AuthError::MalformedAuthorization(why) => f.write_str(why.message()),
            AuthError::InvalidApiKeyFormat(why) => f.write_str(why.message()),
            AuthError::InvalidApiKey => f.write_str(
                "this API key does not exist; check that it is the whole key for this environment, or create a new one",
            ),
            AuthError::ExpiredApiKey => {
                f.write_str("this API key has expired; create a new key, or rotate it before it expires next time")
            }
            AuthError::RevokedApiKey(RevocationReason::Revoked) => {
                f.write_str("this API key was revoked; create a new one")
            }
            AuthError::RevokedApiKey(RevocationReason::Disabled) => {
                f.write_str("this API key is disabled; ask an administrator to enable it or use another key")
            }
            AuthError::InsufficientPermissions { required } => write!(
                f,
                "this API key lacks the scope `{required}` that this route needs; use a key that has it"
            ),
            AuthError::RateLimitExceeded { plan: Some(plan), .. } => write!(
                f,
                "you've exceeded your plan's rate limit (plan `{plan}`); retry after {} s or move to a larger plan",
                self.retry_after().unwrap_or(1)
            ),
            AuthError::RateLimitExceeded { plan: None, .. } => write!(
                f,
                "you've exceeded this key's rate limit; retry after {} s",
                self.retry_after().unwrap_or(1)
            ),
            AuthError::ConcurrentLimitExceeded { limit } => write!(
                f,
                "this key already has {limit} requests in flight, its concurrency limit; retry when one finishes"
            ),
            AuthError::TooManyFailedAttempts { .. } => write!(
                f,
                "too many requests from this address used unknown API keys; retry after {} s with a valid key",
                self.retry_after().unwrap_or(1)
            ),
            AuthError::QuotaExceeded {
                limit: QuotaLimit::Quota,
                plan,
                retry_after,
                ..
            } => {
                match plan {
                    Some(plan) => write!(f, "you've used up your plan's quota for this period (plan `{plan}`)")?,
                    None => f.write_str("you've used up this key's quota for this period")?,
                }
                match retry_after {
                    Some(seconds) => write!(f, "; it starts again in {} s, or move to a larger plan", (*seconds).max(1)),
                    None => f.write_str("; move to a larger plan"),
                }
            }
            AuthError::QuotaExceeded {
                limit: QuotaLimit::Credits,
                retry_after,
                ..
            } => match retry_after {
                Some(seconds) => write!(
                    f,
                    "this key has too few credits left for this request; they are refilled in {} s, or ask for more",
                    (*seconds).max(1)
                ),
                None => f.write_str(
                    "this key has too few credits left for this request and they are not refilled; ask an administrator to add credits",
                ),
            },
            AuthError::AuthUnavailable { .. } => write!(
                f,
                "the API key cannot be checked right now; retry after {} s",
                self.retry_after().unwrap_or(1)
            ),
        }
    }
}

impl core::error::Error for AuthError {}

/// A `WWW-Authenticate` challenge: `Bearer realm="cloro"`, then `error`,
/// `error_description` and `scope` where they apply (SPEC §4, RFC 6750 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Challenge {
    realm: &'static str,
    error: Option<(&'static str, &'static str)>,
    scope: Option<Scope>,
}

impl Challenge {
    /// The bare challenge of the API realm.
    pub const fn api() -> Self {
        Challenge {
            realm: "cloro",
            error: None,
            scope: None,
        }
    }

    /// The challenge of the admin API: a wrong or missing admin token.
    pub const fn admin_invalid_token() -> Self {
        Challenge {
            realm: "cloro-admin",
            error: Some(("invalid_token", "the admin token is missing or not valid")),
            scope: None,
        }
    }

    const fn with_error(self, error: &'static str, description: &'static str) -> Self {
        Challenge {
            error: Some((error, description)),
            ..self
        }
    }

    const fn with_scope(self, scope: Scope) -> Self {
        Challenge {
            scope: Some(scope),
            ..self
        }
    }

    /// The RFC 6750 error code, if any (`invalid_request`, `invalid_token`,
    /// `insufficient_scope`).
    pub fn error(&self) -> Option<&'static str> {
        self.error.map(|(error, _)| error)
    }
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every value written here is printable ASCII without `"` or `\`: the
        // realm and descriptions are constants (tested), and scopes are limited
        // to [a-z0-9_.:*-], so no escaping is needed.
        write!(f, "Bearer realm=\"{}\"", self.realm)?;
        if let Some((error, description)) = self.error {
            write!(
                f,
                ", error=\"{error}\", error_description=\"{description}\""
            )?;
        }
        if let Some(scope) = &self.scope {
            write!(f, ", scope=\"{scope}\"")?;
        }
        Ok(())
    }
}
