//! Hash-map keys for the hot path. Every per-key and per-account map is
//! keyed by a SHA-256 digest (`KeyHash`), which is already uniformly random,
//! so hashing it again with SipHash would only cost time: these maps use the
//! digest's first eight bytes as the hash (see `KeyHash`'s `Hash` impl).

use core::hash::{BuildHasher, Hasher};

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

/// A `BuildHasher` for maps keyed by [`KeyHash`]: passes its one `u64` through.
#[derive(Clone, Copy, Debug, Default)]
pub struct DigestHasherBuilder;

impl BuildHasher for DigestHasherBuilder {
    type Hasher = DigestHasher;

    fn build_hasher(&self) -> DigestHasher {
        DigestHasher(0)
    }
}

/// The hasher behind [`DigestHasherBuilder`].
#[derive(Clone, Copy, Debug, Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than `KeyHash`; fold them in so such a
        // key still hashes correctly, if slowly.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
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
    fn digest_hasher_uses_the_digest_head() {
        let hash = KeyHash::from_bytes([7; 32]);
        assert_eq!(
            DigestHasherBuilder.hash_one(hash),
            u64::from_le_bytes([7; 8])
        );
    }
}
