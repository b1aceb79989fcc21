//! Operators (SPEC §13): who is calling the admin API, and the named admin
//! tokens behind `/admin/v1/tokens`.
//!
//! The bootstrap token (SPEC §7: `CLORO_ADMIN_TOKEN` or the data
//! directory's file) is the operator `bootstrap`, role `admin`, and is
//! configured, never stored. Every other token is `cloro_admin_` and 64
//! hex digits, stored as SHA-256 only, with a name (the `actor` of every
//! audit event it causes) and a role: `read` tokens may only read, and get
//! 403 `INSUFFICIENT_PERMISSIONS` for anything else. A deleted token stops
//! working at once on every node: each request looks its hash up in the
//! store (admin traffic is light; nothing is cached).

use bytes::Bytes;
use cloro_auth_core::wire::{
    AdminRole, AdminTokenInfo, BOOTSTRAP_TOKEN_NAME, CreateAdminTokenRequest,
    CreateAdminTokenResponse, ListAdminTokensResponse, MAX_ADMIN_TOKENS,
};
use cloro_auth_core::{ErrorCode, KeyHash};
use cloro_keystore::{AdminTokenRecord, StoreError};
use http::{Method, Response, StatusCode};
use jiff::{SignedDuration, Timestamp};

use crate::App;
use crate::admin_api::{Refusal, invalid, no_query, parse_body, store_refusal};
use crate::routes::AdminRoute;
use cloro_guard::{ApiError, Body, json};

/// Who made an admin request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Operator {
    /// The token's name: the audit `actor`.
    pub(crate) name: String,
    /// What it may do.
    pub(crate) role: AdminRole,
}

impl Operator {
    /// The bootstrap token's operator.
    pub(crate) fn bootstrap() -> Self {
        Operator {
            name: BOOTSTRAP_TOKEN_NAME.to_owned(),
            role: AdminRole::Admin,
        }
    }

    /// Refuses a request that changes state from a `read` token. Only
    /// `GET` and `HEAD` read.
    pub(crate) fn may(&self, method: &Method) -> Result<(), Refusal> {
        if self.role == AdminRole::Admin || matches!(*method, Method::GET | Method::HEAD) {
            return Ok(());
        }
        Err(Box::new(ApiError::new(
            ErrorCode::InsufficientPermissions,
            format!(
                "the admin token `{}` has the read role: it may only read (GET); use a token with the admin role to change anything",
                self.name
            ),
        )))
    }
}

/// How stale a token's `last_used_at` may be before a request writes it:
/// a write a minute per token, not one per request.
const TOUCH_EVERY: SignedDuration = SignedDuration::from_secs(60);

/// The operator of a named token, if `token` is one (the caller has ruled
/// out the bootstrap token).
///
/// # Errors
/// A store failure, as the admin API answers one.
pub(crate) async fn named(app: &App, token: &str) -> Result<Option<Operator>, Refusal> {
    if !token.starts_with("cloro_admin_") {
        return Ok(None);
    }
    let hash = KeyHash::of(token.as_bytes());
    let Some(record) = app
        .admin_tokens()
        .token_by_hash(&hash)
        .await
        .map_err(store_refusal)?
    else {
        return Ok(None);
    };
    let now = app.clock().now();
    let stale = record
        .info
        .last_used_at
        .is_none_or(|last| last.checked_add(TOUCH_EVERY).is_ok_and(|due| due <= now));
    if stale {
        let minute = now.round(jiff::Unit::Minute).unwrap_or(now);
        if let Err(error) = app
            .admin_tokens()
            .touch_token(&record.info.id, minute)
            .await
        {
            tracing::debug!(%error, "could not note an admin token's last use");
        }
    }
    Ok(Some(Operator {
        name: record.info.name,
        role: record.info.role,
    }))
}

/// `/admin/v1/tokens` and `/admin/v1/tokens/{id}`.
pub(crate) async fn answer(
    app: &App,
    route: AdminRoute,
    id: &str,
    query: Option<&str>,
    body: Bytes,
    now: Timestamp,
) -> Result<Response<Body>, Refusal> {
    no_query(query)?;
    match route {
        AdminRoute::CreateToken => {
            let request: CreateAdminTokenRequest = parse_body(&body)?;
            create(app, request, now).await
        }
        AdminRoute::ListTokens => {
            let tokens = app.admin_tokens().tokens().await.map_err(store_refusal)?;
            Ok(json(
                StatusCode::OK,
                &ListAdminTokensResponse {
                    tokens: tokens.into_iter().map(|record| record.info).collect(),
                },
            ))
        }
        AdminRoute::DeleteToken => {
            let removed = is_token_id(id)
                && app
                    .admin_tokens()
                    .remove_token(id)
                    .await
                    .map_err(store_refusal)?;
            if !removed {
                return Err(not_found());
            }
            tracing::info!(token_id = id, "admin token deleted");
            Ok(Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(cloro_guard::full(Bytes::new()))
                .unwrap_or_default())
        }
        _ => Err(not_found()),
    }
}

async fn create(
    app: &App,
    request: CreateAdminTokenRequest,
    now: Timestamp,
) -> Result<Response<Body>, Refusal> {
    let name = request.name;
    if !cloro_auth_core::wire::is_token_name(&name) {
        return Err(invalid(
            "name",
            "use 1 to 64 of a-z 0-9 _ . - (it is the audit log's actor)",
        ));
    }
    if name == BOOTSTRAP_TOKEN_NAME || name == "admin" || name.starts_with("portal:") {
        return Err(invalid(
            "name",
            format!("`{name}` is reserved; choose another name"),
        ));
    }
    let token = crate::admin_token::generate().map_err(|_| randomness())?;
    let mut id_bytes = [0u8; 12];
    getrandom::fill(&mut id_bytes).map_err(|_| randomness())?;
    let mut id = String::from("tok_");
    for byte in id_bytes {
        id.push_str(&format!("{byte:02x}"));
    }
    let record = AdminTokenRecord {
        info: AdminTokenInfo {
            id,
            name,
            role: request.role,
            created_at: now,
            last_used_at: None,
        },
        hash: KeyHash::of(token.as_bytes()),
    };
    match app
        .admin_tokens()
        .add_token(&record, MAX_ADMIN_TOKENS)
        .await
    {
        Ok(()) => {}
        Err(StoreError::Conflict) => {
            return Err(invalid(
                "name",
                format!(
                    "a token named `{}` exists already, or there are {MAX_ADMIN_TOKENS} tokens (delete one first)",
                    record.info.name
                ),
            ));
        }
        Err(error) => return Err(store_refusal(error)),
    }
    tracing::info!(token_id = %record.info.id, name = %record.info.name, role = record.info.role.as_str(), "admin token created");
    Ok(json(
        StatusCode::CREATED,
        &CreateAdminTokenResponse {
            token: Some(token),
            token_info: record.info,
        },
    ))
}

/// `tok_` and 24 hex digits: anything else is no token's id (and never
/// reaches the store).
fn is_token_id(id: &str) -> bool {
    id.strip_prefix("tok_").is_some_and(|hex| {
        hex.len() == 24
            && hex
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    })
}

fn not_found() -> Refusal {
    Box::new(ApiError::new(
        ErrorCode::NotFound,
        "no admin token with this id; GET /admin/v1/tokens lists them",
    ))
}

fn randomness() -> Refusal {
    Box::new(ApiError::new(
        ErrorCode::InternalError,
        "the system's random number generator failed; nothing was made",
    ))
}
