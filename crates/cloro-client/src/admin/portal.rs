//! The account portal call of [`AdminClient`] (SPEC §13): a single-use
//! link into one account's own key pages, for an API's website to hand its
//! customer.

use cloro_auth_core::AccountId;
use cloro_auth_core::wire::PortalSessionResponse;
use http::Method;

use super::AdminClient;
use crate::error::Error;
use crate::idempotency::IdempotencyKey;
use crate::response::Response;
use crate::transport::{Call, decode_secret};

impl AdminClient {
    /// `POST /admin/v1/accounts/{account_id}/portal-sessions`: a link that
    /// opens the portal of `account_id` once, within 10 minutes. Sent with
    /// an `Idempotency-Key`, so a retry makes one link; a replay answers
    /// `url: None` (the server keeps only the link's hash): ask again.
    ///
    /// # Errors
    /// Any [`Error`]; a `read` token calling this is
    /// `INSUFFICIENT_PERMISSIONS`.
    pub async fn create_portal_session(
        &self,
        account_id: &AccountId,
    ) -> Result<Response<PortalSessionResponse>, Error> {
        let call = Call::new(
            Method::POST,
            format!("/admin/v1/accounts/{account_id}/portal-sessions"),
        )
        .idempotency_key(&IdempotencyKey::random());
        decode_secret(self.transport.send(&call, &self.authorization).await?)
    }
}
