//! The webhook calls of [`AdminClient`] (SPEC §12): register endpoints,
//! list, show and delete them, and list an endpoint's deliveries. For the
//! receiving side, see [`crate::webhooks`].

use cloro_auth_core::wire::{
    CreateWebhookRequest, CreateWebhookResponse, ListDeliveriesResponse, ListWebhooksResponse,
    WebhookInfo,
};
use http::Method;

use super::{AdminClient, push_page_params};
use crate::error::Error;
use crate::idempotency::IdempotencyKey;
use crate::response::Response;
use crate::transport::{Call, decode, decode_secret};

/// An id as a path segment: ids are a prefix and hex digits, so anything
/// else is escaped rather than trusted.
pub(super) fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl AdminClient {
    /// `POST /admin/v1/webhooks`: registers an endpoint. The answer holds
    /// its signing secret, the only time it is shown. Sent with an
    /// `Idempotency-Key`, so a retry registers it once; a replay answers
    /// `secret: None` (the server never stores the secret in the clear):
    /// delete that endpoint and register it again for a usable secret.
    ///
    /// # Errors
    /// Any [`Error`]; a private address (unless the server allows them),
    /// a URL with credentials or no events are `INVALID_REQUEST`.
    pub async fn create_webhook(
        &self,
        request: &CreateWebhookRequest,
    ) -> Result<Response<CreateWebhookResponse>, Error> {
        let call = Call::new(Method::POST, "/admin/v1/webhooks")
            .json(request)?
            .idempotency_key(&IdempotencyKey::random());
        decode_secret(self.transport.send(&call, &self.authorization).await?)
    }

    /// `GET /admin/v1/webhooks`: every endpoint, newest first.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn webhooks(&self) -> Result<Response<ListWebhooksResponse>, Error> {
        self.get("/admin/v1/webhooks").await
    }

    /// `GET /admin/v1/webhooks/{id}`.
    ///
    /// # Errors
    /// Any [`Error`]; an unknown id is `NOT_FOUND`.
    pub async fn webhook(&self, id: &str) -> Result<Response<WebhookInfo>, Error> {
        self.get(&format!("/admin/v1/webhooks/{}", segment(id)))
            .await
    }

    /// `DELETE /admin/v1/webhooks/{id}`: nothing more is sent to it.
    ///
    /// # Errors
    /// Any [`Error`]; an unknown id is `NOT_FOUND`.
    pub async fn delete_webhook(&self, id: &str) -> Result<Response<()>, Error> {
        self.delete(&format!("/admin/v1/webhooks/{}", segment(id)))
            .await
    }

    /// `GET /admin/v1/webhooks/{id}/deliveries`: one page, newest event
    /// first; pass the answer's `next_cursor` back for the next.
    ///
    /// # Errors
    /// Any [`Error`]; an unknown id is `NOT_FOUND`.
    pub async fn webhook_deliveries(
        &self,
        id: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Response<ListDeliveriesResponse>, Error> {
        let mut path = format!("/admin/v1/webhooks/{}/deliveries", segment(id));
        // `&limit=…&cursor=…`, or nothing: the first `&` becomes the `?`.
        let mut query = String::new();
        push_page_params(&mut query, limit, cursor);
        if let Some(query) = query.strip_prefix('&') {
            path.push('?');
            path.push_str(query);
        }
        let call = Call::new(Method::GET, path);
        decode(self.transport.send(&call, &self.authorization).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::segment;

    #[test]
    fn ids_cannot_leave_their_segment() {
        assert_eq!(segment("wh_0a1b"), "wh_0a1b");
        assert_eq!(segment("../keys"), "%2E%2E%2Fkeys");
        assert_eq!(segment("a?b#c"), "a%3Fb%23c");
    }
}
