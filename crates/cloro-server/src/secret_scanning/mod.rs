//! Secret-scanning partners (SPEC §12): GitHub's secret scanning partner
//! program (`POST /partners/github/secret-scanning`) and GitLab's token
//! revocation (`POST /partners/gitlab/secret-detection`) post the tokens
//! they found in public places. A report is believed only when its ECDSA
//! P-256 signature over the raw body verifies against the partner's key
//! named in the request; then each token that is a key we issued gets the
//! configured action (`KeyAdmin::report_leaked`), and the answer is
//! GitHub's feedback array, one entry per token, never the token itself.

mod public_keys;

pub use cloro_config::KeySource;
pub(crate) use public_keys::PartnerKeys;

use std::net::IpAddr;

use base64::Engine as _;
use bytes::Bytes;
use cloro_auth_core::wire::{LeakFeedback, LeakLabel, LeakedToken, MAX_LEAKED_KEYS};
use cloro_auth_core::{ApiKey, AuthError, ErrorCode, KeyHash};
use cloro_keystore::{LeakReport, LeakedKeyAction, LogLimit};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::app::App;
use cloro_guard::{ApiError, Body, BoxError, json};

/// A report of [`MAX_LEAKED_KEYS`] tokens with long URLs fits easily.
const MAX_REPORT_BYTES: usize = 1024 * 1024;
/// Identifiers are hex digests; anything longer is not one.
const MAX_IDENTIFIER_BYTES: usize = 256;
/// A DER ECDSA P-256 signature is at most 72 bytes; its base64, 96.
const MAX_SIGNATURE_BYTES: usize = 256;

/// An error answer, boxed: it is large, and every step returns one.
type Refusal = Box<ApiError>;

/// Who sent a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Partner {
    /// GitHub secret scanning.
    GitHub,
    /// GitLab secret detection.
    GitLab,
}

impl Partner {
    /// The audit log's actor.
    fn actor(self) -> &'static str {
        match self {
            Partner::GitHub => "github-secret-scanning",
            Partner::GitLab => "gitlab-secret-detection",
        }
    }

    fn headers(self) -> (&'static str, &'static str) {
        match self {
            Partner::GitHub => (
                "github-public-key-identifier",
                "github-public-key-signature",
            ),
            Partner::GitLab => (
                "gitlab-public-key-identifier",
                "gitlab-public-key-signature",
            ),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Partner::GitHub => "GitHub",
            Partner::GitLab => "GitLab",
        }
    }
}

/// What the server does with reports.
#[derive(Debug)]
pub(crate) struct SecretScanning {
    /// What a report does to a key.
    pub action: LeakedKeyAction,
    /// GitHub's keys (on by default, fetched from GitHub when first needed).
    pub github: Option<PartnerKeys>,
    /// GitLab's keys (only when configured).
    pub gitlab: Option<PartnerKeys>,
}

/// Answers one report.
pub(crate) async fn handle<B>(
    app: &App,
    partner: Partner,
    request: Request<B>,
    peer: IpAddr,
    request_id: &str,
) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    match answer(app, partner, request, peer).await {
        Ok(response) => response,
        Err(error) => error.into_response(request_id),
    }
}

async fn answer<B>(
    app: &App,
    partner: Partner,
    request: Request<B>,
    peer: IpAddr,
) -> Result<Response<Body>, Refusal>
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let scanning = app.secret_scanning();
    let keys = match partner {
        Partner::GitHub => scanning.github.as_ref(),
        Partner::GitLab => scanning.gitlab.as_ref(),
    }
    .ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!(
                "{} reports are not accepted here: configure [secret_scanning.{}] public_keys_url or public_keys_file",
                partner.name(),
                partner.name().to_ascii_lowercase()
            ),
        )
    })?;
    let (parts, body) = request.into_parts();
    // Anyone may post here, and each check costs a signature verification:
    // a forged report draws on the same per-address allowance as a wrong
    // admin token (SPEC §9), and once it is spent the address is refused
    // before any of that work.
    let attempts = app.guard().verifier().failed_attempts();
    let subject = attempts.subject(app.guard().client(peer, &parts.headers));
    let now_nanos = i64::try_from(app.clock().now().as_nanosecond()).unwrap_or(i64::MAX);
    attempts.check(&subject, now_nanos).map_err(locked_out)?;
    let refuse = |why: Refusal| {
        let _ = attempts.charge(&subject, now_nanos).map_err(locked_out)?;
        Err::<Response<Body>, Refusal>(why)
    };
    let (identifier, signature) = match signature_headers(partner, &parts.headers) {
        Ok(headers) => headers,
        Err(why) => return refuse(why),
    };
    let body = read_report(body).await?;
    // Signature first: nothing of an unsigned body is parsed, let alone
    // acted on.
    let Some(public_key) = keys.key(&identifier).await else {
        return refuse(unauthorised(
            partner,
            "the public key identifier is not one of the partner's keys",
        ));
    };
    let verified = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        &public_key[..],
    )
    .verify(&body, &signature);
    if verified.is_err() {
        static FORGED: LogLimit = LogLimit::per_second();
        if let Some(suppressed) = FORGED.admit() {
            tracing::warn!(
                suppressed,
                partner = partner.name(),
                "a secret-scanning report's signature did not verify"
            );
        }
        return refuse(unauthorised(
            partner,
            "the signature does not match the body",
        ));
    }
    let tokens: Vec<LeakedToken> = serde_json::from_slice(&body).map_err(|error| {
        ApiError::invalid_field(
            "body",
            format!(
                "not a report: expected a JSON array of {{\"token\", \"type\", \"url\", \"source\"}}: {}",
                cloro_auth_core::redact_keys_in(&error.to_string())
            ),
        )
    })?;
    if tokens.len() > MAX_LEAKED_KEYS {
        return Err(Box::new(ApiError::invalid_field(
            "body",
            format!("a report holds at most {MAX_LEAKED_KEYS} tokens; send the rest in another"),
        )));
    }
    let now = app.clock().now();
    let mut feedback = Vec::with_capacity(tokens.len());
    for token in &tokens {
        let label = match ApiKey::parse_token(&token.token) {
            // Not our format, or a bad checksum: no lookup at all.
            Err(_) => LeakLabel::FalsePositive,
            Ok(key) => {
                let report = LeakReport {
                    url: token.url.as_deref(),
                    source: token.source.as_deref(),
                    reason: None,
                };
                let handled = app
                    .admin()
                    .report_leaked(&key.hash(), scanning.action, &report, partner.actor(), now)
                    .await
                    .map_err(|error| {
                        tracing::warn!(%error, "acting on a leaked-key report failed");
                        // The partner retries a failed delivery; the report
                        // is idempotent, so a retry does no harm.
                        ApiError::new(
                            ErrorCode::AuthUnavailable,
                            "the key store could not be reached; send the report again",
                        )
                        .with_retry_after(1)
                    })?;
                match handled {
                    Some(record) => {
                        tracing::warn!(key_id = %record.id, account_id = %record.account_id, partner = partner.name(), action = ?scanning.action, "a key was reported leaked");
                        LeakLabel::TruePositive
                    }
                    None => LeakLabel::FalsePositive,
                }
            }
        };
        feedback.push(LeakFeedback {
            token_hash: token_hash(&token.token),
            token_type: token.token_type.clone(),
            label,
        });
    }
    Ok(json(StatusCode::OK, &feedback))
}

/// SHA-256 of the token, lowercase hex: what GitHub matches feedback on.
fn token_hash(token: &str) -> String {
    let hex = KeyHash::of(token.as_bytes()).to_hex();
    String::from_utf8_lossy(&hex).into_owned()
}

fn signature_headers(partner: Partner, headers: &HeaderMap) -> Result<(String, Vec<u8>), Refusal> {
    let (identifier_name, signature_name) = partner.headers();
    let one = |name: &'static str, limit: usize| -> Result<&str, Refusal> {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (Some(value), None) if value.len() <= limit => value
                .to_str()
                .map_err(|_| unauthorised(partner, &format!("`{name}` is not ASCII"))),
            (None, _) => Err(unauthorised(partner, &format!("`{name}` is missing"))),
            _ => Err(unauthorised(
                partner,
                &format!("`{name}` must be one value of at most {limit} bytes"),
            )),
        }
    };
    let identifier = one(identifier_name, MAX_IDENTIFIER_BYTES)?.to_owned();
    let signature = base64::engine::general_purpose::STANDARD
        .decode(one(signature_name, MAX_SIGNATURE_BYTES)?.trim())
        .map_err(|_| unauthorised(partner, &format!("`{signature_name}` is not base64")))?;
    Ok((identifier, signature))
}

async fn read_report<B>(body: B) -> Result<Bytes, Refusal>
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, MAX_REPORT_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(Box::new(ApiError::invalid_field(
            "body",
            format!("a report is at most {MAX_REPORT_BYTES} bytes"),
        ))),
        Err(_) => Err(Box::new(ApiError::invalid_field(
            "body",
            "the body could not be read",
        ))),
    }
}

/// The 429 for an address that used up its allowance of failed checks.
fn locked_out(error: AuthError) -> Refusal {
    let retry_after = error.retry_after().unwrap_or(1);
    Box::new(ApiError::from_auth(&error).with_message(format!(
        "too many unsigned or forged reports from this address; it is refused for {retry_after} s"
    )))
}

/// 401 `INVALID_SIGNATURE`: the report is not believed, and nothing was
/// changed. HTTP wants a challenge on every 401; the scheme names what is
/// missing, a signature, since partners send no `Authorization`.
fn unauthorised(partner: Partner, why: &str) -> Refusal {
    Box::new(
        ApiError::new(
            ErrorCode::InvalidSignature,
            format!(
                "this {} report is not signed by {}: {why}; nothing was changed",
                partner.name(),
                partner.name()
            ),
        )
        .with_challenge("Signature realm=\"cloro-secret-scanning\""),
    )
}
