//! The two secrets the SDK carries, and the one place they become an
//! `Authorization` header.
//!
//! API keys are [`ApiKey`] from the core (redacted `Debug`, wiped on drop).
//! The admin token gets the same treatment here. Both turn into a header
//! value once, at client construction, marked sensitive so that hyper's
//! `Debug` hides it and HTTP/2 never puts it in a compression table.

use std::fmt;

use cloro_auth_core::{ApiKey, MAX_TOKEN_LEN, MIN_ADMIN_TOKEN_LEN, is_admin_token_shaped};
use http::HeaderValue;
use zeroize::Zeroizing;

use crate::error::ConfigError;

/// The admin token (`CLORO_ADMIN_TOKEN`) that opens `/admin/v1/*`.
/// Its `Debug` never shows it, and its memory is wiped on drop.
#[derive(Clone)]
pub struct AdminToken(Zeroizing<String>);

impl AdminToken {
    /// Checks that `token` can be sent as a bearer token (RFC 6750
    /// `b64token`); whether it is the right one is the server's question.
    ///
    /// # Errors
    /// [`ConfigError::MissingAdminToken`] when empty,
    /// [`ConfigError::MalformedAdminToken`] otherwise.
    pub fn new(token: &str) -> Result<Self, ConfigError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(ConfigError::MissingAdminToken);
        }
        // The server's own rule (cloro_auth_core), so a token it would never
        // accept is refused here, with the reason, before any request.
        if token.len() < MIN_ADMIN_TOKEN_LEN {
            return Err(ConfigError::MalformedAdminToken(
                "it is shorter than 32 characters; admin tokens are at least 32",
            ));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(ConfigError::MalformedAdminToken(
                "it is over 256 characters long",
            ));
        }
        if !is_admin_token_shaped(token) {
            return Err(ConfigError::MalformedAdminToken(
                "it has characters a bearer token cannot carry (only A-Z a-z 0-9 - . _ ~ + / and = at the end)",
            ));
        }
        Ok(AdminToken(Zeroizing::new(token.to_owned())))
    }

    /// The plaintext, for the `Authorization` header only.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// `Bearer <key>`, sensitive.
pub(crate) fn bearer_for_key(key: &ApiKey) -> Result<HeaderValue, ConfigError> {
    bearer(key.expose_secret())
}

/// `Bearer <token>`, sensitive.
pub(crate) fn bearer_for_admin(token: &AdminToken) -> Result<HeaderValue, ConfigError> {
    bearer(token.expose_secret())
}

fn bearer(secret: &str) -> Result<HeaderValue, ConfigError> {
    // The text is wiped once the header holds its own copy.
    let mut text = Zeroizing::new(String::with_capacity(7 + secret.len()));
    text.push_str("Bearer ");
    text.push_str(secret);
    let mut value = HeaderValue::from_str(&text)
        .map_err(|_| ConfigError::MalformedAdminToken("it cannot be sent in an HTTP header"))?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_tokens() {
        assert!(AdminToken::new("cloro_admin_0123456789abcdef0123456789abcdef").is_ok());
        assert!(AdminToken::new("abc+/~.-_0123456789abcdef0123456789==").is_ok());
        assert_eq!(
            AdminToken::new("  ").unwrap_err(),
            ConfigError::MissingAdminToken
        );
        let long = "x".repeat(32);
        for bad in [
            format!("{long} b"),
            "=".repeat(40),
            format!("{long}=b"),
            format!("{long}tok\u{e9}n"),
            format!("{long}\tb"),
            // The server would refuse these too: too short, too long.
            "short_admin_token".to_owned(),
            "x".repeat(257),
        ] {
            assert!(AdminToken::new(&bad).is_err(), "{bad:?}");
        }
        let token = AdminToken::new("secret_admin_token_value_0123456789abcdef").unwrap();
        assert!(!format!("{token:?}").contains("secret"));
        let header = bearer_for_admin(&token).unwrap();
        assert!(header.is_sensitive());
        assert!(!format!("{header:?}").contains("secret"));
    }
}
