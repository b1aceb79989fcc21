//! Account portal links (SPEC §13). An operator's site asks the admin API
//! for a link (`POST /admin/v1/accounts/{id}/portal-sessions`) and hands it
//! to its customer; the link opens the portal of that one account, once,
//! within 10 minutes. Opening it is a `POST` from a button on the link's
//! page, so a link preview or a mail scanner fetching the URL never uses
//! it up; the portal session it starts lasts an hour.

use bytes::Bytes;
use cloro_auth_core::wire::{PORTAL_LINK_SECONDS, PORTAL_SESSION_SECONDS, PortalSessionResponse};
use cloro_auth_core::{AccountId, ErrorCode};
use cloro_keystore::SessionSubject;
use http::header::HOST;
use http::request::Parts;
use http::uri::Authority;
use http::{HeaderMap, Method, Uri};
use jiff::{SignedDuration, Timestamp};

use super::forms::Form;
use super::session::{self, Door, id_of, is_secret_shaped};
use super::{Answer, Refused, Site, views};
use crate::admin_api::Refusal;
use crate::app::App;
use cloro_guard::{ApiError, BoxError};

/// Makes a portal link for `account` (the admin API's route).
///
/// # Errors
/// A store failure, or no randomness.
pub(crate) async fn create_link(
    app: &App,
    account: &AccountId,
    uri: &Uri,
    headers: &HeaderMap,
    now: Timestamp,
) -> Result<PortalSessionResponse, Refusal> {
    let (secret, expires_at) = session::put_new(
        app,
        SessionSubject::PortalLink {
            account_id: *account,
        },
        SignedDuration::from_secs(PORTAL_LINK_SECONDS),
        now,
    )
    .await
    .map_err(refusal)?;
    tracing::info!(account_id = %account, "portal link made");
    let origin = origin(app, uri, headers);
    Ok(PortalSessionResponse {
        url: Some(format!("{origin}/portal/enter?link={secret}")),
        expires_at,
    })
}

fn refusal(refused: Refused) -> Refusal {
    Box::new(ApiError::new(refused.code, refused.message))
}

/// Where this server is: `--public-url` when set, else as the request that
/// asked for the link reached it: the scheme it serves and the authority
/// the caller used (checked to be one; else the listening address).
fn origin(app: &App, uri: &Uri, headers: &HeaderMap) -> String {
    if let Some(public) = &app.settings().public_url
        && let (Some(scheme), Some(authority)) = (public.scheme_str(), public.authority())
    {
        return format!("{scheme}://{authority}");
    }
    let scheme = if app.settings().tls.is_some() {
        "https"
    } else {
        "http"
    };
    let named = uri.authority().cloned().or_else(|| {
        headers
            .get(HOST)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.parse::<Authority>().ok())
    });
    // An authority with userinfo (`real.example@evil.example`) would send
    // the link's secret elsewhere while looking right: never used.
    let authority = named
        .filter(|authority| {
            let text = authority.as_str();
            !text.contains('@') && text.bytes().all(|c| c.is_ascii_graphic())
        })
        .map_or_else(|| app.settings().listen.to_string(), |a| a.to_string());
    format!("{scheme}://{authority}")
}

/// `GET /portal/enter?link=…` (the door) and `POST /portal/enter` (open).
pub(crate) async fn enter<B>(
    app: &App,
    parts: &Parts,
    body: B,
    now: Timestamp,
) -> Result<Answer, Refused>
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let used = || {
        Refused::new(
            ErrorCode::InvalidAdminToken,
            "this portal link was used already, or has expired (links open once, within 10 minutes); ask for a new link",
        )
    };
    if parts.method != Method::POST {
        let Some(link) = form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .find(|(name, _)| name == "link")
            .map(|(_, value)| value.into_owned())
        else {
            // Where a sign-out lands.
            return Err(Refused::new(
                ErrorCode::InvalidAdminToken,
                "the portal is closed; it opens from a link the API's website gives you, once, within 10 minutes",
            ));
        };
        if !is_secret_shaped(&link) {
            return Err(used());
        }
        let found = app
            .sessions()
            .session(&id_of(&link), now)
            .await
            .map_err(super::store_failed)?;
        let Some(SessionSubject::PortalLink { account_id }) = found.map(|record| record.subject)
        else {
            return Err(used());
        };
        let (door, cookie) = session::door_form(app, Door::Portal, &parts.headers)?;
        let page = Answer::Html(
            http::StatusCode::OK,
            views::enter_portal(&account_id, &link, &door),
        );
        return Ok(match cookie {
            Some(cookie) => Answer::Cookies(vec![cookie], Box::new(page)),
            None => page,
        });
    }
    let form = Form::read(body, &["link", "door"]).await?;
    if !session::door_form_is_ours(Door::Portal, &parts.headers, form.get("door")) {
        return Err(Refused::new(
            ErrorCode::InsufficientPermissions,
            "this form did not come from the portal link's own page; open the link itself",
        ));
    }
    let link = form
        .get("link")
        .filter(|link| is_secret_shaped(link))
        .ok_or_else(used)?;
    // Only a link is taken: another kind of session under this secret is
    // left alone.
    let is_link = app
        .sessions()
        .session(&id_of(link), now)
        .await
        .map_err(super::store_failed)?
        .is_some_and(|record| matches!(record.subject, SessionSubject::PortalLink { .. }));
    if !is_link {
        return Err(used());
    }
    let taken = app
        .sessions()
        .take_session(&id_of(link), now)
        .await
        .map_err(super::store_failed)?;
    let Some(SessionSubject::PortalLink { account_id }) = taken.map(|record| record.subject) else {
        return Err(used());
    };
    let cookie = session::start(
        app,
        Site::Portal,
        SessionSubject::Portal { account_id },
        SignedDuration::from_secs(PORTAL_SESSION_SECONDS),
        now,
    )
    .await?;
    tracing::info!(account_id = %account_id, "portal opened");
    Ok(Answer::Cookies(
        vec![cookie],
        Box::new(Answer::Redirect("/portal".to_owned())),
    ))
}
