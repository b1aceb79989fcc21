//! SPEC §4, row by row: code, status, challenge, retry-after and message.

use cloro_auth_core::{
    AuthError, Challenge, ErrorCode, FormatError, Malformed, PlanName, QuotaLimit,
    RevocationReason, Scope,
};

struct Row {
    error: AuthError,
    code: &'static str,
    status: u16,
    /// The exact `WWW-Authenticate` value, or `None` where SPEC §4 has "—".
    challenge: Option<&'static str>,
    retry_after: Option<u64>,
}

fn rows() -> Vec<Row> {
    let scope = Scope::new("monitor:write").unwrap();
    let plan = PlanName::new("pro").unwrap();
    vec![
        Row {
            error: AuthError::MissingApiKey,
            code: "MISSING_API_KEY",
            status: 401,
            challenge: Some(r#"Bearer realm="cloro""#),
            retry_after: None,
        },
        Row {
            error: AuthError::MissingBearerPrefix,
            code: "MISSING_BEARER_PREFIX",
            status: 401,
            challenge: Some(r#"Bearer realm="cloro""#),
            retry_after: None,
        },
        Row {
            error: AuthError::MalformedAuthorization(Malformed::MultipleFields),
            code: "MALFORMED_AUTHORIZATION",
            status: 400,
            challenge: Some(
                r#"Bearer realm="cloro", error="invalid_request", error_description="the Authorization header is malformed""#,
            ),
            retry_after: None,
        },
        Row {
            error: AuthError::InvalidApiKeyFormat(FormatError::BadChecksum),
            code: "INVALID_API_KEY_FORMAT",
            status: 401,
            challenge: Some(
                r#"Bearer realm="cloro", error="invalid_token", error_description="the API key is not well-formed""#,
            ),
            retry_after: None,
        },
        Row {
            error: AuthError::InvalidApiKey,
            code: "INVALID_API_KEY",
            status: 401,
            challenge: Some(
                r#"Bearer realm="cloro", error="invalid_token", error_description="the API key is not valid""#,
            ),
            retry_after: None,
        },
        Row {
            error: AuthError::ExpiredApiKey,
            code: "EXPIRED_API_KEY",
            status: 401,
            challenge: Some(
                r#"Bearer realm="cloro", error="invalid_token", error_description="the API key has expired""#,
            ),
            retry_after: None,
        },
        Row {
            error: AuthError::RevokedApiKey(RevocationReason::Revoked),
            code: "REVOKED_API_KEY",
            status: 401,
            challenge: Some(
                r#"Bearer realm="cloro", error="invalid_token", error_description="the API key was revoked""#,
            ),
            retry_after: None,
        },
        Row {
            error: AuthError::RevokedApiKey(RevocationReason::Disabled),
            code: "REVOKED_API_KEY",
            status: 401,
            challenge: Some(
                r#"Bearer realm="cloro", error="invalid_token", error_description="the API key is disabled""#,
            ),
            retry_after: None,
        },
        Row {
            error: AuthError::InsufficientPermissions { required: scope },
            code: "INSUFFICIENT_PERMISSIONS",
            status: 403,
            challenge: Some(
                r#"Bearer realm="cloro", error="insufficient_scope", error_description="the API key lacks the scope this route needs", scope="monitor:write""#,
            ),
            retry_after: None,
        },
        Row {
            error: AuthError::RateLimitExceeded {
                retry_after: 7,
                plan: Some(plan),
            },
            code: "RATE_LIMIT_EXCEEDED",
            status: 429,
            challenge: None,
            retry_after: Some(7),
        },
        Row {
            error: AuthError::ConcurrentLimitExceeded { limit: 3 },
            code: "CONCURRENT_LIMIT_EXCEEDED",
            status: 429,
            challenge: None,
            retry_after: Some(1),
        },
        Row {
            error: AuthError::QuotaExceeded {
                limit: QuotaLimit::Quota,
                plan: Some(plan),
                resets_at: Some(1_800_000_000),
                retry_after: Some(3600),
            },
            code: "QUOTA_EXCEEDED",
            status: 429,
            challenge: None,
            retry_after: Some(3600),
        },
        Row {
            // Credits that never refill: nothing to wait for, no Retry-After.
            error: AuthError::QuotaExceeded {
                limit: QuotaLimit::Credits,
                plan: None,
                resets_at: None,
                retry_after: None,
            },
            code: "QUOTA_EXCEEDED",
            status: 429,
            challenge: None,
            retry_after: None,
        },
        Row {
            error: AuthError::TooManyFailedAttempts { retry_after: 0 },
            code: "TOO_MANY_FAILED_ATTEMPTS",
            status: 429,
            challenge: None,
            retry_after: Some(1),
        },
        Row {
            error: AuthError::AuthUnavailable { retry_after: 2 },
            code: "AUTH_UNAVAILABLE",
            status: 503,
            challenge: None,
            retry_after: Some(2),
        },
    ]
}

#[test]
fn every_auth_row_matches_the_spec_table() {
    for row in rows() {
        let error = row.error;
        assert_eq!(error.code().as_str(), row.code, "{error:?}");
        assert_eq!(error.status(), row.status, "{error:?}");
        assert_eq!(
            error.challenge().map(|c| c.to_string()).as_deref(),
            row.challenge,
            "{error:?}"
        );
        assert_eq!(error.retry_after(), row.retry_after, "{error:?}");
    }
}

#[test]
fn every_401_400_403_has_a_challenge_and_429_503_a_retry_after() {
    for row in rows() {
        let status = row.error.status();
        assert_eq!(
            row.error.challenge().is_some(),
            matches!(status, 400 | 401 | 403),
            "{:?}",
            row.error
        );
        // SPEC §5: every 429 and 503 waits, except credits that never refill.
        let nothing_refills = matches!(
            row.error,
            AuthError::QuotaExceeded {
                resets_at: None,
                ..
            }
        );
        assert_eq!(
            row.error.retry_after().is_some(),
            matches!(status, 429 | 503) && !nothing_refills,
            "{:?}",
            row.error
        );
        assert!(row.error.retry_after().is_none_or(|s| s >= 1));
    }
}

#[test]
fn challenge_values_are_quotable_ascii() {
    let mut challenges: Vec<Challenge> = rows()
        .iter()
        .filter_map(|row| row.error.challenge())
        .collect();
    challenges.push(Challenge::admin_invalid_token());
    for challenge in challenges {
        let text = challenge.to_string();
        // Inside each quoted value: printable ASCII, no `"` or `\`.
        for (index, part) in text.split('"').enumerate() {
            if index % 2 == 1 {
                assert!(
                    part.bytes()
                        .all(|b| (0x20..0x7f).contains(&b) && b != b'\\'),
                    "{text}"
                );
            }
        }
        assert!(text.starts_with("Bearer realm=\""));
    }
    assert_eq!(
        Challenge::admin_invalid_token().to_string(),
        r#"Bearer realm="cloro-admin", error="invalid_token", error_description="the admin token is missing or not valid""#
    );
}

#[test]
fn messages_are_actionable_sentences() {
    let malformed = [
        Malformed::EmptyToken,
        Malformed::BadSeparator,
        Malformed::InvalidCharacter,
        Malformed::TrailingData,
        Malformed::MultipleFields,
        Malformed::KeyInUrl,
    ];
    let format = [
        FormatError::WrongPrefix,
        FormatError::WrongLength,
        FormatError::NotLowerHex,
        FormatError::BadChecksum,
        FormatError::TooLong,
    ];
    let errors = rows()
        .into_iter()
        .map(|row| row.error)
        .chain(malformed.map(AuthError::MalformedAuthorization))
        .chain(format.map(AuthError::InvalidApiKeyFormat));
    for error in errors {
        let message = error.to_string();
        assert!(message.len() > 20, "{message}");
        assert!(
            message.starts_with(|c: char| !c.is_uppercase() || message.starts_with("API")),
            "{message}"
        );
        assert!(!message.ends_with('.'), "{message}");
    }
    assert!(
        AuthError::MissingBearerPrefix
            .to_string()
            .contains("put `Bearer ` before the key")
    );
    let plan_limit = AuthError::RateLimitExceeded {
        retry_after: 3,
        plan: Some(PlanName::new("free").unwrap()),
    };
    assert!(
        plan_limit
            .to_string()
            .contains("you've exceeded your plan's rate limit")
    );
}

#[test]
fn every_code_has_a_status_and_round_trips() {
    for code in ErrorCode::ALL {
        assert_eq!(ErrorCode::from_code(code.as_str()), Some(code));
        assert!((400..600).contains(&code.status()));
    }
    assert_eq!(ErrorCode::InvalidAdminToken.status(), 401);
    assert_eq!(ErrorCode::KeyRevoked.status(), 409);
    assert_eq!(ErrorCode::IdempotencyKeyReused.status(), 409);
    assert_eq!(ErrorCode::QuotaExceeded.status(), 429);
    assert_eq!(ErrorCode::UpstreamUnavailable.status(), 502);
    assert_eq!(ErrorCode::UpstreamTimeout.status(), 504);
    assert_eq!(ErrorCode::from_code("NOPE"), None);
}
