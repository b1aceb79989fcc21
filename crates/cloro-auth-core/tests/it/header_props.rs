//! Property tests of the `Authorization` parser (SPEC §3).

use cloro_auth_core::{AuthError, ErrorCode, MAX_TOKEN_LEN, bearer_token_from_value};
use proptest::prelude::*;

use crate::reference::{B64_ALPHABET, bearer_reference};

/// The codes the parser alone may answer; the rest need a store or a limiter.
const PARSER_CODES: [ErrorCode; 4] = [
    ErrorCode::MissingApiKey,
    ErrorCode::MissingBearerPrefix,
    ErrorCode::MalformedAuthorization,
    ErrorCode::InvalidApiKeyFormat,
];

/// Characters that matter to the grammar, so random strings hit edge cases often.
fn grammar_char() -> impl Strategy<Value = char> {
    prop_oneof![
        6 => proptest::sample::select(B64_ALPHABET.chars().collect::<Vec<_>>()),
        2 => Just('='),
        2 => Just(' '),
        1 => Just('\t'),
        1 => Just(','),
        1 => Just('"'),
        1 => Just('\u{a0}'),
        1 => any::<char>(),
    ]
}

fn scheme_casing() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<bool>(), 6).prop_map(|upper| {
        "bearer"
            .chars()
            .zip(upper)
            .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// (1) Any bytes: no panic, and a token or exactly one parser code.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        match bearer_token_from_value(&bytes) {
            Ok(token) => prop_assert!(token.len() <= MAX_TOKEN_LEN && !token.is_empty()),
            Err(error) => prop_assert!(PARSER_CODES.contains(&error.code()), "{error:?}"),
        }
    }

    /// (1b) The same behind a real scheme, where the interesting branches are.
    #[test]
    fn arbitrary_bytes_after_bearer_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut value = b"Bearer ".to_vec();
        value.extend_from_slice(&tail);
        if let Err(error) = bearer_token_from_value(&value) {
            prop_assert!(PARSER_CODES.contains(&error.code()), "{error:?}");
        }
    }

    /// (4) Any valid token, any scheme casing, 1..8 spaces: exactly that token.
    #[test]
    fn valid_tokens_come_back_exactly(
        scheme in scheme_casing(),
        spaces in 1usize..8,
        body in "[A-Za-z0-9._~+/-]{1,200}",
        padding in 0usize..3,
    ) {
        let token = format!("{body}{}", "=".repeat(padding));
        let value = format!("{scheme}{}{token}", " ".repeat(spaces));
        prop_assert_eq!(bearer_token_from_value(value.as_bytes()), Ok(token.as_str()));
    }

    /// (5) Agreement with the reference grammar on strings built to stress
    /// it: the same token, or the same code.
    #[test]
    fn parser_agrees_with_reference(
        lead in "[ \t]{0,2}",
        scheme in prop_oneof![scheme_casing(), Just("Basic".to_owned()), Just("Bearerx".to_owned())],
        rest in proptest::collection::vec(grammar_char(), 0..40),
    ) {
        let value = format!("{lead}{scheme}{}", rest.into_iter().collect::<String>());
        let parsed = bearer_token_from_value(value.as_bytes()).map_err(|error| error.code());
        prop_assert_eq!(parsed, bearer_reference(value.as_bytes()), "value {:?}", value);
    }

    /// (5b) The same on arbitrary bytes, where the reference must still
    /// name the code.
    #[test]
    fn parser_agrees_with_reference_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let parsed = bearer_token_from_value(&bytes).map_err(|error| error.code());
        prop_assert_eq!(parsed, bearer_reference(&bytes), "value {:?}", bytes);
    }
}

#[test]
fn overlong_token_is_a_format_error_not_a_lookup() {
    let value = format!("Bearer {}", "k".repeat(MAX_TOKEN_LEN + 1));
    assert_eq!(
        bearer_token_from_value(value.as_bytes()).map_err(|e| e.code()),
        Err(ErrorCode::InvalidApiKeyFormat)
    );
    assert!(matches!(
        bearer_token_from_value(b"Bearer"),
        Err(AuthError::MalformedAuthorization(_))
    ));
}
