//! `/admin/v1/webhooks…` (SPEC §12): register an endpoint (its secret in
//! that answer only), list, get and delete endpoints, and list one's
//! deliveries. Behind the admin token like every admin route; `POST`
//! honours `Idempotency-Key` there too.

use std::collections::BTreeSet;

use bytes::Bytes;
use cloro_auth_core::ErrorCode;
use cloro_auth_core::webhook::WebhookSecret;
use cloro_auth_core::wire::{
    CreateWebhookRequest, CreateWebhookResponse, ListDeliveriesResponse, ListWebhooksResponse,
    MAX_WEBHOOKS, WebhookInfo,
};
use cloro_keystore::{Cursor, PageRequest, StoreError, WebhookRecord};
use http::{Response, StatusCode};
use jiff::Timestamp;

use super::Webhooks;
use super::target::check_url;
use crate::admin_api::{Query, Refusal, invalid, no_query, parse_body, store_refusal};
use crate::routes::AdminRoute;
use cloro_guard::{ApiError, Body, json};

/// Answers one webhook admin route; `id` is the path's endpoint id.
pub(crate) async fn answer(
    webhooks: &Webhooks,
    route: AdminRoute,
    id: &str,
    query: Option<&str>,
    body: Bytes,
    now: Timestamp,
) -> Result<Response<Body>, Refusal> {
    match route {
        AdminRoute::CreateWebhook => {
            no_query(query)?;
            let request: CreateWebhookRequest = parse_body(&body)?;
            let created = webhooks.create(request, now).await?;
            Ok(json(StatusCode::CREATED, &created))
        }
        AdminRoute::ListWebhooks => {
            no_query(query)?;
            let listed = webhooks.store.webhooks().await.map_err(store_refusal)?;
            Ok(json(
                StatusCode::OK,
                &ListWebhooksResponse {
                    webhooks: listed.into_iter().map(|w| w.info).collect(),
                },
            ))
        }
        AdminRoute::GetWebhook => {
            no_query(query)?;
            let found = webhooks.find(id).await?;
            Ok(json(StatusCode::OK, &found.info))
        }
        AdminRoute::DeleteWebhook => {
            no_query(query)?;
            if !is_webhook_id(id) {
                return Err(not_found(id));
            }
            if !webhooks
                .store
                .remove_webhook(id)
                .await
                .map_err(store_refusal)?
            {
                return Err(not_found(id));
            }
            tracing::info!(webhook_id = %id, "webhook deleted");
            Ok(Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(cloro_guard::full(Bytes::new()))
                .unwrap_or_default())
        }
        AdminRoute::WebhookDeliveries => {
            let query = Query::parse(query, &["limit", "cursor"])?;
            webhooks.find(id).await?;
            let after = match query.get("cursor") {
                Some(text) => Some(Cursor::decode(text).ok_or_else(|| {
                    invalid(
                        "cursor",
                        "cursor is not one this server gave; start without it",
                    )
                })?),
                None => None,
            };
            let page = PageRequest {
                limit: query.limit()?,
                after,
            };
            let found = webhooks
                .store
                .deliveries(id, &page)
                .await
                .map_err(store_refusal)?;
            Ok(json(
                StatusCode::OK,
                &ListDeliveriesResponse {
                    deliveries: found.items.iter().map(|d| d.to_info()).collect(),
                    next_cursor: found.next.as_ref().map(Cursor::encode),
                },
            ))
        }
        _ => Err(Box::new(ApiError::new(
            ErrorCode::InternalError,
            "a non-webhook route reached the webhook handler",
        ))),
    }
}

/// Whether `id` has the shape of one we make (`wh_` and 24 hex digits).
/// Anything else is not found without asking the store, and is never
/// echoed or made part of a store key.
fn is_webhook_id(id: &str) -> bool {
    id.strip_prefix("wh_")
        .is_some_and(|hex| hex.len() == 24 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn not_found(id: &str) -> Refusal {
    let shown = if is_webhook_id(id) {
        id
    } else {
        "with that id"
    };
    Box::new(ApiError::new(
        ErrorCode::NotFound,
        format!("no webhook {shown}; GET /admin/v1/webhooks lists them"),
    ))
}

impl Webhooks {
    pub(crate) async fn find(&self, id: &str) -> Result<WebhookRecord, Refusal> {
        if !is_webhook_id(id) {
            return Err(not_found(id));
        }
        let listed = self.store.webhooks().await.map_err(store_refusal)?;
        listed
            .into_iter()
            .find(|w| w.info.id == id)
            .ok_or_else(|| not_found(id))
    }

    async fn create(
        &self,
        request: CreateWebhookRequest,
        now: Timestamp,
    ) -> Result<CreateWebhookResponse, Refusal> {
        check_url(&request.url, self.allow_private)
            .map_err(|error| invalid("url", error.message()))?;
        if request.events.is_empty() {
            return Err(invalid(
                "events",
                "name at least one event, e.g. [\"key.revoked\"]",
            ));
        }
        let unique: BTreeSet<_> = request.events.iter().collect();
        if unique.len() != request.events.len() {
            return Err(invalid("events", "each event may be named once"));
        }
        if self.store.webhooks().await.map_err(store_refusal)?.len() >= MAX_WEBHOOKS {
            return Err(invalid(
                "url",
                format!("this server keeps at most {MAX_WEBHOOKS} webhooks; delete one first"),
            ));
        }
        let id = new_webhook_id()?;
        let secret = WebhookSecret::generate().map_err(|_| no_randomness())?;
        let sealed_secret = self.key.seal(&id, &secret).map_err(|_| no_randomness())?;
        let info = WebhookInfo {
            id,
            url: request.url,
            events: request.events,
            account_id: request.account_id,
            created_at: now,
        };
        let record = WebhookRecord {
            info: info.clone(),
            sealed_secret,
        };
        match self.store.add_webhook(&record).await {
            Ok(()) => {}
            Err(StoreError::Conflict) => {
                return Err(Box::new(ApiError::new(
                    ErrorCode::InternalError,
                    "a new webhook id was taken; retry",
                )));
            }
            Err(error) => return Err(store_refusal(error)),
        }
        tracing::info!(webhook_id = %info.id, events = info.events.len(), "webhook created");
        Ok(CreateWebhookResponse {
            webhook: info,
            secret: Some(secret.expose().to_string()),
        })
    }
}

fn no_randomness() -> Refusal {
    Box::new(ApiError::new(
        ErrorCode::InternalError,
        "the server could not get random bytes; retry",
    ))
}

/// `wh_` and 24 random hex digits.
fn new_webhook_id() -> Result<String, Refusal> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|_| no_randomness())?;
    let mut id = String::from("wh_");
    for byte in bytes {
        id.push_str(&format!("{byte:02x}"));
    }
    Ok(id)
}
