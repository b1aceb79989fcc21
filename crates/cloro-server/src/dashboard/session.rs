//! Sessions of the dashboard and the portal (SPEC §13): a random secret in
//! an `HttpOnly`, `SameSite=Strict` cookie (`Secure` over TLS), the store
//! holding only its SHA-256; and the CSRF token of every form, derived
//! from the same secret, so a page from another site can neither read it
//! nor guess it.
//!
//! An operator's session holds while the admin token that signed in still
//! exists: every request looks the token up again, so deleting it ends its
//! sessions on every node at once.

use cloro_auth_core::wire::{AdminRole, BOOTSTRAP_TOKEN_NAME};
use cloro_auth_core::{AccountId, ErrorCode, KeyHash};
use cloro_keystore::{SessionRecord, SessionSubject, StoreError};
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use jiff::{SignedDuration, Timestamp};

use super::{Refused, Site};
use crate::app::App;
use crate::operators::Operator;

/// How long an operator's sign-in lasts (SPEC §13).
pub(crate) const SESSION_HOURS: i64 = 12;

/// The cookie of a signed-in operator, sent only to `/dashboard`.
const DASHBOARD_COOKIE: &str = "cloro_session";
/// The cookie of an opened portal, sent only to `/portal`.
const PORTAL_COOKIE: &str = "cloro_portal";
/// The sign-in form's own cookie, which its hidden field must repeat: a
/// page elsewhere cannot sign a browser in to a session of its choosing.
const SIGN_IN_COOKIE: &str = "cloro_sign_in";
/// The portal door's own cookie, for the same reason: a page elsewhere
/// cannot open its own portal link in a customer's browser.
const DOOR_COOKIE: &str = "cloro_portal_door";

/// Who is looking at a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Viewer {
    /// An operator (their token's name and role).
    Operator(Operator),
    /// The portal of one account.
    Portal(AccountId),
}

impl Viewer {
    /// The audit actor of what the viewer changes.
    pub(crate) fn actor(&self) -> String {
        match self {
            Viewer::Operator(operator) => operator.name.clone(),
            Viewer::Portal(account) => super::portal_actor(account),
        }
    }

    /// Whether the viewer may change anything (a `read` operator may not).
    pub(crate) fn may_change(&self) -> bool {
        match self {
            Viewer::Operator(operator) => operator.role == AdminRole::Admin,
            Viewer::Portal(_) => true,
        }
    }

    /// Whether the viewer may see `account`.
    pub(crate) fn may_see(&self, account: &AccountId) -> bool {
        match self {
            Viewer::Operator(_) => true,
            Viewer::Portal(own) => own == account,
        }
    }
}

/// A session found for a request.
#[derive(Debug)]
pub(crate) struct Signed {
    pub(crate) viewer: Viewer,
    /// The token every form of this session carries.
    pub(crate) csrf: String,
    /// The store's id of the session (to end it).
    pub(crate) id: KeyHash,
}

/// 32 random bytes in hex: a session's or a link's secret.
pub(crate) fn new_secret() -> Result<String, Refused> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|_| {
        Refused::new(
            ErrorCode::InternalError,
            "the system's random number generator failed; nothing was made",
        )
    })?;
    Ok(hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// Whether `text` could be a secret of ours: 64 lowercase hex digits.
/// Anything else is never looked up.
pub(crate) fn is_secret_shaped(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// The store's id of the session (or link) with this secret.
pub(crate) fn id_of(secret: &str) -> KeyHash {
    KeyHash::of(secret.as_bytes())
}

/// The CSRF token of the session with this secret.
fn csrf_of(secret: &str) -> String {
    let hash = KeyHash::of(format!("cloro-csrf:{secret}").as_bytes());
    String::from_utf8_lossy(&hash.to_hex()).into_owned()
}

/// Whether two tokens are equal, in time that does not depend on where
/// they differ (their hashes compare in constant time).
pub(crate) fn same_token(a: &str, b: &str) -> bool {
    KeyHash::of(a.as_bytes()) == KeyHash::of(b.as_bytes())
}

/// Every value of cookie `name` of our shape the request sent: a browser
/// sends two of one name when another site of the same domain set one too,
/// and a planted one must not hide the real one.
fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|field| field.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(key, _)| *key == name)
        .map(|(_, value)| value)
        .filter(|value| is_secret_shaped(value))
        .take(4)
}

/// The first value of cookie `name` of our shape.
fn cookie<'a>(headers: &'a HeaderMap, name: &'a str) -> Option<&'a str> {
    cookies(headers, name).next()
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, the site's path,
/// `Secure` when the server speaks TLS; a `max_age` of 0 removes it.
fn set_cookie(name: &str, value: &str, path: &str, max_age: i64, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    let text = format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether people reach the dashboard over HTTPS: the server speaks TLS,
/// or `--public-url` says a proxy in front of it does. Cookies are then
/// `Secure`.
fn served_over_https(app: &App) -> bool {
    app.settings().tls.is_some()
        || app
            .settings()
            .public_url
            .as_ref()
            .is_some_and(|url| url.scheme_str() == Some("https"))
}

fn cookie_name(site: Site) -> &'static str {
    match site {
        Site::Dashboard => DASHBOARD_COOKIE,
        Site::Portal => PORTAL_COOKIE,
    }
}

fn store_down(error: &StoreError) -> Refused {
    tracing::warn!(%error, "a dashboard session could not be read or written");
    Refused::new(
        ErrorCode::AuthUnavailable,
        "the key store is unavailable; nothing was changed, retry shortly",
    )
}

/// The session the request's cookie names on `site`, if it is live and
/// (for an operator) its token still exists.
pub(crate) async fn find(
    app: &App,
    site: Site,
    headers: &HeaderMap,
    now: Timestamp,
) -> Result<Option<Signed>, Refused> {
    let mut found = None;
    for secret in cookies(headers, cookie_name(site)) {
        let id = id_of(secret);
        if let Some(record) = app
            .sessions()
            .session(&id, now)
            .await
            .map_err(|error| store_down(&error))?
        {
            found = Some((secret, id, record));
            break;
        }
    }
    let Some((secret, id, record)) = found else {
        return Ok(None);
    };
    let viewer = match (site, record.subject) {
        (Site::Dashboard, SessionSubject::Operator { token, .. }) => {
            match operator_of_token(app, &token).await? {
                Some(operator) => Viewer::Operator(operator),
                None => {
                    // Its token was deleted: the session ends here, for good.
                    let _ = app.sessions().take_session(&id, now).await;
                    return Ok(None);
                }
            }
        }
        (Site::Portal, SessionSubject::Portal { account_id }) => Viewer::Portal(account_id),
        // A session of another kind under this cookie is no session here.
        _ => return Ok(None),
    };
    Ok(Some(Signed {
        viewer,
        csrf: csrf_of(secret),
        id,
    }))
}

/// The operator whose token has this hash, now: the bootstrap token, or a
/// named token still in the store (with its current role).
async fn operator_of_token(app: &App, token: &KeyHash) -> Result<Option<Operator>, Refused> {
    if app.admin_token().hash() == token {
        return Ok(Some(Operator::bootstrap()));
    }
    let record = app
        .admin_tokens()
        .token_by_hash(token)
        .await
        .map_err(|error| store_down(&error))?;
    Ok(record.map(|record| Operator {
        name: record.info.name,
        role: record.info.role,
    }))
}

/// A form that starts a session (sign-in, the portal's door): its cookie
/// and the path it is sent to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Door {
    SignIn,
    Portal,
}

impl Door {
    fn cookie(self) -> (&'static str, &'static str) {
        match self {
            Door::SignIn => (SIGN_IN_COOKIE, "/dashboard/sign-in"),
            Door::Portal => (DOOR_COOKIE, "/portal/enter"),
        }
    }
}

/// The door form's secret: the one in the browser's cookie if it has a
/// good one, else a new one with the cookie to set.
pub(crate) fn door_form(
    app: &App,
    door: Door,
    headers: &HeaderMap,
) -> Result<(String, Option<HeaderValue>), Refused> {
    let (name, path) = door.cookie();
    if let Some(secret) = cookie(headers, name) {
        return Ok((secret.to_owned(), None));
    }
    let secret = new_secret()?;
    let cookie = set_cookie(name, &secret, path, 3600, served_over_https(app));
    Ok((secret, Some(cookie)))
}

/// Whether the door form's hidden field repeats the browser's cookie.
pub(crate) fn door_form_is_ours(door: Door, headers: &HeaderMap, field: Option<&str>) -> bool {
    match (cookie(headers, door.cookie().0), field) {
        (Some(cookie), Some(field)) => same_token(cookie, field),
        _ => false,
    }
}

/// Stores a new session (or link) for `subject`, lasting `lasts`; answers
/// its secret, the only copy, and when it ends.
pub(crate) async fn put_new(
    app: &App,
    subject: SessionSubject,
    lasts: SignedDuration,
    now: Timestamp,
) -> Result<(String, Timestamp), Refused> {
    let secret = new_secret()?;
    let expires_at = now.checked_add(lasts).unwrap_or(Timestamp::MAX);
    let record = SessionRecord {
        subject,
        created_at: now,
        expires_at,
    };
    match app
        .sessions()
        .put_session(&id_of(&secret), &record, now)
        .await
    {
        Ok(()) => Ok((secret, expires_at)),
        Err(StoreError::Conflict) => Err(Refused::new(
            ErrorCode::AuthUnavailable,
            "too many sessions and portal links are open; retry when some have ended",
        )),
        Err(error) => Err(store_down(&error)),
    }
}

/// Starts a session for `subject` on `site`; answers the cookie to set.
pub(crate) async fn start(
    app: &App,
    site: Site,
    subject: SessionSubject,
    lasts: SignedDuration,
    now: Timestamp,
) -> Result<HeaderValue, Refused> {
    let (secret, _) = put_new(app, subject, lasts, now).await?;
    Ok(set_cookie(
        cookie_name(site),
        &secret,
        site.base(),
        lasts.as_secs(),
        served_over_https(app),
    ))
}

/// An operator session for the holder of `operator`'s token.
pub(crate) fn operator_subject(operator: &Operator, token: &str) -> SessionSubject {
    SessionSubject::Operator {
        name: operator.name.clone(),
        role: operator.role,
        token: KeyHash::of(token.as_bytes()),
    }
}

/// Ends the session; answers the cookie that removes it from the browser.
pub(crate) async fn end(
    app: &App,
    site: Site,
    signed: &Signed,
    now: Timestamp,
) -> Result<HeaderValue, Refused> {
    app.sessions()
        .take_session(&signed.id, now)
        .await
        .map_err(|error| store_down(&error))?;
    Ok(set_cookie(
        cookie_name(site),
        "",
        site.base(),
        0,
        served_over_https(app),
    ))
}

/// The operator's name as the dashboard shows it.
pub(crate) fn display_name(operator: &Operator) -> &str {
    if operator.name == BOOTSTRAP_TOKEN_NAME {
        "bootstrap token"
    } else {
        &operator.name
    }
}
