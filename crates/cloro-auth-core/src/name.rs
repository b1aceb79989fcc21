//! Short validated names that travel inside errors and identities: scopes,
//! plan names, account ids and key ids. They live inline (at most 64 bytes) so the hot path and
//! the `no_std` build need no allocation for them.

use core::fmt;

const MAX_NAME_LEN: usize = 64;

/// Why a scope or plan name was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// Empty or over 64 bytes.
    Length,
    /// A character outside the allowed set.
    Character,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Length => f.write_str("must be 1 to 64 characters long"),
            NameError::Character => f.write_str("contains a character that is not allowed"),
        }
    }
}

impl core::error::Error for NameError {}

/// Inline storage shared by the two name types.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct InlineName {
    len: u8,
    bytes: [u8; MAX_NAME_LEN],
}

/// Hashes the name, not its padding (equal names are equal in every byte,
/// so this agrees with the derived `Eq`): a map keyed by an account, such
/// as the quota ledger's on every metered request, hashes a dozen bytes
/// instead of 65.
impl core::hash::Hash for InlineName {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.bytes[..usize::from(self.len)].hash(state);
    }
}

impl InlineName {
    fn new(text: &str, allowed: fn(u8) -> bool) -> Result<Self, NameError> {
        let raw = text.as_bytes();
        if raw.is_empty() || raw.len() > MAX_NAME_LEN {
            return Err(NameError::Length);
        }
        if !raw.iter().all(|&c| allowed(c)) {
            return Err(NameError::Character);
        }
        let mut bytes = [0u8; MAX_NAME_LEN];
        bytes[..raw.len()].copy_from_slice(raw);
        // Length checked above, so it fits in a u8.
        Ok(InlineName {
            len: raw.len() as u8,
            bytes,
        })
    }

    fn as_str(&self) -> &str {
        // Only ASCII was accepted.
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

macro_rules! inline_name_type {
    (
        $(#[$doc:meta])* $name:ident, $allowed:expr, $what:literal, $allowed_text:literal,
        pattern: $pattern:literal, description: $description:literal
    ) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(InlineName);

        impl $name {
            /// The same rule as [`Self::new`], as a JSON Schema pattern (a
            /// test holds the two together).
            #[cfg_attr(not(any(feature = "schema", test)), allow(dead_code))]
            pub(crate) const PATTERN: &'static str = $pattern;

            /// Validates `text`.
            ///
            /// # Errors
            /// When `text` is empty, over 64 bytes, or uses a character outside the set.
            pub fn new(text: &str) -> Result<Self, NameError> {
                InlineName::new(text, $allowed).map($name)
            }

            /// The name.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl core::str::FromStr for $name {
            type Err = NameError;

            fn from_str(text: &str) -> Result<Self, NameError> {
                Self::new(text)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.as_str(), f)
            }
        }

        #[cfg(feature = "serde")]
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        #[cfg(feature = "serde")]
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <alloc::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                $name::new(&text).map_err(|why| {
                    serde::de::Error::custom(format_args!(
                        "{} `{}` {why}; use 1 to 64 of {}",
                        $what,
                        text.escape_default(),
                        $allowed_text
                    ))
                })
            }
        }

        /// The same rule as [`Self::new`], as a JSON Schema pattern.
        #[cfg(feature = "schema")]
        impl schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }

            fn schema_name() -> alloc::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": $name::PATTERN,
                    "description": $description
                })
            }
        }
    };
}

inline_name_type!(
    /// A permission a key holds or a route needs: `[a-z0-9_.:*-]{1,64}`.
    /// The bare `*` is the only wildcard; `monitor:*` is an ordinary name.
    Scope,
    |c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b':' | b'*' | b'-'),
    "scope",
    "a-z 0-9 _ . : * -",
    pattern: "^[a-z0-9_.:*-]{1,64}$",
    description: "A scope; the bare `*` grants every scope."
);

inline_name_type!(
    /// The name of a plan from the config: `[a-z0-9_-]{1,64}`.
    PlanName,
    |c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'),
    "plan",
    "a-z 0-9 _ -",
    pattern: "^[a-z0-9_-]{1,64}$",
    description: "A plan named in the configuration."
);

inline_name_type!(
    /// An account id: `[A-Za-z0-9_-]{1,64}` (SPEC §6).
    AccountId,
    |c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'),
    "account_id",
    "A-Z a-z 0-9 _ -",
    pattern: "^[A-Za-z0-9_-]{1,64}$",
    description: "An account id."
);

inline_name_type!(
    /// A key id, `key_` and random characters; opaque to clients and never
    /// derived from the secret. Accepts `[A-Za-z0-9_-]{1,64}` so ids from
    /// older formats still parse.
    KeyId,
    |c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'),
    "key id",
    "A-Z a-z 0-9 _ -",
    pattern: "^[A-Za-z0-9_-]{1,64}$",
    description: "An opaque key id, `key_…`; not derived from the secret."
);

impl Scope {
    /// `*`: every scope.
    pub fn wildcard() -> Self {
        Scope(InlineName {
            len: 1,
            bytes: wildcard_bytes(),
        })
    }

    /// Whether a key holding this scope may use a route that needs `required`.
    pub fn grants(&self, required: &Scope) -> bool {
        self.as_str() == "*" || self == required
    }
}

const fn wildcard_bytes() -> [u8; MAX_NAME_LEN] {
    let mut bytes = [0u8; MAX_NAME_LEN];
    bytes[0] = b'*';
    bytes
}

/// The bytes a pattern `^[class]{1,64}$` allows, read from its class.
#[cfg(test)]
fn pattern_allows(pattern: &str) -> [bool; 128] {
    let class = pattern
        .strip_prefix("^[")
        .and_then(|rest| rest.strip_suffix("]{1,64}$"))
        .expect("a pattern of the shape ^[class]{1,64}$");
    let class = class.as_bytes();
    let mut allowed = [false; 128];
    let mut i = 0;
    while i < class.len() {
        if i + 2 < class.len() && class[i + 1] == b'-' {
            for byte in class[i]..=class[i + 2] {
                allowed[usize::from(byte)] = true;
            }
            i += 3;
        } else {
            allowed[usize::from(class[i])] = true;
            i += 1;
        }
    }
    allowed
}

/// Asserts that a pattern `^[class]{1,64}$` accepts exactly what `accepts`
/// does: the same ASCII characters, 1 to 64 of them.
#[cfg(test)]
pub(crate) fn assert_pattern_is_parser(pattern: &str, accepts: impl Fn(&str) -> bool) {
    let allowed = pattern_allows(pattern);
    for byte in 0..128u8 {
        let mut buffer = [0; 4];
        let text = char::from(byte).encode_utf8(&mut buffer);
        assert_eq!(
            accepts(text),
            allowed[usize::from(byte)],
            "{pattern}: {byte}"
        );
    }
    assert!(!accepts(""));
    let longest = "a".repeat(MAX_NAME_LEN);
    assert!(accepts(&longest) && !accepts(&(longest + "a")), "{pattern}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each name type's schema pattern says what its parser accepts: the
    /// same characters, 1 to 64 of them.
    #[test]
    fn patterns_agree_with_the_parsers() {
        assert_pattern_is_parser(Scope::PATTERN, |text| Scope::new(text).is_ok());
        assert_pattern_is_parser(PlanName::PATTERN, |text| PlanName::new(text).is_ok());
        assert_pattern_is_parser(AccountId::PATTERN, |text| AccountId::new(text).is_ok());
        assert_pattern_is_parser(KeyId::PATTERN, |text| KeyId::new(text).is_ok());
    }

    #[test]
    fn scope_charset_and_length() {
        assert!(Scope::new("monitor:write").is_ok());
        assert!(Scope::new("a.b-c_d*").is_ok());
        assert_eq!(Scope::new(""), Err(NameError::Length));
        assert_eq!(Scope::new(&"a".repeat(65)), Err(NameError::Length));
        assert!(Scope::new(&"a".repeat(64)).is_ok());
        assert_eq!(Scope::new("Monitor"), Err(NameError::Character));
        assert_eq!(Scope::new("a b"), Err(NameError::Character));
        assert_eq!(Scope::new("a\"b"), Err(NameError::Character));
    }

    #[test]
    fn only_bare_star_is_a_wildcard() {
        let write = Scope::new("monitor:write").unwrap();
        assert!(Scope::wildcard().grants(&write));
        assert!(write.grants(&write));
        assert!(!Scope::new("monitor:*").unwrap().grants(&write));
        assert_eq!(Scope::wildcard(), Scope::new("*").unwrap());
    }

    #[test]
    fn account_and_key_ids() {
        assert!(AccountId::new("Acct_1-x").is_ok());
        assert_eq!(AccountId::new("a.b"), Err(NameError::Character));
        assert_eq!(AccountId::new(&"a".repeat(65)), Err(NameError::Length));
        assert!(KeyId::new("key_0123abcd").is_ok());
        assert_eq!(KeyId::new("key/1"), Err(NameError::Character));
    }

    #[test]
    fn plan_names_are_stricter() {
        assert!(PlanName::new("pro_2026").is_ok());
        assert_eq!(PlanName::new("pro:x"), Err(NameError::Character));
    }
}
