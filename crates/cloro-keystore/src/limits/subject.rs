//! Who an allowance belongs to: every per-key, per-account and per-address
//! allowance is keyed by a SHA-256 digest, a [`Subject`] (hashed in maps
//! with [`KeyedHasher`](crate::KeyedHasher)).

use cloro_auth_core::{AccountId, KeyHash};

/// Who a rate-limit allowance belongs to: a key (by its hash) or an account
/// (by a hash of its id in a separate domain, so the two can never collide).
pub type Subject = KeyHash;

/// The subject of an account-wide allowance.
pub fn account_subject(account: &AccountId) -> Subject {
    let mut input = Vec::with_capacity(16 + account.as_str().len());
    input.extend_from_slice(b"cloro-account\0");
    input.extend_from_slice(account.as_str().as_bytes());
    KeyHash::of(&input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_subjects_differ_from_key_hashes_and_each_other() {
        let a = account_subject(&AccountId::new("acct_a").unwrap());
        let b = account_subject(&AccountId::new("acct_b").unwrap());
        assert_ne!(a, b);
        assert_ne!(a, KeyHash::of(b"acct_a"));
    }
}
