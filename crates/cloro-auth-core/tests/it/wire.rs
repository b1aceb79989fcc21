//! JSON shapes of the wire types (SPEC §4, §6), and their `Debug`, which
//! never shows a plaintext key (SPEC §2).

use cloro_auth_core::wire::{
    CreateKeyRequest, CreateKeyResponse, CreditsRequest, ErrorBody, ErrorDetails, ErrorObject,
    KeyInfo, KeyPurpose, Patch, RateLimitPolicy, RotateKeyRequest, RotateKeyResponse,
    UpdateKeyRequest,
};
use cloro_auth_core::{
    AccountId, ApiKey, AuthError, Environment, ErrorCode, RevocationReason, Scope,
};
use serde_json::json;

#[test]
fn create_request_defaults() {
    let request: CreateKeyRequest =
        serde_json::from_value(json!({"account_id": "acct_1", "name": "ci"})).unwrap();
    assert_eq!(request.purpose, KeyPurpose::Other);
    assert_eq!(request.environment, Environment::Live);
    assert_eq!(request.scopes, vec![Scope::wildcard()]);
    assert_eq!(request.expires_at, None);
    assert_eq!(
        request,
        CreateKeyRequest::new(AccountId::new("acct_1").unwrap(), "ci")
    );
}

#[test]
fn create_request_refuses_unknown_and_invalid_fields() {
    let unknown = serde_json::from_value::<CreateKeyRequest>(
        json!({"account_id": "a", "name": "n", "expire_at": null}),
    );
    assert!(unknown.unwrap_err().to_string().contains("expire_at"));
    let bad_scope = serde_json::from_value::<CreateKeyRequest>(
        json!({"account_id": "a", "name": "n", "scopes": ["Admin"]}),
    );
    assert!(bad_scope.unwrap_err().to_string().contains("scope `Admin`"));
    let zero = serde_json::from_value::<CreateKeyRequest>(
        json!({"account_id": "a", "name": "n", "rate_limit": {"requests": 0, "per_seconds": 1}}),
    );
    assert!(zero.is_err());
    let purpose = serde_json::from_value::<CreateKeyRequest>(
        json!({"account_id": "a", "name": "n", "purpose": "team_member"}),
    );
    assert_eq!(purpose.unwrap().purpose, KeyPurpose::TeamMember);
}

#[test]
fn merge_patch_tells_absent_null_and_value_apart() {
    let patch: UpdateKeyRequest = serde_json::from_value(
        json!({"expires_at": null, "rate_limit": {"requests": 5, "per_seconds": 60}}),
    )
    .unwrap();
    assert_eq!(patch.expires_at, Patch::Null);
    assert!(matches!(
        patch.rate_limit,
        Patch::Value(RateLimitPolicy { burst: None, .. })
    ));
    assert_eq!(patch.name, Patch::Absent);
    assert_eq!(patch.null_in_required_field(), None);
    let null_name: UpdateKeyRequest = serde_json::from_value(json!({"name": null})).unwrap();
    assert_eq!(null_name.null_in_required_field(), Some("name"));
    // Serialising keeps the three states apart.
    assert_eq!(
        serde_json::to_value(&patch).unwrap(),
        json!({"expires_at": null, "rate_limit": {"requests": 5, "per_seconds": 60}})
    );
}

#[test]
fn rotate_request_expiry_absent_null_or_set() {
    let inherit: RotateKeyRequest =
        serde_json::from_value(json!({"grace_period_seconds": 60})).unwrap();
    assert_eq!(
        (inherit.grace_period_seconds, inherit.expires_at),
        (60, Patch::Absent)
    );
    let never: RotateKeyRequest = serde_json::from_value(json!({"expires_at": null})).unwrap();
    assert_eq!(never.expires_at, Patch::Null);
}

#[test]
fn rate_limit_policy_json() {
    let policy: RateLimitPolicy = serde_json::from_value(
        json!({"requests": 500, "per_seconds": 1, "burst": 50, "applies_to": "account"}),
    )
    .unwrap();
    assert_eq!(policy.effective_burst().get(), 50);
    assert_eq!(
        serde_json::to_value(policy).unwrap(),
        json!({"requests": 500, "per_seconds": 1, "burst": 50, "applies_to": "account"})
    );
    let plain: RateLimitPolicy =
        serde_json::from_value(json!({"requests": 10, "per_seconds": 60})).unwrap();
    assert_eq!(plain.effective_burst().get(), 10);
}

#[test]
fn error_body_has_the_spec_shape() {
    let error = AuthError::RevokedApiKey(RevocationReason::Disabled);
    let body = ErrorBody {
        error: ErrorObject {
            code: error.code(),
            message: error.to_string(),
            details: ErrorDetails::of_auth_error(&error),
            timestamp: "2026-01-15T12:00:00Z".parse().unwrap(),
            request_id: "req_1".into(),
        },
    };
    let value = serde_json::to_value(&body).unwrap();
    assert_eq!(value["error"]["code"], "REVOKED_API_KEY");
    assert_eq!(value["error"]["details"], json!({"reason": "disabled"}));
    assert_eq!(value["error"]["timestamp"], "2026-01-15T12:00:00Z");
    assert_eq!(value["error"]["request_id"], "req_1");
    let back: ErrorBody = serde_json::from_value(value).unwrap();
    assert_eq!(back, body);
    assert_eq!(back.error.code, ErrorCode::RevokedApiKey);
}

/// A `KeyInfo` as the server sends it; it holds only the redacted start.
fn key_info(id: &str) -> KeyInfo {
    serde_json::from_value(json!({
        "id": id, "account_id": "acct_1", "name": "ci", "purpose": "ci",
        "environment": "live", "start": "sk_live_abab...", "scopes": ["*"],
        "metadata": {}, "rate_limit": null, "concurrency_limit": null,
        "enabled": true, "created_at": "2026-01-01T00:00:00Z", "expires_at": null,
        "revoked_at": null, "revoked_reason": null, "last_used_at": null,
        "status": "active"
    }))
    .unwrap()
}

/// Fails if `debug` shows any of `secret` past its redacted start.
fn assert_hides(debug: &str, secret: &str) {
    assert!(!debug.contains(secret), "secret in {debug}");
    // 12 characters: the prefix plus the 4 digits the redacted form shows.
    assert!(
        !debug.contains(&secret[12..]),
        "part of the secret in {debug}"
    );
}

#[test]
fn responses_with_a_plaintext_key_debug_it_redacted() {
    let key = ApiKey::from_random_bytes(Environment::Live, [0xab; 16]);
    let secret = key.expose_secret();

    let created = CreateKeyResponse {
        key: Some(secret.to_owned()),
        key_info: key_info("key_new"),
    };
    let debug = format!("{created:?}");
    assert_hides(&debug, secret);
    assert!(debug.contains("key: Some(\"sk_live_abab...\")"), "{debug}");
    assert!(
        debug.contains("key_new"),
        "the record is still shown: {debug}"
    );
    let pretty = format!("{created:#?}");
    assert_hides(&pretty, secret);

    let rotated = RotateKeyResponse {
        key: Some(secret.to_owned()),
        key_info: key_info("key_new"),
        previous: key_info("key_old"),
    };
    let debug = format!("{rotated:?}");
    assert_hides(&debug, secret);
    assert!(debug.contains("sk_live_abab..."), "{debug}");
    assert!(debug.contains("key_old"), "{debug}");

    // A text that is not a well-formed key (one digit off: bad checksum)
    // may still be nearly a real key, so none of it is shown.
    let mut typo = secret.to_owned();
    let last = if typo.ends_with('0') { "1" } else { "0" };
    typo.replace_range(typo.len() - 1.., last);
    let broken = CreateKeyResponse {
        key: Some(typo.clone()),
        key_info: key_info("key_new"),
    };
    let debug = format!("{broken:?}");
    assert_hides(&debug, &typo);
    assert!(debug.contains("key: Some(<redacted>)"), "{debug}");
}

/// JSON has one number type: `5.0` and `5e0` are the integer 5 (JSON
/// Schema's `integer` too), so every count field takes them; a fraction,
/// a negative, zero where it must be positive, or a value past the range
/// is still refused.
#[test]
fn count_fields_take_whole_numbers_in_any_spelling() {
    let create = |limits: &str| {
        serde_json::from_str::<CreateKeyRequest>(&format!(
            r#"{{"account_id": "a", "name": "n", {limits}}}"#
        ))
    };
    let request = create(
        r#""rate_limit": {"requests": 5.0, "per_seconds": 6e1, "burst": 10.0}, "concurrency_limit": 3.0"#,
    )
    .unwrap();
    let policy = request.rate_limit.unwrap();
    assert_eq!(
        (
            policy.requests.get(),
            policy.per_seconds.get(),
            policy.burst.map(|b| b.get())
        ),
        (5, 60, Some(10))
    );
    assert_eq!(request.concurrency_limit.map(|c| c.get()), Some(3));
    assert_eq!(
        create(r#""concurrency_limit": null"#)
            .unwrap()
            .concurrency_limit,
        None
    );
    for refused in [
        r#""concurrency_limit": 1.5"#,
        r#""concurrency_limit": 0"#,
        r#""concurrency_limit": 0.0"#,
        r#""concurrency_limit": -1"#,
        r#""concurrency_limit": 4294967296"#,
        r#""concurrency_limit": "3""#,
        r#""rate_limit": {"requests": 1e10, "per_seconds": 1}"#,
        r#""rate_limit": {"requests": 2, "per_seconds": 0.5}"#,
    ] {
        let error = create(refused).unwrap_err().to_string();
        assert!(error.contains("whole number"), "{refused}: {error}");
    }

    let patch: UpdateKeyRequest = serde_json::from_str(r#"{"concurrency_limit": 7.0}"#).unwrap();
    assert_eq!(
        patch.concurrency_limit,
        Patch::Value(std::num::NonZeroU32::new(7).unwrap())
    );
    let patch: UpdateKeyRequest = serde_json::from_str(r#"{"concurrency_limit": null}"#).unwrap();
    assert_eq!(patch.concurrency_limit, Patch::Null);
    let rotate: RotateKeyRequest =
        serde_json::from_str(r#"{"grace_period_seconds": 362879.0}"#).unwrap();
    assert_eq!(rotate.grace_period_seconds, 362_879);
    for refused in [r#"-1"#, r#"0.25"#, r#"1.8446744073709552e19"#] {
        let error = serde_json::from_str::<RotateKeyRequest>(&format!(
            r#"{{"grace_period_seconds": {refused}}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(error.contains("whole number"), "{refused}: {error}");
    }

    // A credits change is a number: `null` would set nothing, so it is
    // refused rather than read as absent (the schema says the same).
    let credits: CreditsRequest = serde_json::from_str(r#"{"add": 5.0}"#).unwrap();
    assert_eq!((credits.set, credits.add), (None, Some(5)));
    for refused in [r#"{"set": null}"#, r#"{"set": null, "add": 5}"#] {
        assert!(
            serde_json::from_str::<CreditsRequest>(refused).is_err(),
            "{refused}"
        );
    }
}
