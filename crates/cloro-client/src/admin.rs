//! [`AdminClient`]: every route of the admin API (`/admin/v1/*`, SPEC §6)
//! with the admin token, and [`Pager`] for its two paginated lists.
//!
//! Creating and rotating keys and changing credits act anew each time they
//! run: a second create would mint a key that nobody holds, a second
//! `add` would add twice. So each such call carries an `Idempotency-Key`
//! (random, or the caller's through [`AdminClient::with_idempotency_key`]),
//! the same on every attempt, and the server acts once (SPEC §11); with
//! it, they are retried like GETs. Revoking is idempotent by SPEC and a
//! merge patch (RFC 7396) sets the same fields to the same values however
//! often it is applied, so those two POST/PATCH calls are retried too.
//!
//! A replayed create or rotate carries no plaintext (it is never stored):
//! that is [`Error::KeyNotShown`], naming the key to rotate.
//!
//! Revoking leaked keys by their plaintext sends secrets, so only text that
//! is a well-formed key leaves the machine ([`LeakedKey`]), at most
//! [`MAX_LEAKED_KEYS`] to a request, and each request body is wiped once
//! sent.
//!
//! Paging trusts the server's cursors only so far: one that points back at
//! the page just read, or a list longer than [`MAX_PAGES`], ends in an
//! error instead of a loop that never ends (SPEC §9).

mod portal;
mod tokens;
mod usage;
mod webhooks;

pub use usage::UsageQuery;

use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use cloro_auth_core::wire::{
    AccountInfo, AccountQuotaResponse, AuditEvent, CreateKeyRequest, CreateKeyResponse,
    CreditsRequest, KeyInfo, ListAuditResponse, ListKeysResponse, MAX_LEAKED_KEYS, PlansResponse,
    RevokeKeyRequest, RevokeLeakedRequest, RevokeLeakedResponse, RotateKeyRequest,
    RotateKeyResponse, SetPlanRequest, UpdateKeyRequest,
};
use cloro_auth_core::{AccountId, ApiKey, KeyId, PlanName};
use http::{HeaderValue, Method};
use serde::de::DeserializeOwned;
use zeroize::Zeroize;

use crate::builder::ClientBuilder;
use crate::error::{DecodeError, Error, KeyNotShown};
use crate::idempotency::IdempotencyKey;
use crate::response::{Response, ResponseMeta};
use crate::transport::{Call, Transport, decode, decode_secret};

/// A client of the admin API, holding the admin token. Cheap to clone.
#[derive(Clone)]
pub struct AdminClient {
    transport: Arc<Transport>,
    authorization: HeaderValue,
}

impl fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // By hand, so the header value (the token in full) is never a field.
        f.debug_struct("AdminClient")
            .field("admin_token", &format_args!("<redacted>"))
            .field("transport", &self.transport)
            .finish()
    }
}

/// A new key: the plaintext, which exists only here and in the answer it
/// came in, and its record. `Debug` shows the key redacted.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct CreatedKey {
    /// The key; [`ApiKey::expose_secret`] gives the text to store.
    pub key: ApiKey,
    /// Its record.
    pub key_info: KeyInfo,
}

/// The result of a rotation: the new key and both records.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct RotatedKey {
    /// The new key.
    pub key: ApiKey,
    /// The new key's record.
    pub key_info: KeyInfo,
    /// The old key's record, with the end of its grace period.
    pub previous: KeyInfo,
}

/// Text someone found that may be a Cloro key (in a ticket, a log, a
/// paste), for [`AdminClient::revoke_leaked_keys`]. Only a well-formed key
/// is kept, as an [`ApiKey`] (redacted `Debug`, wiped on drop): any other
/// text names no key we issued, so there is nothing to send for it and it
/// is not kept at all.
#[derive(Clone)]
pub struct LeakedKey {
    /// `None` for text that is not a Cloro key.
    key: Option<ApiKey>,
}

impl LeakedKey {
    /// `text` without surrounding whitespace (no key has any; a paste often
    /// does), checked against the key format (SPEC §2) with the server's
    /// own check, so the two cannot disagree on what could be a key.
    pub fn new(text: impl AsRef<[u8]>) -> Self {
        let text = text.as_ref().trim_ascii();
        // The format is ASCII only, so text that is not UTF-8 is no key.
        let key = std::str::from_utf8(text)
            .ok()
            .and_then(|text| ApiKey::parse_token(text).ok());
        LeakedKey { key }
    }

    /// The key, when the text was a well-formed one.
    pub fn api_key(&self) -> Option<&ApiKey> {
        self.key.as_ref()
    }
}

impl From<ApiKey> for LeakedKey {
    fn from(key: ApiKey) -> Self {
        LeakedKey { key: Some(key) }
    }
}

impl From<&ApiKey> for LeakedKey {
    fn from(key: &ApiKey) -> Self {
        LeakedKey {
            key: Some(key.clone()),
        }
    }
}

impl fmt::Debug for LeakedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            // ApiKey's Debug is the redacted start.
            Some(key) => f.debug_tuple("LeakedKey").field(key).finish(),
            None => f.write_str("LeakedKey(<not a Cloro key>)"),
        }
    }
}

/// Which keys to list (`GET /admin/v1/keys`).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyListQuery {
    /// The account.
    pub account_id: AccountId,
    /// Keys per page (server default 20, at most 100).
    pub limit: Option<u32>,
    /// Start after this cursor (from a previous page).
    pub cursor: Option<String>,
    /// Revoked keys too.
    pub include_revoked: bool,
}

impl KeyListQuery {
    /// The account's unrevoked keys, newest first, in pages of the server's default size.
    pub fn new(account_id: AccountId) -> Self {
        KeyListQuery {
            account_id,
            limit: None,
            cursor: None,
            include_revoked: false,
        }
    }

    /// Keys per page.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Start after `cursor`.
    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// Whether revoked keys are listed too.
    pub fn include_revoked(mut self, include: bool) -> Self {
        self.include_revoked = include;
        self
    }

    fn path(&self) -> String {
        let mut path = format!("/admin/v1/keys?account_id={}", self.account_id);
        push_page_params(&mut path, self.limit, self.cursor.as_deref());
        if self.include_revoked {
            path.push_str("&include_revoked=true");
        }
        path
    }
}

/// Which audit events to list (`GET /admin/v1/audit`).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditQuery {
    /// The account.
    pub account_id: AccountId,
    /// Events per page (server default 20, at most 100).
    pub limit: Option<u32>,
    /// Start after this cursor (from a previous page).
    pub cursor: Option<String>,
}

impl AuditQuery {
    /// The account's events, newest first.
    pub fn new(account_id: AccountId) -> Self {
        AuditQuery {
            account_id,
            limit: None,
            cursor: None,
        }
    }

    /// Events per page.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Start after `cursor`.
    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    fn path(&self) -> String {
        let mut path = format!("/admin/v1/audit?account_id={}", self.account_id);
        push_page_params(&mut path, self.limit, self.cursor.as_deref());
        path
    }
}

/// `&limit=…&cursor=…`. Account ids need no escaping (`[A-Za-z0-9_-]`);
/// cursors are opaque, so they are escaped whatever the server sends.
fn push_page_params(path: &mut String, limit: Option<u32>, cursor: Option<&str>) {
    if let Some(limit) = limit {
        path.push_str(&format!("&limit={limit}"));
    }
    if let Some(cursor) = cursor {
        path.push_str("&cursor=");
        for byte in cursor.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                path.push(char::from(byte));
            } else {
                path.push_str(&format!("%{byte:02X}"));
            }
        }
    }
}

/// The most pages [`Pager::collect_all`] reads before it gives up: a
/// hostile or broken server could hand out fresh cursors for ever. At the
/// server's default of 20 a page that is 200,000 entries, more than anyone
/// should hold in memory at once; walk longer lists with
/// [`Pager::next_page`].
pub const MAX_PAGES: usize = 10_000;

/// A page of a paginated list.
pub trait Page: DeserializeOwned {
    /// What the page lists.
    type Item;

    /// The cursor of the next page; `None` on the last.
    fn next_cursor(&self) -> Option<&str>;

    /// The entries.
    fn into_items(self) -> Vec<Self::Item>;
}

impl Page for ListKeysResponse {
    type Item = KeyInfo;

    fn next_cursor(&self) -> Option<&str> {
        self.next_cursor.as_deref()
    }

    fn into_items(self) -> Vec<KeyInfo> {
        self.keys
    }
}

impl Page for ListAuditResponse {
    type Item = AuditEvent;

    fn next_cursor(&self) -> Option<&str> {
        self.next_cursor.as_deref()
    }

    fn into_items(self) -> Vec<AuditEvent> {
        self.events
    }
}

/// Walks a paginated list page by page, following `next_cursor`.
///
/// ```no_run
/// # async fn example(admin: cloro_client::AdminClient) -> Result<(), cloro_client::Error> {
/// use cloro_client::KeyListQuery;
/// let account = cloro_client::cloro_auth_core::AccountId::new("acct_1").expect("a valid account id");
/// let mut pages = admin.keys(KeyListQuery::new(account).limit(50));
/// while let Some(page) = pages.next_page().await? {
///     for key in &page.value().keys {
///         println!("{} {}", key.id, key.start);
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a pager does nothing until next_page is called"]
pub struct Pager<P> {
    admin: AdminClient,
    /// The path of the next page; `None` once the last was read.
    next: Option<String>,
    page: PhantomData<fn() -> P>,
}

impl<P: Page> Pager<P> {
    /// The next page, or `None` after the last one.
    ///
    /// # Errors
    /// Any [`Error`]; the pager stays on the failed page, so calling again
    /// retries it. A page whose `next_cursor` leads back to itself is an
    /// [`Error::Decode`]: following it would never end.
    pub async fn next_page(&mut self) -> Result<Option<Response<P>>, Error> {
        let Some(path) = &self.next else {
            return Ok(None);
        };
        let page: Response<P> = self.admin.get(path).await?;
        let next = page
            .value()
            .next_cursor()
            .map(|cursor| with_cursor(path, cursor));
        if next.as_ref() == Some(path) {
            let meta = page.meta();
            return Err(DecodeError::new(
                meta.status,
                meta.request_id.clone(),
                "the page's next_cursor is the cursor that fetched it, so the list would never end"
                    .to_owned(),
            )
            .into());
        }
        self.next = next;
        Ok(Some(page))
    }

    /// Every remaining entry, page after page, for at most [`MAX_PAGES`]
    /// pages.
    ///
    /// # Errors
    /// The first [`Error`] of any page; an [`Error::Decode`] when the list
    /// goes on past [`MAX_PAGES`] pages.
    pub async fn collect_all(mut self) -> Result<Vec<P::Item>, Error> {
        let mut items = Vec::new();
        let mut pages = 0;
        while let Some(page) = self.next_page().await? {
            pages += 1;
            if pages == MAX_PAGES && self.next.is_some() {
                let meta = page.meta();
                return Err(DecodeError::new(
                    meta.status,
                    meta.request_id.clone(),
                    format!(
                        "the list goes on past {MAX_PAGES} pages; read it page by page with a cursor"
                    ),
                )
                .into());
            }
            items.extend(page.into_value().into_items());
        }
        Ok(items)
    }
}

/// `path` with its `cursor` parameter replaced by `cursor`. Every list
/// path has `account_id` first, so the query is never left empty.
fn with_cursor(path: &str, cursor: &str) -> String {
    let (base, query) = path.split_once('?').unwrap_or((path, ""));
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("cursor="))
        .collect();
    let mut next = format!("{base}?{}", kept.join("&"));
    push_page_params(&mut next, None, Some(cursor));
    next
}

impl AdminClient {
    pub(crate) fn new(transport: Arc<Transport>, authorization: HeaderValue) -> Self {
        AdminClient {
            transport,
            authorization,
        }
    }

    /// An admin client configured by `CLORO_ADMIN_TOKEN` and `CLORO_BASE_URL`.
    ///
    /// # Errors
    /// [`ConfigError`](crate::ConfigError) when the token is missing or
    /// malformed, or the URL is unusable.
    pub fn from_env() -> Result<Self, Error> {
        ClientBuilder::from_env().build_admin()
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        self.transport.base.as_str()
    }

    /// `POST /admin/v1/keys`: a new key. Sent with a random
    /// `Idempotency-Key`, so a retry never mints a second key.
    ///
    /// # Errors
    /// Any [`Error`]; a bad field is `INVALID_REQUEST` with `details.field`.
    pub async fn create_key(
        &self,
        request: &CreateKeyRequest,
    ) -> Result<Response<CreatedKey>, Error> {
        self.create_key_keyed(request, &IdempotencyKey::random())
            .await
    }

    async fn create_key_keyed(
        &self,
        request: &CreateKeyRequest,
        idempotency_key: &IdempotencyKey,
    ) -> Result<Response<CreatedKey>, Error> {
        let call = Call::new(Method::POST, "/admin/v1/keys")
            .json(request)?
            .idempotency_key(idempotency_key);
        let answer: Response<CreateKeyResponse> =
            decode_secret(self.transport.send(&call, &self.authorization).await?)?;
        let (body, meta) = answer.into_parts();
        let CreateKeyResponse { mut key, key_info } = body;
        let parsed = parse_issued_key(&mut key, &key_info, &meta);
        Ok(Response::new(
            CreatedKey {
                key: parsed?,
                key_info,
            },
            meta,
        ))
    }

    /// The create, rotate and credits calls with `key` as their
    /// `Idempotency-Key` instead of a random one, so that a repeat by a
    /// later run of the program (after a crash, say) is answered with the
    /// first answer for 24 hours instead of acting again (SPEC §11). Use a
    /// key per intended change, e.g. derived from your own order id; the
    /// same key with another body is 409 `IDEMPOTENCY_KEY_REUSED`.
    ///
    /// ```no_run
    /// # async fn example(admin: cloro_client::AdminClient, key_id: cloro_client::cloro_auth_core::KeyId) -> Result<(), cloro_client::Error> {
    /// use cloro_client::IdempotencyKey;
    /// let once = IdempotencyKey::new("topup-order-1234").expect("visible ASCII");
    /// let info = admin.with_idempotency_key(once).add_credits(&key_id, 100).await?;
    /// if info.meta().replayed {
    ///     println!("already added by an earlier run");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_idempotency_key(&self, key: IdempotencyKey) -> WithIdempotencyKey<'_> {
        WithIdempotencyKey { admin: self, key }
    }

    /// One page of `GET /admin/v1/keys`.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn list_keys(
        &self,
        query: &KeyListQuery,
    ) -> Result<Response<ListKeysResponse>, Error> {
        self.get(&query.path()).await
    }

    /// Every page of `GET /admin/v1/keys`, one [`Pager::next_page`] at a time.
    pub fn keys(&self, query: KeyListQuery) -> Pager<ListKeysResponse> {
        Pager {
            admin: self.clone(),
            next: Some(query.path()),
            page: PhantomData,
        }
    }

    /// `GET /admin/v1/keys/{id}`.
    ///
    /// # Errors
    /// Any [`Error`]; an unknown id is `KEY_NOT_FOUND`.
    pub async fn get_key(&self, id: &KeyId) -> Result<Response<KeyInfo>, Error> {
        self.get(&format!("/admin/v1/keys/{id}")).await
    }

    /// `PATCH /admin/v1/keys/{id}`: a JSON merge patch.
    ///
    /// # Errors
    /// Any [`Error`]; a revoked key is `KEY_REVOKED`.
    pub async fn update_key(
        &self,
        id: &KeyId,
        patch: &UpdateKeyRequest,
    ) -> Result<Response<KeyInfo>, Error> {
        let call = Call::new(Method::PATCH, format!("/admin/v1/keys/{id}"))
            .json(patch)?
            .idempotent(true);
        decode(self.transport.send(&call, &self.authorization).await?)
    }

    /// `POST /admin/v1/keys/{id}/revoke`; idempotent.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn revoke_key(
        &self,
        id: &KeyId,
        reason: Option<&str>,
    ) -> Result<Response<KeyInfo>, Error> {
        let body = RevokeKeyRequest {
            reason: reason.map(str::to_owned),
        };
        let call = Call::new(Method::POST, format!("/admin/v1/keys/{id}/revoke"))
            .json(&body)?
            .idempotent(true);
        decode(self.transport.send(&call, &self.authorization).await?)
    }

    /// `POST /admin/v1/keys/revoke-leaked` (SPEC §12): revokes keys by
    /// their plaintext, for keys found where they should not be. Keys that
    /// were revoked already are listed too, each key once, in the order
    /// given; the answer never holds a plaintext. Idempotent, so retried.
    ///
    /// Text that is not a well-formed key ([`LeakedKey::api_key`] is
    /// `None`) is counted in `not_found` and never sent, so a paste that
    /// caught other secrets does not ship them to the server. The rest go
    /// [`MAX_LEAKED_KEYS`] to a request, so any number works; the answers
    /// are merged (`revoked` concatenated, `not_found` summed, `meta` the
    /// last request's with `attempts` counting every request's). With no
    /// well-formed key nothing is sent and `meta().attempts` is 0.
    ///
    /// ```no_run
    /// # async fn example(admin: cloro_client::AdminClient) -> Result<(), cloro_client::Error> {
    /// use cloro_client::LeakedKey;
    /// let pasted = "sk_live_…\nsk_live_…\n";
    /// let keys: Vec<LeakedKey> = pasted.lines().map(LeakedKey::new).collect();
    /// let answer = admin.revoke_leaked_keys(&keys, Some("pasted in a ticket")).await?;
    /// for key in &answer.value().revoked {
    ///     println!("revoked {} ({})", key.id, key.start);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// The [`Error`] of the first request that fails; the keys of the
    /// requests before it stay revoked, and calling again is harmless. A
    /// `reason` the server finds too long is `INVALID_REQUEST`.
    pub async fn revoke_leaked_keys(
        &self,
        keys: &[LeakedKey],
        reason: Option<&str>,
    ) -> Result<Response<RevokeLeakedResponse>, Error> {
        let well_formed: Vec<&ApiKey> = keys.iter().filter_map(LeakedKey::api_key).collect();
        let mut merged = RevokeLeakedResponse {
            revoked: Vec::new(),
            not_found: u64::try_from(keys.len() - well_formed.len()).unwrap_or(u64::MAX),
        };
        // The server lists each key once per request; a key named in two
        // requests must not be listed twice either.
        let mut listed = HashSet::new();
        let mut meta: Option<ResponseMeta> = None;
        for batch in well_formed.chunks(MAX_LEAKED_KEYS) {
            let (answer, last) = self.revoke_leaked_batch(batch, reason).await?.into_parts();
            merged.not_found = merged.not_found.saturating_add(answer.not_found);
            merged.revoked.extend(
                answer
                    .revoked
                    .into_iter()
                    .filter(|info| listed.insert(info.id)),
            );
            let earlier = meta.map_or(0, |meta| meta.attempts);
            meta = Some(ResponseMeta {
                attempts: earlier.saturating_add(last.attempts),
                ..last
            });
        }
        Ok(Response::new(
            merged,
            meta.unwrap_or_else(ResponseMeta::not_sent),
        ))
    }

    /// One request of [`AdminClient::revoke_leaked_keys`], at most
    /// [`MAX_LEAKED_KEYS`] keys.
    async fn revoke_leaked_batch(
        &self,
        keys: &[&ApiKey],
        reason: Option<&str>,
    ) -> Result<Response<RevokeLeakedResponse>, Error> {
        let mut body = RevokeLeakedRequest {
            keys: keys
                .iter()
                .map(|key| key.expose_secret().to_owned())
                .collect(),
            reason: reason.map(str::to_owned),
        };
        let call = Call::new(Method::POST, "/admin/v1/keys/revoke-leaked").json(&body);
        body.keys.zeroize();
        let mut call = call?.idempotent(true);
        let sent = self.transport.send(&call, &self.authorization).await;
        call.wipe_body();
        decode(sent?)
    }

    /// `POST /admin/v1/keys/{id}/rotate`: a new key with the old one's
    /// settings. Sent with a random `Idempotency-Key`, so a retry never
    /// rotates twice.
    ///
    /// # Errors
    /// Any [`Error`]; a revoked key is `KEY_REVOKED`.
    pub async fn rotate_key(
        &self,
        id: &KeyId,
        request: &RotateKeyRequest,
    ) -> Result<Response<RotatedKey>, Error> {
        self.rotate_key_keyed(id, request, &IdempotencyKey::random())
            .await
    }

    async fn rotate_key_keyed(
        &self,
        id: &KeyId,
        request: &RotateKeyRequest,
        idempotency_key: &IdempotencyKey,
    ) -> Result<Response<RotatedKey>, Error> {
        let call = Call::new(Method::POST, format!("/admin/v1/keys/{id}/rotate"))
            .json(request)?
            .idempotency_key(idempotency_key);
        let answer: Response<RotateKeyResponse> =
            decode_secret(self.transport.send(&call, &self.authorization).await?)?;
        let (body, meta) = answer.into_parts();
        let RotateKeyResponse {
            mut key,
            key_info,
            previous,
        } = body;
        let parsed = parse_issued_key(&mut key, &key_info, &meta);
        Ok(Response::new(
            RotatedKey {
                key: parsed?,
                key_info,
                previous,
            },
            meta,
        ))
    }

    /// `POST /admin/v1/keys/{id}/credits` with `{"set": credits}`: the
    /// key's balance becomes `credits` (at most
    /// [`MAX_QUOTA_COUNT`](cloro_auth_core::wire::MAX_QUOTA_COUNT)).
    ///
    /// # Errors
    /// Any [`Error`]; an unknown id is `KEY_NOT_FOUND`.
    pub async fn set_credits(&self, id: &KeyId, credits: u64) -> Result<Response<KeyInfo>, Error> {
        let request = CreditsRequest {
            set: Some(credits),
            add: None,
        };
        self.credits(id, &request, &IdempotencyKey::random()).await
    }

    /// `POST /admin/v1/keys/{id}/credits` with `{"add": credits}`: adds to
    /// the key's balance. Sent with a random `Idempotency-Key`, so a retry
    /// never adds twice.
    ///
    /// # Errors
    /// Any [`Error`]; an unknown id is `KEY_NOT_FOUND`.
    pub async fn add_credits(&self, id: &KeyId, credits: u64) -> Result<Response<KeyInfo>, Error> {
        let request = CreditsRequest {
            set: None,
            add: Some(credits),
        };
        self.credits(id, &request, &IdempotencyKey::random()).await
    }

    async fn credits(
        &self,
        id: &KeyId,
        request: &CreditsRequest,
        idempotency_key: &IdempotencyKey,
    ) -> Result<Response<KeyInfo>, Error> {
        let call = Call::new(Method::POST, format!("/admin/v1/keys/{id}/credits"))
            .json(request)?
            .idempotency_key(idempotency_key);
        decode(self.transport.send(&call, &self.authorization).await?)
    }

    /// One page of `GET /admin/v1/audit`.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn audit(&self, query: &AuditQuery) -> Result<Response<ListAuditResponse>, Error> {
        self.get(&query.path()).await
    }

    /// Every page of `GET /admin/v1/audit`.
    pub fn audit_events(&self, query: AuditQuery) -> Pager<ListAuditResponse> {
        Pager {
            admin: self.clone(),
            next: Some(query.path()),
            page: PhantomData,
        }
    }

    /// `GET /admin/v1/plans`.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn plans(&self) -> Result<Response<PlansResponse>, Error> {
        self.get("/admin/v1/plans").await
    }

    /// `GET /admin/v1/accounts/{account_id}`.
    ///
    /// # Errors
    /// Any [`Error`]; an account with neither keys nor plan is
    /// `ACCOUNT_NOT_FOUND`.
    pub async fn account(&self, account_id: &AccountId) -> Result<Response<AccountInfo>, Error> {
        self.get(&format!("/admin/v1/accounts/{account_id}")).await
    }

    /// `GET /admin/v1/accounts/{account_id}/quota`: the account's plan
    /// quota and what is used and left of it this period.
    ///
    /// # Errors
    /// Any [`Error`]; an unknown account is `ACCOUNT_NOT_FOUND`.
    pub async fn account_quota(
        &self,
        account_id: &AccountId,
    ) -> Result<Response<AccountQuotaResponse>, Error> {
        self.get(&format!("/admin/v1/accounts/{account_id}/quota"))
            .await
    }

    /// `PUT /admin/v1/accounts/{account_id}`: puts the account on `plan`.
    ///
    /// # Errors
    /// Any [`Error`]; an unknown plan is `INVALID_REQUEST`.
    pub async fn set_plan(
        &self,
        account_id: &AccountId,
        plan: PlanName,
    ) -> Result<Response<AccountInfo>, Error> {
        let call = Call::new(Method::PUT, format!("/admin/v1/accounts/{account_id}"))
            .json(&SetPlanRequest { plan })?;
        decode(self.transport.send(&call, &self.authorization).await?)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Response<T>, Error> {
        let call = Call::new(Method::GET, path);
        decode(self.transport.send(&call, &self.authorization).await?)
    }

    /// `DELETE path`, whose success (204) has no body.
    async fn delete(&self, path: &str) -> Result<Response<()>, Error> {
        let call = Call::new(Method::DELETE, path);
        let (_, meta) = self
            .transport
            .send(&call, &self.authorization)
            .await?
            .into_parts();
        Ok(Response::new((), meta))
    }
}

/// The create, rotate and credits calls of an [`AdminClient`] with the
/// caller's `Idempotency-Key`; from [`AdminClient::with_idempotency_key`].
/// The key is sent on every attempt, retries included.
#[derive(Debug)]
#[must_use = "the idempotency key is used only by a call made through it"]
pub struct WithIdempotencyKey<'a> {
    admin: &'a AdminClient,
    key: IdempotencyKey,
}

impl WithIdempotencyKey<'_> {
    /// The key these calls send.
    pub fn idempotency_key(&self) -> &IdempotencyKey {
        &self.key
    }

    /// [`AdminClient::create_key`] with this key. A repeat within 24 h is
    /// [`Error::KeyNotShown`]: the key exists, its secret was in the
    /// first answer only.
    ///
    /// # Errors
    /// Any [`Error`]; this key with another body is
    /// `IDEMPOTENCY_KEY_REUSED`.
    pub async fn create_key(
        &self,
        request: &CreateKeyRequest,
    ) -> Result<Response<CreatedKey>, Error> {
        self.admin.create_key_keyed(request, &self.key).await
    }

    /// [`AdminClient::rotate_key`] with this key; a repeat within 24 h is
    /// [`Error::KeyNotShown`].
    ///
    /// # Errors
    /// Any [`Error`]; this key with another body is
    /// `IDEMPOTENCY_KEY_REUSED`.
    pub async fn rotate_key(
        &self,
        id: &KeyId,
        request: &RotateKeyRequest,
    ) -> Result<Response<RotatedKey>, Error> {
        self.admin.rotate_key_keyed(id, request, &self.key).await
    }

    /// [`AdminClient::set_credits`] with this key.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn set_credits(&self, id: &KeyId, credits: u64) -> Result<Response<KeyInfo>, Error> {
        let request = CreditsRequest {
            set: Some(credits),
            add: None,
        };
        self.admin.credits(id, &request, &self.key).await
    }

    /// [`AdminClient::add_credits`] with this key: a repeat within 24 h
    /// adds nothing and answers the first answer
    /// ([`ResponseMeta::replayed`]).
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn add_credits(&self, id: &KeyId, credits: u64) -> Result<Response<KeyInfo>, Error> {
        let request = CreditsRequest {
            set: None,
            add: Some(credits),
        };
        self.admin.credits(id, &request, &self.key).await
    }
}

/// The plaintext from a create or rotate answer (whose new key is
/// `key_info`) as an [`ApiKey`]; the text is wiped either way.
fn parse_issued_key(
    text: &mut Option<String>,
    key_info: &KeyInfo,
    meta: &ResponseMeta,
) -> Result<ApiKey, Error> {
    // A replayed create or rotate carries no plaintext (SPEC §11).
    let Some(text) = text.as_mut() else {
        return Err(KeyNotShown {
            key_id: key_info.id,
            status: meta.status,
            request_id: meta.request_id.clone(),
        }
        .into());
    };
    // FormatError names the broken rule, never the text, so it may be kept.
    let parsed = ApiKey::parse_token(text).map_err(|why| {
        Error::from(
            DecodeError::new(
                meta.status,
                meta.request_id.clone(),
                format!("the server sent a key that is not a Cloro key: {why}"),
            )
            .caused_by(why),
        )
    });
    text.zeroize();
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_paths() {
        let account = AccountId::new("acct_1").unwrap();
        assert_eq!(
            KeyListQuery::new(account).path(),
            "/admin/v1/keys?account_id=acct_1"
        );
        assert_eq!(
            KeyListQuery::new(account)
                .limit(5)
                .cursor("a b/c=")
                .include_revoked(true)
                .path(),
            "/admin/v1/keys?account_id=acct_1&limit=5&cursor=a%20b%2Fc%3D&include_revoked=true"
        );
        assert_eq!(
            with_cursor("/admin/v1/audit?account_id=a&cursor=old&limit=2", "new+1"),
            "/admin/v1/audit?account_id=a&limit=2&cursor=new%2B1"
        );
        assert_eq!(
            AuditQuery::new(account).limit(3).path(),
            "/admin/v1/audit?account_id=acct_1&limit=3"
        );
    }

    #[test]
    fn leaked_keys_keep_only_what_could_be_a_key() {
        let key = ApiKey::from_random_bytes(cloro_auth_core::Environment::Live, [0x3c; 16]);
        let secret = key.expose_secret();
        let pasted = LeakedKey::new(format!("  {secret}\r\n"));
        assert_eq!(pasted.api_key(), Some(&key));
        assert_eq!(LeakedKey::from(&key).api_key(), Some(&key));
        let debug = format!("{pasted:?}");
        assert!(debug.contains(key.redacted().as_str()), "{debug}");
        assert!(!debug.contains(&secret[12..]), "{debug}");

        // Wrong checksum, another service's token, not UTF-8, nothing.
        let mut mistyped = secret.to_owned();
        mistyped.replace_range(20..21, if &secret[20..21] == "0" { "1" } else { "0" });
        for text in [
            mistyped.as_bytes(),
            b"ghp_0123456789abcdef0123456789abcdef0123".as_slice(),
            b"sk_live_\xff",
            b"",
        ] {
            let leaked = LeakedKey::new(text);
            assert!(leaked.api_key().is_none(), "{text:?}");
            assert_eq!(format!("{leaked:?}"), "LeakedKey(<not a Cloro key>)");
        }
    }
}
