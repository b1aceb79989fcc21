//! Secret-scanning reports and the key masker (SPEC §12) on arbitrary
//! bytes: a report body is read as the server reads it (after its
//! signature verified, so any bytes a partner could sign), never panics,
//! and what is accepted never shows a token in `Debug`; `redact_keys_in`
//! on any text is idempotent and leaves no key-like run longer than the
//! redacted start.

#![no_main]

use cloro_auth_core::redact_keys_in;
use cloro_auth_core::wire::LeakedToken;
use libfuzzer_sys::fuzz_target;

/// The redacted start shows four characters after the prefix.
const SHOWN: usize = 4;

fuzz_target!(|data: &[u8]| {
    if let Ok(tokens) = serde_json::from_slice::<Vec<LeakedToken>>(data) {
        for token in &tokens {
            let shown = format!("{token:?}");
            let elsewhere = token.token_type.contains(&token.token)
                || token.url.as_deref().is_some_and(|u| u.contains(&token.token))
                || token.source.as_deref().is_some_and(|s| s.contains(&token.token))
                || "LeakedToken { token: \"[redacted]\", token_type: , url: None, source: None }"
                    .contains(&token.token);
            if token.token.len() >= 8 && !elsewhere {
                assert!(!shown.contains(&token.token), "Debug shows the token: {shown}");
            }
        }
    }
    let text = String::from_utf8_lossy(data);
    let once = redact_keys_in(&text);
    assert_eq!(redact_keys_in(&once), once, "redacting twice changed the text");
    for prefix in ["sk_live_", "sk_test_"] {
        for (at, _) in once.match_indices(prefix) {
            let after = &once[at + prefix.len()..];
            let mut run = after.bytes().take_while(u8::is_ascii_alphanumeric).count();
            // The masker's rule: a run ending in `sk` before `_` starts the next key.
            if after[run..].starts_with('_') && after[..run].ends_with("sk") {
                run -= 2;
            }
            assert!(run <= SHOWN, "a key-like run survived: {once:?}");
        }
    }
});
