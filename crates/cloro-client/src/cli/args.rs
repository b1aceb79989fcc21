//! The command line of `cloro`, as clap derives it. Values are parsed into
//! the core's types here (`AccountId`, `Scope`, rates, durations), so a
//! typo is a usage error before any request.

use std::convert::Infallible;
use std::ffi::OsStr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use cloro_auth_core::wire::{
    AdminRole, AppliesTo, KeyPurpose, MAX_QUOTA_COUNT, QuotaPeriod, QuotaPolicy, Refill,
    UsageGranularity, WebhookEventType,
};
use cloro_auth_core::{AccountId, Environment, KeyId, PlanName, Scope, parse_duration, parse_rate};

use crate::idempotency::IdempotencyKey;

/// Manage Cloro API keys.
///
/// Reads CLORO_BASE_URL (default http://127.0.0.1:8080), CLORO_API_KEY
/// (for whoami) and CLORO_ADMIN_TOKEN (for everything else).
#[derive(Debug, Parser)]
#[command(name = "cloro", version)]
pub struct Cli {
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// The server; overrides CLORO_BASE_URL.
    #[arg(long, global = true, value_name = "URL")]
    pub base_url: Option<String>,

    /// Also trust the CA certificates in this PEM file.
    #[arg(long, global = true, value_name = "FILE", env = "CLORO_CA_CERT")]
    pub ca_cert: Option<PathBuf>,

    /// Allow plain http:// to hosts other than this machine (credentials
    /// then cross the network in clear text).
    #[arg(long, global = true)]
    pub allow_insecure_http: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the key in CLORO_API_KEY and its rate-limit state.
    Whoami,
    /// Create, list, show, change, revoke and rotate keys (admin token).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Show an account's audit log, newest first (admin token).
    Audit(AuditArgs),
    /// List the plans and their limits (admin token).
    Plans,
    /// Show an account or change its plan (admin token).
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Register, list and delete webhook endpoints, and see their
    /// deliveries (admin token).
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Make, list and delete named admin tokens (admin token).
    #[command(subcommand)]
    Tokens(TokensCommand),
}

/// `cloro tokens …`.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make a token for a person or a system; prints it once, on stdout.
    Create {
        /// Who holds it (a-z 0-9 _ . -): the audit log's actor for
        /// everything it does.
        name: String,
        /// What it may do: everything, or only read.
        #[arg(long, value_enum, default_value = "read")]
        role: RoleArg,
    },
    /// List the named tokens, newest first (never the tokens themselves).
    List,
    /// Delete a token: it is refused from the next request on.
    Delete {
        /// The token id, `tok_…`.
        id: String,
    },
}

/// An admin token's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Everything.
    Admin,
    /// Only read.
    Read,
}

impl From<RoleArg> for AdminRole {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Admin => AdminRole::Admin,
            RoleArg::Read => AdminRole::Read,
        }
    }
}

/// `cloro webhooks …`.
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Register an endpoint; prints its signing secret once, on stdout.
    Create {
        /// Where deliveries go: https:// (or http://), no user:password@.
        #[arg(long)]
        url: String,
        /// An event it receives, e.g. key.revoked; repeat for more.
        #[arg(long = "event", required = true, value_parser = event_type)]
        events: Vec<WebhookEventType>,
        /// Only this account's events [default: every account's].
        #[arg(long)]
        account: Option<AccountId>,
    },
    /// List the endpoints, newest first.
    List,
    /// Show one endpoint.
    Show {
        /// The webhook id, `wh_…`.
        id: String,
    },
    /// Delete an endpoint; nothing more is sent to it.
    Delete {
        /// The webhook id, `wh_…`.
        id: String,
    },
    /// List an endpoint's deliveries, newest event first.
    Deliveries {
        /// The webhook id, `wh_…`.
        id: String,
        /// At most this many (1 to 100).
        #[arg(long)]
        limit: Option<u32>,
        /// The cursor a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
    },
}

/// An event name as the API spells it (`key.revoked`).
fn event_type(text: &str) -> Result<WebhookEventType, String> {
    WebhookEventType::ALL
        .into_iter()
        .find(|event| event.as_str() == text)
        .ok_or_else(|| {
            let names: Vec<&str> = WebhookEventType::ALL.iter().map(|e| e.as_str()).collect();
            format!("not an event; one of {}", names.join(", "))
        })
}

/// `cloro keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints it once, on stdout.
    Create(CreateArgs),
    /// List an account's keys, newest first.
    List(ListArgs),
    /// Show one key.
    Show {
        /// The key id, `key_…`.
        id: KeyId,
    },
    /// Change a key's name, expiry, scopes, limits, labels or state.
    Update(UpdateArgs),
    /// Revoke a key for good.
    Revoke {
        /// The key id, `key_…`.
        id: KeyId,
        /// Why, for the record and the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Replace a key with a new one that has the same settings; prints the
    /// new key once, on stdout.
    Rotate(RotateArgs),
    /// Set or add to a key's credits (exactly one of --set and --add).
    Credits(CreditsArgs),
    /// Revoke keys by their plaintext, read from standard input, one per
    /// line (never from arguments, which every process listing shows), e.g.
    /// `cloro keys revoke-leaked < leaked.txt`.
    RevokeLeaked(RevokeLeakedArgs),
    /// Show a key's requests by outcome: a table with a sparkline per
    /// outcome (`--json` for the buckets).
    Usage {
        /// The key id, `key_…`.
        id: KeyId,
        /// Which buckets.
        #[command(flatten)]
        range: UsageArgs,
    },
}

/// Which usage buckets to show.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// How far back, e.g. 24h, 7d or 90m (default 24h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub since: Option<Duration>,
    /// Bucket width (default hour).
    #[arg(long, value_enum)]
    pub granularity: Option<GranularityArg>,
}

/// A usage bucket width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GranularityArg {
    /// Minutes, kept 48 hours.
    Minute,
    /// Hours, kept 90 days.
    Hour,
    /// Days, kept 2 years.
    Day,
}

impl From<GranularityArg> for UsageGranularity {
    fn from(granularity: GranularityArg) -> Self {
        match granularity {
            GranularityArg::Minute => UsageGranularity::Minute,
            GranularityArg::Hour => UsageGranularity::Hour,
            GranularityArg::Day => UsageGranularity::Day,
        }
    }
}

/// `cloro accounts …`.
#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Show an account's plan and key count.
    Show {
        /// The account id.
        account: AccountId,
    },
    /// Show an account's quota for this period: used, left, and when it
    /// starts again.
    Quota {
        /// The account id.
        account: AccountId,
    },
    /// Show an account's requests by outcome, summed over its keys, and
    /// each key's share.
    Usage {
        /// The account id.
        account: AccountId,
        /// Which buckets.
        #[command(flatten)]
        range: UsageArgs,
    },
    /// Make a single-use link (10 minutes) into the account's portal, its
    /// own page of keys and usage, to hand to the account's user.
    Portal {
        /// The account id.
        account: AccountId,
    },
    /// Put an account on a plan.
    SetPlan {
        /// The account id.
        account: AccountId,
        /// A plan name from `cloro plans`.
        plan: PlanName,
    },
}

/// What a key is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PurposeArg {
    /// Production traffic.
    Production,
    /// A developer's machine.
    Development,
    /// Continuous integration.
    Ci,
    /// A person's own key.
    #[value(name = "team_member", alias = "team-member")]
    TeamMember,
    /// Anything else.
    Other,
}

impl From<PurposeArg> for KeyPurpose {
    fn from(purpose: PurposeArg) -> Self {
        match purpose {
            PurposeArg::Production => KeyPurpose::Production,
            PurposeArg::Development => KeyPurpose::Development,
            PurposeArg::Ci => KeyPurpose::Ci,
            PurposeArg::TeamMember => KeyPurpose::TeamMember,
            PurposeArg::Other => KeyPurpose::Other,
        }
    }
}

/// `live` or `test`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EnvironmentArg {
    /// Production: `sk_live_…`.
    Live,
    /// Development and CI: `sk_test_…`.
    Test,
}

impl From<EnvironmentArg> for Environment {
    fn from(environment: EnvironmentArg) -> Self {
        match environment {
            EnvironmentArg::Live => Environment::Live,
            EnvironmentArg::Test => Environment::Test,
        }
    }
}

/// Who shares a quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AppliesToArg {
    /// Each key has its own.
    Key,
    /// All of the account's keys share one.
    Account,
}

impl From<AppliesToArg> for AppliesTo {
    fn from(applies_to: AppliesToArg) -> Self {
        match applies_to {
            AppliesToArg::Key => AppliesTo::Key,
            AppliesToArg::Account => AppliesTo::Account,
        }
    }
}

/// `cloro keys create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The owning account.
    #[arg(long, value_name = "ACCOUNT")]
    pub account: AccountId,
    /// A label for people.
    #[arg(long)]
    pub name: String,
    /// What the key is for.
    #[arg(long, value_enum, default_value = "other")]
    pub purpose: PurposeArg,
    /// `live` (production) or `test`.
    #[arg(long = "env", value_enum, default_value = "live")]
    pub environment: EnvironmentArg,
    /// Expire after this long, e.g. 90d or 12h; never when absent.
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    pub expires_in: Option<Duration>,
    /// A scope the key holds (repeat for more); default `*`, everything.
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<Scope>,
    /// The key's own rate limit, e.g. 1000/hour; the plan's when absent.
    #[arg(long, value_name = "COUNT/UNIT", value_parser = rate)]
    pub rate_limit: Option<(NonZeroU32, NonZeroU32)>,
    /// Requests allowed back to back (default: the rate's count).
    #[arg(long, value_name = "N", requires = "rate_limit")]
    pub burst: Option<NonZeroU32>,
    /// Requests in flight at once.
    #[arg(long, value_name = "N")]
    pub concurrency: Option<NonZeroU32>,
    /// The key's own quota, e.g. 10000/month or 500/day (calendar periods
    /// in UTC); the plan's when absent.
    #[arg(long, value_name = "COUNT/PERIOD", value_parser = quota)]
    pub quota: Option<QuotaPolicy>,
    /// Who shares the key's quota: the key alone (the default for a key's
    /// own quota) or every key of its account.
    #[arg(long, value_enum, value_name = "WHO", requires = "quota")]
    pub quota_applies_to: Option<AppliesToArg>,
    /// Uses the key may make (each request costs its route's units);
    /// unlimited when absent.
    #[arg(long, value_name = "N", value_parser = credit_count)]
    pub credits: Option<u64>,
    /// Set the credits to COUNT at the start of each day or month (UTC),
    /// e.g. 500/day.
    #[arg(long, value_name = "COUNT/PERIOD", value_parser = refill)]
    pub refill: Option<Refill>,
    /// A label, KEY=VALUE (repeat for more).
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = key_value)]
    pub metadata: Vec<(String, String)>,
    /// Makes a repeat of this command (by a script that lost the answer)
    /// create nothing new for 24 h; 1 to 255 visible ASCII characters.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<IdempotencyKey>,
}

/// `cloro keys credits`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("credits_change").required(true).args(["set", "add"])))]
pub struct CreditsArgs {
    /// The key id, `key_…`.
    pub id: KeyId,
    /// The new balance.
    #[arg(long, value_name = "N", value_parser = credit_count)]
    pub set: Option<u64>,
    /// Credits to add to the balance.
    #[arg(long, value_name = "N", value_parser = credit_count)]
    pub add: Option<u64>,
    /// Makes a repeat of this command change nothing for 24 h (so an
    /// --add retried by a script adds once); 1 to 255 visible ASCII
    /// characters.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<IdempotencyKey>,
}

/// `cloro keys revoke-leaked`: the keys come on standard input.
#[derive(Debug, Args)]
pub struct RevokeLeakedArgs {
    /// Why, for each key's record and the audit log.
    #[arg(long)]
    pub reason: Option<String>,
    /// Always empty. A key given as an argument is in the shell history
    /// and every process listing already; this refuses it, in words that do
    /// not repeat it (clap's own message for a stray argument quotes it).
    #[arg(hide = true, value_name = "KEY", value_parser = RefuseKeyArgument)]
    pub keys_as_arguments: Vec<Infallible>,
}

/// Refuses every value of `cloro keys revoke-leaked`'s hidden positional
/// without quoting it.
#[derive(Clone, Copy, Debug)]
struct RefuseKeyArgument;

impl TypedValueParser for RefuseKeyArgument {
    type Value = Infallible;

    fn parse_ref(
        &self,
        _command: &clap::Command,
        _arg: Option<&clap::Arg>,
        _value: &OsStr,
    ) -> Result<Infallible, clap::Error> {
        Err(clap::Error::raw(
            ErrorKind::UnknownArgument,
            "keys are read from standard input only, one per line, never from arguments \
             (those show in every process listing and the shell history): \
             cloro keys revoke-leaked < leaked.txt\n",
        ))
    }
}

/// `cloro keys list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The account.
    #[arg(long, value_name = "ACCOUNT")]
    pub account: AccountId,
    /// Keys per page (at most 100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub limit: Option<u32>,
    /// Start after this cursor, from an earlier page.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow every page.
    #[arg(long)]
    pub all: bool,
    /// Revoked keys too.
    #[arg(long)]
    pub include_revoked: bool,
}

/// `cloro audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The account.
    #[arg(long, value_name = "ACCOUNT")]
    pub account: AccountId,
    /// Events per page (at most 100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub limit: Option<u32>,
    /// Start after this cursor, from an earlier page.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow every page.
    #[arg(long)]
    pub all: bool,
}

/// `cloro keys update`: at least one change.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args([
            "name", "expires_in", "no_expiry", "scopes", "rate_limit", "plan_rate_limit",
            "concurrency", "no_concurrency_limit", "quota", "no_quota", "credits",
            "no_credits", "refill", "no_refill", "metadata", "remove_metadata",
            "clear_metadata", "enable", "disable",
        ])
))]
pub struct UpdateArgs {
    /// The key id, `key_…`.
    pub id: KeyId,
    /// A new label.
    #[arg(long)]
    pub name: Option<String>,
    /// Expire this long from now.
    #[arg(long, value_name = "DURATION", value_parser = positive_duration, conflicts_with = "no_expiry")]
    pub expires_in: Option<Duration>,
    /// Never expire.
    #[arg(long)]
    pub no_expiry: bool,
    /// The key's scopes, replacing the old ones (repeat for more).
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<Scope>,
    /// A new rate limit of the key's own, e.g. 1000/hour.
    #[arg(long, value_name = "COUNT/UNIT", value_parser = rate, conflicts_with = "plan_rate_limit")]
    pub rate_limit: Option<(NonZeroU32, NonZeroU32)>,
    /// Requests allowed back to back with the new rate limit.
    #[arg(long, value_name = "N", requires = "rate_limit")]
    pub burst: Option<NonZeroU32>,
    /// Drop the key's own rate limit and use its plan's.
    #[arg(long)]
    pub plan_rate_limit: bool,
    /// A new concurrency limit.
    #[arg(long, value_name = "N", conflicts_with = "no_concurrency_limit")]
    pub concurrency: Option<NonZeroU32>,
    /// Remove the concurrency limit.
    #[arg(long)]
    pub no_concurrency_limit: bool,
    /// A new quota of the key's own (replacing the old), e.g. 10000/month.
    #[arg(long, value_name = "COUNT/PERIOD", value_parser = quota, conflicts_with = "no_quota")]
    pub quota: Option<QuotaPolicy>,
    /// Who shares the new quota: the key alone or every key of its account.
    #[arg(long, value_enum, value_name = "WHO", requires = "quota")]
    pub quota_applies_to: Option<AppliesToArg>,
    /// Drop the key's own quota and use its plan's.
    #[arg(long)]
    pub no_quota: bool,
    /// A new credit balance (see also cloro keys credits --add).
    #[arg(long, value_name = "N", value_parser = credit_count, conflicts_with = "no_credits")]
    pub credits: Option<u64>,
    /// Make the key's credits unlimited.
    #[arg(long)]
    pub no_credits: bool,
    /// A new refill, e.g. 500/day.
    #[arg(long, value_name = "COUNT/PERIOD", value_parser = refill, conflicts_with = "no_refill")]
    pub refill: Option<Refill>,
    /// Stop refilling the key's credits.
    #[arg(long)]
    pub no_refill: bool,
    /// Set a label, KEY=VALUE (repeat for more).
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = key_value)]
    pub metadata: Vec<(String, String)>,
    /// Remove a label (repeat for more).
    #[arg(long = "remove-metadata", value_name = "KEY")]
    pub remove_metadata: Vec<String>,
    /// Remove every label.
    #[arg(long, conflicts_with_all = ["metadata", "remove_metadata"])]
    pub clear_metadata: bool,
    /// Switch a disabled key back on.
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Switch the key off (undo with --enable).
    #[arg(long)]
    pub disable: bool,
}

/// `cloro keys rotate`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The key id, `key_…`.
    pub id: KeyId,
    /// How long the old key keeps working, e.g. 24h; it stops at once
    /// when absent.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub grace: Option<Duration>,
    /// The new key expires this long from now (default: the old key's expiry).
    #[arg(long, value_name = "DURATION", value_parser = positive_duration, conflicts_with = "no_expiry")]
    pub expires_in: Option<Duration>,
    /// The new key never expires.
    #[arg(long)]
    pub no_expiry: bool,
    /// Makes a repeat of this command rotate nothing more for 24 h; 1 to
    /// 255 visible ASCII characters.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<IdempotencyKey>,
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|why| why.to_string())
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration_arg(text)? {
        Duration::ZERO => Err("must be longer than zero, e.g. 90d".into()),
        duration => Ok(duration),
    }
}

fn rate(text: &str) -> Result<(NonZeroU32, NonZeroU32), String> {
    parse_rate(text).map_err(|why| why.to_string())
}

/// `--quota COUNT/PERIOD`: at least 1 per day or month.
fn quota(text: &str) -> Result<QuotaPolicy, String> {
    let (requests, period) = count_per_period(text, 1, "10000/month")?;
    Ok(QuotaPolicy {
        requests,
        period,
        applies_to: None,
    })
}

/// `--refill COUNT/PERIOD`: the balance each day or month starts with
/// (0 is allowed: a key that is emptied each period).
fn refill(text: &str) -> Result<Refill, String> {
    let (amount, interval) = count_per_period(text, 0, "500/day")?;
    Ok(Refill { amount, interval })
}

fn count_per_period(text: &str, least: u64, example: &str) -> Result<(u64, QuotaPeriod), String> {
    let Some((count, period)) = text.trim().split_once('/') else {
        return Err(format!("expected COUNT/PERIOD, e.g. {example}"));
    };
    let count = count_in(count, least)?;
    let period = match period.trim() {
        "day" | "d" | "daily" => QuotaPeriod::Day,
        "month" | "mo" | "monthly" => QuotaPeriod::Month,
        other => {
            return Err(format!(
                "the period is day or month (calendar periods in UTC), not `{}`; e.g. {example}",
                other.escape_default()
            ));
        }
    };
    Ok((count, period))
}

/// `--credits`, `--set`, `--add`: 0 to 2^53 − 1.
fn credit_count(text: &str) -> Result<u64, String> {
    count_in(text, 0)
}

/// A whole number from `least` to [`MAX_QUOTA_COUNT`], the largest a JSON
/// number holds exactly, so that what the server stores is what was typed.
fn count_in(text: &str, least: u64) -> Result<u64, String> {
    let text = text.trim();
    let range = || format!("a whole number from {least} to {MAX_QUOTA_COUNT}");
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(format!("expected {}", range()));
    }
    match text.parse::<u64>() {
        Ok(count) if (least..=MAX_QUOTA_COUNT).contains(&count) => Ok(count),
        Ok(0) => Err(format!("must be at least {least}")),
        _ => Err(format!("must be at most {MAX_QUOTA_COUNT}")),
    }
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err("expected KEY=VALUE, e.g. team=payments".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn create_parses_the_issue_example() {
        let cli = Cli::try_parse_from([
            "cloro",
            "keys",
            "create",
            "--account",
            "A",
            "--name",
            "N",
            "--purpose",
            "ci",
            "--env",
            "test",
            "--expires-in",
            "90d",
            "--scope",
            "monitor:read",
            "--rate-limit",
            "1000/hour",
            "--concurrency",
            "10",
        ])
        .unwrap();
        let Command::Keys(KeysCommand::Create(args)) = cli.command else {
            panic!("not create: {:?}", cli.command);
        };
        assert_eq!(args.purpose, PurposeArg::Ci);
        assert_eq!(args.environment, EnvironmentArg::Test);
        assert_eq!(args.expires_in, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(
            args.rate_limit.map(|(n, s)| (n.get(), s.get())),
            Some((1000, 3600))
        );
    }

    fn create_args(extra: &[&str]) -> Result<CreateArgs, clap::Error> {
        let mut argv = vec!["cloro", "keys", "create", "--account", "a", "--name", "n"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv)?.command {
            Command::Keys(KeysCommand::Create(args)) => Ok(args),
            other => panic!("not create: {other:?}"),
        }
    }

    #[test]
    fn quotas_credits_and_refills_parse() {
        let args = create_args(&[
            "--quota",
            "10000/month",
            "--quota-applies-to",
            "account",
            "--credits",
            "500",
            "--refill",
            "500/day",
            "--idempotency-key",
            "order-42",
        ])
        .unwrap();
        assert_eq!(
            args.quota,
            Some(QuotaPolicy {
                requests: 10_000,
                period: QuotaPeriod::Month,
                applies_to: None,
            })
        );
        assert_eq!(args.quota_applies_to, Some(AppliesToArg::Account));
        assert_eq!(args.credits, Some(500));
        assert_eq!(
            args.refill,
            Some(Refill {
                amount: 500,
                interval: QuotaPeriod::Day,
            })
        );
        assert_eq!(args.idempotency_key.unwrap().as_str(), "order-42");
        // The edges: 2^53 − 1 is the most, 0 credits and a refill to 0 are fine.
        let edge = create_args(&[
            "--quota",
            "9007199254740991/day",
            "--credits",
            "0",
            "--refill",
            "0/month",
        ])
        .unwrap();
        assert_eq!(edge.quota.unwrap().requests, MAX_QUOTA_COUNT);
        assert_eq!(edge.credits, Some(0));
        assert_eq!(edge.refill.unwrap().amount, 0);
    }

    #[test]
    fn bad_quota_values_name_the_flag() {
        for (flag, value, why) in [
            ("--quota", "0/month", "at least 1"),
            ("--quota", "10/week", "day or month"),
            ("--quota", "10000", "COUNT/PERIOD"),
            ("--quota", "-5/day", "whole number"),
            (
                "--quota",
                "9007199254740992/month",
                "at most 9007199254740991",
            ),
            ("--quota", "99999999999999999999999/month", "at most"),
            ("--refill", "x", "COUNT/PERIOD"),
            ("--refill", "5/year", "day or month"),
            ("--refill", "1.5/day", "whole number"),
            ("--credits", "9007199254740992", "at most 9007199254740991"),
            ("--credits", "lots", "whole number"),
            ("--credits", "", "whole number"),
        ] {
            // `--flag=value`, so that `-5/day` is a value, not a flag.
            let error = create_args(&[&format!("{flag}={value}")]).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{flag} {value}");
            let text = error.to_string();
            assert!(text.contains(flag), "{flag} {value}: {text}");
            assert!(text.contains(why), "{flag} {value}: {text}");
        }
    }

    #[test]
    fn credits_takes_exactly_one_change() {
        let cli =
            Cli::try_parse_from(["cloro", "keys", "credits", "key_1", "--add", "100"]).unwrap();
        let Command::Keys(KeysCommand::Credits(args)) = cli.command else {
            panic!("not credits");
        };
        assert_eq!((args.set, args.add), (None, Some(100)));
        let cli = Cli::try_parse_from(["cloro", "keys", "credits", "key_1", "--set", "0"]).unwrap();
        let Command::Keys(KeysCommand::Credits(args)) = cli.command else {
            panic!("not credits");
        };
        assert_eq!((args.set, args.add), (Some(0), None));
    }

    #[test]
    fn revoke_leaked_takes_no_key_as_an_argument() {
        let cli =
            Cli::try_parse_from(["cloro", "keys", "revoke-leaked", "--reason", "in a ticket"])
                .unwrap();
        let Command::Keys(KeysCommand::RevokeLeaked(args)) = cli.command else {
            panic!("not revoke-leaked");
        };
        assert_eq!(args.reason.as_deref(), Some("in a ticket"));
        assert!(args.keys_as_arguments.is_empty());

        let key = "sk_live_0123456789abcdef0123456789abcdef01234567";
        for argv in [
            &["cloro", "keys", "revoke-leaked", key][..],
            &["cloro", "keys", "revoke-leaked", "--reason", "r", "--", key],
            &["cloro", "--json", "keys", "revoke-leaked", "not-a-key", key],
        ] {
            let error = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{argv:?}");
            let text = error.render().to_string();
            assert!(text.contains("standard input"), "{text}");
            assert!(!text.contains("0123456789abcdef"), "{text}");
        }
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for argv in [
            &["cloro", "keys", "create", "--account", "a b", "--name", "n"][..],
            &[
                "cloro",
                "keys",
                "create",
                "--account",
                "a",
                "--name",
                "n",
                "--rate-limit",
                "lots",
            ],
            &[
                "cloro",
                "keys",
                "create",
                "--account",
                "a",
                "--name",
                "n",
                "--expires-in",
                "0",
            ],
            &["cloro", "keys", "update", "key_1"],
            &[
                "cloro",
                "keys",
                "update",
                "key_1",
                "--quota",
                "5/day",
                "--no-quota",
            ],
            &[
                "cloro",
                "keys",
                "update",
                "key_1",
                "--credits",
                "5",
                "--no-credits",
            ],
            &[
                "cloro",
                "keys",
                "update",
                "key_1",
                "--refill",
                "5/day",
                "--no-refill",
            ],
            &[
                "cloro",
                "keys",
                "update",
                "key_1",
                "--quota-applies-to",
                "key",
            ],
            &["cloro", "keys", "credits", "key_1"],
            &[
                "cloro", "keys", "credits", "key_1", "--set", "1", "--add", "1",
            ],
            &["cloro", "keys", "credits", "key_1", "--add", "-1"],
            &[
                "cloro",
                "keys",
                "credits",
                "key_1",
                "--add",
                "1",
                "--idempotency-key",
                "has space",
            ],
            &["cloro", "accounts", "quota", "not an account"],
            &["cloro", "keys", "update", "key_1", "--enable", "--disable"],
            &[
                "cloro",
                "keys",
                "rotate",
                "key_1",
                "--expires-in",
                "1d",
                "--no-expiry",
            ],
        ] {
            let error = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{argv:?}");
        }
    }
}
