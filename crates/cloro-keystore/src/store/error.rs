//! `StoreError`: why a store call failed, as a kind (the variant) and a
//! cause kept whole for `source()`, so a caller can still tell a redb I/O
//! error from a JSON one without parsing a message.

use core::fmt;
use core::future::Future;
use core::time::Duration;
use std::borrow::Cow;
use std::error::Error;
use std::sync::Arc;

/// Why a store call failed. Messages never contain a key or a token: stores
/// only ever see hashes.
///
/// The message (`Display`) is for people and shows the cause's own text
/// after the store's words, because log lines and start-up errors print
/// only `Display`; `source()` hands out the cause itself, for code that
/// needs to look at it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached or did not answer in time; retrying later
    /// may work.
    Unavailable(StoreFailure),
    /// The store answered with data this version cannot read.
    Corrupt(StoreFailure),
    /// A commit lost a race: a record's version was not the expected one, or
    /// a new record's id or hash already exists.
    Conflict,
}

/// What an `Unavailable` or `Corrupt` store error says: what the store was
/// doing, in its own words, and the error that stopped it, if another
/// library raised one.
///
/// The cause is shared (`Arc`), so the error stays `Clone`: the verify
/// cache hands one lookup's result to every caller that waited for it.
#[derive(Clone, Debug)]
pub struct StoreFailure {
    context: Cow<'static, str>,
    cause: Option<Arc<dyn Error + Send + Sync>>,
}

impl StoreError {
    /// An `Unavailable` error that says what could not be done.
    pub fn unavailable(context: impl Into<Cow<'static, str>>) -> Self {
        StoreError::Unavailable(StoreFailure::new(context))
    }

    /// A `Corrupt` error that says what could not be read or written.
    pub fn corrupt(context: impl Into<Cow<'static, str>>) -> Self {
        StoreError::Corrupt(StoreFailure::new(context))
    }

    /// The same error with `cause` as its `source()`. A `Conflict` has no
    /// cause and stays as it is.
    #[must_use]
    pub fn caused_by(self, cause: impl Error + Send + Sync + 'static) -> Self {
        match self {
            StoreError::Unavailable(failure) => StoreError::Unavailable(failure.caused_by(cause)),
            StoreError::Corrupt(failure) => StoreError::Corrupt(failure.caused_by(cause)),
            StoreError::Conflict => StoreError::Conflict,
        }
    }

    /// What the store says about an `Unavailable` or `Corrupt` error.
    pub fn failure(&self) -> Option<&StoreFailure> {
        match self {
            StoreError::Unavailable(failure) | StoreError::Corrupt(failure) => Some(failure),
            StoreError::Conflict => None,
        }
    }
}

impl StoreFailure {
    fn new(context: impl Into<Cow<'static, str>>) -> Self {
        StoreFailure {
            context: context.into(),
            cause: None,
        }
    }

    fn caused_by(mut self, cause: impl Error + Send + Sync + 'static) -> Self {
        self.cause = Some(Arc::new(cause));
        self
    }

    /// What the store was doing, in its own words (no cause).
    pub fn context(&self) -> &str {
        &self.context
    }
}

/// A failure with no cause but the store's words (a test's injected
/// failure, a bound the store itself enforces).
impl From<&'static str> for StoreFailure {
    fn from(context: &'static str) -> Self {
        StoreFailure::new(context)
    }
}

impl From<String> for StoreFailure {
    fn from(context: String) -> Self {
        StoreFailure::new(context)
    }
}

impl fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)?;
        match &self.cause {
            Some(cause) => write!(f, ": {cause}"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(failure) => {
                write!(f, "the key store is unavailable: {failure}")
            }
            StoreError::Corrupt(failure) => {
                write!(f, "the key store holds data that cannot be read: {failure}")
            }
            StoreError::Conflict => f.write_str("a concurrent change was committed first"),
        }
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        let cause = self.failure()?.cause.as_deref()?;
        Some(cause as &(dyn Error + 'static))
    }
}

/// Runs `work` for at most `timeout`; past it, the error `late` makes. A
/// store call that hangs becomes `Unavailable` instead of a hung request
/// (the `KeyStore` contract, SPEC §8).
pub(crate) async fn within<T>(
    timeout: Duration,
    work: impl Future<Output = Result<T, StoreError>>,
    late: impl FnOnce() -> StoreError,
) -> Result<T, StoreError> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(late()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_shows_the_cause_and_source_keeps_it() {
        let io = std::io::Error::other("disk on fire");
        let error = StoreError::unavailable("cannot open keys.redb").caused_by(io);
        assert_eq!(
            error.to_string(),
            "the key store is unavailable: cannot open keys.redb: disk on fire"
        );
        let source = error.source().expect("a cause");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
        assert_eq!(
            error.failure().map(StoreFailure::context),
            Some("cannot open keys.redb")
        );
        // Clones share the cause.
        assert!(error.clone().source().is_some());
    }

    #[test]
    fn words_alone_have_no_source_and_conflicts_no_cause() {
        let error = StoreError::corrupt("a usage count cannot be read");
        assert!(error.source().is_none());
        assert_eq!(
            error.to_string(),
            "the key store holds data that cannot be read: a usage count cannot be read"
        );
        let conflict = StoreError::Conflict.caused_by(std::io::Error::other("x"));
        assert!(matches!(conflict, StoreError::Conflict));
        assert!(conflict.source().is_none());
    }
}
