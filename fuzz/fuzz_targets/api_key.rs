//! The key format (SPEC §2) on arbitrary bytes: a token is accepted exactly
//! when it has the SPEC shape with a correct CRC-32 (the reference says so
//! independently, rule by rule); an accepted key round-trips to the same
//! text; its redacted, `Debug` and `Display` forms show the prefix and four
//! digits, never more. Keys built from the input's bytes always pass.

#![no_main]

use cloro_auth_core::{ApiKey, Environment, bearer_token_from_value};
use libfuzzer_sys::fuzz_target;

#[path = "../../crates/cloro-auth-core/tests/it/reference.rs"]
#[allow(dead_code)] // the header half of the reference is the `authorization` target's
mod reference;

/// `sk_live_` or `sk_test_`.
const PREFIX: usize = 8;
/// The prefix and the four random digits a redaction shows.
const SHOWN: usize = PREFIX + 4;

fuzz_target!(|token: &[u8]| {
    let checked = ApiKey::check_format(token);
    assert_eq!(
        checked,
        reference::key_reference(token),
        "the format check and the SPEC §2 reference disagree on {:?}",
        String::from_utf8_lossy(token)
    );

    if let Ok(text) = std::str::from_utf8(token) {
        match ApiKey::parse_token(text) {
            Ok(key) => {
                assert_eq!(Ok(key.environment()), checked);
                assert_eq!(key.expose_secret(), text, "a parsed key changed its text");
                assert_eq!(ApiKey::parse_token(key.expose_secret()).as_ref(), Ok(&key));
                assert_redacted(&key);
                // The header parser hands a key to the format check unchanged.
                let header = format!("Bearer {text}");
                assert_eq!(bearer_token_from_value(header.as_bytes()), Ok(text));
            }
            Err(error) => assert_eq!(Err(error), checked),
        }
    } else {
        assert!(checked.is_err(), "a key that is not even UTF-8 passed");
    }

    // Generation: any 16 bytes make a key that both readings accept.
    if let Some(random) = token
        .get(..16)
        .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
    {
        let environment = if token.len() % 2 == 0 {
            Environment::Live
        } else {
            Environment::Test
        };
        let key = ApiKey::from_random_bytes(environment, random);
        let text = key.expose_secret().as_bytes();
        assert_eq!(ApiKey::check_format(text), Ok(environment));
        assert_eq!(reference::key_reference(text), Ok(environment));
        assert_redacted(&key);
    }
});

/// The redacted form is the first [`SHOWN`] characters and `...`, and no
/// printed form of the key holds more of it.
fn assert_redacted(key: &ApiKey) {
    let secret = key.expose_secret();
    let redacted = key.redacted();
    assert_eq!(redacted.as_str(), format!("{}...", &secret[..SHOWN]));
    assert_eq!(key.to_string(), redacted.as_str());
    assert_eq!(format!("{key:?}"), format!("ApiKey({})", redacted.as_str()));
    assert_eq!(format!("{redacted:?}"), format!("{:?}", redacted.as_str()));
    // Whatever the format, no five of the secret's hex digits in a row
    // (four are shown).
    for printed in [key.to_string(), format!("{key:?}"), format!("{key:#?}")] {
        for window in secret.as_bytes()[PREFIX..].windows(5) {
            assert!(
                !printed.as_bytes().windows(5).any(|w| w == window),
                "{printed:?} shows part of the secret"
            );
        }
    }
}
