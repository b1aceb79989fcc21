//! How the dashboard and the portal look: the page shell, and one function
//! per page that turns what `pages.rs` read into HTML. Nothing here reads
//! a store or decides anything; every value is escaped by maud.
//!
//! No page holds inline script or style (the Content-Security-Policy
//! forbids both): looks come from `assets/dashboard.css`, and the copy
//! button from `assets/dashboard.js`, which the pages work without.

use cloro_auth_core::wire::{
    AccountQuotaResponse, AuditEvent, DeliveryInfo, KeyInfo, KeyUsageResponse, UsageBucket,
    WebhookInfo,
};
use cloro_auth_core::{AccountId, KeyStatus, PlanName};
use jiff::Timestamp;
use maud::{DOCTYPE, Markup, html};
use serde::Serialize;

use super::chart;
use super::session::{Signed, Viewer, display_name};
use super::{Refused, Site};

/// The part of a session every page's shell needs.
pub(crate) struct Chrome<'a> {
    pub(crate) site: Site,
    pub(crate) signed: &'a Signed,
}

impl Chrome<'_> {
    fn csrf(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.signed.csrf); }
    }

    fn may_change(&self) -> bool {
        self.signed.viewer.may_change()
    }

    /// Where an account's page is, for this viewer.
    pub(crate) fn account_url(&self, account: &AccountId) -> String {
        match self.site {
            Site::Dashboard => format!("/dashboard/accounts/{account}"),
            Site::Portal => "/portal".to_owned(),
        }
    }

    /// Where a key's page is, for this viewer.
    pub(crate) fn key_url(&self, key: &str) -> String {
        format!("{}/keys/{key}", self.site.base())
    }

    /// Where the form that creates a key is.
    pub(crate) fn new_key_url(&self, account: &AccountId) -> String {
        match self.site {
            Site::Dashboard => format!("/dashboard/accounts/{account}/keys/new"),
            Site::Portal => "/portal/keys/new".to_owned(),
        }
    }

    /// Where that form sends.
    fn create_key_url(&self, account: &AccountId) -> String {
        match self.site {
            Site::Dashboard => format!("/dashboard/accounts/{account}/keys"),
            Site::Portal => "/portal/keys".to_owned(),
        }
    }
}

/// A serde enum's wire word (`production`, `month`), for display.
pub(crate) fn word<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A time as people read it, in UTC.
pub(crate) fn when(at: Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

/// How long ago `at` was, roughly.
fn ago(at: Timestamp, now: Timestamp) -> String {
    let seconds = now.as_second().saturating_sub(at.as_second()).max(0);
    match seconds {
        0..=59 => "just now".to_owned(),
        60..=3599 => format!("{} min ago", seconds / 60),
        3600..=86_399 => format!("{} h ago", seconds / 3600),
        _ => format!("{} days ago", seconds / 86_400),
    }
}

fn page(site: Site, chrome: Option<&Chrome<'_>>, title: &str, body: Markup) -> Markup {
    let brand = match site {
        Site::Dashboard => "Cloro auth",
        Site::Portal => "API keys",
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · " (brand) }
                link rel="stylesheet" href={(site.base()) "/assets/dashboard.css"};
                script src={(site.base()) "/assets/dashboard.js"} defer {}
            }
            body {
                header.top {
                    a.brand href=(site.base()) { span.logo aria-hidden="true" { "◆" } (brand) }
                    @if let Some(chrome) = chrome {
                        nav {
                            @match &chrome.signed.viewer {
                                Viewer::Operator(_) => {
                                    a href="/dashboard" { "Accounts" }
                                    a href="/dashboard/webhooks" { "Webhooks" }
                                }
                                Viewer::Portal(account) => {
                                    a href="/portal" { "Keys of " (account) }
                                }
                            }
                        }
                        div.who {
                            @match &chrome.signed.viewer {
                                Viewer::Operator(operator) => {
                                    span.name { (display_name(operator)) }
                                    @if chrome.may_change() {
                                        span.badge.role-admin { "admin" }
                                    } @else {
                                        span.badge.role-read title="This token may only read" { "read only" }
                                    }
                                }
                                Viewer::Portal(_) => { span.name { "Portal" } }
                            }
                            form method="post" action={(site.base()) "/sign-out"} {
                                (chrome.csrf())
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A refusal as a page: what happened, its code, what to do.
pub(crate) fn problem(site: Site, refused: &Refused) -> Markup {
    page(
        site,
        None,
        "Something went wrong",
        html! {
            section.card.narrow.problem {
                h1 { (title_of(site, refused)) }
                p { (sentence(&refused.message)) }
                p.code { "Code " code { (refused.code.as_str()) } }
                @if !(site == Site::Portal && refused.code.status() == 401) {
                    p { a href=(site.base()) { "Back to the start" } }
                }
            }
        },
    )
}

/// A message as a sentence: the API's messages start in lower case.
fn sentence(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => {
            let mut text: String = first.to_uppercase().collect();
            text.push_str(chars.as_str());
            if !text.ends_with('.') {
                text.push('.');
            }
            text
        }
        None => String::new(),
    }
}

fn title_of(site: Site, refused: &Refused) -> &'static str {
    match refused.code.status() {
        400 => "That request could not be used",
        401 if site == Site::Portal => "This portal is closed",
        401 => "You are not signed in",
        403 => "Not allowed",
        404 => "Not found",
        405 => "Not here",
        409 => "That cannot be done to this key",
        429 => "Too many attempts",
        503 => "The store is unavailable",
        _ => "Something went wrong",
    }
}

/// The sign-in page.
pub(crate) fn sign_in(form_secret: &str, error: Option<&Refused>) -> Markup {
    page(
        Site::Dashboard,
        None,
        "Sign in",
        html! {
            section.card.narrow {
                h1 { "Sign in" }
                p.muted { "Paste an admin token. Its name will be on everything you change." }
                @if let Some(error) = error {
                    p.alert role="alert" { (sentence(&error.message)) " " code { (error.code.as_str()) } }
                }
                form method="post" action="/dashboard/sign-in" {
                    input type="hidden" name="sign_in" value=(form_secret);
                    label for="token" { "Admin token" }
                    input #token type="password" name="token" autocomplete="off" required
                        placeholder="cloro_admin_…" spellcheck="false";
                    button.primary type="submit" { "Sign in" }
                }
                p.muted.small { "The bootstrap token is in " code { "cloro-data/admin-token" } "; "
                    code { "cloro tokens create" } " makes named ones." }
            }
        },
    )
}

/// The dashboard's start: find an account.
pub(crate) fn home(chrome: &Chrome<'_>, error: Option<&str>) -> Markup {
    page(
        chrome.site,
        Some(chrome),
        "Accounts",
        html! {
            h1 { "Accounts" }
            section.card {
                form.search method="get" action="/dashboard/accounts" {
                    label for="id" { "Account id" }
                    div.row {
                        input #id type="search" name="id" required placeholder="acct_123" spellcheck="false";
                        button.primary type="submit" { "Open" }
                    }
                }
                @if let Some(error) = error {
                    p.alert role="alert" { (error) }
                }
                p.muted { "Open an account by its id to see its plan, quota, keys and usage. "
                    "An account with no keys yet opens too: create its first key there." }
            }
        },
    )
}

/// What the account page shows.
pub(crate) struct AccountView {
    pub(crate) account: AccountId,
    pub(crate) plan: PlanName,
    pub(crate) plans: Vec<PlanName>,
    pub(crate) quota: Option<AccountQuotaResponse>,
    pub(crate) keys: Vec<(KeyInfo, Vec<UsageBucket>)>,
    pub(crate) more_keys: Option<String>,
    pub(crate) usage: Option<cloro_auth_core::wire::AccountUsageResponse>,
    pub(crate) audit: Vec<AuditEvent>,
    pub(crate) older_audit: Option<String>,
    pub(crate) now: Timestamp,
}

pub(crate) fn status_badge(info: &KeyInfo) -> Markup {
    let (class, text) = match info.status {
        KeyStatus::Active => ("status-active", "Active"),
        KeyStatus::Expired => ("status-expired", "Expired"),
        KeyStatus::Revoked => ("status-revoked", "Revoked"),
        KeyStatus::Disabled => ("status-disabled", "Disabled"),
    };
    html! {
        span class={"badge " (class)} { (text) }
        @if info.leaked_at.is_some() { " " span.badge.status-revoked { "Leaked" } }
    }
}

/// An account: plan, quota, keys, usage, audit.
pub(crate) fn account(chrome: &Chrome<'_>, view: &AccountView) -> Markup {
    let account = &view.account;
    page(
        chrome.site,
        Some(chrome),
        account.as_str(),
        html! {
            div.heading {
                div {
                    p.eyebrow { "Account" }
                    h1 { (account) }
                }
                @if chrome.may_change() {
                    a.button.primary href=(chrome.new_key_url(account)) { "Create a key" }
                }
            }
            div.grid {
                section.card {
                    h2 { "Plan" }
                    p.big { (view.plan) }
                    @if chrome.site == Site::Dashboard && chrome.may_change() {
                        form.inline method="post" action={"/dashboard/accounts/" (account) "/plan"} {
                            (chrome.csrf())
                            label for="plan" { "Change plan" }
                            select #plan name="plan" {
                                @for plan in &view.plans {
                                    option value=(plan) selected[*plan == view.plan] { (plan) }
                                }
                            }
                            button type="submit" { "Save" }
                        }
                    }
                }
                section.card {
                    h2 { "Quota" }
                    @match view.quota.as_ref().and_then(|quota| quota.quota.map(|policy| (quota, policy))) {
                        Some((quota, policy)) => {
                            @let used = quota.used.unwrap_or(0);
                            @let share = used.saturating_mul(100).checked_div(policy.requests).unwrap_or(100).min(100);
                            p.big { (chart::grouped(used)) " of " (chart::grouped(policy.requests)) }
                            meter min="0" max="100" low="80" high="99" optimum="0" value=(share) { (share) "%" }
                            p.muted { "per " (word(&policy.period))
                                @if let Some(resets) = quota.resets_at { ", resets " (when(resets)) } }
                        }
                        None => { p.muted { "This plan has no quota: only its rate limit applies." } }
                    }
                }
                section.card {
                    h2 { "Last 24 hours" }
                    @match &view.usage {
                        Some(usage) => {
                            p.big { (chart::grouped(usage.totals.total())) " requests" }
                            p.muted { (chart::grouped(usage.totals.valid)) " served, "
                                (chart::grouped(usage.totals.total() - usage.totals.valid)) " refused" }
                        }
                        None => { p.muted { "No usage yet." } }
                    }
                }
            }
            @if let Some(usage) = &view.usage {
                section.card {
                    h2 { "Requests by hour" }
                    (chart::usage_chart(&format!("Requests of {account} by hour, last 24 hours"), &usage.buckets, usage.granularity))
                    (chart::legend(&usage.totals))
                }
            }
            section.card {
                h2 { "Keys" }
                @if view.keys.is_empty() {
                    div.empty {
                        p { "This account has no keys yet." }
                        @if chrome.may_change() {
                            p { a.button.primary href=(chrome.new_key_url(account)) { "Create its first key" } }
                        }
                    }
                } @else {
                    table.keys {
                        thead { tr { th { "Name" } th { "Key" } th { "Status" } th { "Last used" } th { "24 h" } } }
                        tbody {
                            @for (info, buckets) in &view.keys {
                                tr {
                                    td { a href=(chrome.key_url(info.id.as_str())) { (info.name) } }
                                    td { code { (info.start) } }
                                    td { (status_badge(info)) }
                                    td {
                                        @match info.last_used_at {
                                            Some(at) => { span title=(when(at)) { (ago(at, view.now)) } }
                                            None => { span.muted { "never" } }
                                        }
                                    }
                                    td { (chart::sparkline(buckets)) }
                                }
                            }
                        }
                    }
                    @if let Some(cursor) = &view.more_keys {
                        p { a href={(chrome.account_url(account)) "?keys=" (cursor)} { "More keys →" } }
                    }
                }
            }
            section.card {
                h2 { "Audit log" }
                (audit_table(chrome.site, &view.audit))
                @if let Some(cursor) = &view.older_audit {
                    p { a href={(chrome.account_url(account)) "?audit=" (cursor)} { "Older events →" } }
                }
            }
        },
    )
}

/// Who did it, as the site shows it: the portal names no operator (their
/// token names are the operator's business, not the customer's).
fn actor(site: Site, actor: &str) -> String {
    match site {
        Site::Dashboard => actor.to_owned(),
        Site::Portal if actor.starts_with("portal:") => "you, in this portal".to_owned(),
        Site::Portal => "the API's operator".to_owned(),
    }
}

fn audit_table(site: Site, events: &[AuditEvent]) -> Markup {
    html! {
        @if events.is_empty() {
            p.muted { "Nothing has happened here yet." }
        } @else {
            table.audit {
                thead { tr { th { "When" } th { "What" } th { "Key" } th { "Who" } } }
                tbody {
                    @for event in events {
                        tr {
                            td { (when(event.at)) }
                            td { code { (word(&event.action)) } }
                            td { @if let Some(key) = &event.key_id { code { (key) } } }
                            td { (actor(site, &event.actor)) }
                        }
                    }
                }
            }
        }
    }
}

/// What the key page shows.
pub(crate) struct KeyView {
    pub(crate) info: KeyInfo,
    pub(crate) usage: KeyUsageResponse,
    pub(crate) range: &'static str,
    pub(crate) audit: Vec<AuditEvent>,
    pub(crate) form_id: String,
    pub(crate) now: Timestamp,
}

/// The ranges the key page charts.
pub(crate) const RANGES: [(&str, &str); 3] =
    [("24h", "24 hours"), ("30d", "30 days"), ("1y", "1 year")];

/// A key: settings, usage, actions, audit.
pub(crate) fn key(chrome: &Chrome<'_>, view: &KeyView) -> Markup {
    let info = &view.info;
    let live = matches!(info.status, KeyStatus::Active | KeyStatus::Disabled);
    page(
        chrome.site,
        Some(chrome),
        &info.name,
        html! {
            p.crumbs { a href=(chrome.account_url(&info.account_id)) { (info.account_id) } " / " (info.name) }
            div.heading {
                div {
                    p.eyebrow { "Key" }
                    h1 { (info.name) " " (status_badge(info)) }
                }
            }
            div.grid {
                section.card {
                    h2 { "Settings" }
                    dl.settings {
                        dt { "Key" } dd { code { (info.start) } }
                        dt { "Id" } dd { code { (info.id) } }
                        dt { "Environment" } dd { (info.environment.as_str()) }
                        dt { "Purpose" } dd { (word(&info.purpose)) }
                        dt { "Scopes" } dd { @for scope in &info.scopes { code { (scope) } " " } }
                        dt { "Rate limit" } dd {
                            @match &info.rate_limit {
                                Some(limit) => { (limit.requests) " per " (limit.per_seconds) " s" }
                                None => { span.muted { "the plan's" } }
                            }
                        }
                        @if let Some(credits) = info.credits { dt { "Credits" } dd { (chart::grouped(credits)) } }
                        dt { "Created" } dd { (when(info.created_at)) }
                        dt { "Expires" } dd { @match info.expires_at { Some(at) => { (when(at)) } None => { "never" } } }
                        dt { "Last used" } dd { @match info.last_used_at { Some(at) => { (ago(at, view.now)) } None => { "never" } } }
                        @if let Some(at) = info.revoked_at {
                            dt { "Revoked" } dd { (when(at)) @if let Some(reason) = &info.revoked_reason { " · " (reason) } }
                        }
                    }
                }
                @if chrome.may_change() && live {
                    section.card {
                        h2 { "Rotate" }
                        p.muted { "Makes a new secret for this key. The old one keeps working for the grace you choose, then stops." }
                        form method="post" action={(chrome.key_url(info.id.as_str())) "/rotate"} {
                            (chrome.csrf())
                            input type="hidden" name="form_id" value=(view.form_id);
                            label for="grace" { "The old secret stops" }
                            select #grace name="grace" {
                                option value="0" { "now" }
                                option value="3600" { "in 1 hour" }
                                option value="86400" selected { "in 24 hours" }
                                option value="604800" { "in 7 days" }
                            }
                            button.primary type="submit" { "Rotate" }
                        }
                        h2 { "Revoke" }
                        p.muted { "Stops the key for good, on every node within a second." }
                        a.button.danger href={(chrome.key_url(info.id.as_str())) "/revoke"} { "Revoke…" }
                    }
                }
                @if chrome.site == Site::Dashboard && chrome.may_change() && live {
                    section.card {
                        h2 { "Credits" }
                        p.muted { @match info.credits { Some(credits) => { (chart::grouped(credits)) " left." } None => { "No credit balance: the key is not metered by credits." } } }
                        form.inline method="post" action={(chrome.key_url(info.id.as_str())) "/credits"} {
                            (chrome.csrf())
                            select name="change" aria-label="Change" { option value="add" { "Add" } option value="set" { "Set to" } }
                            input type="number" name="amount" min="0" required aria-label="Amount";
                            button type="submit" { "Save" }
                        }
                    }
                }
            }
            section.card {
                div.heading {
                    h2 { "Usage" }
                    nav.tabs aria-label="Range" {
                        @for (range, label) in RANGES {
                            a href={(chrome.key_url(info.id.as_str())) "?range=" (range)}
                                aria-current=[(range == view.range).then_some("page")] { (label) }
                        }
                    }
                }
                @if view.usage.totals.is_empty() {
                    div.empty { p { "No requests in this range yet. Calls with this key show up here within a few seconds." } }
                } @else {
                    (chart::usage_chart(&format!("Requests of key {} by outcome", info.name), &view.usage.buckets, view.usage.granularity))
                    (chart::legend(&view.usage.totals))
                }
            }
            section.card {
                h2 { "Audit events" }
                (audit_table(chrome.site, &view.audit))
            }
        },
    )
}

/// The create form.
pub(crate) fn new_key(chrome: &Chrome<'_>, account: &AccountId, form_id: &str) -> Markup {
    page(
        chrome.site,
        Some(chrome),
        "Create a key",
        html! {
            p.crumbs { a href=(chrome.account_url(account)) { (account) } " / new key" }
            section.card.narrow {
                h1 { "Create a key" }
                form method="post" action=(chrome.create_key_url(account)) {
                    (chrome.csrf())
                    input type="hidden" name="form_id" value=(form_id);
                    label for="name" { "Name" }
                    input #name type="text" name="name" required maxlength="128" placeholder="Production backend";
                    label for="environment" { "Environment" }
                    select #environment name="environment" {
                        option value="live" selected { "live (sk_live_…)" }
                        option value="test" { "test (sk_test_…)" }
                    }
                    label for="expires" { "Expires" }
                    select #expires name="expires" {
                        option value="never" selected { "never" }
                        option value="30" { "in 30 days" }
                        option value="90" { "in 90 days" }
                        option value="365" { "in a year" }
                    }
                    @if chrome.site == Site::Dashboard {
                        label for="scopes" { "Scopes" }
                        input #scopes type="text" name="scopes" placeholder="all (or e.g. read:users write:orders)" spellcheck="false";
                    } @else {
                        p.muted.small { "The key gets the same scopes and limits as the account's newest active key." }
                    }
                    button.primary type="submit" { "Create" }
                }
            }
        },
    )
}

/// The one page that shows a plaintext key: after create or rotate.
pub(crate) fn revealed(
    chrome: &Chrome<'_>,
    heading: &str,
    key: &str,
    info: &KeyInfo,
    note: Option<&str>,
) -> Markup {
    page(
        chrome.site,
        Some(chrome),
        heading,
        html! {
            section.card.narrow {
                h1 { (heading) }
                p.alert.warn role="alert" { strong { "Copy this key now. " } "It is shown this once and never again, here or anywhere." }
                div.secret {
                    input #secret type="text" readonly value=(key) aria-label="The new key" spellcheck="false";
                    button.primary type="button" data-copy="secret" { "Copy" }
                }
                @if let Some(note) = note { p.muted { (note) } }
                p { a.button href=(chrome.key_url(info.id.as_str())) { "I have copied it: go to the key" } }
            }
        },
    )
}

/// A form sent a second time (a reload, a double click): its key was shown
/// once, on the answer to the first.
pub(crate) fn already_sent(chrome: &Chrome<'_>, back: &str) -> Markup {
    page(
        chrome.site,
        Some(chrome),
        "Already done",
        html! {
            section.card.narrow {
                h1 { "This form was sent already" }
                p { "Its key was shown once, on the page after the first send, and is not shown again. "
                    "If it was not copied, rotate the key to get a new secret." }
                p { a.button href=(back) { "Back" } }
            }
        },
    )
}

/// The confirmation before a revoke.
pub(crate) fn confirm_revoke(chrome: &Chrome<'_>, info: &KeyInfo) -> Markup {
    page(
        chrome.site,
        Some(chrome),
        "Revoke key",
        html! {
            section.card.narrow {
                h1 { "Revoke " (info.name) "?" }
                p { "Every request with " code { (info.start) } " will be refused from now on, on every node. This cannot be undone." }
                form method="post" action={(chrome.key_url(info.id.as_str())) "/revoke"} {
                    (chrome.csrf())
                    label for="reason" { "Reason (kept in the audit log)" }
                    input #reason type="text" name="reason" maxlength="200" placeholder="no longer used";
                    div.row {
                        button.danger type="submit" { "Revoke the key" }
                        a.button href=(chrome.key_url(info.id.as_str())) { "Cancel" }
                    }
                }
            }
        },
    )
}

/// Webhook endpoints.
pub(crate) fn webhooks(chrome: &Chrome<'_>, endpoints: &[WebhookInfo]) -> Markup {
    page(
        chrome.site,
        Some(chrome),
        "Webhooks",
        html! {
            h1 { "Webhooks" }
            section.card {
                @if endpoints.is_empty() {
                    div.empty { p { "No webhook endpoints yet. Add one with " code { "POST /admin/v1/webhooks" } " or " code { "cloro webhooks create" } "." } }
                } @else {
                    table {
                        thead { tr { th { "Endpoint" } th { "Events" } th { "Account" } th { "Created" } } }
                        tbody {
                            @for endpoint in endpoints {
                                tr {
                                    td { a href={"/dashboard/webhooks/" (endpoint.id)} { (endpoint.url) } }
                                    td { @for event in &endpoint.events { code { (word(event)) } " " } }
                                    td { @match &endpoint.account_id { Some(account) => { (account) } None => { span.muted { "all" } } } }
                                    td { (when(endpoint.created_at)) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// One endpoint and its latest deliveries.
pub(crate) fn webhook(
    chrome: &Chrome<'_>,
    endpoint: &WebhookInfo,
    deliveries: &[DeliveryInfo],
) -> Markup {
    page(
        chrome.site,
        Some(chrome),
        "Webhook",
        html! {
            p.crumbs { a href="/dashboard/webhooks" { "Webhooks" } " / " (endpoint.id) }
            h1 { (endpoint.url) }
            section.card {
                h2 { "Deliveries" }
                @if deliveries.is_empty() {
                    div.empty { p { "Nothing was sent to this endpoint yet." } }
                } @else {
                    table {
                        thead { tr { th { "Event" } th { "Status" } th { "Attempts" } th { "Last answer" } th { "Next try" } } }
                        tbody {
                            @for delivery in deliveries {
                                tr {
                                    td { code { (word(&delivery.event_type)) } }
                                    td { span class={"badge delivery-" (word(&delivery.status))} { (word(&delivery.status)) } }
                                    td { (delivery.attempts) }
                                    td { @if let Some(status) = delivery.last_status { (status) } @else { span.muted { "—" } } }
                                    td { @if let Some(at) = delivery.next_attempt_at { (when(at)) } @else { span.muted { "—" } } }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The portal's door: a button, so a link preview never uses it up.
pub(crate) fn enter_portal(account: &AccountId, link: &str, door: &str) -> Markup {
    page(
        Site::Portal,
        None,
        "Open your keys",
        html! {
            section.card.narrow {
                h1 { "API keys of " (account) }
                p { "This link opens once and for one hour. Open it now to see, create, rotate and revoke your keys." }
                form method="post" action="/portal/enter" {
                    input type="hidden" name="link" value=(link);
                    input type="hidden" name="door" value=(door);
                    button.primary type="submit" { "Open" }
                }
            }
        },
    )
}
