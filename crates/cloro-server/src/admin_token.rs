//! The admin token (SPEC §7): from `CLORO_ADMIN_TOKEN`, or generated on first
//! start into `<data-dir>/admin-token` (mode 0600, the one file allowed to
//! hold a plaintext secret). Only its SHA-256 stays in memory, and it is
//! compared in constant time.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use cloro_auth_core::KeyHash;

pub use cloro_auth_core::MIN_ADMIN_TOKEN_LEN;
const FILE_NAME: &str = "admin-token";

/// The admin token, as its hash.
#[derive(Clone)]
pub struct AdminToken {
    hash: KeyHash,
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// Why the server cannot get an admin token.
#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    /// `CLORO_ADMIN_TOKEN` is too short or has characters outside b64token.
    #[error(
        "CLORO_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_LEN} characters of A-Z a-z 0-9 - . _ ~ + / (e.g. `openssl rand -hex 32`)"
    )]
    Weak,
    /// Redis mode needs the same token on every node.
    #[error(
        "with --redis-url, set CLORO_ADMIN_TOKEN so that every node accepts the same admin token"
    )]
    RequiredWithRedis,
    /// The token file could not be read or written.
    #[error("admin token file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl AdminToken {
    /// From the value of `CLORO_ADMIN_TOKEN`.
    ///
    /// # Errors
    /// `Weak` when the token is too short or not b64token.
    pub fn from_value(token: &str) -> Result<Self, AdminTokenError> {
        let well_formed = cloro_auth_core::is_admin_token_shaped(token);
        if !well_formed {
            return Err(AdminTokenError::Weak);
        }
        Ok(AdminToken {
            hash: KeyHash::of(token.as_bytes()),
        })
    }

    /// The token in `<data_dir>/admin-token`, made on first use. Returns the
    /// token and the file's path (to log: the path, never the token).
    ///
    /// # Errors
    /// When the file can be neither read nor created.
    pub fn from_data_dir(data_dir: &Path) -> Result<(Self, PathBuf), AdminTokenError> {
        let path = data_dir.join(FILE_NAME);
        let file_error = |source| AdminTokenError::File {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(file_error)?;
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok((Self::from_value(text.trim())?, path)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(file_error(error)),
        }
        let token = generate().map_err(file_error)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(file_error)?;
        file.write_all(token.as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .map_err(file_error)?;
        Ok((Self::from_value(&token)?, path))
    }

    /// The token's SHA-256 (a dashboard session remembers which token
    /// signed in by it).
    pub(crate) fn hash(&self) -> &KeyHash {
        &self.hash
    }

    /// Whether `token` is the admin token (constant time).
    pub fn matches(&self, token: &str) -> bool {
        KeyHash::of(token.as_bytes()) == self.hash
    }
}

/// `cloro_admin_` and 64 hex digits (256 bits). Never shaped like an API
/// key, so neither can be mistaken for the other.
pub(crate) fn generate() -> std::io::Result<String> {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut token = String::from("cloro_admin_");
    for byte in random {
        token.push_str(&format!("{byte:02x}"));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn weak_tokens_are_refused() {
        assert!(matches!(
            AdminToken::from_value("short"),
            Err(AdminTokenError::Weak)
        ));
        assert!(matches!(
            AdminToken::from_value(&"x".repeat(31)),
            Err(AdminTokenError::Weak)
        ));
        assert!(matches!(
            AdminToken::from_value(&format!("{} {}", "x".repeat(20), "y".repeat(20))),
            Err(AdminTokenError::Weak)
        ));
        let token = AdminToken::from_value(&"x".repeat(32)).unwrap();
        assert!(token.matches(&"x".repeat(32)));
        assert!(!token.matches(&"x".repeat(33)));
        assert_eq!(format!("{token:?}"), "AdminToken(..)");
    }

    #[test]
    fn generated_once_with_mode_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, path) = AdminToken::from_data_dir(dir.path()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.trim().starts_with("cloro_admin_") && text.trim().len() == 76);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (second, _) = AdminToken::from_data_dir(dir.path()).unwrap();
        assert!(first.matches(text.trim()) && second.matches(text.trim()));
    }
}
