//! Leaked keys on the wire (SPEC §12): the reports secret-scanning partners
//! (GitHub, GitLab) post, the feedback we answer, and the admin request that
//! revokes keys by their plaintext. Every type here that holds a token
//! prints only how many it holds: a report is full of secrets.

use alloc::string::String;
#[cfg(feature = "schema")]
use alloc::string::ToString; // `schemars(regex(…))` calls `to_string`
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use super::KeyInfo;

/// The most keys one `POST /admin/v1/keys/revoke-leaked` may name, and the
/// most tokens one partner report may hold (GitHub sends up to 1,000).
pub const MAX_LEAKED_KEYS: usize = 1000;

/// `POST /admin/v1/keys/revoke-leaked`: keys by their plaintext, because
/// that is what someone found (in a ticket, a log, a paste).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RevokeLeakedRequest {
    /// The plaintext keys, at most 1000; strings that are not keys we
    /// issued count in `not_found`.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_LEAKED_KEYS)))]
    pub keys: Vec<String>,
    /// Why; kept in each record and the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(max = super::limits::MAX_REASON_CHARS)))]
    pub reason: Option<String>,
}

impl fmt::Debug for RevokeLeakedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevokeLeakedRequest")
            .field("keys", &format_args!("[{} keys]", self.keys.len()))
            .field("reason", &self.reason)
            .finish()
    }
}

/// The answer to `RevokeLeakedRequest`: never a plaintext.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RevokeLeakedResponse {
    /// The keys that are now revoked (also those that already were), in
    /// the order they were named, each once.
    pub revoked: Vec<KeyInfo>,
    /// How many of the strings named no key we issued.
    pub not_found: u64,
}

/// One match in a secret-scanning report.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LeakedToken {
    /// What the scanner found.
    pub token: String,
    /// The partner's name for the kind of token (echoed as `token_type`).
    #[serde(rename = "type")]
    pub token_type: String,
    /// Where it was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// What kind of place that is (`content`, `commit`, `issue`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl fmt::Debug for LeakedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeakedToken")
            .field("token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("url", &self.url)
            .field("source", &self.source)
            .finish()
    }
}

/// Whether a reported token is a key we issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum LeakLabel {
    /// One of our keys (live, revoked or expired: it was real).
    TruePositive,
    /// Not a key we issued: a bad checksum, another format, or unknown.
    FalsePositive,
}

/// One entry of the answer to a report (GitHub's feedback format).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LeakFeedback {
    /// SHA-256 of the token, lowercase hex: the partner matches on it, and
    /// the answer never carries the token itself.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9a-f]{64}$")))]
    pub token_hash: String,
    /// The report's `type`, echoed.
    pub token_type: String,
    /// `true_positive` for a key we issued (it got the configured
    /// `leaked_key_action`), else `false_positive`.
    pub label: LeakLabel,
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec;

    #[test]
    fn debug_never_shows_a_token() {
        let key = "sk_live_0123456789abcdef0123456789abcdef01234567";
        let request = RevokeLeakedRequest {
            keys: vec![key.into()],
            reason: Some("pasted in a ticket".into()),
        };
        let token = LeakedToken {
            token: key.into(),
            token_type: "cloro_api_key".into(),
            url: Some("https://example.com/x".into()),
            source: Some("content".into()),
        };
        for text in [format!("{request:?}"), format!("{token:?}")] {
            assert!(!text.contains("0123456789abcdef"), "{text}");
        }
        assert!(format!("{request:?}").contains("[1 keys]"));
    }

    #[test]
    fn a_report_reads_as_github_sends_it() {
        let report: Vec<LeakedToken> = serde_json::from_str(
            r#"[{"token":"x","type":"cloro_api_key","url":"https://github.com/a/b","source":"content"}]"#,
        )
        .unwrap();
        assert_eq!(report[0].token_type, "cloro_api_key");
        let feedback = LeakFeedback {
            token_hash: "ab".into(),
            token_type: "cloro_api_key".into(),
            label: LeakLabel::TruePositive,
        };
        assert_eq!(
            serde_json::to_string(&feedback).unwrap(),
            r#"{"token_hash":"ab","token_type":"cloro_api_key","label":"true_positive"}"#
        );
    }
}
