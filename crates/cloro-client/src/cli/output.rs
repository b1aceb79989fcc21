//! How `cloro` shows answers: aligned tables and `field  value` lists for
//! people, the API's own JSON shapes for scripts, and one `CODE: fix` line
//! on stderr for a failure.
//!
//! Keys appear only in their redacted form (`start`), except the new key
//! of a create or rotate, which is the point of those commands. Keys read
//! from standard input (`keys revoke-leaked`) never reach this file: it
//! prints the server's answer, which holds no plaintext.

use std::io::{self, Write};

use cloro_auth_core::wire::{
    AccountInfo, AccountQuotaResponse, AppliesTo, KeyInfo, ListAuditResponse, ListKeysResponse,
    PlansResponse, QuotaPolicy, RateLimitPolicy, Refill, RevokeLeakedResponse,
};
use cloro_auth_core::wire::{
    AccountUsageResponse, KeyUsageResponse, UsageBucket, UsageGranularity, UsageOutcome,
};
use cloro_auth_core::wire::{CreateAdminTokenResponse, ListAdminTokensResponse};
use cloro_auth_core::wire::{
    CreateWebhookResponse, ListDeliveriesResponse, ListWebhooksResponse, WebhookInfo,
};
use jiff::Timestamp;
use serde::Serialize;
use serde_json::json;

use super::Failure;
use crate::admin::{CreatedKey, RotatedKey};
use crate::error::Error;
use crate::response::Response;

/// Where results (`out`) and messages (`err`) go, and in which form.
pub(crate) struct Out<'a> {
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    json: bool,
}

impl<'a> Out<'a> {
    pub(crate) fn new(out: &'a mut dyn Write, err: &'a mut dyn Write, json: bool) -> Self {
        Out { out, err, json }
    }

    fn print_json(&mut self, value: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *self.out, value)?;
        writeln!(self.out)
    }

    pub(crate) fn whoami(&mut self, me: &Response<KeyInfo>) -> io::Result<()> {
        if self.json {
            return self.print_json(me.value());
        }
        self.key_info(me.value())?;
        if let Some(limit) = me.rate_limit() {
            writeln!(
                self.out,
                "{:<13} {} of {} left, full again in {} s",
                "rate now",
                limit.remaining,
                limit.limit,
                limit.reset.as_secs()
            )?;
        }
        Ok(())
    }

    pub(crate) fn key_info(&mut self, info: &KeyInfo) -> io::Result<()> {
        if self.json {
            return self.print_json(info);
        }
        let revoked = match (&info.revoked_at, &info.revoked_reason) {
            (Some(at), Some(reason)) => format!("{} ({reason})", time(at)),
            (Some(at), None) => time(at),
            (None, _) => "no".into(),
        };
        let rows = [
            ("id", info.id.to_string()),
            ("account", info.account_id.to_string()),
            ("name", info.name.clone()),
            ("key", info.start.clone()),
            ("environment", info.environment.to_string()),
            ("purpose", wire_name(&info.purpose)),
            ("status", info.status.to_string()),
            ("scopes", join(info.scopes.iter())),
            (
                "rate limit",
                info.rate_limit
                    .as_ref()
                    .map_or_else(|| "the plan's".into(), rate),
            ),
            (
                "concurrency",
                info.concurrency_limit
                    .map_or_else(|| "no limit".into(), |n| n.to_string()),
            ),
            ("quota", key_quota(info)),
            ("credits", credits(info)),
            (
                "refill",
                info.refill.as_ref().map_or_else(|| "never".into(), refill),
            ),
            ("created", time(&info.created_at)),
            (
                "expires",
                info.expires_at
                    .as_ref()
                    .map_or_else(|| "never".into(), time),
            ),
            (
                "last used",
                info.last_used_at
                    .as_ref()
                    .map_or_else(|| "never".into(), time),
            ),
            ("revoked", revoked),
            (
                "metadata",
                join(info.metadata.iter().map(|(k, v)| format!("{k}={v}"))),
            ),
        ];
        for (field, value) in rows {
            writeln!(self.out, "{field:<13} {value}")?;
        }
        Ok(())
    }

    pub(crate) fn created(&mut self, created: &CreatedKey) -> io::Result<()> {
        if self.json {
            self.print_json(&json!({
                "key": created.key.expose_secret(),
                "key_info": created.key_info,
            }))?;
        } else {
            writeln!(self.out, "{}", created.key.expose_secret())?;
        }
        let info = &created.key_info;
        writeln!(
            self.err,
            "created {} ({}) for account {}, expires {}",
            info.id,
            info.start,
            info.account_id,
            info.expires_at
                .as_ref()
                .map_or_else(|| "never".into(), time)
        )?;
        self.store_reminder()
    }

    pub(crate) fn rotated(&mut self, rotated: &RotatedKey) -> io::Result<()> {
        if self.json {
            self.print_json(&json!({
                "key": rotated.key.expose_secret(),
                "key_info": rotated.key_info,
                "previous": rotated.previous,
            }))?;
        } else {
            writeln!(self.out, "{}", rotated.key.expose_secret())?;
        }
        let old_end = rotated
            .previous
            .expires_at
            .as_ref()
            .map_or_else(|| "never".into(), time);
        writeln!(
            self.err,
            "rotated {} ({}) to {} ({}); the old key works until {old_end}",
            rotated.previous.id,
            rotated.previous.start,
            rotated.key_info.id,
            rotated.key_info.start
        )?;
        self.store_reminder()
    }

    fn store_reminder(&mut self) -> io::Result<()> {
        writeln!(
            self.err,
            "store the key now, it is shown only this once: put it in an environment variable \
             (export CLORO_API_KEY=<the key>) or your secret manager, never in source code"
        )
    }

    pub(crate) fn keys(&mut self, page: &ListKeysResponse) -> io::Result<()> {
        if self.json {
            return self.print_json(page);
        }
        let mut table = Table::new(&[
            "ID",
            "NAME",
            "KEY",
            "ENV",
            "PURPOSE",
            "STATUS",
            "QUOTA",
            "CREDITS",
            "EXPIRES",
            "LAST USED",
        ]);
        for key in &page.keys {
            let credits = match (key.credits, &key.refill) {
                (Some(left), Some(refill)) => format!(
                    "{left} (to {} each {})",
                    refill.amount,
                    refill.interval.as_str()
                ),
                _ => credits(key),
            };
            table.row(vec![
                key.id.to_string(),
                key.name.clone(),
                key.start.clone(),
                key.environment.to_string(),
                wire_name(&key.purpose),
                key.status.to_string(),
                key_quota(key),
                credits,
                key.expires_at.as_ref().map_or_else(|| "never".into(), time),
                key.last_used_at
                    .as_ref()
                    .map_or_else(|| "never".into(), time),
            ]);
        }
        table.write(self.out)?;
        self.more(page.next_cursor.as_deref())
    }

    pub(crate) fn revoked_leaked(&mut self, answer: &RevokeLeakedResponse) -> io::Result<()> {
        if self.json {
            return self.print_json(answer);
        }
        if answer.revoked.is_empty() {
            writeln!(self.out, "no key was revoked")?;
        } else {
            let mut table = Table::new(&["ID", "ACCOUNT", "KEY", "STATUS"]);
            for key in &answer.revoked {
                table.row(vec![
                    key.id.to_string(),
                    key.account_id.to_string(),
                    key.start.clone(),
                    key.status.to_string(),
                ]);
            }
            table.write(self.out)?;
        }
        let strings = if answer.not_found == 1 {
            "string"
        } else {
            "strings"
        };
        writeln!(self.out, "{} {strings} matched no key", answer.not_found)
    }

    pub(crate) fn audit(&mut self, page: &ListAuditResponse) -> io::Result<()> {
        if self.json {
            return self.print_json(page);
        }
        let mut table = Table::new(&["AT", "ACTION", "KEY", "ACTOR", "DETAILS"]);
        for event in &page.events {
            table.row(vec![
                time(&event.at),
                wire_name(&event.action),
                event.key_id.map_or_else(|| "-".into(), |id| id.to_string()),
                event.actor.clone(),
                join(event.details.iter().map(|(k, v)| format!("{k}={v}"))),
            ]);
        }
        table.write(self.out)?;
        self.more(page.next_cursor.as_deref())
    }

    fn more(&mut self, next_cursor: Option<&str>) -> io::Result<()> {
        match next_cursor {
            Some(cursor) => writeln!(
                self.err,
                "more on the next page: add --cursor {cursor}, or --all for everything"
            ),
            None => Ok(()),
        }
    }

    pub(crate) fn plans(&mut self, plans: &PlansResponse) -> io::Result<()> {
        if self.json {
            return self.print_json(plans);
        }
        let mut table = Table::new(&["PLAN", "RATE LIMIT", "CONCURRENCY", "QUOTA", "DEFAULT"]);
        for plan in &plans.plans {
            table.row(vec![
                plan.name.to_string(),
                rate(&plan.rate_limit),
                plan.concurrency_limit
                    .map_or_else(|| "no limit".into(), |n| n.to_string()),
                plan.quota
                    .as_ref()
                    .map_or_else(|| "none".into(), |q| quota(q, AppliesTo::Account)),
                if plan.name == plans.default_plan {
                    "yes"
                } else {
                    ""
                }
                .into(),
            ]);
        }
        table.write(self.out)
    }

    pub(crate) fn account(&mut self, account: &AccountInfo) -> io::Result<()> {
        if self.json {
            return self.print_json(account);
        }
        writeln!(self.out, "{:<13} {}", "account", account.account_id)?;
        writeln!(self.out, "{:<13} {}", "plan", account.plan)?;
        writeln!(self.out, "{:<13} {}", "keys", account.key_count)
    }

    pub(crate) fn account_quota(&mut self, answer: &AccountQuotaResponse) -> io::Result<()> {
        if self.json {
            return self.print_json(answer);
        }
        let count = |value: Option<u64>| value.map_or_else(|| "-".into(), |n| n.to_string());
        let policy = match &answer.quota {
            Some(policy) => quota(policy, AppliesTo::Account),
            None => "none (the plan has no quota)".into(),
        };
        let per_key = answer
            .quota
            .is_some_and(|policy| policy.applies_to_or(AppliesTo::Account) == AppliesTo::Key);
        let rows = [
            ("account", answer.account_id.to_string()),
            ("plan", answer.plan.to_string()),
            ("quota", policy),
            (
                "used",
                if per_key {
                    "- (counted per key)".into()
                } else {
                    count(answer.used)
                },
            ),
            ("remaining", count(answer.remaining)),
            (
                "resets",
                answer.resets_at.as_ref().map_or_else(|| "-".into(), time),
            ),
        ];
        for (field, value) in rows {
            writeln!(self.out, "{field:<13} {value}")?;
        }
        Ok(())
    }

    pub(crate) fn key_usage(&mut self, usage: &KeyUsageResponse) -> io::Result<()> {
        if self.json {
            return self.print_json(usage);
        }
        writeln!(self.out, "{:<13} {}", "key", usage.key_id)?;
        self.usage_table(usage.granularity, usage.from, usage.to, &usage.buckets)
    }

    pub(crate) fn account_usage(&mut self, usage: &AccountUsageResponse) -> io::Result<()> {
        if self.json {
            return self.print_json(usage);
        }
        writeln!(self.out, "{:<13} {}", "account", usage.account_id)?;
        self.usage_table(usage.granularity, usage.from, usage.to, &usage.buckets)?;
        if usage.keys.is_empty() {
            return Ok(());
        }
        writeln!(self.out)?;
        let mut table = Table::new(&["KEY", "REQUESTS", "VALID", "REFUSED"]);
        for key in usage.keys.iter().take(USAGE_KEYS_SHOWN) {
            let total = key.totals.total();
            table.row(vec![
                key.key_id.to_string(),
                total.to_string(),
                key.totals.valid.to_string(),
                (total - key.totals.valid).to_string(),
            ]);
        }
        table.write(self.out)?;
        if usage.keys.len() > USAGE_KEYS_SHOWN {
            writeln!(
                self.out,
                "… and {} more keys (--json lists them all)",
                usage.keys.len() - USAGE_KEYS_SHOWN
            )?;
        }
        Ok(())
    }

    /// The range, then one row per outcome: its total and a sparkline of
    /// its buckets, oldest on the left.
    fn usage_table(
        &mut self,
        granularity: UsageGranularity,
        from: Timestamp,
        to: Timestamp,
        buckets: &[UsageBucket],
    ) -> io::Result<()> {
        writeln!(
            self.out,
            "{:<13} {} to {}, by {}",
            "range",
            time(&from),
            time(&to),
            granularity.as_str()
        )?;
        let mut table = Table::new(&["OUTCOME", "TOTAL", "OVER TIME"]);
        for outcome in UsageOutcome::ALL {
            let series: Vec<u64> = buckets.iter().map(|b| b.counts.get(outcome)).collect();
            let total = series.iter().fold(0u64, |sum, n| sum.saturating_add(*n));
            table.row(vec![
                outcome.as_str().to_owned(),
                total.to_string(),
                sparkline(&series, SPARKLINE_WIDTH),
            ]);
        }
        table.write(self.out)
    }

    /// A line for the person typing on stderr, in JSON mode too: it says
    /// how to end the input, which scripts never see (they pipe it in).
    /// A new endpoint: its secret alone on stdout (or in the JSON), the
    /// rest on stderr, as for a new key.
    pub(crate) fn webhook_created(&mut self, created: &CreateWebhookResponse) -> io::Result<()> {
        if self.json {
            self.print_json(created)?;
        } else if let Some(secret) = &created.secret {
            writeln!(self.out, "{secret}")?;
        }
        let info = &created.webhook;
        writeln!(
            self.err,
            "created webhook {} for {} ({})",
            info.id,
            info.account_id
                .map_or_else(|| "every account".to_owned(), |a| format!("account {a}")),
            join(info.events.iter().map(|e| e.as_str().to_owned()))
        )?;
        match created.secret {
            Some(_) => writeln!(
                self.err,
                "that is its signing secret (whsec_…): store it now, it is not shown again"
            ),
            None => writeln!(
                self.err,
                "a replay: the secret was shown only the first time; delete this webhook and create it again for a usable one"
            ),
        }
    }

    /// A new admin token: alone on stdout (or in the JSON), the rest on
    /// stderr, as for a new key.
    pub(crate) fn portal_link(
        &mut self,
        account: &cloro_auth_core::AccountId,
        link: &cloro_auth_core::wire::PortalSessionResponse,
    ) -> io::Result<()> {
        if self.json {
            self.print_json(link)?;
        } else if let Some(url) = &link.url {
            writeln!(self.out, "{url}")?;
        }
        match link.url {
            Some(_) => writeln!(
                self.err,
                "a portal link for {account}: it opens once, until {}; hand it to the account's user only",
                link.expires_at
            ),
            None => writeln!(
                self.err,
                "a replay: the link was shown only the first time; make another"
            ),
        }
    }

    pub(crate) fn token_created(&mut self, created: &CreateAdminTokenResponse) -> io::Result<()> {
        if self.json {
            self.print_json(created)?;
        } else if let Some(token) = &created.token {
            writeln!(self.out, "{token}")?;
        }
        let info = &created.token_info;
        writeln!(
            self.err,
            "created admin token {} named {} ({})",
            info.id,
            info.name,
            info.role.as_str()
        )?;
        match created.token {
            Some(_) => writeln!(
                self.err,
                "that is the token (cloro_admin_…): hand it over now, it is not shown again"
            ),
            None => writeln!(
                self.err,
                "a replay: the token was shown only the first time; delete this one and create another"
            ),
        }
    }

    pub(crate) fn admin_tokens(&mut self, answer: &ListAdminTokensResponse) -> io::Result<()> {
        if self.json {
            return self.print_json(answer);
        }
        let mut table = Table::new(&["ID", "NAME", "ROLE", "CREATED", "LAST USED"]);
        for token in &answer.tokens {
            table.row(vec![
                token.id.clone(),
                token.name.clone(),
                token.role.as_str().to_owned(),
                time(&token.created_at),
                token
                    .last_used_at
                    .as_ref()
                    .map_or_else(|| "never".into(), time),
            ]);
        }
        table.write(self.out)
    }

    pub(crate) fn webhooks(&mut self, answer: &ListWebhooksResponse) -> io::Result<()> {
        if self.json {
            return self.print_json(answer);
        }
        let mut table = Table::new(&["ID", "URL", "EVENTS", "ACCOUNT", "CREATED"]);
        for hook in &answer.webhooks {
            table.row(webhook_row(hook));
        }
        table.write(self.out)
    }

    pub(crate) fn webhook(&mut self, hook: &WebhookInfo) -> io::Result<()> {
        if self.json {
            return self.print_json(hook);
        }
        let mut table = Table::new(&["ID", "URL", "EVENTS", "ACCOUNT", "CREATED"]);
        table.row(webhook_row(hook));
        table.write(self.out)
    }

    pub(crate) fn deliveries(&mut self, page: &ListDeliveriesResponse) -> io::Result<()> {
        if self.json {
            return self.print_json(page);
        }
        let mut table = Table::new(&["EVENT", "TYPE", "STATUS", "ATTEMPTS", "LAST", "NEXT TRY"]);
        for delivery in &page.deliveries {
            let last = match (delivery.last_status, &delivery.last_error) {
                (Some(status), _) => status.to_string(),
                (None, Some(error)) => error.clone(),
                (None, None) => "-".to_owned(),
            };
            table.row(vec![
                delivery.event_id.clone(),
                delivery.event_type.as_str().to_owned(),
                wire_name(&delivery.status),
                delivery.attempts.to_string(),
                last,
                delivery
                    .next_attempt_at
                    .as_ref()
                    .map_or_else(|| "-".into(), time),
            ]);
        }
        table.write(self.out)?;
        self.more(page.next_cursor.as_deref())
    }

    pub(crate) fn prompt(&mut self, text: &str) -> io::Result<()> {
        writeln!(self.err, "{text}")
    }

    /// A line for people on stderr (nothing in JSON mode, where stdout is
    /// the whole answer and stderr only errors).
    pub(crate) fn note(&mut self, text: &str) -> io::Result<()> {
        if self.json {
            return Ok(());
        }
        writeln!(self.err, "{text}")
    }
}

/// Writes the failure: `CODE: fix` (and the server's own words) for
/// people, or `{"error": {…}}` with `--json`.
pub(crate) fn report(failure: &Failure, json: bool, err: &mut dyn Write) -> io::Result<()> {
    let (label, fix, error) = match failure {
        Failure::Sdk(error) => (error.label(), super::advice(error), Some(error)),
        Failure::Usage(message) => ("USAGE_ERROR", message.clone(), None),
        Failure::Output(why) => (
            "OUTPUT_ERROR",
            format!("cannot write the output: {why}"),
            None,
        ),
    };
    if json {
        let body = json!({"error": {
            "code": label,
            "fix": fix,
            "message": error.map(Error::to_string),
            "status": error.and_then(Error::status).map(|status| status.as_u16()),
            "request_id": error.and_then(Error::request_id),
            "retry_after": error.and_then(Error::retry_after).map(|after| after.as_secs()),
            // A script that lost a new key's secret needs the id to rotate.
            "key_id": match error {
                Some(Error::KeyNotShown(not_shown)) => Some(not_shown.key_id.to_string()),
                _ => None,
            },
        }});
        serde_json::to_writer(&mut *err, &body)?;
        return writeln!(err);
    }
    writeln!(err, "{label}: {fix}")?;
    if let Some(api) = error.and_then(Error::api_error) {
        let request = api
            .request_id
            .as_deref()
            .map(|id| format!(" (request id {id})"))
            .unwrap_or_default();
        writeln!(err, "  the server said: {}{request}", api.message)?;
    }
    Ok(())
}

/// Columns padded to their widest cell, two spaces apart.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (cell, width) in row.iter().zip(&widths) {
                line.push_str(cell);
                let pad = width - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// `1000/hour`, `10/s (burst 20)`, `5/10s per account`.
fn rate(policy: &RateLimitPolicy) -> String {
    let per = match policy.per_seconds.get() {
        1 => "s".to_owned(),
        60 => "minute".to_owned(),
        3600 => "hour".to_owned(),
        86_400 => "day".to_owned(),
        seconds => format!("{seconds}s"),
    };
    let mut text = format!("{}/{per}", policy.requests);
    if let Some(burst) = policy.burst {
        text.push_str(&format!(" (burst {burst})"));
    }
    if policy.applies_to == AppliesTo::Account {
        text.push_str(" per account");
    }
    text
}

/// `10000/month per account`: who shares it, given the default of where
/// it is set (a plan's: the account; a key's own: the key).
fn quota(policy: &QuotaPolicy, default: AppliesTo) -> String {
    let who = match policy.applies_to_or(default) {
        AppliesTo::Account => "per account",
        AppliesTo::Key => "per key",
    };
    format!("{}/{} {who}", policy.requests, policy.period.as_str())
}

/// A key's own quota, or that it follows its plan's.
fn key_quota(info: &KeyInfo) -> String {
    info.quota
        .as_ref()
        .map_or_else(|| "the plan's".into(), |q| quota(q, AppliesTo::Key))
}

fn credits(info: &KeyInfo) -> String {
    info.credits
        .map_or_else(|| "unlimited".into(), |left| format!("{left} left"))
}

/// `to 500 each day`.
fn refill(refill: &Refill) -> String {
    format!("to {} each {}", refill.amount, refill.interval.as_str())
}

/// A timestamp to the second, RFC 3339.
fn webhook_row(hook: &WebhookInfo) -> Vec<String> {
    vec![
        hook.id.clone(),
        hook.url.clone(),
        join(hook.events.iter().map(|e| e.as_str())),
        hook.account_id
            .map_or_else(|| "every account".into(), |a| a.to_string()),
        time(&hook.created_at),
    ]
}

/// Keys listed under an account's usage.
const USAGE_KEYS_SHOWN: usize = 10;
/// Columns a sparkline takes at most.
const SPARKLINE_WIDTH: usize = 48;

/// `values` in at most `width` columns (neighbours summed), each a block
/// whose height is its share of the largest; a column with nothing in it
/// is a dot, so "none" never looks like "a few".
fn sparkline(values: &[u64], width: usize) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if values.is_empty() || width == 0 {
        return String::new();
    }
    let per_column = values.len().div_ceil(width);
    let columns: Vec<u64> = values
        .chunks(per_column)
        .map(|chunk| chunk.iter().fold(0u64, |sum, n| sum.saturating_add(*n)))
        .collect();
    let max = columns.iter().copied().max().unwrap_or(0);
    columns
        .iter()
        .map(|&n| {
            if n == 0 {
                '·'
            } else {
                // 1 ..= 8 eighths of the largest, never 0 for a count.
                let eighths = (u128::from(n) * 8).div_ceil(u128::from(max.max(1)));
                BLOCKS[usize::try_from(eighths).unwrap_or(8).clamp(1, 8) - 1]
            }
        })
        .collect()
}

fn time(at: &Timestamp) -> String {
    at.round(jiff::Unit::Second).unwrap_or(*at).to_string()
}

/// The wire spelling of an enum (`team_member`, `key.created`).
fn wire_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        _ => "?".into(),
    }
}

fn join<T: ToString>(items: impl Iterator<Item = T>) -> String {
    let joined: Vec<String> = items.map(|item| item.to_string()).collect();
    if joined.is_empty() {
        "-".into()
    } else {
        joined.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use cloro_auth_core::wire::QuotaPeriod;

    use super::*;

    #[test]
    fn tables_align() {
        let mut table = Table::new(&["A", "LONGER"]);
        table.row(vec!["wide cell".into(), "x".into()]);
        let mut out = Vec::new();
        table.write(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "A          LONGER\nwide cell  x\n"
        );
    }

    #[test]
    fn rates_read_well() {
        let n = |v| NonZeroU32::new(v).unwrap();
        assert_eq!(rate(&RateLimitPolicy::new(n(1000), n(3600))), "1000/hour");
        let mut policy = RateLimitPolicy::new(n(5), n(10));
        policy.burst = Some(n(7));
        policy.applies_to = AppliesTo::Account;
        assert_eq!(rate(&policy), "5/10s (burst 7) per account");
    }

    #[test]
    fn sparklines_scale_to_the_largest_and_show_nothing_as_dots() {
        assert_eq!(sparkline(&[0, 1, 4, 8], 10), "·▁▄█");
        // Twelve buckets in four columns: neighbours summed.
        assert_eq!(sparkline(&[1, 1, 1, 0, 0, 0, 2, 2, 2, 0, 0, 3], 4), "▄·█▄");
        assert_eq!(sparkline(&[], 4), "");
        assert_eq!(sparkline(&[0, 0], 4), "··");
    }

    #[test]
    fn quotas_read_well() {
        let mut policy = QuotaPolicy {
            requests: 10_000,
            period: QuotaPeriod::Month,
            applies_to: None,
        };
        assert_eq!(quota(&policy, AppliesTo::Key), "10000/month per key");
        assert_eq!(
            quota(&policy, AppliesTo::Account),
            "10000/month per account"
        );
        policy.applies_to = Some(AppliesTo::Account);
        assert_eq!(quota(&policy, AppliesTo::Key), "10000/month per account");
        let daily = Refill {
            amount: 500,
            interval: QuotaPeriod::Day,
        };
        assert_eq!(refill(&daily), "to 500 each day");
    }
}
