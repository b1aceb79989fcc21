//! Webhook secrets at rest (SPEC §12; never stored in plaintext): each is
//! sealed with AES-256-GCM under the server's webhook key, with the
//! endpoint's id as associated data, so a sealed secret copied onto
//! another endpoint does not open.
//!
//! The key is 32 random bytes in a file (`--webhook-key-file`, by default
//! `<data-dir>/webhook-key`), made with mode 0600 on first start. Nodes
//! that share a Redis need the same file; a node with another key cannot
//! open the secrets and says so in the delivery's error.

use std::io::Write as _;
use std::path::Path;

use cloro_auth_core::webhook::WebhookSecret;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

const KEY_BYTES: usize = 32;

/// The key that seals webhook secrets.
pub(crate) struct SealingKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey([redacted])")
    }
}

/// Why the key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SealingKeyError {
    /// The file cannot be read or made.
    #[error("cannot use the webhook key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not hold 32 bytes.
    #[error(
        "the webhook key file {path} must hold exactly 32 bytes; remove it to make a new one (existing webhooks then need new secrets)"
    )]
    Length {
        /// The file.
        path: String,
    },
    /// No random bytes.
    #[error("the OS gave no random bytes for the webhook key")]
    Random,
}

impl SealingKey {
    /// The key in `path`, made there (mode 0600) if the file does not exist.
    ///
    /// # Errors
    /// A file that cannot be read or written, or holds another length.
    pub(crate) fn load_or_create(path: &Path) -> Result<Self, SealingKeyError> {
        let shown = path.display().to_string();
        let io = |source| SealingKeyError::Io {
            path: shown.clone(),
            source,
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut fresh = Zeroizing::new(vec![0u8; KEY_BYTES]);
                getrandom::fill(&mut fresh).map_err(|_| SealingKeyError::Random)?;
                if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path).map_err(io)?;
                file.write_all(&fresh).map_err(io)?;
                file.sync_all().map_err(io)?;
                fresh
            }
            Err(error) => return Err(io(error)),
        };
        Self::from_bytes(&bytes).ok_or(SealingKeyError::Length { path: shown })
    }

    /// A key of these 32 bytes.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).ok()?;
        Some(SealingKey {
            key: LessSafeKey::new(unbound),
        })
    }

    /// `secret` sealed for the endpoint `webhook_id`: a random nonce, then
    /// the ciphertext and its tag.
    ///
    /// # Errors
    /// No random bytes for the nonce.
    pub(crate) fn seal(
        &self,
        webhook_id: &str,
        secret: &WebhookSecret,
    ) -> Result<Vec<u8>, SealingKeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| SealingKeyError::Random)?;
        let mut sealed = secret.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(webhook_id.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| SealingKeyError::Random)?;
        let mut out = nonce.to_vec();
        out.append(&mut sealed);
        Ok(out)
    }

    /// The secret sealed for `webhook_id`; `None` if it was sealed under
    /// another key or for another endpoint, or was changed.
    pub(crate) fn open(&self, webhook_id: &str, sealed: &[u8]) -> Option<WebhookSecret> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(webhook_id.as_bytes()), &mut buffer)
            .ok()?;
        WebhookSecret::from_bytes(plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_binds_to_the_endpoint_and_key() {
        let key = SealingKey::from_bytes(&[1; 32]).unwrap();
        let secret = WebhookSecret::from_bytes(&[42; 32]).unwrap();
        let sealed = key.seal("wh_a", &secret).unwrap();
        assert!(
            !sealed.windows(32).any(|w| w == secret.as_bytes()),
            "the plaintext is in the sealed form"
        );
        assert_eq!(key.open("wh_a", &sealed), Some(secret.clone()));
        assert_eq!(key.open("wh_b", &sealed), None, "another endpoint");
        let other = SealingKey::from_bytes(&[2; 32]).unwrap();
        assert_eq!(other.open("wh_a", &sealed), None, "another key");
        let mut changed = sealed.clone();
        changed[20] ^= 1;
        assert_eq!(key.open("wh_a", &changed), None);
        assert_eq!(key.open("wh_a", &sealed[..5]), None);
        assert_ne!(
            key.seal("wh_a", &secret).unwrap(),
            sealed,
            "a fresh nonce each time"
        );
    }

    #[test]
    fn the_key_file_is_made_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("webhook-key");
        let first = SealingKey::load_or_create(&path).unwrap();
        let secret = WebhookSecret::from_bytes(&[5; 32]).unwrap();
        let sealed = first.seal("wh_x", &secret).unwrap();
        let again = SealingKey::load_or_create(&path).unwrap();
        assert_eq!(again.open("wh_x", &sealed), Some(secret), "the same key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            SealingKey::load_or_create(&path),
            Err(SealingKeyError::Length { .. })
        ));
    }
}
