//! The usage calls of [`AdminClient`] (SPEC §10): a key's, or an
//! account's, answered requests per bucket and outcome.

use cloro_auth_core::wire::{AccountUsageResponse, KeyUsageResponse, UsageGranularity};
use cloro_auth_core::{AccountId, KeyId};
use jiff::Timestamp;

use super::AdminClient;
use crate::error::Error;
use crate::response::Response;

/// Which buckets to read; every field defaults on the server (hourly, the
/// last 24 hours).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsageQuery {
    /// The buckets' width.
    pub granularity: Option<UsageGranularity>,
    /// The range's start.
    pub from: Option<Timestamp>,
    /// The range's end.
    pub to: Option<Timestamp>,
}

impl UsageQuery {
    /// The query string, `?…` or empty. Times print as RFC 3339 in UTC
    /// (`2026-12-01T00:00:00Z`), which needs no escaping in a query.
    fn to_query(self) -> String {
        let mut params = Vec::new();
        if let Some(granularity) = self.granularity {
            params.push(format!("granularity={}", granularity.as_str()));
        }
        if let Some(from) = self.from {
            params.push(format!("from={from}"));
        }
        if let Some(to) = self.to {
            params.push(format!("to={to}"));
        }
        if params.is_empty() {
            String::new()
        } else {
            format!("?{}", params.join("&"))
        }
    }
}

impl AdminClient {
    /// `GET /admin/v1/keys/{id}/usage`.
    ///
    /// # Errors
    /// Any [`Error`]; a range outside retention or over 1,500 buckets is
    /// `INVALID_REQUEST`.
    pub async fn key_usage(
        &self,
        id: &KeyId,
        query: UsageQuery,
    ) -> Result<Response<KeyUsageResponse>, Error> {
        self.get(&format!("/admin/v1/keys/{id}/usage{}", query.to_query()))
            .await
    }

    /// `GET /admin/v1/accounts/{account_id}/usage`.
    ///
    /// # Errors
    /// As [`AdminClient::key_usage`]; an account without keys or plan is
    /// `ACCOUNT_NOT_FOUND`.
    pub async fn account_usage(
        &self,
        account_id: &AccountId,
        query: UsageQuery,
    ) -> Result<Response<AccountUsageResponse>, Error> {
        self.get(&format!(
            "/admin/v1/accounts/{account_id}/usage{}",
            query.to_query()
        ))
        .await
    }
}
