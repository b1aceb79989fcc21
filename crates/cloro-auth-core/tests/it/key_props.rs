//! Property tests of the key format (SPEC §2).

use cloro_auth_core::{
    ApiKey, AuthError, Environment, FormatError, KEY_LEN, bearer_token_from_value,
};
use proptest::prelude::*;

use crate::reference::{crc32_ieee, key_reference};

fn environment() -> impl Strategy<Value = Environment> {
    prop_oneof![Just(Environment::Live), Just(Environment::Test)]
}

/// Header → token → format check, as the verifier does it.
fn verify_format(header: &str) -> Result<Environment, AuthError> {
    let token = bearer_token_from_value(header.as_bytes())?;
    ApiKey::check_format(token.as_bytes()).map_err(AuthError::InvalidApiKeyFormat)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// (2) Every generated key parses back to itself, through the header too.
    #[test]
    fn generated_keys_round_trip(env in environment(), random in any::<[u8; 16]>()) {
        let key = ApiKey::from_random_bytes(env, random);
        let text = key.expose_secret();
        prop_assert_eq!(text.len(), KEY_LEN);
        let prefix = format!("sk_{env}_");
        prop_assert!(text.starts_with(&prefix));
        let parsed = ApiKey::parse_token(text).unwrap();
        prop_assert_eq!(parsed.hash(), key.hash());
        prop_assert_eq!(parsed.environment(), env);
        prop_assert_eq!(verify_format(&format!("Bearer {text}")), Ok(env));
        let printed = format!("{key:?} {key}");
        prop_assert!(!printed.contains(&text[12..]));
    }

    /// (3) Every single-character substitution is INVALID_API_KEY_FORMAT: the
    /// prefix check, the hex check or the CRC-32 catches it.
    #[test]
    fn any_single_substitution_is_a_format_error(
        env in environment(),
        random in any::<[u8; 16]>(),
        at in 0..KEY_LEN,
        replacement in proptest::sample::select(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/".as_bytes().to_vec()
        ),
    ) {
        let key = ApiKey::from_random_bytes(env, random);
        let mut bytes = key.expose_secret().as_bytes().to_vec();
        prop_assume!(bytes[at] != replacement);
        bytes[at] = replacement;
        let mutated = String::from_utf8(bytes).unwrap();
        let result = verify_format(&format!("Bearer {mutated}"));
        prop_assert!(matches!(result, Err(AuthError::InvalidApiKeyFormat(_))), "{result:?}");
    }

    /// The format check agrees with the reference reading of SPEC §2, on
    /// keys with up to two characters changed, cut or extended (where
    /// every rule is one step away).
    #[test]
    fn format_check_agrees_with_reference(
        env in environment(),
        random in any::<[u8; 16]>(),
        edits in proptest::collection::vec((0..KEY_LEN, any::<u8>()), 0..3),
        cut in 0..=KEY_LEN + 2,
    ) {
        let key = ApiKey::from_random_bytes(env, random);
        let mut bytes = key.expose_secret().as_bytes().to_vec();
        for (at, byte) in edits {
            bytes[at] = byte;
        }
        bytes.resize(cut, b'0');
        prop_assert_eq!(ApiKey::check_format(&bytes), key_reference(&bytes), "{:?}", bytes);
    }

    /// Deleting or inserting one character is a length error.
    #[test]
    fn one_character_more_or_less_is_a_length_error(random in any::<[u8; 16]>(), at in 8..KEY_LEN) {
        let key = ApiKey::from_random_bytes(Environment::Live, random);
        let text = key.expose_secret();
        let shorter = format!("{}{}", &text[..at], &text[at + 1..]);
        let longer = format!("{}0{}", &text[..at], &text[at..]);
        prop_assert_eq!(ApiKey::check_format(shorter.as_bytes()), Err(FormatError::WrongLength));
        prop_assert_eq!(ApiKey::check_format(longer.as_bytes()), Err(FormatError::WrongLength));
    }
}

#[test]
fn generated_keys_differ() {
    let a = ApiKey::generate(Environment::Live).unwrap();
    let b = ApiKey::generate(Environment::Live).unwrap();
    assert_ne!(a.expose_secret(), b.expose_secret());
    assert_eq!(
        ApiKey::check_format(a.expose_secret().as_bytes()),
        Ok(Environment::Live)
    );
}

#[test]
fn checksum_matches_zlib_crc32() {
    // The checksum is CRC-32/IEEE exactly as zlib computes it; this vector was
    // computed with Python's zlib.crc32 on the 40-byte body.
    let key = ApiKey::from_random_bytes(Environment::Test, [0u8; 16]);
    assert_eq!(
        key.expose_secret(),
        "sk_test_00000000000000000000000000000000387a42fd"
    );
    // The reference's own CRC-32 meets the same vector.
    assert_eq!(
        crc32_ieee(&key.expose_secret().as_bytes()[..40]),
        0x387a_42fd
    );
}
