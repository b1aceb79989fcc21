//! The web dashboard and the account portal (SPEC §13): server-rendered
//! HTML over the same [`KeyAdmin`](cloro_keystore::KeyAdmin) the admin API
//! uses, so a page can do nothing the API would refuse.
//!
//! `/dashboard` is for operators, signed in with an admin token; `/portal`
//! is for one account's own people, opened by a single-use link an
//! operator makes (`POST /admin/v1/accounts/{id}/portal-sessions`). Both
//! run through [`handle`]: the one place that finds the session, checks the
//! CSRF token of every form, refuses a `read` operator anything that
//! changes state, and adds the security headers to every answer.
//!
//! - `session.rs`: cookies, sessions in the store, CSRF tokens, sign-in.
//! - `portal.rs`: portal links (made by the admin API, opened here).
//! - `pages.rs`: what each page reads and does; `views.rs`: how it looks;
//!   `chart.rs`: usage as SVG; `forms.rs`: form bodies.
//! - `assets/`: the style sheet and the one small script (copy buttons),
//!   served from the binary.

mod chart;
mod forms;
mod pages;
pub(crate) mod portal;
mod session;
mod views;

use std::net::IpAddr;

use bytes::Bytes;
use cloro_auth_core::{AccountId, ErrorCode};
use http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY,
    SET_COOKIE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use maud::Markup;

use crate::app::App;
use cloro_guard::{Body, BoxError, full};

/// The strict policy of SPEC §13: everything from this origin only, no
/// inline script or style, no framing, forms only back here.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const STYLE_SHEET: &str = include_str!("assets/dashboard.css");
const SCRIPT: &str = include_str!("assets/dashboard.js");

/// Which of the two sites a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Site {
    /// `/dashboard`: operators.
    Dashboard,
    /// `/portal`: one account.
    Portal,
}

impl Site {
    /// Where the site's pages live.
    pub(crate) fn base(self) -> &'static str {
        match self {
            Site::Dashboard => "/dashboard",
            Site::Portal => "/portal",
        }
    }
}

/// What a request asks for, from its path (already normalised, SPEC §9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Page {
    /// The style sheet or the script.
    Asset(&'static str, &'static str),
    /// The dashboard's start: find an account.
    Home,
    SignIn,
    SignOut,
    /// `GET /dashboard/accounts?id=…`: to that account's page.
    FindAccount,
    /// An account: the operator's choice, or the portal's own.
    Account(Option<String>),
    AccountPlan(String),
    NewKey(Option<String>),
    CreateKey(Option<String>),
    Key(String),
    RotateKey(String),
    RevokeKey(String),
    KeyCredits(String),
    Webhooks,
    Webhook(String),
    /// `GET /portal/enter?link=…`: a portal link.
    EnterPortal,
}

impl Page {
    /// The page a path names on a site, or `None` (404).
    fn of(site: Site, path: &str) -> Option<Page> {
        let rest = path.strip_prefix(site.base())?;
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        if !rest.is_empty() && path.ends_with('/') {
            return None;
        }
        let segments: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let own = |id: &str| Some(id.to_owned());
        Some(match (site, segments.as_slice()) {
            (_, ["assets", "dashboard.css"]) => Page::Asset("text/css; charset=utf-8", STYLE_SHEET),
            (_, ["assets", "dashboard.js"]) => {
                Page::Asset("text/javascript; charset=utf-8", SCRIPT)
            }
            (Site::Dashboard, []) => Page::Home,
            (Site::Dashboard, ["sign-in"]) => Page::SignIn,
            (_, ["sign-out"]) => Page::SignOut,
            (Site::Dashboard, ["accounts"]) => Page::FindAccount,
            (Site::Dashboard, ["accounts", id]) => Page::Account(own(id)),
            (Site::Dashboard, ["accounts", id, "plan"]) => Page::AccountPlan((*id).to_owned()),
            (Site::Dashboard, ["accounts", id, "keys", "new"]) => Page::NewKey(own(id)),
            (Site::Dashboard, ["accounts", id, "keys"]) => Page::CreateKey(own(id)),
            (Site::Dashboard, ["webhooks"]) => Page::Webhooks,
            (Site::Dashboard, ["webhooks", id]) => Page::Webhook((*id).to_owned()),
            (Site::Portal, []) => Page::Account(None),
            (Site::Portal, ["enter"]) => Page::EnterPortal,
            (Site::Portal, ["keys", "new"]) => Page::NewKey(None),
            (Site::Portal, ["keys"]) => Page::CreateKey(None),
            (_, ["keys", id]) => Page::Key((*id).to_owned()),
            (_, ["keys", id, "rotate"]) => Page::RotateKey((*id).to_owned()),
            (_, ["keys", id, "revoke"]) => Page::RevokeKey((*id).to_owned()),
            (Site::Dashboard, ["keys", id, "credits"]) => Page::KeyCredits((*id).to_owned()),
            _ => return None,
        })
    }

    /// The methods the page answers (`HEAD` wherever `GET`).
    fn methods(&self) -> &'static [Method] {
        const GET: &[Method] = &[Method::GET, Method::HEAD];
        const POST: &[Method] = &[Method::POST];
        const BOTH: &[Method] = &[Method::GET, Method::HEAD, Method::POST];
        match self {
            Page::SignIn | Page::RevokeKey(_) | Page::EnterPortal => BOTH,
            Page::SignOut
            | Page::AccountPlan(_)
            | Page::CreateKey(_)
            | Page::RotateKey(_)
            | Page::KeyCredits(_) => POST,
            _ => GET,
        }
    }
}

/// The site a path belongs to, if it is the dashboard's or the portal's.
pub(crate) fn site_of(path: &str) -> Option<Site> {
    let under = |base: &str| {
        path.strip_prefix(base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if under("/dashboard") {
        Some(Site::Dashboard)
    } else if under("/portal") {
        Some(Site::Portal)
    } else {
        None
    }
}

/// A page's answer before the common headers: HTML, a redirect, or an
/// asset.
pub(crate) enum Answer {
    Html(StatusCode, Markup),
    /// 303 See Other, so a form's POST is followed by a GET.
    Redirect(String),
    Asset(&'static str, &'static str),
    /// Another answer with these `Set-Cookie` fields.
    Cookies(Vec<HeaderValue>, Box<Answer>),
}

/// A refusal shown as a page: the SPEC §4 code, its status, and what to do.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl Refused {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refused {
            code,
            message: message.into(),
        }
    }

    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::BAD_REQUEST)
    }
}

impl From<Box<cloro_guard::ApiError>> for Refused {
    fn from(error: Box<cloro_guard::ApiError>) -> Self {
        Refused {
            code: error.code(),
            message: error.message().to_owned(),
        }
    }
}

/// A store failure of a page that does not go through `KeyAdmin`, shown
/// as the admin API answers it.
pub(crate) fn store_failed(error: cloro_keystore::StoreError) -> Refused {
    crate::admin_api::store_refusal(error).into()
}

/// Answers a request to `/dashboard…` or `/portal…`.
pub(crate) async fn handle<B>(
    app: &App,
    site: Site,
    request: Request<B>,
    peer: IpAddr,
) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let head = parts.method == Method::HEAD;
    let answer = match Page::of(site, parts.uri.path()) {
        None => Err(Refused::new(
            ErrorCode::NotFound,
            "there is no such page; start again from the front page",
        )),
        Some(page) if !page.methods().contains(&parts.method) => {
            let allow = page
                .methods()
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let mut response = page_response(
                StatusCode::METHOD_NOT_ALLOWED,
                views::problem(
                    site,
                    &Refused::new(
                        ErrorCode::MethodNotAllowed,
                        format!("this page answers {allow} only"),
                    ),
                ),
            );
            if let Ok(value) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(ALLOW, value);
            }
            return secure(response);
        }
        Some(Page::Asset(content_type, text)) => Ok(Answer::Asset(content_type, text)),
        Some(page) => pages::answer(app, site, page, &parts, body, peer).await,
    };
    let response = match answer {
        Ok(answer) => respond(answer),
        Err(refused) => page_response(refused.status(), views::problem(site, &refused)),
    };
    let mut response = secure(response);
    if head {
        *response.body_mut() = full(Bytes::new());
    }
    response
}

fn respond(answer: Answer) -> Response<Body> {
    match answer {
        Answer::Html(status, markup) => page_response(status, markup),
        Answer::Redirect(to) => redirect(&to),
        Answer::Asset(content_type, text) => {
            let mut response = Response::new(full(text));
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            headers.insert(
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            response
        }
        Answer::Cookies(cookies, answer) => {
            let mut response = respond(*answer);
            for cookie in cookies {
                response.headers_mut().append(SET_COOKIE, cookie);
            }
            response
        }
    }
}

fn page_response(status: StatusCode, markup: Markup) -> Response<Body> {
    let mut response = Response::new(full(markup.into_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn redirect(to: &str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(to) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

/// The headers every dashboard and portal answer carries (SPEC §13). Pages
/// are never stored by a cache: one may show a key, and all show an
/// account's data.
pub(crate) fn secure(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The audit actor of a change made through the portal of `account`.
pub(crate) fn portal_actor(account: &AccountId) -> String {
    format!("portal:{account}")
}
