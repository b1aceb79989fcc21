//! The Cloro API-key check for HTTP, in one crate that a hyper or axum
//! service can embed without the server (SPEC §1, §9):
//!
//! - [`Guard`]: the one authentication path (key in URL, `Authorization`,
//!   the verifier, route scopes), taking a [`Target`], a request's method
//!   and path in the one normal form of SPEC §9;
//! - [`ApiKeyLayer`]: the same check as a tower `Layer`;
//! - [`ApiError`] and the limit headers: the only place a SPEC §4 error
//!   body, challenge or `X-RateLimit-*` header is written;
//! - the client address behind trusted proxies, route scopes, request ids.
//!
//! `cloro-server` is built on it; what it depends on is listed in its
//! `Cargo.toml`, and nothing of the server's (flags, metrics, TLS).

#![forbid(unsafe_code)]

mod client_addr;
mod guard;
mod layer;
mod request_id;
mod request_target;
mod responses;
mod route_scope;

pub use client_addr::client_address;
pub use guard::{Guard, RequestFacts, add_identity_headers, add_limit_headers, refusal_response};
pub use layer::{ApiKeyBody, ApiKeyLayer, ApiKeyService, Identity, PeerAddr};
pub use request_id::request_id;
pub use request_target::{Target, TargetError, path_refusal};
pub use responses::{
    AnsweredCode, ApiError, Body, BoxError, add_concurrency_headers, add_rate_headers, empty, full,
    json,
};
pub use route_scope::{RouteCosts, RouteScopes, RouteTable};
