//! The named admin token calls of [`AdminClient`] (SPEC §13): make a token
//! for a person or a system, list them, delete one.

use cloro_auth_core::wire::{
    AdminRole, CreateAdminTokenRequest, CreateAdminTokenResponse, ListAdminTokensResponse,
};
use http::Method;

use super::AdminClient;
use super::webhooks::segment;
use crate::error::Error;
use crate::idempotency::IdempotencyKey;
use crate::response::Response;
use crate::transport::{Call, decode_secret};

impl AdminClient {
    /// `POST /admin/v1/tokens`: a token named `name` with `role`. The
    /// answer holds the token, the only time it is shown. Sent with an
    /// `Idempotency-Key`, so a retry makes it once; a replay answers
    /// `token: None` (the server keeps only its hash): delete that token
    /// and make another.
    ///
    /// # Errors
    /// Any [`Error`]; a taken or reserved name is `INVALID_REQUEST`, and a
    /// `read` token calling this is `INSUFFICIENT_PERMISSIONS`.
    pub async fn create_admin_token(
        &self,
        name: &str,
        role: AdminRole,
    ) -> Result<Response<CreateAdminTokenResponse>, Error> {
        let request = CreateAdminTokenRequest {
            name: name.to_owned(),
            role,
        };
        let call = Call::new(Method::POST, "/admin/v1/tokens")
            .json(&request)?
            .idempotency_key(&IdempotencyKey::random());
        decode_secret(self.transport.send(&call, &self.authorization).await?)
    }

    /// `GET /admin/v1/tokens`: every named token, newest first.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn admin_tokens(&self) -> Result<Response<ListAdminTokensResponse>, Error> {
        self.get("/admin/v1/tokens").await
    }

    /// `DELETE /admin/v1/tokens/{id}`: the token is refused from the next
    /// request on, on every node.
    ///
    /// # Errors
    /// Any [`Error`]; an unknown id is `NOT_FOUND`.
    pub async fn delete_admin_token(&self, id: &str) -> Result<Response<()>, Error> {
        self.delete(&format!("/admin/v1/tokens/{}", segment(id)))
            .await
    }
}
