//! The admin API (SPEC §6 "Admin"): `/admin/v1/*` behind the admin token.
//!
//! Only HTTP lives here: the token check, routing, query and body parsing,
//! and turning [`AdminError`] into SPEC §4 answers. What creating, changing,
//! revoking or rotating a key means is decided once, in
//! [`cloro_keystore::KeyAdmin`], so this layer cannot bend a lifecycle rule.
//!
//! Plaintext keys appear only in the create and rotate answers, and nothing
//! here logs a key or a token: log lines carry key ids and redacted starts.

use std::net::IpAddr;

use bytes::Bytes;
use cloro_auth_core::wire::{
    AccountInfo, CreateKeyRequest, CreateKeyResponse, CreditsRequest, ListAuditResponse,
    ListKeysResponse, RevokeKeyRequest, RevokeLeakedRequest, RevokeLeakedResponse,
    RotateKeyRequest, RotateKeyResponse, SetPlanRequest, UpdateKeyRequest, UsageGranularity,
};
use cloro_auth_core::{
    AccountId, ApiKey, AuthError, ErrorCode, KeyId, Malformed, bearer_token, query_carries_key,
};
use cloro_keystore::{AccountRecord, AdminError, Cursor, KeyRecord, LogLimit};
use http::header::{AUTHORIZATION, CACHE_CONTROL};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::app::App;
use crate::operators::Operator;
use crate::routes::AdminRoute;
use cloro_guard::{ApiError, Body, BoxError, json};

/// The actor the audit log names for anything done with the admin token.
/// Admin bodies are a few hundred bytes; the cap only stops a client from
/// making the server buffer without bound.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Page size when the client names none (SPEC §6).
const DEFAULT_LIMIT: usize = 20;
/// The largest page a client may ask for (SPEC §6).
const MAX_LIMIT: usize = 100;

/// An error answer, boxed: it is large and every handler returns one on
/// its `Err` side.
pub(crate) type Refusal = Box<ApiError>;

/// `INVALID_REQUEST` naming `field`.
pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Refusal {
    Box::new(ApiError::invalid_field(field, message))
}

/// Answers one request to `/admin/*`. Every answer carries
/// `Cache-Control: no-store`: admin data (and, for create and rotate, a
/// plaintext key) must never sit in a shared cache.
///
/// `route` is what the route table matched, or the 405 to give (after the
/// token check) when the path does not take the method; `id` is the path's
/// `{id}` or `{account_id}`.
pub(crate) async fn handle<B>(
    app: &App,
    request: Request<B>,
    peer: IpAddr,
    id: Option<&str>,
    route: Result<AdminRoute, Response<Body>>,
    request_id: &str,
) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let call = Call {
        route,
        id: id.unwrap_or_default(),
        request_id,
    };
    let mut response = match answer(app, &parts, body, peer, call).await {
        Ok(response) => response,
        Err(error) => error.into_response(request_id),
    };
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// What the route table said about an admin request.
struct Call<'a> {
    route: Result<AdminRoute, Response<Body>>,
    /// The path's id (still unvalidated text); empty where it has none.
    id: &'a str,
    request_id: &'a str,
}

async fn answer<B>(
    app: &App,
    parts: &Parts,
    body: B,
    peer: IpAddr,
    call: Call<'_>,
) -> Result<Response<Body>, Refusal>
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let query = parts.uri.query();
    // SPEC §3: a key in the URL is refused before anything else, here too.
    if query.is_some_and(|query| query_carries_key(query.as_bytes())) {
        return Err(
            ApiError::from_auth(&AuthError::MalformedAuthorization(Malformed::KeyInUrl)).into(),
        );
    }
    // Authenticate before routing, so that without the token nobody learns
    // which admin paths exist.
    let operator = authenticate(
        app,
        &parts.headers,
        app.guard().client(peer, &parts.headers),
    )
    .await?;
    let route = match call.route {
        Ok(route) => route,
        Err(method_not_allowed) => return Ok(method_not_allowed),
    };
    // A `read` token changes nothing, whatever the route (SPEC §13).
    operator.may(&parts.method)?;
    let actor = operator.name.as_str();
    let id = call.id;
    let now = app.clock().now();
    // Every admin POST honours `Idempotency-Key` (SPEC §11), here and only here.
    if parts.method == Method::POST
        && route != AdminRoute::Unknown
        && let Some(key) = crate::idempotency::key_of(&parts.headers)?
    {
        let body = read_body(body).await?;
        let request_id = call.request_id;
        let run = |body: Bytes| async move {
            dispatch(app, parts, Full::new(body), route, id, actor, now)
                .await
                .unwrap_or_else(|error| error.into_response(request_id))
        };
        let answer = crate::idempotency::once(app, parts, key, body, request_id, run);
        return Ok(answer.await);
    }
    dispatch(app, parts, body, route, id, actor, now).await
}

/// Runs one admin route (after the token check).
async fn dispatch<B>(
    app: &App,
    parts: &Parts,
    body: B,
    route: AdminRoute,
    id: &str,
    actor: &str,
    now: Timestamp,
) -> Result<Response<Body>, Refusal>
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let query = parts.uri.query();
    match route {
        AdminRoute::Unknown => {
            let path = parts.uri.path();
            Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no admin route {path}; see GET /openapi.json for the API"),
            )
            .into())
        }
        AdminRoute::CreateKey => {
            create_key(app, actor, parse_body(&read_body(body).await?)?, now).await
        }
        AdminRoute::CreateToken | AdminRoute::ListTokens | AdminRoute::DeleteToken => {
            let body = read_body(body).await?;
            crate::operators::answer(app, route, id, query, body, now).await
        }
        AdminRoute::CreateWebhook
        | AdminRoute::ListWebhooks
        | AdminRoute::GetWebhook
        | AdminRoute::DeleteWebhook
        | AdminRoute::WebhookDeliveries => {
            let body = read_body(body).await?;
            crate::webhooks::answer(app.webhooks(), route, id, query, body, now).await
        }
        AdminRoute::ListKeys => list_keys(app, query, now).await,
        AdminRoute::GetKey => {
            no_query(query)?;
            let record = app.admin().get(&key_id(id)?).await.map_err(admin_error)?;
            Ok(json(StatusCode::OK, &record.to_info(now)))
        }
        AdminRoute::UpdateKey => {
            no_query(query)?;
            let id = key_id(id)?;
            let patch = parse_body(&read_body(body).await?)?;
            update_key(app, actor, &id, &patch, now).await
        }
        AdminRoute::RevokeKey => {
            no_query(query)?;
            let id = key_id(id)?;
            let request = parse_optional_body(&read_body(body).await?)?;
            revoke_key(app, actor, &id, request, now).await
        }
        AdminRoute::RotateKey => {
            no_query(query)?;
            let id = key_id(id)?;
            let request = parse_optional_body(&read_body(body).await?)?;
            rotate_key(app, actor, &id, &request, now).await
        }
        AdminRoute::RevokeLeaked => {
            no_query(query)?;
            let request: RevokeLeakedRequest = parse_body(&read_body(body).await?)?;
            let revoked = app
                .admin()
                .revoke_leaked(&request.keys, request.reason.as_deref(), actor, now)
                .await
                .map_err(admin_error)?;
            for record in &revoked.revoked {
                tracing::warn!(key_id = %record.id, account_id = %record.account_id, "key revoked as leaked");
            }
            let response = RevokeLeakedResponse {
                revoked: revoked.revoked.iter().map(|r| r.to_info(now)).collect(),
                not_found: revoked.not_found,
            };
            Ok(json(StatusCode::OK, &response))
        }
        AdminRoute::KeyCredits => {
            no_query(query)?;
            let id = key_id(id)?;
            let request: CreditsRequest = parse_body(&read_body(body).await?)?;
            // The idempotency layer validated the key; the ledger applies
            // the change once per key, also across a retry after a timeout.
            let operation = parts
                .headers
                .get("idempotency-key")
                .and_then(|value| value.to_str().ok());
            let record = app
                .admin()
                .change_credits(&id, &request, operation, actor, now)
                .await
                .map_err(admin_error)?;
            tracing::info!(key_id = %record.id, account_id = %record.account_id, "key credits changed");
            Ok(json(StatusCode::OK, &record.to_info(now)))
        }
        AdminRoute::PortalSession => {
            no_query(query)?;
            let account = account_id(id)?;
            // No body is taken; one sent is refused rather than ignored.
            let body = read_body(body).await?;
            if !body.iter().all(u8::is_ascii_whitespace) {
                let fields: serde_json::Map<String, serde_json::Value> = parse_body(&body)?;
                if let Some(field) = fields.keys().next() {
                    return Err(invalid(
                        cloro_auth_core::redact_keys_in(field),
                        "this route takes no fields; send no body or {}",
                    ));
                }
            }
            let link = crate::dashboard::portal::create_link(
                app,
                &account,
                &parts.uri,
                &parts.headers,
                now,
            )
            .await?;
            Ok(json(StatusCode::CREATED, &link))
        }
        AdminRoute::AccountQuota => {
            no_query(query)?;
            let account = account_id(id)?;
            let quota = app
                .admin()
                .account_quota(&account, now)
                .await
                .map_err(admin_error)?;
            Ok(json(StatusCode::OK, &quota))
        }
        AdminRoute::KeyUsage => {
            let id = key_id(id)?;
            let (granularity, from, to) = usage_range(query)?;
            let usage = app
                .admin()
                .key_usage(&id, granularity, from, to)
                .await
                .map_err(admin_error)?;
            Ok(json(StatusCode::OK, &usage))
        }
        AdminRoute::AccountUsage => {
            let account = account_id(id)?;
            let (granularity, from, to) = usage_range(query)?;
            let usage = app
                .admin()
                .account_usage(&account, granularity, from, to)
                .await
                .map_err(admin_error)?;
            Ok(json(StatusCode::OK, &usage))
        }
        AdminRoute::Audit => list_audit(app, query).await,
        AdminRoute::Plans => {
            no_query(query)?;
            Ok(json(StatusCode::OK, &app.admin().plans().to_response()))
        }
        AdminRoute::GetAccount => {
            no_query(query)?;
            let account = account_id(id)?;
            let found = app.admin().account(&account).await.map_err(admin_error)?;
            Ok(json(StatusCode::OK, &account_info(found)))
        }
        AdminRoute::SetAccountPlan => {
            no_query(query)?;
            let account = account_id(id)?;
            let request: SetPlanRequest = parse_body(&read_body(body).await?)?;
            let changed = app
                .admin()
                .set_plan(&account, request.plan, actor, now)
                .await
                .map_err(admin_error)?;
            tracing::info!(account_id = %account, plan = %request.plan, "account plan set");
            Ok(json(StatusCode::OK, &account_info(changed)))
        }
    }
}

/// Lets the request through only with the admin token (compared in
/// constant time by [`crate::AdminToken::matches`]).
///
/// Wrong tokens draw on the client address's failed-attempt allowance
/// (SPEC §9), the one unknown API keys use. Once it is spent, the address
/// gets 429 for *any* token, the right one included, until it refills:
/// otherwise the lockout itself would tell a guesser when it had guessed
/// right.
async fn authenticate(app: &App, headers: &HeaderMap, client: IpAddr) -> Result<Operator, Refusal> {
    let fields = headers
        .get_all(AUTHORIZATION)
        .iter()
        .map(HeaderValue::as_bytes);
    match bearer_token(fields) {
        Ok(token) => operator_of(app, token, client).await,
        Err(error) => {
            // A locked-out address hears so whatever it sends; otherwise
            // this is no guess at the token (no bearer token at all): not
            // charged.
            let attempts = app.guard().verifier().failed_attempts();
            let now = i64::try_from(app.clock().now().as_nanosecond()).unwrap_or(i64::MAX);
            attempts
                .check(&attempts.subject(client), now)
                .map_err(locked_out)?;
            tracing::info!(reason = %error.code(), "admin request without a usable bearer token");
            Err(ApiError::admin_token().into())
        }
    }
}

/// The operator whose admin token `token` is, under the same lockout as
/// the admin API (SPEC §9): an address that used up its allowance of wrong
/// tokens is refused any token, and each wrong one is charged. The
/// dashboard's sign-in comes through here too, so it is no way around it.
pub(crate) async fn operator_of(
    app: &App,
    token: &str,
    client: IpAddr,
) -> Result<Operator, Refusal> {
    let attempts = app.guard().verifier().failed_attempts();
    let subject = attempts.subject(client);
    let now = i64::try_from(app.clock().now().as_nanosecond()).unwrap_or(i64::MAX);
    attempts.check(&subject, now).map_err(locked_out)?;
    if token.is_empty() {
        return Err(ApiError::admin_token()
            .with_message("paste an admin token (cloro_admin_… or the bootstrap token)")
            .into());
    }
    if app.admin_token().matches(token) {
        return Ok(Operator::bootstrap());
    }
    if let Some(operator) = crate::operators::named(app, token).await? {
        return Ok(operator);
    }
    let _ = attempts.charge(&subject, now).map_err(locked_out)?;
    // Someone holding an API key may expect it to open the admin API too;
    // say plainly that it never will, rather than only "wrong token".
    if ApiKey::check_format(token.as_bytes()).is_ok() {
        // Anyone can send these as fast as they like (SPEC §9).
        static API_KEY_AS_ADMIN_TOKEN: LogLimit = LogLimit::per_second();
        if let Some(suppressed) = API_KEY_AS_ADMIN_TOKEN.admit() {
            tracing::warn!(suppressed, "an API key was sent as the admin token");
        }
        return Err(ApiError::admin_token().with_message(
            "API keys are not admin tokens; send the admin token (CLORO_ADMIN_TOKEN) as `Authorization: Bearer <admin token>`",
        ).into());
    }
    static WRONG_ADMIN_TOKEN: LogLimit = LogLimit::per_second();
    if let Some(suppressed) = WRONG_ADMIN_TOKEN.admit() {
        tracing::warn!(suppressed, "a wrong admin token was sent");
    }
    Err(ApiError::admin_token().into())
}

/// The 429 for an address that used up its allowance of wrong tokens.
fn locked_out(error: AuthError) -> Refusal {
    let retry_after = error.retry_after().unwrap_or(1);
    Box::new(ApiError::from_auth(&error).with_message(format!(
        "too many wrong admin tokens from this address; every admin request from it is refused for {retry_after} s"
    )))
}

async fn create_key(
    app: &App,
    actor: &str,
    request: CreateKeyRequest,
    now: Timestamp,
) -> Result<Response<Body>, Refusal> {
    let issued = app
        .admin()
        .create(request, actor, now)
        .await
        .map_err(admin_error)?;
    let record = &issued.record;
    tracing::info!(key_id = %record.id, account_id = %record.account_id, start = %record.start, "key created");
    let body = CreateKeyResponse {
        key: Some(issued.key.expose_secret().to_owned()),
        key_info: record.to_info(now),
    };
    Ok(json(StatusCode::CREATED, &body))
}

async fn list_keys(
    app: &App,
    query: Option<&str>,
    now: Timestamp,
) -> Result<Response<Body>, Refusal> {
    let query = Query::parse(query, &["account_id", "limit", "cursor", "include_revoked"])?;
    let account = query.account_id()?;
    let limit = query.limit()?;
    let include_revoked = match query.get("include_revoked") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(invalid(
                "include_revoked",
                "include_revoked must be `true` or `false`",
            ));
        }
    };
    let page = app
        .admin()
        .list(&account, limit, query.get("cursor"), include_revoked)
        .await
        .map_err(admin_error)?;
    let body = ListKeysResponse {
        keys: page.items.iter().map(|r| r.to_info(now)).collect(),
        next_cursor: page.next.as_ref().map(Cursor::encode),
    };
    Ok(json(StatusCode::OK, &body))
}

async fn update_key(
    app: &App,
    actor: &str,
    id: &KeyId,
    patch: &UpdateKeyRequest,
    now: Timestamp,
) -> Result<Response<Body>, Refusal> {
    let record = app
        .admin()
        .update(id, patch, actor, now)
        .await
        .map_err(admin_error)?;
    tracing::info!(key_id = %record.id, account_id = %record.account_id, "key updated");
    Ok(json(StatusCode::OK, &record.to_info(now)))
}

async fn revoke_key(
    app: &App,
    actor: &str,
    id: &KeyId,
    request: RevokeKeyRequest,
    now: Timestamp,
) -> Result<Response<Body>, Refusal> {
    let record = app
        .admin()
        .revoke(id, request.reason.as_deref(), actor, now)
        .await
        .map_err(admin_error)?;
    tracing::info!(key_id = %record.id, account_id = %record.account_id, "key revoked");
    Ok(json(StatusCode::OK, &record.to_info(now)))
}

async fn rotate_key(
    app: &App,
    actor: &str,
    id: &KeyId,
    request: &RotateKeyRequest,
    now: Timestamp,
) -> Result<Response<Body>, Refusal> {
    let rotation = app
        .admin()
        .rotate(id, request, actor, now)
        .await
        .map_err(admin_error)?;
    let new: &KeyRecord = &rotation.issued.record;
    tracing::info!(
        key_id = %rotation.previous.id,
        new_key_id = %new.id,
        start = %new.start,
        grace_period_seconds = request.grace_period_seconds,
        "key rotated"
    );
    let body = RotateKeyResponse {
        key: Some(rotation.issued.key.expose_secret().to_owned()),
        key_info: new.to_info(now),
        previous: rotation.previous.to_info(now),
    };
    Ok(json(StatusCode::CREATED, &body))
}

/// The `granularity`, `from` and `to` of a usage read (SPEC §10).
fn usage_range(
    query: Option<&str>,
) -> Result<(UsageGranularity, Option<Timestamp>, Option<Timestamp>), Refusal> {
    let query = Query::parse(query, &["granularity", "from", "to"])?;
    let granularity = match query.get("granularity") {
        None => UsageGranularity::default(),
        Some(text) => UsageGranularity::parse(text).ok_or_else(|| {
            invalid(
                "granularity",
                "must be `minute`, `hour` (the default) or `day`",
            )
        })?,
    };
    let time = |field: &'static str| {
        query
            .get(field)
            .map(|text| {
                text.parse::<Timestamp>().map_err(|_| {
                    invalid(
                        field,
                        "must be an RFC 3339 time such as 2026-12-01T00:00:00Z",
                    )
                })
            })
            .transpose()
    };
    Ok((granularity, time("from")?, time("to")?))
}

async fn list_audit(app: &App, query: Option<&str>) -> Result<Response<Body>, Refusal> {
    let query = Query::parse(query, &["account_id", "limit", "cursor"])?;
    let account = query.account_id()?;
    let limit = query.limit()?;
    let page = app
        .admin()
        .audit(&account, limit, query.get("cursor"))
        .await
        .map_err(admin_error)?;
    let body = ListAuditResponse {
        events: page.items,
        next_cursor: page.next.as_ref().map(Cursor::encode),
    };
    Ok(json(StatusCode::OK, &body))
}

fn account_info((record, plan): (AccountRecord, cloro_auth_core::PlanName)) -> AccountInfo {
    AccountInfo {
        account_id: record.account_id,
        plan,
        key_count: record.key_count,
    }
}

/// A key id from the path. Ids are opaque to clients, so one that could
/// never exist is simply not found.
fn key_id(text: &str) -> Result<KeyId, Refusal> {
    KeyId::new(text).map_err(|_| admin_error(AdminError::KeyNotFound))
}

/// An account id from the path (percent-decoded, like a query value).
fn account_id(raw: &str) -> Result<AccountId, Refusal> {
    let text = percent_decode(raw).unwrap_or_default();
    parse_account_id(&text)
}

fn parse_account_id(text: &str) -> Result<AccountId, Refusal> {
    AccountId::new(text).map_err(|why| {
        invalid(
            "account_id",
            format!("account_id {why}; use 1 to 64 of A-Z a-z 0-9 _ -"),
        )
    })
}

/// The SPEC §4 answer for an admin action that failed. Store and internal
/// failures are logged in full and answered with a generic message.
/// A store failure of a route that does not go through `KeyAdmin`,
/// answered as the same failure of one that does.
pub(crate) fn store_refusal(error: cloro_keystore::StoreError) -> Refusal {
    admin_error(AdminError::from(error))
}

pub(crate) fn admin_error(error: AdminError) -> Refusal {
    Box::new(match error.code() {
        ErrorCode::InvalidRequest => match &error {
            AdminError::InvalidField { field, .. } => {
                ApiError::invalid_field(*field, error.to_string())
            }
            _ => ApiError::new(ErrorCode::InvalidRequest, error.to_string()),
        },
        code @ (ErrorCode::KeyNotFound | ErrorCode::AccountNotFound | ErrorCode::KeyRevoked) => {
            ApiError::new(code, error.to_string())
        }
        ErrorCode::AuthUnavailable => {
            static STORE_DOWN: LogLimit = LogLimit::per_second();
            if let Some(suppressed) = STORE_DOWN.admit() {
                tracing::warn!(%error, suppressed, "admin action failed: the key store is unavailable");
            }
            ApiError::new(
                ErrorCode::AuthUnavailable,
                "the key store is unavailable; nothing was changed, retry shortly",
            )
            .with_retry_after(1)
        }
        _ => {
            tracing::error!(%error, "admin action failed");
            ApiError::new(
                ErrorCode::InternalError,
                "the action failed on the server; it was logged, retry or report it with the request id",
            )
        }
    })
}

/// 405 with the `Allow` field RFC 9110 §15.5.6 asks for.
/// The request body, up to [`MAX_BODY_BYTES`].
async fn read_body<B>(body: B) -> Result<Bytes, Refusal>
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(invalid(
            "body",
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        )),
        Err(error) if error.is::<crate::BodyTimeout>() => Err(invalid("body", error.to_string())),
        Err(error) => {
            tracing::info!(%error, "the admin request body could not be read");
            Err(invalid("body", "the body could not be read"))
        }
    }
}

/// A required JSON body. `details.field` names the field at fault, as a
/// path such as `rate_limit.requests` or `scopes[1]`.
pub(crate) fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Refusal> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(json_error)?;
    // Without this, `{"name":"a"} trailing` would pass.
    deserializer
        .end()
        .map_err(|error| invalid("body", format!("the body is not valid JSON: {error}")))?;
    Ok(value)
}

/// A body that may be left out (revoke, rotate): empty means every field
/// at its default.
fn parse_optional_body<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, Refusal> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_body(bytes)
}

fn json_error(error: serde_path_to_error::Error<serde_json::Error>) -> Refusal {
    let inner = error.inner();
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            invalid("body", format!("the body is not valid JSON: {inner}"))
        }
        Category::Data => {
            let path = error.path().to_string();
            // serde quotes a mistyped string whole; a key sent where it
            // does not belong must not come back in the answer.
            let message = cloro_auth_core::redact_keys_in(&inner.to_string());
            // A missing field fails at the object that lacks it, so the path
            // is the object's; the field's name is only in the message.
            let field = if path == "." {
                quoted_field(&message).unwrap_or("body").to_owned()
            } else {
                path
            };
            invalid(field.clone(), format!("invalid `{field}`: {message}"))
        }
    }
}

/// `x` from serde's "missing field `x`" or "unknown field `x`".
fn quoted_field(message: &str) -> Option<&str> {
    let rest = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))?;
    rest.split_once('`').map(|(field, _)| field)
}

/// Routes without query parameters refuse any, as bodies refuse unknown
/// fields: a misspelt parameter must not be silently ignored.
pub(crate) fn no_query(query: Option<&str>) -> Result<(), Refusal> {
    Query::parse(query, &[]).map(|_| ())
}

/// A percent-decoded query string with only the parameters a route takes,
/// each at most once.
#[derive(Debug)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub(crate) fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, Refusal> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let Some(name) = percent_decode(raw_name) else {
                return Err(invalid(
                    "query",
                    "a query parameter name is not valid percent-encoded UTF-8",
                ));
            };
            if !allowed.contains(&name.as_str()) {
                let takes = if allowed.is_empty() {
                    "this route takes no query parameters".to_owned()
                } else {
                    format!("this route takes {}", allowed.join(", "))
                };
                return Err(invalid(name, format!("unknown query parameter; {takes}")));
            }
            let Some(value) = percent_decode(raw_value) else {
                return Err(invalid(
                    name,
                    "the value is not valid percent-encoded UTF-8",
                ));
            };
            if pairs.iter().any(|(seen, _)| *seen == name) {
                return Err(invalid(name, "given more than once"));
            }
            pairs.push((name, value));
        }
        Ok(Query { pairs })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// `account_id`, required by both listings.
    fn account_id(&self) -> Result<AccountId, Refusal> {
        let text = self.get("account_id").ok_or_else(|| {
            invalid(
                "account_id",
                "account_id is required, e.g. ?account_id=acct_123",
            )
        })?;
        parse_account_id(text)
    }

    /// `limit`: 1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`].
    pub(crate) fn limit(&self) -> Result<usize, Refusal> {
        let Some(text) = self.get("limit") else {
            return Ok(DEFAULT_LIMIT);
        };
        match text.parse::<usize>() {
            Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
            _ => Err(invalid(
                "limit",
                format!("limit must be a whole number from 1 to {MAX_LIMIT}"),
            )),
        }
    }
}

/// Percent-decoding of one query component (`+` is a space, as HTML forms
/// send it). `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        at += 1;
        match byte {
            b'+' => decoded.push(b' '),
            b'%' => {
                let digit = |i: usize| bytes.get(i).and_then(|&c| char::from(c).to_digit(16));
                let (high, low) = (digit(at)?, digit(at + 1)?);
                // Two hex digits make at most 255.
                decoded.push(u8::try_from(high * 16 + low).ok()?);
                at += 2;
            }
            other => decoded.push(other),
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("acct%5F1").as_deref(), Some("acct_1"));
        assert_eq!(percent_decode("a+b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("%e2%9c%93").as_deref(), Some("\u{2713}"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn query_is_strict() {
        let query = Query::parse(
            Some("account_id=acct%2D1&limit=5"),
            &["account_id", "limit"],
        );
        let query = query.unwrap();
        assert_eq!(query.account_id().unwrap().as_str(), "acct-1");
        assert_eq!(query.limit().unwrap(), 5);
        for (raw, field) in [
            ("limit=1&limit=2", "limit"),
            ("colour=red", "colour"),
            ("%zz=1", "query"),
        ] {
            let error = Query::parse(Some(raw), &["limit"]).unwrap_err();
            assert_eq!(error.code(), ErrorCode::InvalidRequest, "{raw}");
            assert_eq!(error.field(), Some(field), "{raw}");
        }
        let none = Query::parse(None, &["limit"]).unwrap();
        assert_eq!(none.limit().unwrap(), DEFAULT_LIMIT);
        assert!(none.account_id().is_err());
        for bad in ["0", "101", "-1", "x"] {
            let query = Query::parse(Some(&format!("limit={bad}")), &["limit"]).unwrap();
            assert!(query.limit().is_err(), "{bad}");
        }
    }

    fn field_of<T: DeserializeOwned + std::fmt::Debug>(body: &str) -> String {
        let error = parse_body::<T>(body.as_bytes()).unwrap_err();
        error.field().unwrap_or_default().to_owned()
    }

    #[test]
    fn json_errors_name_the_field() {
        type Create = CreateKeyRequest;
        assert_eq!(field_of::<Create>("{\"name\": \"x\"}"), "account_id");
        assert_eq!(
            field_of::<Create>("{\"account_id\": \"a\", \"name\": \"x\", \"colour\": 1}"),
            "colour"
        );
        assert_eq!(
            field_of::<Create>(
                "{\"account_id\": \"a\", \"name\": \"x\", \"rate_limit\": {\"requests\": 0, \"per_seconds\": 1}}"
            ),
            "rate_limit.requests"
        );
        assert_eq!(
            field_of::<Create>(
                "{\"account_id\": \"a\", \"name\": \"x\", \"scopes\": [\"ok\", \"No\"]}"
            ),
            "scopes[1]"
        );
        assert_eq!(
            field_of::<Create>(
                "{\"account_id\": \"a\", \"name\": \"x\", \"expires_at\": \"soon\"}"
            ),
            "expires_at"
        );
        assert_eq!(field_of::<Create>("{\"account_id\": \"a\""), "body");
        assert_eq!(field_of::<Create>(""), "body");
        assert_eq!(field_of::<Create>("[]"), "body");
        assert_eq!(
            field_of::<Create>("{\"account_id\": \"a\", \"name\": \"x\"} {}"),
            "body"
        );
        assert_eq!(field_of::<UpdateKeyRequest>("{\"enabled\": 1}"), "enabled");
        let empty: RotateKeyRequest = parse_optional_body(b" \n").unwrap();
        assert_eq!(empty, RotateKeyRequest::default());
    }
}
