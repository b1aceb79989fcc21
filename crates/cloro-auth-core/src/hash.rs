//! `KeyHash`: SHA-256 of a bearer secret, the only form of a key that is ever
//! stored, cached or sent to Redis (SPEC §2).
//!
//! Keys carry 128 random bits, so a fast hash is enough: a slow password hash
//! would add latency to every request and no protection against guessing.

use core::fmt;
use core::hash::{Hash, Hasher};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::hex;

/// SHA-256 of a key (or of an admin token). Equality is constant time, so a
/// comparison reveals nothing about how many leading bytes matched.
#[derive(Clone, Copy)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// Hashes the secret's bytes exactly as sent.
    pub fn of(secret: &[u8]) -> Self {
        KeyHash(Sha256::digest(secret).into())
    }

    /// Wraps a hash read back from a store.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        KeyHash(bytes)
    }

    /// The 32 digest bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, 64 characters: how the Redis store names a key.
    pub fn to_hex(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        hex::encode_into(&self.0, &mut out);
        out
    }

    /// Parses 64 lower-case hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let digits = text.as_bytes();
        if digits.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = (hex::digit_value(pair[0])? << 4) | hex::digit_value(pair[1])?;
        }
        Some(KeyHash(bytes))
    }
}

impl PartialEq for KeyHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for KeyHash {}

impl Hash for KeyHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Sixteen bytes of the digest: short to hash on the hot path, and
        // too wide for anyone to grind many tokens onto one value. Maps that
        // an attacker can fill hash this with a keyed hasher (the keystore's
        // `KeyedHasher`), so the bucket a hash lands in cannot be chosen.
        let mut head = [0u8; 16];
        head.copy_from_slice(&self.0[..16]);
        state.write_u128(u128::from_le_bytes(head));
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not a secret, but there is no reason to print all of it either.
        let hex = self.to_hex();
        let head = core::str::from_utf8(&hex[..12]).unwrap_or("");
        write!(f, "KeyHash({head}…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let hash = KeyHash::of(b"sk_test_whatever");
        let hex = hash.to_hex();
        let text = core::str::from_utf8(&hex).unwrap();
        assert_eq!(KeyHash::from_hex(text), Some(hash));
        assert_eq!(KeyHash::from_hex(&text.to_ascii_uppercase()), None);
        assert_eq!(KeyHash::from_hex(&text[..63]), None);
    }

    #[test]
    fn sha256_of_abc() {
        let hex = KeyHash::of(b"abc").to_hex();
        assert_eq!(
            core::str::from_utf8(&hex).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn equality_compares_every_byte() {
        let a = KeyHash::from_bytes([1; 32]);
        let mut bytes = [1; 32];
        bytes[31] = 2;
        assert_ne!(a, KeyHash::from_bytes(bytes));
        assert_eq!(a, KeyHash::from_bytes([1; 32]));
    }
}
