//! What each page reads and does. Every page but sign-in and the portal's
//! door runs behind [`answer`]'s checks, in this order: a live session for
//! this site; for a form, its CSRF token, then (a `read` operator) the
//! refusal of anything that changes state; for a portal, that the key or
//! account is its own. Changes go through `KeyAdmin` with the viewer as
//! the audit actor, exactly as the admin API's do.

use std::net::IpAddr;

use bytes::Bytes;
use cloro_auth_core::wire::{CreateKeyRequest, CreditsRequest, RotateKeyRequest, UsageGranularity};
use cloro_auth_core::{AccountId, Environment, ErrorCode, KeyId, PlanName, Scope};
use cloro_keystore::{
    AdminError, Claim, ClaimToken, Cursor, IDEMPOTENCY_LEASE, IDEMPOTENCY_WINDOW, IdempotencySlot,
    RequestFingerprint, SessionSubject, StoredAnswer,
};
use http::request::Parts;
use http::{Method, StatusCode};
use jiff::{SignedDuration, Timestamp};

use super::forms::{Form, invalid};
use super::session::{self, Signed, Viewer};
use super::views::{self, AccountView, Chrome, KeyView};
use super::{Answer, Page, Refused, Site};
use crate::app::App;
use cloro_guard::BoxError;

/// Keys shown per page of an account.
const KEYS_PER_PAGE: usize = 25;
/// Audit events shown per page.
const EVENTS_PER_PAGE: usize = 20;
/// The most live keys an account may have for its portal to make another:
/// a customer's script cannot fill the store (or an operator's webhooks)
/// with keys.
pub(crate) const MAX_PORTAL_KEYS: usize = 50;

fn refused_admin(error: AdminError) -> Refused {
    crate::admin_api::admin_error(error).into()
}

/// Answers a page of `site` (the path already matched, the method allowed).
pub(crate) async fn answer<B>(
    app: &App,
    site: Site,
    page: Page,
    parts: &Parts,
    body: B,
    peer: IpAddr,
) -> Result<Answer, Refused>
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let now = app.clock().now();
    let post = parts.method == Method::POST;
    match page {
        Page::SignIn => return sign_in(app, parts, body, peer, now).await,
        Page::EnterPortal => return super::portal::enter(app, parts, body, now).await,
        _ => {}
    }
    let Some(signed) = session::find(app, site, &parts.headers, now).await? else {
        return match (site, post) {
            (Site::Dashboard, false) => Ok(Answer::Redirect("/dashboard/sign-in".to_owned())),
            (Site::Dashboard, true) => Err(Refused::new(
                ErrorCode::InvalidAdminToken,
                "you are not signed in (or your session ended); sign in again, then send the form again",
            )),
            (Site::Portal, _) => Err(Refused::new(
                ErrorCode::InvalidAdminToken,
                "this portal has closed, or its link was used already; ask for a new link",
            )),
        };
    };
    let chrome = Chrome {
        site,
        signed: &signed,
    };
    let form = if post {
        let form = Form::read(body, fields_of(&page)).await?;
        let sent = form.get("csrf").unwrap_or_default();
        if !session::same_token(sent, &signed.csrf) {
            return Err(Refused::new(
                ErrorCode::InsufficientPermissions,
                "this form did not come from a page of this session (its CSRF token is missing or stale); reload the page and send it again",
            ));
        }
        if page != Page::SignOut && !signed.viewer.may_change() {
            return Err(Refused::new(
                ErrorCode::InsufficientPermissions,
                "your admin token has the read role: it may look, not change; sign in with an admin-role token to change anything",
            ));
        }
        form
    } else {
        Form::default()
    };
    let query = parts.uri.query();
    match page {
        Page::SignOut => {
            let cookie = session::end(app, site, &signed, now).await?;
            let to = match site {
                Site::Dashboard => "/dashboard/sign-in",
                Site::Portal => "/portal/enter",
            };
            Ok(Answer::Cookies(
                vec![cookie],
                Box::new(Answer::Redirect(to.to_owned())),
            ))
        }
        Page::Home => Ok(html(views::home(&chrome, None))),
        Page::FindAccount => {
            let id = query_value(query, "id").unwrap_or_default();
            match AccountId::new(id.trim()) {
                Ok(account) => Ok(Answer::Redirect(chrome.account_url(&account))),
                Err(_) => Ok(Answer::Html(
                    StatusCode::BAD_REQUEST,
                    views::home(
                        &chrome,
                        Some("An account id is 1 to 64 of A-Z a-z 0-9 _ -, such as acct_123."),
                    ),
                )),
            }
        }
        Page::Account(id) => {
            let account = account_of(&signed.viewer, id.as_deref())?;
            account_page(app, &chrome, account, query, now).await
        }
        Page::AccountPlan(id) => {
            let account = account_of(&signed.viewer, Some(&id))?;
            let plan = form
                .text("plan")
                .and_then(|text| PlanName::new(text).ok())
                .ok_or_else(|| invalid("choose a plan from the list"))?;
            app.admin()
                .set_plan(&account, plan, &signed.viewer.actor(), now)
                .await
                .map_err(refused_admin)?;
            Ok(Answer::Redirect(chrome.account_url(&account)))
        }
        Page::NewKey(id) => {
            let account = account_of(&signed.viewer, id.as_deref())?;
            Ok(html(views::new_key(
                &chrome,
                &account,
                &session::new_secret()?,
            )))
        }
        Page::CreateKey(id) => {
            let account = account_of(&signed.viewer, id.as_deref())?;
            create_key(app, &chrome, account, &form, now).await
        }
        Page::Key(id) => {
            let record = own_key(app, &signed.viewer, &id).await?;
            key_page(app, &chrome, record, query, now).await
        }
        Page::RotateKey(id) => {
            let record = own_key(app, &signed.viewer, &id).await?;
            rotate_key(app, &chrome, record, &form, now).await
        }
        Page::RevokeKey(id) => {
            let record = own_key(app, &signed.viewer, &id).await?;
            if !post {
                return Ok(html(views::confirm_revoke(&chrome, &record.to_info(now))));
            }
            app.admin()
                .revoke(&record.id, form.text("reason"), &signed.viewer.actor(), now)
                .await
                .map_err(refused_admin)?;
            tracing::info!(key_id = %record.id, account_id = %record.account_id, "key revoked from the dashboard");
            Ok(Answer::Redirect(chrome.key_url(record.id.as_str())))
        }
        Page::KeyCredits(id) => {
            let record = own_key(app, &signed.viewer, &id).await?;
            let amount = form
                .text("amount")
                .and_then(|text| text.parse::<u64>().ok())
                .ok_or_else(|| invalid("the amount must be a whole number, 0 or more"))?;
            let request = match form.get("change") {
                Some("set") => CreditsRequest {
                    set: Some(amount),
                    add: None,
                },
                Some("add") => CreditsRequest {
                    set: None,
                    add: Some(amount),
                },
                _ => return Err(invalid("choose whether to add or set the credits")),
            };
            app.admin()
                .change_credits(&record.id, &request, None, &signed.viewer.actor(), now)
                .await
                .map_err(refused_admin)?;
            Ok(Answer::Redirect(chrome.key_url(record.id.as_str())))
        }
        Page::Webhooks => {
            let listed = app
                .webhooks()
                .store
                .webhooks()
                .await
                .map_err(super::store_failed)?;
            let infos: Vec<_> = listed.into_iter().map(|record| record.info).collect();
            Ok(html(views::webhooks(&chrome, &infos)))
        }
        Page::Webhook(id) => {
            let found = app.webhooks().find(&id).await?;
            let page = cloro_keystore::PageRequest {
                limit: 50,
                after: None,
            };
            let deliveries = app
                .webhooks()
                .store
                .deliveries(&found.info.id, &page)
                .await
                .map_err(super::store_failed)?;
            let infos: Vec<_> = deliveries.items.iter().map(|d| d.to_info()).collect();
            Ok(html(views::webhook(&chrome, &found.info, &infos)))
        }
        Page::Asset(..) | Page::SignIn | Page::EnterPortal => Err(Refused::new(
            ErrorCode::NotFound,
            "there is no such page; start again from the front page",
        )),
    }
}

fn html(markup: maud::Markup) -> Answer {
    Answer::Html(StatusCode::OK, markup)
}

/// The fields each form has (besides `csrf`).
fn fields_of(page: &Page) -> &'static [&'static str] {
    match page {
        Page::AccountPlan(_) => &["plan"],
        Page::CreateKey(_) => &["form_id", "name", "environment", "expires", "scopes"],
        Page::RotateKey(_) => &["form_id", "grace"],
        Page::RevokeKey(_) => &["reason"],
        Page::KeyCredits(_) => &["change", "amount"],
        _ => &[],
    }
}

/// One query parameter, percent-decoded (pages take few, and ignore none
/// silently: an unknown one is simply not read).
fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// The account a page is about: the path's, for an operator; the portal's
/// own, for a portal (which has no account in its paths).
fn account_of(viewer: &Viewer, id: Option<&str>) -> Result<AccountId, Refused> {
    match (viewer, id) {
        (Viewer::Portal(own), None) => Ok(*own),
        (Viewer::Operator(_), Some(id)) => AccountId::new(id).map_err(|_| {
            Refused::new(
                ErrorCode::AccountNotFound,
                "no account has this id; an account id is 1 to 64 of A-Z a-z 0-9 _ -",
            )
        }),
        _ => Err(Refused::new(
            ErrorCode::NotFound,
            "there is no such page; start again from the front page",
        )),
    }
}

/// The key with this id, if the viewer may see it: a portal sees only its
/// own account's keys, and another's is "not found", exactly like a key
/// that does not exist.
async fn own_key(
    app: &App,
    viewer: &Viewer,
    id: &str,
) -> Result<cloro_keystore::KeyRecord, Refused> {
    let not_found = || refused_admin(AdminError::KeyNotFound);
    let id = KeyId::new(id).map_err(|_| not_found())?;
    let record = app.admin().get(&id).await.map_err(refused_admin)?;
    if !viewer.may_see(&record.account_id) {
        return Err(not_found());
    }
    Ok(record)
}

async fn account_page(
    app: &App,
    chrome: &Chrome<'_>,
    account: AccountId,
    query: Option<&str>,
    now: Timestamp,
) -> Result<Answer, Refused> {
    let admin = app.admin();
    let plan = match admin.account(&account).await {
        Ok((_, plan)) => plan,
        Err(AdminError::AccountNotFound) => admin.plans().default_plan(),
        Err(error) => return Err(refused_admin(error)),
    };
    let plans: Vec<PlanName> = admin
        .plans()
        .to_response()
        .plans
        .into_iter()
        .map(|plan| plan.name)
        .collect();
    let quota = unless_no_account(admin.account_quota(&account, now).await)?;
    let keys_cursor = query_value(query, "keys");
    let keys = admin
        .list(&account, KEYS_PER_PAGE, keys_cursor.as_deref(), true)
        .await
        .map_err(refused_admin)?;
    let day_ago = now.checked_sub(SignedDuration::from_hours(24)).ok();
    let sparklines = futures_util::future::join_all(
        keys.items
            .iter()
            .map(|record| admin.key_usage(&record.id, UsageGranularity::Hour, day_ago, Some(now))),
    )
    .await;
    let keys_shown = keys
        .items
        .iter()
        .zip(sparklines)
        .map(|(record, usage)| {
            // A sparkline that cannot be read is drawn empty rather than
            // failing the page: the table beside it was read.
            let buckets = usage.map(|usage| usage.buckets).unwrap_or_default();
            (record.to_info(now), buckets)
        })
        .collect();
    let usage = if keys.items.is_empty() {
        None
    } else {
        unless_no_account(
            admin
                .account_usage(&account, UsageGranularity::Hour, day_ago, Some(now))
                .await,
        )?
    };
    let audit_cursor = query_value(query, "audit");
    let audit = admin
        .audit(&account, EVENTS_PER_PAGE, audit_cursor.as_deref())
        .await
        .map_err(refused_admin)?;
    let view = AccountView {
        account,
        plan,
        plans,
        quota,
        keys: keys_shown,
        more_keys: keys.next.as_ref().map(Cursor::encode),
        usage,
        audit: audit.items,
        older_audit: audit.next.as_ref().map(Cursor::encode),
        now,
    };
    Ok(html(views::account(chrome, &view)))
}

/// An account that has no record yet (no key, no plan set) has nothing
/// to show here; any other failure is the page's.
fn unless_no_account<T>(read: Result<T, AdminError>) -> Result<Option<T>, Refused> {
    match read {
        Ok(value) => Ok(Some(value)),
        Err(AdminError::AccountNotFound) => Ok(None),
        Err(error) => Err(refused_admin(error)),
    }
}

async fn key_page(
    app: &App,
    chrome: &Chrome<'_>,
    record: cloro_keystore::KeyRecord,
    query: Option<&str>,
    now: Timestamp,
) -> Result<Answer, Refused> {
    let range = query_value(query, "range");
    let (range, granularity, span) = match range.as_deref() {
        Some("30d") => (
            "30d",
            UsageGranularity::Day,
            SignedDuration::from_hours(24 * 30),
        ),
        Some("1y") => (
            "1y",
            UsageGranularity::Day,
            SignedDuration::from_hours(24 * 365),
        ),
        _ => (
            "24h",
            UsageGranularity::Hour,
            SignedDuration::from_hours(24),
        ),
    };
    let from = now.checked_sub(span).ok();
    let usage = app
        .admin()
        .key_usage(&record.id, granularity, from, Some(now))
        .await
        .map_err(refused_admin)?;
    // The account's latest events, this key's among them.
    let events = app
        .admin()
        .audit(&record.account_id, 100, None)
        .await
        .map_err(refused_admin)?;
    let audit = events
        .items
        .into_iter()
        .filter(|event| event.key_id.as_ref() == Some(&record.id))
        .take(EVENTS_PER_PAGE)
        .collect();
    let view = KeyView {
        info: record.to_info(now),
        usage,
        range,
        audit,
        form_id: session::new_secret()?,
        now,
    };
    Ok(html(views::key(chrome, &view)))
}

/// Claims a form's one-time id, so a second send of the same form (a
/// reload, a double click) never makes a second key nor shows a secret
/// again. The claim lives in the idempotency store, scoped to the session.
async fn claim_form(
    app: &App,
    signed: &Signed,
    form: &Form,
    now: Timestamp,
) -> Result<Option<(IdempotencySlot, ClaimToken)>, Refused> {
    let form_id = form
        .get("form_id")
        .filter(|id| session::is_secret_shaped(id))
        .ok_or_else(|| invalid("the form is incomplete; reload the page and send it again"))?;
    let scope = format!(
        "dashboard-{}",
        String::from_utf8_lossy(&signed.id.to_hex()[..16])
    );
    let slot = IdempotencySlot::new(&scope, form_id.as_bytes());
    let token = ClaimToken::generate().map_err(super::store_failed)?;
    let fingerprint = RequestFingerprint::of(&[b"dashboard form"]);
    let claim = app
        .idempotency()
        .claim(&slot, &fingerprint, &token, now, IDEMPOTENCY_LEASE)
        .await
        .map_err(super::store_failed)?;
    Ok(match claim {
        Claim::Claimed(token) => Some((slot, token)),
        _ => None,
    })
}

/// Marks a claimed form as done (its answer is never replayed: only that
/// it was sent).
async fn finish_form(
    app: &App,
    slot: &IdempotencySlot,
    token: &ClaimToken,
    done: bool,
    now: Timestamp,
) {
    let result = if done {
        let answer = StoredAnswer {
            status: 303,
            content_type: None,
            code: None,
            body: String::new(),
        };
        app.idempotency()
            .complete(slot, token, &answer, now, IDEMPOTENCY_WINDOW)
            .await
            .map(drop)
    } else {
        app.idempotency().release(slot, token).await
    };
    if let Err(error) = result {
        tracing::warn!(%error, "a dashboard form's one-time id could not be recorded");
    }
}

async fn create_key(
    app: &App,
    chrome: &Chrome<'_>,
    account: AccountId,
    form: &Form,
    now: Timestamp,
) -> Result<Answer, Refused> {
    let name = form
        .text("name")
        .ok_or_else(|| invalid("give the key a name, such as `production backend`"))?
        .to_owned();
    let environment = match form.get("environment") {
        None | Some("live") => Environment::Live,
        Some("test") => Environment::Test,
        Some(_) => return Err(invalid("the environment is `live` or `test`")),
    };
    let expires_at = match form.get("expires") {
        None | Some("never") => None,
        Some(days @ ("30" | "90" | "365")) => {
            let days: i64 = days.parse().unwrap_or(30);
            now.checked_add(SignedDuration::from_hours(24 * days)).ok()
        }
        Some(_) => return Err(invalid("choose when the key expires from the list")),
    };
    let portal_template = match chrome.site {
        Site::Portal => portal_template(app, &account, now).await?,
        Site::Dashboard => None,
    };
    let scopes = match form.text("scopes") {
        _ if chrome.site == Site::Portal => Vec::new(),
        None => vec![Scope::wildcard()],
        Some(text) if text.eq_ignore_ascii_case("all") => vec![Scope::wildcard()],
        Some(text) => text
            .split([' ', ','])
            .filter(|scope| !scope.is_empty())
            .map(|scope| {
                Scope::new(scope).map_err(|why| {
                    invalid(format!(
                        "the scope `{scope}` {why}; scopes are like read:users"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let Some((slot, token)) = claim_form(app, chrome.signed, form, now).await? else {
        return Ok(html(views::already_sent(
            chrome,
            &chrome.account_url(&account),
        )));
    };
    let mut request = CreateKeyRequest::new(account, name);
    request.environment = environment;
    request.expires_at = expires_at;
    request.scopes = scopes;
    if chrome.site == Site::Portal {
        like_template(&mut request, portal_template.as_ref());
    }
    let created = app
        .admin()
        .create(request, &chrome.signed.viewer.actor(), now)
        .await;
    finish_form(app, &slot, &token, created.is_ok(), now).await;
    let issued = created.map_err(refused_admin)?;
    let record = &issued.record;
    tracing::info!(key_id = %record.id, account_id = %record.account_id, start = %record.start, "key created from the dashboard");
    Ok(html(views::revealed(
        chrome,
        "Your new key",
        issued.key.expose_secret(),
        &record.to_info(now),
        None,
    )))
}

async fn rotate_key(
    app: &App,
    chrome: &Chrome<'_>,
    record: cloro_keystore::KeyRecord,
    form: &Form,
    now: Timestamp,
) -> Result<Answer, Refused> {
    let grace = match form.get("grace") {
        Some("0") => 0,
        Some("3600") => 3600,
        Some("86400") => 86_400,
        Some("604800") => 604_800,
        _ => return Err(invalid("choose when the old secret stops from the list")),
    };
    let Some((slot, token)) = claim_form(app, chrome.signed, form, now).await? else {
        return Ok(html(views::already_sent(
            chrome,
            &chrome.key_url(record.id.as_str()),
        )));
    };
    let request = RotateKeyRequest {
        grace_period_seconds: grace,
        ..RotateKeyRequest::default()
    };
    let rotated = app
        .admin()
        .rotate(&record.id, &request, &chrome.signed.viewer.actor(), now)
        .await;
    finish_form(app, &slot, &token, rotated.is_ok(), now).await;
    let rotation = rotated.map_err(refused_admin)?;
    let new = &rotation.issued.record;
    tracing::info!(key_id = %record.id, new_key_id = %new.id, grace_period_seconds = grace, "key rotated from the dashboard");
    let note = if grace == 0 {
        "The old secret stopped working now.".to_owned()
    } else {
        format!(
            "The old secret keeps working until {}.",
            views::when(
                now.checked_add(SignedDuration::from_secs(grace as i64))
                    .unwrap_or(now)
            )
        )
    };
    Ok(html(views::revealed(
        chrome,
        "The key's new secret",
        rotation.issued.key.expose_secret(),
        &new.to_info(now),
        Some(&note),
    )))
}

/// The key a portal's new key takes its settings from: the account's
/// newest active key. Refuses when the account has [`MAX_PORTAL_KEYS`]
/// live keys already.
async fn portal_template(
    app: &App,
    account: &AccountId,
    now: Timestamp,
) -> Result<Option<cloro_keystore::KeyRecord>, Refused> {
    let live = app
        .admin()
        .list(account, MAX_PORTAL_KEYS, None, false)
        .await
        .map_err(refused_admin)?;
    if live.items.len() >= MAX_PORTAL_KEYS {
        return Err(invalid(format!(
            "this account has {MAX_PORTAL_KEYS} keys already; revoke one before creating another"
        )));
    }
    Ok(live
        .items
        .into_iter()
        .find(|record| record.to_info(now).status == cloro_auth_core::KeyStatus::Active))
}

/// A portal's key is no more than the operator gave the account: it takes
/// the scopes and limits of the account's newest active key (with none,
/// the plan's limits and every scope, as a key the operator made with the
/// defaults). A credit-metered template makes a key with no credits and no
/// refill, for the operator to top up: a customer making keys must never
/// make balance.
fn like_template(request: &mut CreateKeyRequest, template: Option<&cloro_keystore::KeyRecord>) {
    let Some(template) = template else {
        request.scopes = vec![Scope::wildcard()];
        return;
    };
    request.scopes = template.scopes.clone();
    request.rate_limit = template.rate_limit;
    request.concurrency_limit = template.concurrency_limit;
    request.quota = template.quota;
    request.purpose = template.purpose;
    if template.credits_limited {
        request.credits = Some(0);
    }
}

/// `GET` and `POST /dashboard/sign-in`.
async fn sign_in<B>(
    app: &App,
    parts: &Parts,
    body: B,
    peer: IpAddr,
    now: Timestamp,
) -> Result<Answer, Refused>
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let (form_secret, form_cookie) =
        session::door_form(app, session::Door::SignIn, &parts.headers)?;
    let page = |status: StatusCode, error: Option<Refused>| {
        let answer = Answer::Html(status, views::sign_in(&form_secret, error.as_ref()));
        match &form_cookie {
            Some(cookie) => Answer::Cookies(vec![cookie.clone()], Box::new(answer)),
            None => answer,
        }
    };
    if parts.method != Method::POST {
        if session::find(app, Site::Dashboard, &parts.headers, now)
            .await?
            .is_some()
        {
            return Ok(Answer::Redirect("/dashboard".to_owned()));
        }
        return Ok(page(StatusCode::OK, None));
    }
    let form = Form::read(body, &["token", "sign_in"]).await?;
    if !session::door_form_is_ours(session::Door::SignIn, &parts.headers, form.get("sign_in")) {
        return Ok(page(
            StatusCode::FORBIDDEN,
            Some(Refused::new(
                ErrorCode::InsufficientPermissions,
                "this sign-in form did not come from this server's sign-in page; sign in from the page itself",
            )),
        ));
    }
    let token = form.text("token").unwrap_or_default();
    let client = app.guard().client(peer, &parts.headers);
    let operator = match crate::admin_api::operator_of(app, token, client).await {
        Ok(operator) => operator,
        Err(refusal) => {
            let mut refused = Refused::from(refusal);
            // The API's wording speaks of headers; a person at a form
            // needs to hear what to do there.
            if refused.code == ErrorCode::InvalidAdminToken {
                refused.message = "this is not an admin token this server knows (or it was deleted); check it and paste it again".to_owned();
            }
            let status =
                StatusCode::from_u16(refused.code.status()).unwrap_or(StatusCode::UNAUTHORIZED);
            return Ok(page(status, Some(refused)));
        }
    };
    // A sign-in replaces the browser's session, so signing in again and
    // again keeps one session, not many.
    if let Some(old) = session::find(app, Site::Dashboard, &parts.headers, now).await? {
        let _ = session::end(app, Site::Dashboard, &old, now).await;
    }
    let subject: SessionSubject = session::operator_subject(&operator, token);
    let cookie = session::start(
        app,
        Site::Dashboard,
        subject,
        SignedDuration::from_hours(session::SESSION_HOURS),
        now,
    )
    .await?;
    tracing::info!(operator = %operator.name, "signed in to the dashboard");
    Ok(Answer::Cookies(
        vec![cookie],
        Box::new(Answer::Redirect("/dashboard".to_owned())),
    ))
}
