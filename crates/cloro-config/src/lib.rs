//! Configuration of the Cloro auth server (SPEC §7): every setting is a
//! flag, a `CLORO_*` variable and a key of the optional TOML file; a flag
//! beats the variable, which beats the file, which beats the default. Plans
//! and route scopes live in the file only. The server re-exports this crate
//! as `cloro_server::config`.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use cloro_auth_core::wire::RateLimitPolicy;
use cloro_auth_core::{PlanName, Scope, parse_byte_size, parse_duration, parse_rate};
use cloro_keystore::{LeakedKeyAction, Plan, Plans, mask_url, mask_url_list};
use ipnet::IpNet;
use serde::Deserialize;

use cloro_auth_core::wire::MAX_QUOTA_COUNT;
use cloro_guard::{RouteCosts, RouteScopes};

/// The most request threads `workers` may ask for: far beyond any core
/// count, and a typo such as `workers = 80000` is refused, not obeyed.
const MAX_WORKERS: usize = 1024;

/// Where GitHub publishes the keys that sign its secret-scanning reports.
pub const GITHUB_KEYS_URL: &str = "https://api.github.com/meta/public_keys/secret_scanning";

/// Where a secret-scanning partner's keys come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// Fetched over HTTPS (or HTTP to a loopback address, for a local
    /// mirror and tests).
    Url(http::Uri),
    /// Read from this file: the same JSON the URL serves.
    File(PathBuf),
}

/// `cloro-server`'s flags. Serving is the only thing it does, so the flags
/// alone are a whole command.
#[derive(Parser, Default)]
#[command(
    name = "cloro-server",
    version,
    about = "Cloro auth: API-key gateway, verify endpoint and admin API"
)]
pub struct Flags {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "CLORO_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory of the embedded store [default: ./cloro-data].
    #[arg(long, env = "CLORO_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Use Redis instead of the embedded store (`redis://…`); with
    /// `--redis-cluster`, a comma-separated list of seed nodes.
    #[arg(long, env = "CLORO_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Treat `--redis-url` as the seed nodes of a Redis Cluster.
    // A bare `--redis-cluster` means true (SPEC §7 uses it as a switch);
    // `--redis-cluster=false` and the variable still parse.
    #[arg(long, env = "CLORO_REDIS_CLUSTER", num_args = 0..=1, default_missing_value = "true")]
    pub redis_cluster: Option<bool>,
    /// Where authenticated `/v1/*` requests are forwarded (`http://host:port`).
    #[arg(long, env = "CLORO_UPSTREAM")]
    pub upstream: Option<String>,
    /// The URL people reach this server by, e.g. `https://auth.example.com`:
    /// the base of portal links, and with `https` the dashboard's cookies
    /// are `Secure` behind a proxy that ends TLS.
    #[arg(long, env = "CLORO_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// PEM certificate chain; with `--tls-key`, serve HTTPS.
    #[arg(long, env = "CLORO_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "CLORO_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// How long a key read from the store is trusted, e.g. `30s` [default: 30s].
    #[arg(long, env = "CLORO_CACHE_TTL", value_parser = duration)]
    pub cache_ttl: Option<Duration>,
    /// Unknown-key answers allowed per client address, e.g. `100/minute` [default: 100/minute].
    #[arg(long, env = "CLORO_MAX_FAILED_AUTH", value_parser = rate)]
    pub max_failed_auth: Option<RateLimitPolicy>,
    /// Proxies whose `X-Forwarded-For` is believed, as CIDRs, comma-separated [default: none].
    #[arg(long, env = "CLORO_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<IpNet>>,
    /// How long a store call may take before the request is answered without it [default: 250ms].
    #[arg(long, env = "CLORO_STORE_TIMEOUT", value_parser = duration)]
    pub store_timeout: Option<Duration>,
    /// IPv6 clients share a failed-attempt allowance per prefix of this many bits [default: 64].
    #[arg(long, env = "CLORO_FAILED_AUTH_IPV6_PREFIX", value_parser = clap::value_parser!(u8).range(1..=128))]
    pub failed_auth_ipv6_prefix: Option<u8>,
    /// A request head (HTTP/1.1) must arrive within this, else the connection is closed [default: 10s].
    #[arg(long, env = "CLORO_HEADER_TIMEOUT", value_parser = duration)]
    pub header_timeout: Option<Duration>,
    /// A connection with no request in flight is closed after this [default: 60s].
    #[arg(long, env = "CLORO_IDLE_TIMEOUT", value_parser = duration)]
    pub idle_timeout: Option<Duration>,
    /// The longest pause between two pieces of a request body [default: 30s].
    #[arg(long, env = "CLORO_BODY_TIMEOUT", value_parser = duration)]
    pub body_timeout: Option<Duration>,
    /// Open client connections at most (never more than the descriptor limit allows) [default: 10000].
    #[arg(long, env = "CLORO_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Threads that serve requests, 1 to 1024 [default: one per core].
    #[arg(long, env = "CLORO_WORKERS")]
    pub workers: Option<usize>,
    /// How long the upstream may take to send its response head [default: 30s].
    #[arg(long, env = "CLORO_UPSTREAM_TIMEOUT", value_parser = duration)]
    pub upstream_timeout: Option<Duration>,
    /// Memory for remembering unknown keys, e.g. `16MiB` [default: 16MiB].
    #[arg(long, env = "CLORO_UNKNOWN_KEY_CACHE_SIZE", value_parser = byte_size)]
    pub unknown_key_cache_size: Option<u64>,
    /// Memory for the per-address failed-attempt table [default: 8MiB].
    #[arg(long, env = "CLORO_FAILED_AUTH_TABLE_SIZE", value_parser = byte_size)]
    pub failed_auth_table_size: Option<u64>,
    /// Memory for key lookups in flight [default: 4MiB].
    #[arg(long, env = "CLORO_PENDING_LOOKUPS_SIZE", value_parser = byte_size)]
    pub pending_lookups_size: Option<u64>,
    /// Memory for the embedded store's page cache [default: 64MiB].
    #[arg(long, env = "CLORO_STORE_CACHE_SIZE", value_parser = byte_size)]
    pub store_cache_size: Option<u64>,
    /// The 32-byte key that seals webhook secrets at rest; made if missing.
    /// Nodes sharing a Redis need the same file [default: DATA_DIR/webhook-key].
    #[arg(long, env = "CLORO_WEBHOOK_KEY_FILE")]
    pub webhook_key_file: Option<PathBuf>,
    /// Let webhooks go to loopback, private and link-local addresses
    /// (tests, or receivers on a private network you trust).
    #[arg(long, env = "CLORO_ALLOW_PRIVATE_WEBHOOKS", num_args = 0..=1, default_missing_value = "true")]
    pub allow_private_webhooks: Option<bool>,
    /// TOML configuration file.
    #[arg(long, env = "CLORO_CONFIG")]
    pub config: Option<PathBuf>,
}

// Hand-written so that a Redis password never reaches a log through `{:?}`.
impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flags")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            // As one URL even with `--redis-cluster`, which may come from the
            // file: a list masked as one leaks nothing, it only shows less.
            .field("redis_url", &self.redis_url.as_deref().map(mask_url))
            .field("upstream", &self.upstream.as_deref().map(mask_url))
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|error| error.to_string())
}

fn byte_size(text: &str) -> Result<u64, String> {
    parse_byte_size(text).map_err(|error| error.to_string())
}

fn rate(text: &str) -> Result<RateLimitPolicy, String> {
    let (requests, per_seconds) = parse_rate(text).map_err(|error| error.to_string())?;
    Ok(RateLimitPolicy::new(requests, per_seconds))
}

/// The TOML file: the same settings in snake_case, plus plans and route scopes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    redis_url: Option<String>,
    redis_cluster: Option<bool>,
    upstream: Option<String>,
    public_url: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    cache_ttl: Option<String>,
    max_failed_auth: Option<String>,
    trusted_proxies: Option<Vec<IpNet>>,
    store_timeout: Option<String>,
    failed_auth_ipv6_prefix: Option<u8>,
    header_timeout: Option<String>,
    idle_timeout: Option<String>,
    body_timeout: Option<String>,
    max_connections: Option<usize>,
    workers: Option<usize>,
    upstream_timeout: Option<String>,
    unknown_key_cache_size: Option<String>,
    failed_auth_table_size: Option<String>,
    pending_lookups_size: Option<String>,
    store_cache_size: Option<String>,
    default_plan: Option<PlanName>,
    #[serde(default)]
    plans: BTreeMap<PlanName, Plan>,
    #[serde(default)]
    route_scopes: BTreeMap<String, Scope>,
    #[serde(default)]
    route_costs: BTreeMap<String, u64>,
    #[serde(default)]
    secret_scanning: SecretScanningFile,
    webhook_key_file: Option<PathBuf>,
    allow_private_webhooks: Option<bool>,
}

/// `[secret_scanning]`: what a leak report does, and each partner's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretScanningFile {
    #[serde(default)]
    leaked_key_action: LeakedKeyAction,
    github: Option<PartnerKeysFile>,
    gitlab: Option<PartnerKeysFile>,
}

/// `[secret_scanning.github]` or `[secret_scanning.gitlab]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartnerKeysFile {
    public_keys_url: Option<String>,
    public_keys_file: Option<PathBuf>,
}

/// Secret-scanning partners (SPEC §12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretScanningSettings {
    /// What a report does to a key.
    pub leaked_key_action: LeakedKeyAction,
    /// Where GitHub's keys come from (GitHub's URL unless configured).
    pub github: KeySource,
    /// Where GitLab's keys come from; `None`: GitLab reports are refused.
    pub gitlab: Option<KeySource>,
}

impl SecretScanningSettings {
    fn from_file(file: SecretScanningFile) -> Result<Self, ConfigError> {
        let github = match file.github {
            Some(keys) => key_source("secret_scanning.github", keys)?,
            None => None,
        };
        let github = match github {
            Some(source) => source,
            None => KeySource::Url(http::Uri::from_static(GITHUB_KEYS_URL)),
        };
        let gitlab = match file.gitlab {
            Some(keys) => Some(key_source("secret_scanning.gitlab", keys)?.ok_or_else(|| {
                invalid(
                    "secret_scanning.gitlab",
                    "give public_keys_url or public_keys_file (GitLab publishes no default)",
                )
            })?),
            None => None,
        };
        Ok(SecretScanningSettings {
            leaked_key_action: file.leaked_key_action,
            github,
            gitlab,
        })
    }
}

/// A partner's key source: a file, or a URL that is `https://` (or
/// `http://` to a loopback address: a local mirror, or a test).
fn key_source(
    setting: &'static str,
    keys: PartnerKeysFile,
) -> Result<Option<KeySource>, ConfigError> {
    match (keys.public_keys_url, keys.public_keys_file) {
        (Some(_), Some(_)) => Err(invalid(
            setting,
            "give public_keys_url or public_keys_file, not both",
        )),
        (None, Some(path)) => Ok(Some(KeySource::File(path))),
        (None, None) => Ok(None),
        (Some(url), None) => {
            let uri: http::Uri = url
                .parse()
                .map_err(|_| invalid(setting, format!("`{}` is not a URL", mask_url(&url))))?;
            let loopback = uri.host().is_some_and(|host| {
                host == "localhost"
                    || host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
            // A password in it would print in `Settings`' `Debug` and in
            // the log line of a failed fetch; partners' key lists are public.
            if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
                return Err(invalid(
                    setting,
                    format!(
                        "`{}` carries credentials; a partner's key list is public, remove them",
                        mask_url(&url)
                    ),
                ));
            }
            match uri.scheme_str() {
                Some("https") if uri.host().is_some() => Ok(Some(KeySource::Url(uri))),
                Some("http") if loopback => Ok(Some(KeySource::Url(uri))),
                _ => Err(invalid(
                    setting,
                    "public_keys_url must be https:// (http:// only to a loopback address)",
                )),
            }
        }
    }
}

/// Where keys are kept.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// The embedded store in this directory.
    Embedded(PathBuf),
    /// Redis at this URL (or these seed nodes of a cluster).
    Redis {
        /// The URL(s); may hold a password, so never print it unmasked.
        url: String,
        /// Whether it is a Redis Cluster.
        cluster: bool,
    },
}

impl fmt::Debug for StoreChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreChoice::Embedded(dir) => f.debug_tuple("Embedded").field(dir).finish(),
            StoreChoice::Redis { url, cluster } => f
                .debug_struct("Redis")
                .field(
                    "url",
                    &if *cluster {
                        mask_url_list(url)
                    } else {
                        mask_url(url)
                    },
                )
                .field("cluster", cluster)
                .finish(),
        }
    }
}

/// The resolved settings the server runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address.
    pub listen: SocketAddr,
    /// The store.
    pub store: StoreChoice,
    /// Upstream of `/v1/*`, if any.
    pub upstream: Option<http::Uri>,
    /// Certificate and key files, when serving TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `--public-url`: scheme and authority people reach the server by.
    pub public_url: Option<http::Uri>,
    /// Verify-cache TTL.
    pub cache_ttl: Duration,
    /// Failed-attempt allowance per client address.
    pub max_failed_auth: RateLimitPolicy,
    /// Proxies whose `X-Forwarded-For` counts.
    pub trusted_proxies: Vec<IpNet>,
    /// Store call timeout.
    pub store_timeout: Duration,
    /// Bits of an IPv6 client address that share a failed-attempt allowance.
    pub failed_auth_ipv6_prefix: u8,
    /// Connection bounds (SPEC §9).
    pub connections: ConnectionLimits,
    /// Threads that serve requests; `None`: one per core.
    pub workers: Option<NonZeroUsize>,
    /// How long the upstream may take to send its response head.
    pub upstream_timeout: Duration,
    /// Memory bounds of the tables clients can fill (SPEC §9).
    pub memory: MemoryBounds,
    /// Plans and the default.
    pub plans: Plans,
    /// Scopes routes need.
    pub route_scopes: RouteScopes,
    /// What routes cost in quota and credit units (SPEC §11; default 1).
    pub route_costs: RouteCosts,
    /// Secret-scanning partners (SPEC §12).
    pub secret_scanning: SecretScanningSettings,
    /// Webhook delivery (SPEC §12).
    pub webhooks: WebhookSettings,
}

/// Webhook delivery (SPEC §12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// The file of the key that seals endpoint secrets.
    pub key_file: PathBuf,
    /// Whether deliveries may go to private addresses.
    pub allow_private: bool,
}

/// How long connections may take and how many may be open (SPEC §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A request head must arrive within this.
    pub header_timeout: Duration,
    /// A connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// The longest pause between two pieces of a request body.
    pub body_timeout: Duration,
    /// Open client connections at most, before the descriptor limit's cap.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            max_connections: 10_000,
        }
    }
}

/// Bytes each table that clients can fill may take (SPEC §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBounds {
    /// Negative entries for unknown keys.
    pub unknown_keys: usize,
    /// The per-address failed-attempt table.
    pub failed_auth_table: usize,
    /// Key lookups in flight.
    pub pending_lookups: usize,
    /// The embedded store's page cache (it fills as the database grows).
    pub store_cache: usize,
}

impl Default for MemoryBounds {
    fn default() -> Self {
        let verifier = cloro_keystore::VerifierConfig::default();
        MemoryBounds {
            unknown_keys: verifier.unknown_key_cache_bytes,
            failed_auth_table: verifier.failed_auth_table_bytes,
            pending_lookups: verifier.pending_lookup_bytes,
            store_cache: cloro_keystore::EmbeddedStore::DEFAULT_CACHE_BYTES,
        }
    }
}

/// A configuration that cannot run, with what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("config file {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its location.
        message: String,
    },
    /// A setting has a bad value.
    #[error("invalid {setting}: {message}")]
    Invalid {
        /// The setting's name.
        setting: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
}

fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        message: message.into(),
    }
}

impl Settings {
    /// Reads the config file named by the flags (if any) and merges.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, or an invalid value.
    pub fn load(flags: Flags) -> Result<Self, ConfigError> {
        let Some(path) = flags.config.clone() else {
            return Self::merge(flags, FileConfig::default());
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let file = parse_file(&text).map_err(|message| ConfigError::Parse { path, message })?;
        Self::merge(flags, file).map_err(|error| error.quoting_at_most_of(&text))
    }

    /// Settings from a TOML text and flags; for tests and embedding.
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn from_toml(flags: Flags, text: &str) -> Result<Self, ConfigError> {
        let file = parse_file(text).map_err(|message| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            message,
        })?;
        Self::merge(flags, file).map_err(|error| error.quoting_at_most_of(text))
    }

    fn merge(flags: Flags, file: FileConfig) -> Result<Self, ConfigError> {
        let file_duration = |setting, text: Option<String>| {
            text.map(|t| parse_duration(&t).map_err(|e| invalid(setting, e.to_string())))
                .transpose()
        };
        let pick_duration = |setting: &'static str,
                             flag: Option<Duration>,
                             text: Option<String>,
                             default: Duration|
         -> Result<Duration, ConfigError> {
            let value = match flag {
                Some(value) => value,
                None => file_duration(setting, text)?.unwrap_or(default),
            };
            if value.is_zero() {
                return Err(invalid(setting, "must be greater than zero, e.g. 10s"));
            }
            Ok(value)
        };
        // The verifier's own defaults: defined once, there.
        let verifier = cloro_keystore::VerifierConfig::default();
        let cache_ttl = match flags.cache_ttl {
            Some(ttl) => ttl,
            None => file_duration("cache_ttl", file.cache_ttl)?.unwrap_or(verifier.cache_ttl),
        };
        let store_timeout = pick_duration(
            "store_timeout",
            flags.store_timeout,
            file.store_timeout,
            verifier.store_timeout,
        )?;
        let defaults = ConnectionLimits::default();
        let connections = ConnectionLimits {
            header_timeout: pick_duration(
                "header_timeout",
                flags.header_timeout,
                file.header_timeout,
                defaults.header_timeout,
            )?,
            idle_timeout: pick_duration(
                "idle_timeout",
                flags.idle_timeout,
                file.idle_timeout,
                defaults.idle_timeout,
            )?,
            body_timeout: pick_duration(
                "body_timeout",
                flags.body_timeout,
                file.body_timeout,
                defaults.body_timeout,
            )?,
            max_connections: match flags.max_connections.or(file.max_connections) {
                Some(0) => return Err(invalid("max_connections", "must be at least 1")),
                Some(cap) => cap,
                None => defaults.max_connections,
            },
        };
        let workers = match flags.workers.or(file.workers) {
            Some(count @ 1..=MAX_WORKERS) => NonZeroUsize::new(count),
            Some(_) => {
                return Err(invalid(
                    "workers",
                    format!("must be from 1 to {MAX_WORKERS} threads"),
                ));
            }
            None => None,
        };
        let upstream_timeout = pick_duration(
            "upstream_timeout",
            flags.upstream_timeout,
            file.upstream_timeout,
            Duration::from_secs(30),
        )?;
        let failed_auth_ipv6_prefix = match flags
            .failed_auth_ipv6_prefix
            .or(file.failed_auth_ipv6_prefix)
        {
            Some(bits) if !(1..=128).contains(&bits) => {
                return Err(invalid(
                    "failed_auth_ipv6_prefix",
                    "must be a prefix length from 1 to 128, e.g. 64",
                ));
            }
            Some(bits) => bits,
            None => verifier.failed_auth_ipv6_prefix,
        };
        let pick_size = |setting: &'static str,
                         flag: Option<u64>,
                         text: Option<String>,
                         default: usize|
         -> Result<usize, ConfigError> {
            let bytes = match (flag, text) {
                (Some(bytes), _) => bytes,
                (None, Some(text)) => {
                    parse_byte_size(&text).map_err(|e| invalid(setting, e.to_string()))?
                }
                (None, None) => return Ok(default),
            };
            usize::try_from(bytes).map_err(|_| invalid(setting, "too large for this machine"))
        };
        let default_bounds = MemoryBounds::default();
        let memory = MemoryBounds {
            unknown_keys: pick_size(
                "unknown_key_cache_size",
                flags.unknown_key_cache_size,
                file.unknown_key_cache_size,
                default_bounds.unknown_keys,
            )?,
            failed_auth_table: pick_size(
                "failed_auth_table_size",
                flags.failed_auth_table_size,
                file.failed_auth_table_size,
                default_bounds.failed_auth_table,
            )?,
            pending_lookups: pick_size(
                "pending_lookups_size",
                flags.pending_lookups_size,
                file.pending_lookups_size,
                default_bounds.pending_lookups,
            )?,
            store_cache: pick_size(
                "store_cache_size",
                flags.store_cache_size,
                file.store_cache_size,
                default_bounds.store_cache,
            )?,
        };
        let max_failed_auth = match flags.max_failed_auth {
            Some(policy) => policy,
            None => match file.max_failed_auth {
                Some(text) => rate(&text).map_err(|e| invalid("max_failed_auth", e))?,
                None => verifier.max_failed_auth,
            },
        };
        let data_dir = flags
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| "./cloro-data".into());
        let redis_url = flags.redis_url.or(file.redis_url);
        let redis_cluster = flags.redis_cluster.or(file.redis_cluster).unwrap_or(false);
        let store = match redis_url {
            Some(url) => StoreChoice::Redis {
                url,
                cluster: redis_cluster,
            },
            None if redis_cluster => {
                return Err(invalid(
                    "redis_cluster",
                    "needs --redis-url with the seed nodes",
                ));
            }
            None => StoreChoice::Embedded(data_dir.clone()),
        };
        let webhooks = WebhookSettings {
            key_file: flags
                .webhook_key_file
                .or(file.webhook_key_file)
                .unwrap_or_else(|| data_dir.join("webhook-key")),
            allow_private: flags
                .allow_private_webhooks
                .or(file.allow_private_webhooks)
                .unwrap_or(false),
        };
        let upstream = flags
            .upstream
            .or(file.upstream)
            .map(|text| parse_upstream(&text))
            .transpose()?;
        let public_url = flags
            .public_url
            .or(file.public_url)
            .map(|text| parse_public_url(&text))
            .transpose()?;
        let tls = match (
            flags.tls_cert.or(file.tls_cert),
            flags.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "tls_cert/tls_key",
                    "give both --tls-cert and --tls-key, or neither",
                ));
            }
        };
        let plans = plans_from(file.default_plan, file.plans)?;
        let route_scopes =
            RouteScopes::new(&file.route_scopes).map_err(|e| invalid("route_scopes", e))?;
        if let Some((route, cost)) = file
            .route_costs
            .iter()
            .find(|(_, cost)| **cost > MAX_QUOTA_COUNT)
        {
            return Err(invalid(
                "route_costs",
                format!("`{route}` = {cost}: a cost is a whole number from 0 to {MAX_QUOTA_COUNT}"),
            ));
        }
        let route_costs =
            RouteCosts::new(&file.route_costs).map_err(|e| invalid("route_costs", e))?;
        let secret_scanning = SecretScanningSettings::from_file(file.secret_scanning)?;
        Ok(Settings {
            listen: flags
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            store,
            upstream,
            tls,
            public_url,
            cache_ttl,
            max_failed_auth,
            trusted_proxies: flags
                .trusted_proxies
                .or(file.trusted_proxies)
                .unwrap_or_default(),
            store_timeout,
            failed_auth_ipv6_prefix,
            connections,
            workers,
            upstream_timeout,
            memory,
            plans,
            route_scopes,
            route_costs,
            secret_scanning,
            webhooks,
        })
    }
}

/// The plan table: the file's, else the built-in `free` plan. A file that
/// names plans but no `default_plan` defaults to `free`, which must exist.
fn plans_from(
    default_plan: Option<PlanName>,
    plans: BTreeMap<PlanName, Plan>,
) -> Result<Plans, ConfigError> {
    if plans.is_empty() && default_plan.is_none() {
        return Ok(Plans::builtin());
    }
    let default_plan = match default_plan {
        Some(name) => name,
        None => Plans::builtin().default_plan(),
    };
    Plans::new(default_plan, plans).map_err(|e| invalid("default_plan", e.to_string()))
}

/// The file's settings, or what is wrong with it as "line N: what",
/// quoting little of it (see [`bound_quotes`]).
fn parse_file(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|error| bound_quotes(&toml_error(&error, text), text))
}

/// A TOML error as "line N: what is wrong", without the excerpt of the file
/// that `toml`'s own `Display` quotes: that line may be `redis_url = …`
/// with a password in it, and this message is logged.
fn toml_error(error: &toml::de::Error, text: &str) -> String {
    match error.span() {
        Some(span) => {
            let line = text
                .get(..span.start)
                .map_or(1, |before| before.matches('\n').count() + 1);
            format!("line {line}: {}", error.message())
        }
        None => error.message().to_owned(),
    }
}

/// The most of the file that an error message quotes in one piece: the
/// longest name a plan or scope may have, so a valid name shows whole.
const MAX_EXCERPT: usize = 64;

impl ConfigError {
    /// This error with what it quotes of the file `text` bounded, as
    /// [`bound_quotes`] does.
    fn quoting_at_most_of(self, text: &str) -> Self {
        match self {
            ConfigError::Parse { path, message } => ConfigError::Parse {
                path,
                message: bound_quotes(&message, text),
            },
            ConfigError::Invalid { setting, message } => ConfigError::Invalid {
                setting,
                message: bound_quotes(&message, text),
            },
            read @ ConfigError::Read { .. } => read,
        }
    }
}

/// A message about the config file `text`, with what it quotes of the file
/// bounded, because it is logged:
/// - a string value serde quotes (`invalid type: string "…", expected
///   usize`) is left out: a value in the wrong field may be a Redis URL
///   with its password (`redis_cluster = "redis://:pw@a,…"`), which only
///   `redis_url` masks;
/// - a piece in backticks (a field, plan, scope or route name, an upstream
///   URL) is cut to [`MAX_EXCERPT`] bytes, even when it is not the file's
///   text verbatim (escaped, masked);
/// - so is any longer run copied from the file, wherever it is (a name
///   with a backtick in it upsets the pairing of the rule above).
fn bound_quotes(message: &str, text: &str) -> String {
    let message = without_string_values(message);
    let mut bounded = String::with_capacity(message.len());
    for (index, piece) in message.split('`').enumerate() {
        if index > 0 {
            bounded.push('`');
        }
        if index % 2 == 1 && piece.len() > MAX_EXCERPT {
            bounded.push_str(&piece[..piece.floor_char_boundary(MAX_EXCERPT)]);
            bounded.push('…');
        } else {
            bounded.push_str(piece);
        }
    }
    cut_copies(&bounded, text)
}

/// `message` with every run of more than [`MAX_EXCERPT`] bytes that is
/// also in `text` cut to its first [`MAX_EXCERPT`] and `…`. A run is found
/// as a stretch of `MAX_EXCERPT + 1`-byte windows that are all in `text`:
/// linear in both, and where it cuts more than a true common substring, it
/// only cuts more of the file.
fn cut_copies(message: &str, text: &str) -> String {
    let window = MAX_EXCERPT + 1;
    if message.len() < window || text.len() < window {
        return message.to_owned();
    }
    let copied: std::collections::HashSet<&[u8]> = text.as_bytes().windows(window).collect();
    let bytes = message.as_bytes();
    let mut bounded = String::with_capacity(message.len());
    let mut written = 0;
    let mut at = 0;
    while at + window <= bytes.len() {
        if !copied.contains(&bytes[at..at + window]) {
            at += 1;
            continue;
        }
        let mut last = at;
        while last + 1 + window <= bytes.len()
            && copied.contains(&bytes[last + 1..last + 1 + window])
        {
            last += 1;
        }
        let keep = message.floor_char_boundary(at + MAX_EXCERPT);
        bounded.push_str(&message[written..keep]);
        bounded.push('…');
        written = message.ceil_char_boundary(last + window);
        at = written;
    }
    bounded.push_str(&message[written..]);
    bounded
}

/// `message` without the values serde quotes as `string "…"` (escaped as
/// Rust's `Debug` does): `invalid type: string, expected usize`.
fn without_string_values(message: &str) -> String {
    const OPENING: &str = "string \"";
    let mut kept = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(OPENING) {
        kept.push_str(&rest[..at + "string".len()]);
        let value = &rest[at + OPENING.len()..];
        let mut escaped = false;
        let end = value.char_indices().find_map(|(i, c)| {
            let closes = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            closes.then_some(i + 1)
        });
        // An unclosed quote: everything after it was the value.
        rest = end.map_or("", |end| &value[end..]);
    }
    kept.push_str(rest);
    kept
}

/// `--public-url`: `http` or `https`, a host, nothing after it but `/`.
fn parse_public_url(text: &str) -> Result<http::Uri, ConfigError> {
    let refuse = || {
        invalid(
            "public_url",
            format!(
                "`{}` is not a base URL; use https://host[:port] with no path, query or credentials",
                mask_url(text)
            ),
        )
    };
    let uri: http::Uri = text.parse().map_err(|_| refuse())?;
    let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(authority)) if bare && !authority.as_str().contains('@') => {
            Ok(uri)
        }
        _ => Err(refuse()),
    }
}

fn parse_upstream(text: &str) -> Result<http::Uri, ConfigError> {
    let uri: http::Uri = text
        .parse()
        .map_err(|_| invalid("upstream", format!("`{}` is not a URL", mask_url(text))))?;
    match (uri.scheme_str(), uri.authority()) {
        // The gateway never sends userinfo upstream, and a URI kept with a
        // password in it would print it in `Settings`' `Debug`.
        (_, Some(authority)) if authority.as_str().contains('@') => Err(invalid(
            "upstream",
            format!(
                "`{}` carries credentials, which are never sent upstream; remove them",
                mask_url(text)
            ),
        )),
        (Some("http"), Some(_)) => Ok(uri),
        _ => Err(invalid(
            "upstream",
            "use http://host:port (TLS to the upstream is not supported yet)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Flags::try_parse_from(std::iter::once("cloro-server").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults() {
        let settings = Settings::from_toml(Flags::default(), "").unwrap();
        assert_eq!(settings.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(settings.store, StoreChoice::Embedded("./cloro-data".into()));
        assert_eq!(settings.cache_ttl, Duration::from_secs(30));
        assert_eq!(settings.store_timeout, Duration::from_millis(250));
        assert_eq!(settings.max_failed_auth.requests.get(), 100);
        assert_eq!(settings.plans.default_plan().as_str(), "free");
        assert_eq!(settings.connections, ConnectionLimits::default());
        assert_eq!(settings.connections.header_timeout, Duration::from_secs(10));
        assert_eq!(settings.connections.idle_timeout, Duration::from_secs(60));
        assert_eq!(settings.connections.body_timeout, Duration::from_secs(30));
        assert_eq!(settings.connections.max_connections, 10_000);
        assert_eq!(settings.workers, None);
        assert_eq!(settings.upstream_timeout, Duration::from_secs(30));
        assert_eq!(settings.failed_auth_ipv6_prefix, 64);
        assert_eq!(settings.memory.unknown_keys, 16 << 20);
        assert_eq!(settings.memory.store_cache, 64 << 20);
        assert_eq!(
            settings.webhooks,
            WebhookSettings {
                key_file: "./cloro-data/webhook-key".into(),
                allow_private: false,
            }
        );
    }

    #[test]
    fn webhook_settings_from_flags_and_file() {
        let from_file = Settings::from_toml(
            flags(&["--data-dir", "/srv/cloro"]),
            "allow_private_webhooks = true",
        )
        .unwrap();
        assert_eq!(
            from_file.webhooks,
            WebhookSettings {
                key_file: "/srv/cloro/webhook-key".into(),
                allow_private: true,
            }
        );
        let from_flags = Settings::from_toml(
            flags(&[
                "--webhook-key-file",
                "/etc/cloro/wk",
                "--allow-private-webhooks",
            ]),
            "allow_private_webhooks = false",
        )
        .unwrap();
        assert_eq!(from_flags.webhooks.key_file, PathBuf::from("/etc/cloro/wk"));
        assert!(from_flags.webhooks.allow_private, "a flag beats the file");
    }

    #[test]
    fn hostile_client_bounds_from_flags_and_file() {
        let toml = r#"
            header_timeout = "2s"
            max_connections = 50
            workers = 3
            unknown_key_cache_size = "1MiB"
            failed_auth_ipv6_prefix = 56
            store_cache_size = "8MiB"
        "#;
        let settings = Settings::from_toml(
            flags(&["--idle-timeout", "5s", "--failed-auth-table-size", "64KiB"]),
            toml,
        )
        .unwrap();
        assert_eq!(settings.connections.header_timeout, Duration::from_secs(2));
        assert_eq!(settings.connections.idle_timeout, Duration::from_secs(5));
        assert_eq!(settings.connections.max_connections, 50);
        assert_eq!(settings.workers, NonZeroUsize::new(3));
        assert_eq!(settings.memory.unknown_keys, 1 << 20);
        assert_eq!(settings.memory.failed_auth_table, 64 << 10);
        assert_eq!(settings.memory.store_cache, 8 << 20);
        assert_eq!(settings.failed_auth_ipv6_prefix, 56);
        for (toml, setting) in [
            ("header_timeout = \"0s\"", "header_timeout"),
            ("max_connections = 0", "max_connections"),
            ("workers = 0", "workers"),
            ("workers = 1025", "workers"),
            ("failed_auth_ipv6_prefix = 0", "failed_auth_ipv6_prefix"),
            (
                "unknown_key_cache_size = \"lots\"",
                "unknown_key_cache_size",
            ),
        ] {
            let error = Settings::from_toml(Flags::default(), toml).unwrap_err();
            assert!(error.to_string().contains(setting), "{error}");
        }
        assert!(
            Flags::try_parse_from(["cloro-server", "--failed-auth-ipv6-prefix", "129"]).is_err()
        );
        assert!(Flags::try_parse_from(["cloro-server", "--pending-lookups-size", "2TiB"]).is_err());
    }

    #[test]
    fn flag_beats_file() {
        let toml = r#"
            listen = "127.0.0.1:7000"
            cache_ttl = "10s"
            max_failed_auth = "5/minute"
            default_plan = "pro"
            [plans.pro]
            rate_limit = { requests = 500, per_seconds = 1, burst = 500 }
            concurrency_limit = 10
            [route_scopes]
            "POST /v1/monitor" = "monitor:write"
        "#;
        let settings = Settings::from_toml(flags(&["--listen", "127.0.0.1:9000"]), toml).unwrap();
        assert_eq!(settings.listen.port(), 9000);
        assert_eq!(settings.cache_ttl, Duration::from_secs(10));
        assert_eq!(settings.max_failed_auth.requests.get(), 5);
        assert_eq!(settings.plans.default_plan().as_str(), "pro");
    }

    #[test]
    fn bad_values_are_named() {
        let error = Settings::from_toml(Flags::default(), "cache_ttl = \"ten\"").unwrap_err();
        assert!(error.to_string().contains("cache_ttl"), "{error}");
        let error = Settings::from_toml(Flags::default(), "listne = \"x\"").unwrap_err();
        assert!(error.to_string().contains("listne"), "{error}");
        let error = Settings::from_toml(Flags::default(), "default_plan = \"gold\"").unwrap_err();
        assert!(error.to_string().contains("gold"), "{error}");
        let public =
            Settings::from_toml(flags(&["--public-url", "https://auth.example.com"]), "").unwrap();
        assert_eq!(public.public_url.unwrap().scheme_str(), Some("https"));
        for bad in [
            "auth.example.com",
            "ftp://auth.example.com",
            "https://auth.example.com/portal",
            "https://auth.example.com?x=1",
            "https://me@auth.example.com",
        ] {
            let error = Settings::from_toml(flags(&["--public-url", bad]), "").unwrap_err();
            assert!(error.to_string().contains("public_url"), "{bad}: {error}");
        }
        let error = Settings::from_toml(flags(&["--upstream", "ftp://x"]), "").unwrap_err();
        assert!(error.to_string().contains("upstream"), "{error}");
        assert!(Flags::try_parse_from(["cloro-server", "--cache-ttl", "soon"]).is_err());
    }

    #[test]
    fn a_toml_error_does_not_quote_the_file() {
        let text = "cache_ttl = \"10s\"\nredis_url = \"redis://:hunter2@h:1\" oops\n";
        let error = Settings::from_toml(Flags::default(), text).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("line 2"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    /// Found by `fuzz/` (`config`): serde quoted a string put in the wrong
    /// field, so a seed list given to `redis_cluster` or a URL given to
    /// `max_connections` printed its password.
    #[test]
    fn a_password_in_the_wrong_field_is_not_quoted() {
        for text in [
            "redis_cluster = \"redis://:hunter2@a:7000,redis://b:7000\"",
            "max_connections = \"redis://:hunter2@cache:6379\"",
            "failed_auth_ipv6_prefix = \"redis://u:hunter2@h\\\"x\"",
        ] {
            let error = Settings::from_toml(Flags::default(), text).unwrap_err();
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(
                shown.contains("line 1: invalid type: string, expected"),
                "{shown}"
            );
        }
    }

    /// Found by `fuzz/` (`config`): names and URLs from the file were quoted
    /// whole, however long; now each excerpt stops at 64 bytes.
    #[test]
    fn errors_quote_at_most_an_excerpt_of_the_file() {
        let long = "x".repeat(500);
        let with_backtick = format!("\"a`{long}\" = 1");
        for text in [
            format!("{long} = 1"),
            with_backtick,
            format!("upstream = \"http://h/{long} x\""),
            format!("upstream = \"ftp://u:hunter2@{long}\""),
            format!("default_plan = \"{long}\""),
            format!("[route_scopes]\n\"POST {long}\" = \"x\""),
        ] {
            let error = Settings::from_toml(Flags::default(), &text).unwrap_err();
            let shown = error.to_string();
            assert!(!shown.contains(&long[..65]), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        // A name that fits is shown whole.
        let name = "y".repeat(64);
        let error = Settings::from_toml(Flags::default(), &format!("{name} = 1")).unwrap_err();
        assert!(error.to_string().contains(&format!("`{name}`")), "{error}");
    }

    /// The file named by `--config` gets the same bounds as inline text.
    #[test]
    fn a_config_file_is_bounded_as_inline_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloro.toml");
        let long = "z".repeat(200);
        for (text, field) in [
            ("redis_cluster = \"redis://:hunter2@a:7000\"", "line 1"),
            (&*format!("upstream = \"http://h/{long} x\""), "upstream"),
        ] {
            std::fs::write(&path, text).unwrap();
            let flags = flags(&["--config", path.to_str().unwrap()]);
            let shown = Settings::load(flags).unwrap_err().to_string();
            assert!(shown.contains(field), "{shown}");
            assert!(
                !shown.contains("hunter2") && !shown.contains(&long[..65]),
                "{shown}"
            );
        }
    }

    #[test]
    fn partner_key_urls_are_https_and_carry_no_credentials() {
        let load = |url: &str| {
            Settings::from_toml(
                flags(&[]),
                &format!("[secret_scanning.github]\npublic_keys_url = \"{url}\"\n"),
            )
        };
        assert!(load("https://keys.example.com/list").is_ok());
        assert!(load("http://127.0.0.1:9/list").is_ok());
        for refused in [
            "http://keys.example.com/list",
            "ftp://keys.example.com/list",
            "https://user:hunter2secret@keys.example.com/list",
        ] {
            let error = load(refused).unwrap_err().to_string();
            assert!(error.contains("secret_scanning.github"), "{error}");
            assert!(!error.contains("hunter2secret"), "{error}");
        }
        let default = Settings::from_toml(flags(&[]), "").unwrap();
        assert_eq!(
            default.secret_scanning.github,
            KeySource::Url(http::Uri::from_static(GITHUB_KEYS_URL))
        );
        assert_eq!(default.secret_scanning.gitlab, None);
    }

    #[test]
    fn redis_cluster_is_a_switch() {
        assert_eq!(flags(&["--redis-cluster"]).redis_cluster, Some(true));
        assert_eq!(flags(&["--redis-cluster=false"]).redis_cluster, Some(false));
        assert_eq!(flags(&[]).redis_cluster, None);
        let error = Settings::from_toml(flags(&["--redis-cluster"]), "").unwrap_err();
        assert!(error.to_string().contains("redis-url"), "{error}");
    }

    #[test]
    fn passwords_are_masked_in_debug_and_errors() {
        let url_flags = flags(&["--redis-url", "redis+unix:///r.sock?pass=hunter2"]);
        assert!(!format!("{url_flags:?}").contains("hunter2"));
        let seeds = "redis://:hunter2@h:1,redis://:hunter3@h2:2";
        for cluster in [false, true] {
            let store = StoreChoice::Redis {
                url: seeds.to_owned(),
                cluster,
            };
            let shown = format!("{store:?}");
            assert!(!shown.contains("hunter"), "{shown}");
        }
        let seed_flags = flags(&["--redis-url", seeds, "--redis-cluster"]);
        assert!(!format!("{seed_flags:?}").contains("hunter"));
        let upstream = "http://user:hunter2@upstream:8080";
        let upstream_flags = flags(&["--upstream", upstream]);
        assert!(!format!("{upstream_flags:?}").contains("hunter2"));
        let error = Settings::from_toml(flags(&["--upstream", upstream]), "").unwrap_err();
        assert!(error.to_string().contains("credentials"), "{error}");
        assert!(!error.to_string().contains("hunter2"), "{error}");
        let error =
            Settings::from_toml(flags(&["--upstream", "http://u:hunter2@[::1"]), "").unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}
