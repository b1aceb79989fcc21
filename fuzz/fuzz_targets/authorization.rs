//! `Authorization` on arbitrary bytes (SPEC §3): the parser never panics,
//! gives one answer however it is asked, agrees with the reference grammar
//! (token for token, code for code), and every token it returns is a
//! `b64token` within the length cap.
//!
//! The input is one field value; split on `\n` (which no header value can
//! hold) it is also the list of fields of one request.

#![no_main]

use cloro_auth_core::{
    AuthError, ErrorCode, MAX_TOKEN_LEN, Malformed, bearer_token, bearer_token_from_value,
    is_b64token,
};
use libfuzzer_sys::fuzz_target;

#[path = "../../crates/cloro-auth-core/tests/it/reference.rs"]
#[allow(dead_code)] // the key half of the reference is the `api_key` target's
mod reference;

/// The codes the parser alone may answer; the others need a store.
const PARSER_CODES: [ErrorCode; 4] = [
    ErrorCode::MissingApiKey,
    ErrorCode::MissingBearerPrefix,
    ErrorCode::MalformedAuthorization,
    ErrorCode::InvalidApiKeyFormat,
];

fuzz_target!(|value: &[u8]| {
    let answer = bearer_token_from_value(value);

    // One answer: the same again, and the same through the list entry point.
    assert_eq!(bearer_token_from_value(value), answer);
    assert_eq!(bearer_token([value]), answer);

    match answer {
        Ok(token) => {
            assert!(is_b64token(token.as_bytes()), "{token:?} is not a b64token");
            assert!(!token.is_empty() && token.len() <= MAX_TOKEN_LEN);
            // The token is the client's bytes, not a copy that could differ.
            let start = token.as_ptr() as usize - value.as_ptr() as usize;
            assert_eq!(&value[start..start + token.len()], token.as_bytes());
        }
        Err(error) => assert!(PARSER_CODES.contains(&error.code()), "{error:?}"),
    }
    assert_eq!(
        answer.map_err(|error| error.code()),
        reference::bearer_reference(value),
        "the parser and the SPEC §3 reference disagree on {:?}",
        String::from_utf8_lossy(value)
    );

    // Several fields are malformed whatever they hold, even when equal.
    let fields: Vec<&[u8]> = value.split(|&c| c == b'\n').collect();
    let expected = match fields.as_slice() {
        [one] => bearer_token_from_value(one),
        _ => Err(AuthError::MalformedAuthorization(Malformed::MultipleFields)),
    };
    assert_eq!(bearer_token(fields.iter().copied()), expected);
    assert_eq!(
        bearer_token([value, value]),
        Err(AuthError::MalformedAuthorization(Malformed::MultipleFields))
    );
});
