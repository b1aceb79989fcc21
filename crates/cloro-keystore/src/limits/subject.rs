//! Hash-map keys for the hot path: every per-key, per-account and
//! per-address map is keyed by a SHA-256 digest ([`Subject`]) and hashed
//! with a [`KeyedHasher`].

use std::hash::{BuildHasher, DefaultHasher, RandomState};

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

/// The hasher of every map keyed by key hashes or client addresses:
/// SipHash-1-3 (std's `RandomState`) with a random key drawn per map.
///
/// Key hashes and address subjects are SHA-256 digests, but the tokens and
/// addresses behind them are chosen by clients, and a client that can grind
/// tokens can pick digests whose raw bytes land in one bucket of an unkeyed
/// table, turning its lookups linear (SPEC §9). A keyed hash makes the
/// bucket unknowable.
#[derive(Clone, Debug, Default)]
pub struct KeyedHasher(RandomState);

impl BuildHasher for KeyedHasher {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        self.0.build_hasher()
    }
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

    #[test]
    fn keyed_hashers_differ_per_map() {
        let hash = KeyHash::from_bytes([7; 32]);
        let (a, b) = (KeyedHasher::default(), KeyedHasher::default());
        assert_eq!(a.hash_one(hash), a.clone().hash_one(hash));
        assert_ne!(a.hash_one(hash), b.hash_one(hash));
    }
}
