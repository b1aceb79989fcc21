//! `RedisTarget`: where a Redis connection points, as messages may show it:
//! the URL masked by the crate's one masker (`url_mask`), and the secrets
//! the masker hid, to scrub from any error text redis-rs writes. This is
//! the one place a `RedisError` becomes a [`StoreError`], so no copy of
//! the scrubbing can be forgotten.

use core::fmt;

use redis::{Client, ErrorKind, RedisError};

use crate::store::StoreError;
use crate::url_mask::{mask_url, mask_url_list, split_url_list, url_secrets};

/// Where a connection points: the masked URL to show, and the secrets to
/// scrub from error texts.
pub(crate) struct RedisTarget {
    pub(crate) masked: String,
    secrets: Vec<String>,
}

impl RedisTarget {
    pub(crate) fn new(url: &str) -> Self {
        RedisTarget {
            masked: mask_url(url),
            secrets: url_secrets(url),
        }
    }

    /// The target of a cluster: the seed list masked as a list, so a
    /// password a comma cut in two is not shown seed by seed.
    fn of_seeds(seeds: &[String]) -> Self {
        RedisTarget {
            masked: mask_url_list(&seeds.join(",")),
            secrets: {
                let mut secrets: Vec<String> =
                    seeds.iter().flat_map(|seed| url_secrets(seed)).collect();
                // Longest first across seeds too (see `url_secrets`).
                secrets.sort_by_key(|secret| core::cmp::Reverse(secret.len()));
                secrets
            },
        }
    }

    /// A client for `url` (the URL this target was made from, or one seed of
    /// it), for connections of its own such as pub/sub.
    pub(crate) fn client(&self, url: &str) -> Result<Client, StoreError> {
        Client::open(url).map_err(|error| {
            StoreError::unavailable(format!("cannot use the redis url {}", self.masked))
                .caused_by(self.scrubbed(&error))
        })
    }

    /// A Redis failure as a store error: data Redis returned that cannot be
    /// read is `Corrupt`; everything else (I/O, timeouts, server errors) is
    /// `Unavailable`, which callers may retry later.
    pub(crate) fn failure(&self, error: &RedisError) -> StoreError {
        match error.kind() {
            ErrorKind::UnexpectedReturnType | ErrorKind::Parse => {
                StoreError::corrupt(format!("redis at {} answered unexpectedly", self.masked))
                    .caused_by(self.scrubbed(error))
            }
            _ => self.unavailable(error),
        }
    }

    /// `error` as `Unavailable`, whatever its kind: for failures to set up
    /// a connection.
    pub(crate) fn unavailable(&self, error: &RedisError) -> StoreError {
        StoreError::unavailable(format!("redis at {}", self.masked)).caused_by(self.scrubbed(error))
    }

    /// `error` for a log line, scrubbed like a store error.
    pub(crate) fn describe(&self, error: &RedisError) -> String {
        format!("redis at {}: {}", self.masked, self.scrubbed(error))
    }

    /// `error` as the `source()` of a store error: its text with every
    /// secret of the URL removed, never the `RedisError` itself. redis-rs
    /// may write the URL it was given, password included, into an error's
    /// message or into the errors beneath it (an I/O or parse error), so a
    /// raw `RedisError` in a `source()` chain would hand the password to
    /// whoever prints the chain.
    fn scrubbed(&self, error: &RedisError) -> ScrubbedRedisError {
        ScrubbedRedisError(self.scrub(&error.to_string()))
    }

    fn scrub(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_owned(), |text, secret| text.replace(secret, "***"))
    }
}

/// What a Redis error said, with the secrets of the URL scrubbed out (see
/// [`RedisTarget::scrubbed`]). The chain of causes ends here on purpose.
#[derive(Debug)]
pub(crate) struct ScrubbedRedisError(String);

impl fmt::Display for ScrubbedRedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScrubbedRedisError {}

/// The seed URLs in a comma-separated list, blanks dropped (split as the
/// masker splits them, so each seed's masked form is the seed used).
fn split_seeds(seeds: &str) -> Vec<String> {
    split_url_list(seeds)
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// The seeds of a cluster's comma-separated list and their target.
///
/// # Errors
/// `Unavailable` when the list holds no URL.
pub(crate) fn cluster_seeds(seeds: &str) -> Result<(Vec<String>, RedisTarget), StoreError> {
    let urls = split_seeds(seeds);
    if urls.is_empty() {
        return Err(StoreError::unavailable(
            "a redis cluster needs at least one seed url",
        ));
    }
    let target = RedisTarget::of_seeds(&urls);
    Ok((urls, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_mask_urls_and_scrub_error_texts() {
        let target = RedisTarget::new("redis://user:hunter2@db.example:6380?password=s3cret");
        assert_eq!(
            target.masked,
            "redis://user:***@db.example:6380?password=***"
        );
        assert_eq!(
            target.scrub("auth hunter2 and s3cret failed"),
            "auth *** and *** failed"
        );
        let seeds = split_seeds("redis://:p%40ss@n1:7000, redis://:hunter2@n2:7001");
        let target = RedisTarget::of_seeds(&seeds);
        assert_eq!(target.masked, "redis://:***@n1:7000,redis://:***@n2:7001");
        assert_eq!(
            target.scrub("n1 said p@ss, n2 said hunter2"),
            "n1 said ***, n2 said ***"
        );
        let target = RedisTarget::of_seeds(&split_seeds("redis://hunter2,@n1:7000"));
        assert_eq!(target.masked, "redis://***@n1:7000");
    }

    /// The message and every `source()` beneath it.
    fn chain(error: &dyn std::error::Error) -> Vec<String> {
        let mut texts = vec![error.to_string()];
        let mut next = error.source();
        while let Some(cause) = next {
            texts.push(cause.to_string());
            next = cause.source();
        }
        texts
    }

    #[test]
    fn redis_failures_keep_a_scrubbed_cause_and_no_password() {
        let target = RedisTarget::new("redis://user:hunter2@db.example:6380");
        let leaky = [
            RedisError::from(std::io::Error::other(
                "cannot reach redis://user:hunter2@db.example:6380",
            )),
            RedisError::from((
                ErrorKind::Parse,
                "bad answer",
                "from user:hunter2".to_owned(),
            )),
        ];
        for raw in leaky {
            // The raw error would leak the password through its chain.
            assert!(chain(&raw).iter().any(|text| text.contains("hunter2")));
            let error = target.failure(&raw);
            let texts = chain(&error);
            assert!(texts.len() >= 2, "the cause is kept: {texts:?}");
            assert!(
                texts.iter().all(|text| !text.contains("hunter2")),
                "{texts:?}"
            );
        }
        for url in ["redis://user:hunter2@[::1", "hunter2"] {
            let error = RedisTarget::new(url).client(url).unwrap_err();
            let texts = chain(&error);
            assert!(
                texts.iter().all(|text| !text.contains("hunter2")),
                "{texts:?}"
            );
        }
    }
}
