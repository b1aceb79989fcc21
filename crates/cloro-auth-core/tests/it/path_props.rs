//! Property tests of the path normalisation (SPEC §9): one answer for any
//! string, idempotent, and the check agreeing with the normaliser.

use cloro_auth_core::{PathError, check_path, normalise_path};
use proptest::prelude::*;

/// Path pieces that matter to the rules, so random paths hit them often.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just(";".to_owned()),
        Just("\\".to_owned()),
        Just("%".to_owned()),
        "%[0-9a-fA-F]{2}",
        "%[0-9a-zA-Z]{0,2}",
        "[a-zA-Z0-9_~-]{1,6}",
        "[ -~]{1,3}",
        "\\PC{1,2}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..12).prop_map(|pieces| format!("/{}", pieces.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn normalising_is_idempotent_and_the_check_agrees(raw in path()) {
        let normal = normalise_path(&raw);
        prop_assert_eq!(check_path(&raw), normal.as_ref().map(|_| ()).map_err(|e| *e));
        if let Ok(normal) = normal {
            let again = normalise_path(&normal).unwrap();
            prop_assert_eq!(again.as_ref(), normal.as_ref());
            // What stays encoded is upper-case and never unreserved.
            let bytes = normal.as_bytes();
            for (at, _) in normal.match_indices('%') {
                let hex = &bytes[at + 1..at + 3];
                prop_assert!(hex.iter().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
                let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
                prop_assert!(!(value.is_ascii_alphanumeric() || b"-_~.%;/\\".contains(&value)));
            }
            prop_assert!(!normal.contains(';') && !normal.contains('\\'));
            prop_assert!(!normal.split('/').any(|s| s == "." || s == ".."));
        }
    }

    #[test]
    fn arbitrary_strings_get_one_answer(raw in "\\PC{0,40}") {
        let _ = normalise_path(&raw);
        if !raw.starts_with('/') {
            prop_assert_eq!(check_path(&raw), Err(PathError::NotAbsolute));
        }
    }
}
