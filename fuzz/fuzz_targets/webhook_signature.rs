//! Standard Webhooks signatures (SPEC §12) on arbitrary input: the input
//! is split at its first three newlines into a `webhook-id`, a
//! `webhook-timestamp`, a `webhook-signature` value and the body. What a
//! receiver checks never panics; only the signature made for exactly
//! this id, timestamp and body verifies (one byte of the body changed, or
//! another secret, and it does not); a secret's text round-trips and its
//! `Debug` never shows it.

#![no_main]

use cloro_auth_core::webhook::{SignatureError, WebhookSecret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |&b| b == b'\n');
    let id = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let timestamp = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let header = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let body = parts.next().unwrap_or_default();

    // Secret text from the input: never a panic; a parsed one round-trips
    // and never prints.
    if let Ok(secret) = WebhookSecret::parse(&header) {
        let text = secret.expose();
        assert_eq!(WebhookSecret::parse(&text).ok(), Some(secret.clone()));
        let shown = format!("{secret:?}");
        assert!(!shown.contains(&text[6..]), "Debug shows the secret");
    }

    let secret = WebhookSecret::from_bytes(&[0x5a; 32]).expect("32 bytes");
    let now: u64 = timestamp.parse().unwrap_or(1_700_000_000);

    // Whatever a client sends: one answer, no panic; a match only for a
    // header that holds the real signature.
    let real = secret.sign(&id, now, body);
    let verdict = secret.verify(&id, &timestamp, body, &header, now, 300);
    if verdict.is_ok() {
        assert!(
            header.split(' ').any(|part| part == real),
            "a header without the signature verified: {header:?}"
        );
    }

    // What the server sends verifies, once per spelling of the timestamp
    // the server uses (plain decimal).
    let sent = now.to_string();
    assert_eq!(secret.verify(&id, &sent, body, &real, now, 300), Ok(()));
    let other = WebhookSecret::from_bytes(&[0xa5; 32]).expect("32 bytes");
    assert_eq!(
        other.verify(&id, &sent, body, &real, now, 300),
        Err(SignatureError::Mismatch)
    );
    if !body.is_empty() {
        let mut changed = body.to_vec();
        let at = usize::from(changed[0]) % changed.len();
        changed[at] ^= 0x01;
        assert_eq!(
            secret.verify(&id, &sent, &changed, &real, now, 300),
            Err(SignatureError::Mismatch)
        );
    }
});
