//! What each `cloro` command does: turn its arguments into one or more
//! SDK calls and hand the answers to [`super::output`].

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use cloro_auth_core::wire::{
    AppliesTo, CreateKeyRequest, CreateWebhookRequest, ListAuditResponse, ListKeysResponse, Patch,
    QuotaPolicy, RateLimitPolicy, RotateKeyRequest, UpdateKeyRequest,
};
use jiff::Timestamp;
use zeroize::{Zeroize, Zeroizing};

use super::args::{
    AccountsCommand, AuditArgs, Cli, Command, CreateArgs, CreditsArgs, KeysCommand, ListArgs,
    RevokeLeakedArgs, RotateArgs, TokensCommand, UpdateArgs, UsageArgs, WebhooksCommand,
};
use super::output::Out;
use super::{Failure, Input};
use crate::admin::{AdminClient, AuditQuery, KeyListQuery, LeakedKey, UsageQuery};
use crate::builder::ClientBuilder;
use crate::idempotency::IdempotencyKey;

/// Runs one command.
pub(crate) async fn execute(
    cli: Cli,
    builder: ClientBuilder,
    input: Input<'_>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Failure> {
    let mut builder = builder.allow_insecure_http(cli.allow_insecure_http);
    if let Some(url) = cli.base_url {
        builder = builder.base_url(url);
    }
    if let Some(path) = &cli.ca_cert {
        let pem = std::fs::read(path).map_err(|why| {
            Failure::Usage(format!("cannot read --ca-cert {}: {why}", path.display()))
        })?;
        builder = builder.add_root_certificates_pem(pem);
    }
    let mut out = Out::new(out, err, cli.json);
    match cli.command {
        Command::Whoami => {
            let client = builder.build()?;
            let me = client.whoami().await?;
            out.whoami(&me)?;
        }
        Command::Keys(command) => {
            keys(command, &builder.build_admin()?, input, &mut out).await?;
        }
        Command::Audit(args) => audit(args, &builder.build_admin()?, &mut out).await?,
        Command::Plans => {
            let plans = builder.build_admin()?.plans().await?;
            out.plans(plans.value())?;
        }
        Command::Accounts(AccountsCommand::Show { account }) => {
            let info = builder.build_admin()?.account(&account).await?;
            out.account(info.value())?;
        }
        Command::Accounts(AccountsCommand::Quota { account }) => {
            let quota = builder.build_admin()?.account_quota(&account).await?;
            out.account_quota(quota.value())?;
        }
        Command::Accounts(AccountsCommand::Usage { account, range }) => {
            let admin = builder.build_admin()?;
            let usage = admin.account_usage(&account, usage_query(&range)?).await?;
            out.account_usage(usage.value())?;
        }
        Command::Accounts(AccountsCommand::Portal { account }) => {
            let link = builder
                .build_admin()?
                .create_portal_session(&account)
                .await?;
            out.portal_link(&account, link.value())?;
        }
        Command::Accounts(AccountsCommand::SetPlan { account, plan }) => {
            let info = builder.build_admin()?.set_plan(&account, plan).await?;
            out.account(info.value())?;
        }
        Command::Webhooks(command) => webhooks(command, &builder.build_admin()?, &mut out).await?,
        Command::Tokens(command) => {
            let admin = builder.build_admin()?;
            match command {
                TokensCommand::Create { name, role } => {
                    let created = admin.create_admin_token(&name, role.into()).await?;
                    out.token_created(created.value())?;
                }
                TokensCommand::List => {
                    let listed = admin.admin_tokens().await?;
                    out.admin_tokens(listed.value())?;
                }
                TokensCommand::Delete { id } => {
                    admin.delete_admin_token(&id).await?;
                    out.note(&format!("deleted admin token {id}"))?;
                }
            }
        }
    }
    Ok(())
}

/// `--since` and `--granularity` as the server's query: `from` is `since`
/// before now (the server's default range ends now).
fn usage_query(range: &UsageArgs) -> Result<UsageQuery, Failure> {
    let from = range
        .since
        .map(|since| {
            jiff::SignedDuration::try_from(since)
                .ok()
                .and_then(|since| Timestamp::now().checked_sub(since).ok())
                .ok_or_else(|| Failure::Usage(format!("--since {since:?} reaches too far back")))
        })
        .transpose()?;
    Ok(UsageQuery {
        granularity: range.granularity.map(Into::into),
        from,
        to: None,
    })
}

async fn webhooks(
    command: WebhooksCommand,
    admin: &AdminClient,
    out: &mut Out<'_>,
) -> Result<(), Failure> {
    match command {
        WebhooksCommand::Create {
            url,
            events,
            account,
        } => {
            let request = CreateWebhookRequest {
                url,
                events,
                account_id: account,
            };
            let created = admin.create_webhook(&request).await?;
            out.webhook_created(created.value())?;
        }
        WebhooksCommand::List => out.webhooks(admin.webhooks().await?.value())?,
        WebhooksCommand::Show { id } => out.webhook(admin.webhook(&id).await?.value())?,
        WebhooksCommand::Delete { id } => {
            admin.delete_webhook(&id).await?;
            out.note(&format!("deleted webhook {id}"))?;
        }
        WebhooksCommand::Deliveries { id, limit, cursor } => {
            let page = admin
                .webhook_deliveries(&id, limit, cursor.as_deref())
                .await?;
            out.deliveries(page.value())?;
        }
    }
    Ok(())
}

async fn keys(
    command: KeysCommand,
    admin: &AdminClient,
    input: Input<'_>,
    out: &mut Out<'_>,
) -> Result<(), Failure> {
    match command {
        KeysCommand::Create(args) => {
            let idempotency_key = args.idempotency_key.clone();
            let request = create_request(args)?;
            let created = match idempotency_key {
                Some(key) => admin.with_idempotency_key(key).create_key(&request).await?,
                None => admin.create_key(&request).await?,
            };
            out.created(created.value())?;
        }
        KeysCommand::List(args) => list(args, admin, out).await?,
        KeysCommand::Show { id } => {
            let info = admin.get_key(&id).await?;
            out.key_info(info.value())?;
        }
        KeysCommand::Update(args) => {
            let id = args.id;
            let info = admin.update_key(&id, &update_request(args)?).await?;
            out.key_info(info.value())?;
        }
        KeysCommand::Revoke { id, reason } => {
            let info = admin.revoke_key(&id, reason.as_deref()).await?;
            out.key_info(info.value())?;
        }
        KeysCommand::Rotate(args) => {
            let id = args.id;
            let request = rotate_request(&args)?;
            let rotated = match args.idempotency_key {
                Some(key) => {
                    admin
                        .with_idempotency_key(key)
                        .rotate_key(&id, &request)
                        .await?
                }
                None => admin.rotate_key(&id, &request).await?,
            };
            out.rotated(rotated.value())?;
        }
        KeysCommand::Credits(args) => credits(args, admin, out).await?,
        KeysCommand::RevokeLeaked(args) => revoke_leaked(args, admin, input, out).await?,
        KeysCommand::Usage { id, range } => {
            let usage = admin.key_usage(&id, usage_query(&range)?).await?;
            out.key_usage(usage.value())?;
        }
    }
    Ok(())
}

/// `admin` is built before this runs, so a missing or malformed admin
/// token is said before anyone pastes keys into a command that cannot send
/// them; with no keys at all, nothing is sent.
async fn revoke_leaked(
    args: RevokeLeakedArgs,
    admin: &AdminClient,
    input: Input<'_>,
    out: &mut Out<'_>,
) -> Result<(), Failure> {
    let keys = read_leaked_keys(input, out)?;
    if keys.is_empty() {
        return Err(Failure::Usage(
            "no keys on standard input; give them one per line, e.g. cloro keys revoke-leaked < leaked.txt"
                .into(),
        ));
    }
    let answer = admin
        .revoke_leaked_keys(&keys, args.reason.as_deref())
        .await?;
    out.revoked_leaked(answer.value())?;
    Ok(())
}

/// One key a line, surrounding whitespace and blank lines ignored. Each
/// line is wiped once read (the reader's own buffer is out of reach); what
/// is kept is a well-formed key or nothing ([`LeakedKey`]).
fn read_leaked_keys(input: Input<'_>, out: &mut Out<'_>) -> Result<Vec<LeakedKey>, Failure> {
    if input.terminal {
        let end = if cfg!(windows) {
            "Ctrl-Z, Enter"
        } else {
            "Ctrl-D"
        };
        out.prompt(&format!("paste keys, one per line, then {end}"))?;
    }
    let mut keys = Vec::new();
    let mut line = Zeroizing::new(Vec::new());
    loop {
        line.zeroize();
        // Read as bytes: a line that is not UTF-8 is no key, not a reason
        // to stop.
        let read = input
            .reader
            .read_until(b'\n', &mut line)
            .map_err(|why| Failure::Usage(format!("cannot read standard input: {why}")))?;
        if read == 0 {
            return Ok(keys);
        }
        if !line.trim_ascii().is_empty() {
            keys.push(LeakedKey::new(line.as_slice()));
        }
    }
}

async fn credits(args: CreditsArgs, admin: &AdminClient, out: &mut Out<'_>) -> Result<(), Failure> {
    let id = args.id;
    let key = args.idempotency_key.unwrap_or_else(IdempotencyKey::random);
    let keyed = admin.with_idempotency_key(key);
    // clap's group makes exactly one of the two present.
    let info = match (args.set, args.add) {
        (Some(set), _) => keyed.set_credits(&id, set).await?,
        (None, Some(add)) => keyed.add_credits(&id, add).await?,
        (None, None) => return Err(Failure::Usage("give --set N or --add N".into())),
    };
    if info.meta().replayed {
        out.note("this command ran before with this --idempotency-key; nothing was changed now")?;
    }
    out.key_info(info.value())?;
    Ok(())
}

async fn list(args: ListArgs, admin: &AdminClient, out: &mut Out<'_>) -> Result<(), Failure> {
    let mut query = KeyListQuery::new(args.account).include_revoked(args.include_revoked);
    query.limit = args.limit;
    query.cursor = args.cursor;
    let page = if args.all {
        ListKeysResponse {
            keys: admin.keys(query).collect_all().await?,
            next_cursor: None,
        }
    } else {
        admin.list_keys(&query).await?.into_value()
    };
    out.keys(&page)?;
    Ok(())
}

async fn audit(args: AuditArgs, admin: &AdminClient, out: &mut Out<'_>) -> Result<(), Failure> {
    let mut query = AuditQuery::new(args.account);
    query.limit = args.limit;
    query.cursor = args.cursor;
    let page = if args.all {
        ListAuditResponse {
            events: admin.audit_events(query).collect_all().await?,
            next_cursor: None,
        }
    } else {
        admin.audit(&query).await?.into_value()
    };
    out.audit(&page)?;
    Ok(())
}

fn create_request(args: CreateArgs) -> Result<CreateKeyRequest, Failure> {
    let mut request = CreateKeyRequest::new(args.account, args.name);
    request.purpose = args.purpose.into();
    request.environment = args.environment.into();
    request.expires_at = args.expires_in.map(from_now).transpose()?;
    if !args.scopes.is_empty() {
        request.scopes = args.scopes;
    }
    request.rate_limit = args
        .rate_limit
        .map(|(requests, per_seconds)| RateLimitPolicy {
            burst: args.burst,
            ..RateLimitPolicy::new(requests, per_seconds)
        });
    request.concurrency_limit = args.concurrency;
    request.quota = args.quota.map(|quota| QuotaPolicy {
        applies_to: args.quota_applies_to.map(AppliesTo::from),
        ..quota
    });
    request.credits = args.credits;
    request.refill = args.refill;
    request.metadata = args.metadata.into_iter().collect();
    Ok(request)
}

fn update_request(args: UpdateArgs) -> Result<UpdateKeyRequest, Failure> {
    let mut patch = UpdateKeyRequest::default();
    if let Some(name) = args.name {
        patch.name = Patch::Value(name);
    }
    if let Some(expires_in) = args.expires_in {
        patch.expires_at = Patch::Value(from_now(expires_in)?);
    } else if args.no_expiry {
        patch.expires_at = Patch::Null;
    }
    if !args.scopes.is_empty() {
        patch.scopes = Patch::Value(args.scopes);
    }
    if let Some((requests, per_seconds)) = args.rate_limit {
        patch.rate_limit = Patch::Value(RateLimitPolicy {
            burst: args.burst,
            ..RateLimitPolicy::new(requests, per_seconds)
        });
    } else if args.plan_rate_limit {
        patch.rate_limit = Patch::Null;
    }
    if let Some(limit) = args.concurrency {
        patch.concurrency_limit = Patch::Value(limit);
    } else if args.no_concurrency_limit {
        patch.concurrency_limit = Patch::Null;
    }
    if let Some(quota) = args.quota {
        patch.quota = Patch::Value(QuotaPolicy {
            applies_to: args.quota_applies_to.map(AppliesTo::from),
            ..quota
        });
    } else if args.no_quota {
        patch.quota = Patch::Null;
    }
    if let Some(credits) = args.credits {
        patch.credits = Patch::Value(credits);
    } else if args.no_credits {
        patch.credits = Patch::Null;
    }
    if let Some(refill) = args.refill {
        patch.refill = Patch::Value(refill);
    } else if args.no_refill {
        patch.refill = Patch::Null;
    }
    if args.clear_metadata {
        patch.metadata = Patch::Null;
    } else if !args.metadata.is_empty() || !args.remove_metadata.is_empty() {
        // RFC 7396: a member set to null removes that label, others merge in.
        let mut labels: BTreeMap<String, Option<String>> = args
            .remove_metadata
            .into_iter()
            .map(|key| (key, None))
            .collect();
        labels.extend(args.metadata.into_iter().map(|(k, v)| (k, Some(v))));
        patch.metadata = Patch::Value(labels);
    }
    if args.enable {
        patch.enabled = Patch::Value(true);
    } else if args.disable {
        patch.enabled = Patch::Value(false);
    }
    Ok(patch)
}

fn rotate_request(args: &RotateArgs) -> Result<RotateKeyRequest, Failure> {
    let expires_at = match (args.expires_in, args.no_expiry) {
        (Some(expires_in), _) => Patch::Value(from_now(expires_in)?),
        (None, true) => Patch::Null,
        (None, false) => Patch::Absent,
    };
    Ok(RotateKeyRequest {
        grace_period_seconds: args.grace.map_or(0, |grace| grace.as_secs()),
        expires_at,
    })
}

/// Now plus `duration`, to the second.
fn from_now(duration: Duration) -> Result<Timestamp, Failure> {
    Timestamp::now()
        .checked_add(duration)
        .and_then(|at| at.round(jiff::Unit::Second))
        .map_err(|_| Failure::Usage(format!("{duration:?} from now is past the year 9999")))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse_update(argv: &[&str]) -> UpdateKeyRequest {
        let cli = Cli::try_parse_from(argv).unwrap();
        let Command::Keys(KeysCommand::Update(args)) = cli.command else {
            panic!("not update");
        };
        update_request(args).unwrap()
    }

    #[test]
    fn update_builds_a_merge_patch() {
        let patch = parse_update(&[
            "cloro",
            "keys",
            "update",
            "key_1",
            "--name",
            "new",
            "--no-expiry",
            "--plan-rate-limit",
            "--metadata",
            "team=a",
            "--remove-metadata",
            "old",
            "--disable",
        ]);
        let json = serde_json::to_value(&patch).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "name": "new",
                "expires_at": null,
                "rate_limit": null,
                "metadata": {"old": null, "team": "a"},
                "enabled": false,
            })
        );
    }

    #[test]
    fn quota_credits_and_refill_patch_and_clear() {
        let set = parse_update(&[
            "cloro",
            "keys",
            "update",
            "key_1",
            "--quota",
            "10000/month",
            "--quota-applies-to",
            "account",
            "--credits",
            "500",
            "--refill",
            "500/day",
        ]);
        assert_eq!(
            serde_json::to_value(&set).unwrap(),
            serde_json::json!({
                "quota": {"requests": 10000, "period": "month", "applies_to": "account"},
                "credits": 500,
                "refill": {"amount": 500, "interval": "day"},
            })
        );
        let cleared = parse_update(&[
            "cloro",
            "keys",
            "update",
            "key_1",
            "--no-quota",
            "--no-credits",
            "--no-refill",
        ]);
        assert_eq!(
            serde_json::to_value(&cleared).unwrap(),
            serde_json::json!({"quota": null, "credits": null, "refill": null})
        );
    }

    #[test]
    fn create_carries_quota_credits_and_refill() {
        let cli = Cli::try_parse_from([
            "cloro",
            "keys",
            "create",
            "--account",
            "a",
            "--name",
            "n",
            "--quota",
            "10000/month",
            "--credits",
            "500",
            "--refill",
            "500/day",
        ])
        .unwrap();
        let Command::Keys(KeysCommand::Create(args)) = cli.command else {
            panic!("not create");
        };
        let json = serde_json::to_value(create_request(args).unwrap()).unwrap();
        assert_eq!(
            json["quota"],
            serde_json::json!({"requests": 10000, "period": "month"})
        );
        assert_eq!(json["credits"], 500);
        assert_eq!(
            json["refill"],
            serde_json::json!({"amount": 500, "interval": "day"})
        );
    }

    #[test]
    fn rotate_grace_and_expiry() {
        let cli =
            Cli::try_parse_from(["cloro", "keys", "rotate", "key_1", "--grace", "24h"]).unwrap();
        let Command::Keys(KeysCommand::Rotate(args)) = cli.command else {
            panic!("not rotate");
        };
        let request = rotate_request(&args).unwrap();
        assert_eq!(request.grace_period_seconds, 86_400);
        assert_eq!(request.expires_at, Patch::Absent);
    }
}
