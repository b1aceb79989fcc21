//! `KeyAdmin`: what creating, changing, revoking and rotating a key means
//! (SPEC §6), written once on top of any [`KeyStore`]. Each action is one
//! atomic [`KeyBatch`] with its audit event, retried on a lost race, and
//! followed by an invalidation so every node drops its cached copy.

mod expiry;
mod leaked;
mod usage;

pub use expiry::EXPIRY_NOTICE_ACTOR;
pub use leaked::{LeakReport, LeakedKeyAction, RevokedLeaked};

use std::sync::Arc;

use cloro_auth_core::wire::limits::{
    MAX_GRACE_SECONDS, MAX_METADATA_ENTRIES, MAX_METADATA_KEY_CHARS, MAX_METADATA_VALUE_CHARS,
    MAX_NAME_CHARS, MAX_REASON_CHARS, MAX_SCOPES,
};
use cloro_auth_core::wire::{
    AccountQuotaResponse, AppliesTo, AuditAction, AuditEvent, CreateKeyRequest, CreditsRequest,
    Metadata, Patch, RotateKeyRequest, UpdateKeyRequest,
};
use cloro_auth_core::{AccountId, ApiKey, ErrorCode, KeyId, PlanName, Scope};
use jiff::{SignedDuration, Timestamp};

use crate::clock::Clock;
use crate::invalidation::{ChangeNotifier, Invalidation};
use crate::limits::Plans;
use crate::quota::{CreditsChange, Ledger, LocalLedger, QuotaSubject, RefillWindow, Window};
use crate::store::{
    AccountRecord, Cursor, KeyBatch, KeyRecord, KeyStore, Page, PageRequest, RecordWrite,
    StoreError,
};

/// How often a change is retried after losing a compare-and-set race.
const COMMIT_ATTEMPTS: usize = 8;

/// Why an admin action failed; each maps to one SPEC §4 code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// No key with that id.
    #[error("no key with this id exists")]
    KeyNotFound,
    /// No account with that id.
    #[error("no account with this id exists; an account exists once it has a key or a plan")]
    AccountNotFound,
    /// The key is revoked and cannot be changed or rotated.
    #[error(
        "this key is revoked and can no longer be changed or rotated; create a new key instead"
    )]
    KeyRevoked,
    /// A request field is invalid.
    #[error("invalid `{field}`: {message}")]
    InvalidField {
        /// The field, as named in the request body.
        field: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The store failed; the store's error is the `source()`, and its
    /// message this error's message.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The OS random generator failed.
    #[error("the system random generator failed")]
    Randomness,
}

impl AdminError {
    /// The SPEC §4 code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            AdminError::KeyNotFound => ErrorCode::KeyNotFound,
            AdminError::AccountNotFound => ErrorCode::AccountNotFound,
            AdminError::KeyRevoked => ErrorCode::KeyRevoked,
            AdminError::InvalidField { .. } => ErrorCode::InvalidRequest,
            AdminError::Store(StoreError::Unavailable(_)) => ErrorCode::AuthUnavailable,
            AdminError::Store(_) | AdminError::Randomness => ErrorCode::InternalError,
        }
    }

    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        AdminError::InvalidField {
            field,
            message: message.into(),
        }
    }
}

/// A key just created or rotated: the plaintext (shown once) and its record.
#[derive(Debug)]
pub struct IssuedKey {
    /// The plaintext; `Debug` prints it redacted.
    pub key: ApiKey,
    /// The stored record.
    pub record: KeyRecord,
}

/// The result of a rotation.
#[derive(Debug)]
pub struct Rotation {
    /// The new key.
    pub issued: IssuedKey,
    /// The old key's record with its new end.
    pub previous: KeyRecord,
}

/// The admin side of the key store.
#[derive(Debug, Clone)]
pub struct KeyAdmin {
    store: Arc<dyn KeyStore>,
    plans: Arc<Plans>,
    notifier: Arc<dyn ChangeNotifier>,
    ledger: Arc<dyn Ledger>,
    /// "Now" for reads that depend on it (a refill that is due).
    clock: Clock,
}

impl KeyAdmin {
    /// Admin actions on `store`, announcing changes through `notifier`.
    pub fn new(
        store: Arc<dyn KeyStore>,
        plans: Arc<Plans>,
        notifier: Arc<dyn ChangeNotifier>,
    ) -> Self {
        KeyAdmin {
            store,
            plans,
            notifier,
            ledger: Arc::new(LocalLedger::in_memory()),
            clock: Clock::system(),
        }
    }

    /// Reads "now" from `clock` (the verifier's), so tests that move time
    /// see refills in admin answers too.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Keeps credit balances and reads quotas in `ledger`, which must be the
    /// one the verifier charges ([`crate::Verifier::ledger`]).
    pub fn with_ledger(mut self, ledger: Arc<dyn Ledger>) -> Self {
        self.ledger = ledger;
        self
    }

    /// `record` with its credit balance filled in, when its credits are
    /// limited (admin answers show it in `KeyInfo.credits`).
    pub async fn with_balance(
        &self,
        mut record: KeyRecord,
        now: Timestamp,
    ) -> Result<KeyRecord, AdminError> {
        if record.credits_limited {
            let refill = record.refill.map(|refill| RefillWindow::of(&refill, now));
            record.credits = Some(
                self.ledger
                    .balance(&record.account_id, &record.meter_id(), refill.as_ref())
                    .await?,
            );
        }
        Ok(record)
    }

    /// Sets or adds to a key's credits (`POST /admin/v1/keys/{id}/credits`);
    /// setting them makes a key with unlimited credits a limited one.
    ///
    /// The change to the record (and its audit event) is committed before
    /// the balance moves. With an `operation` (the request's
    /// `Idempotency-Key`) the balance moves once per operation, also when a
    /// first attempt timed out after the ledger applied it and the client
    /// retried.
    ///
    /// # Errors
    /// `KeyNotFound`, `KeyRevoked`, `InvalidField` (not exactly one of `set`
    /// and `add`, or `add` to unlimited credits), or `Store`.
    pub async fn change_credits(
        &self,
        id: &KeyId,
        request: &CreditsRequest,
        operation: Option<&str>,
        actor: &str,
        now: Timestamp,
    ) -> Result<KeyRecord, AdminError> {
        let change = match (request.set, request.add) {
            (Some(value), None) => CreditsChange::Set(value),
            (None, Some(more)) => CreditsChange::Add(more),
            (Some(_), Some(_)) => {
                return Err(AdminError::invalid(
                    "add",
                    "send either `set` or `add`, not both",
                ));
            }
            (None, None) => {
                return Err(AdminError::invalid(
                    "set",
                    "send `set` (the new balance) or `add` (credits to add)",
                ));
            }
        };
        let (record, _) = self
            .change(id, actor, now, AuditAction::KeyUpdated, |current| {
                if current.revoked_at.is_some() {
                    return Err(AdminError::KeyRevoked);
                }
                if matches!(change, CreditsChange::Add(_)) && !current.credits_limited {
                    return Err(AdminError::invalid(
                        "add",
                        "this key's credits are unlimited; `set` a balance first",
                    ));
                }
                let mut next = current.clone();
                next.credits_limited = true;
                let detail = match change {
                    CreditsChange::Set(value) => ("credits_set", value.to_string()),
                    CreditsChange::Add(more) => ("credits_added", more.to_string()),
                };
                Ok((
                    next,
                    Vec::new(),
                    vec![("fields", "credits".to_owned()), detail],
                ))
            })
            .await?;
        let refill = record.refill.map(|refill| RefillWindow::of(&refill, now));
        let (account, meter) = (record.account_id, record.meter_id());
        match operation {
            Some(operation) => {
                self.ledger
                    .adjust_credits_once(&account, &meter, change, refill.as_ref(), operation)
                    .await?
            }
            None => {
                self.ledger
                    .adjust_credits(&account, &meter, change, refill.as_ref())
                    .await?
            }
        };
        self.with_balance(record, now).await
    }

    /// `GET /admin/v1/accounts/{id}/quota`: the account's plan quota and how
    /// much of this period is used, where the quota is the account's.
    ///
    /// # Errors
    /// `AccountNotFound`, or `Store`.
    pub async fn account_quota(
        &self,
        account: &AccountId,
        now: Timestamp,
    ) -> Result<AccountQuotaResponse, AdminError> {
        let (_, plan_name) = self.account(account).await?;
        let (_, plan) = self.plans.resolve(Some(plan_name));
        let quota = plan.quota;
        let mut answer = AccountQuotaResponse {
            account_id: *account,
            plan: plan_name,
            quota,
            used: None,
            remaining: None,
            resets_at: None,
        };
        if let Some(quota) = quota {
            let window = Window::containing(quota.period, now);
            answer.resets_at = Some(window.end_timestamp());
            if quota.applies_to_or(AppliesTo::Account) == AppliesTo::Account {
                let used = self
                    .ledger
                    .quota_used(account, &QuotaSubject::Account, &window)
                    .await?;
                answer.used = Some(used);
                answer.remaining = Some(quota.requests.saturating_sub(used));
            }
        }
        Ok(answer)
    }

    /// The plans in force.
    pub fn plans(&self) -> &Plans {
        &self.plans
    }

    /// Creates a key and returns its plaintext, the only time it exists.
    ///
    /// # Errors
    /// `InvalidField` for a bad request, `Store` when the store fails.
    pub async fn create(
        &self,
        request: CreateKeyRequest,
        actor: &str,
        now: Timestamp,
    ) -> Result<IssuedKey, AdminError> {
        validate_name(&request.name)?;
        validate_scopes(&request.scopes)?;
        validate_metadata(&request.metadata)?;
        if let Some(expires_at) = request.expires_at {
            validate_future("expires_at", expires_at, now)?;
        }
        // Refill without a starting balance starts at the refill amount.
        let starting_credits = request
            .credits
            .or(request.refill.map(|refill| refill.amount));
        let key = ApiKey::generate(request.environment).map_err(|_| AdminError::Randomness)?;
        let record = KeyRecord {
            id: new_id("key_")?,
            hash: key.hash(),
            account_id: request.account_id,
            name: request.name,
            purpose: request.purpose,
            environment: request.environment,
            start: key.redacted().to_string(),
            scopes: request.scopes,
            metadata: request.metadata,
            rate_limit: request.rate_limit,
            concurrency_limit: request.concurrency_limit,
            quota: request.quota,
            credits_limited: request.credits.is_some() || request.refill.is_some(),
            refill: request.refill,
            meter_id: None,
            enabled: true,
            created_at: now,
            expires_at: request.expires_at,
            revoked_at: None,
            revoked_reason: None,
            rotated_to: None,
            leaked_at: None,
            expiry_notice: None,
            version: 1,
            usage: Default::default(),
            credits: None,
        };
        let event = audit(actor, AuditAction::KeyCreated, &record, now, [])?;
        if let Some(credits) = starting_credits {
            // Before the commit, like the hash index: a balance of a key that
            // was never committed is never read.
            let refill = record.refill.map(|refill| RefillWindow::of(&refill, now));
            self.ledger
                .adjust_credits(
                    &record.account_id,
                    &record.meter_id(),
                    CreditsChange::Set(credits),
                    refill.as_ref(),
                )
                .await?;
        }
        self.store
            .commit(KeyBatch {
                account_id: record.account_id,
                writes: vec![RecordWrite {
                    record: record.clone(),
                    expected_version: None,
                }],
                audit: vec![event],
            })
            .await?;
        // A node may hold a negative entry for this hash if someone probed it
        // (practically impossible for 128-bit keys, but cheap to rule out).
        self.notifier.publish(Invalidation::Key(record.hash)).await;
        let record = self.with_balance(record, now).await?;
        Ok(IssuedKey { key, record })
    }

    /// One key by id.
    ///
    /// # Errors
    /// `KeyNotFound`, or `Store`.
    pub async fn get(&self, id: &KeyId) -> Result<KeyRecord, AdminError> {
        let record = self.stored(id).await?;
        self.with_balance(record, self.clock.now()).await
    }

    /// One key as stored, without its balance.
    async fn stored(&self, id: &KeyId) -> Result<KeyRecord, AdminError> {
        self.store.key(id).await?.ok_or(AdminError::KeyNotFound)
    }

    /// An account's keys, newest first.
    ///
    /// # Errors
    /// `InvalidField` for a bad cursor, or `Store`.
    pub async fn list(
        &self,
        account: &AccountId,
        limit: usize,
        cursor: Option<&str>,
        include_revoked: bool,
    ) -> Result<Page<KeyRecord>, AdminError> {
        let page = page_request(limit, cursor)?;
        let mut page = self
            .store
            .keys_of_account(account, &page, include_revoked)
            .await?;
        let now = self.clock.now();
        for record in &mut page.items {
            if record.credits_limited {
                *record = self.with_balance(record.clone(), now).await?;
            }
        }
        Ok(page)
    }

    /// Applies a JSON merge patch (SPEC §6 `PATCH /admin/v1/keys/{id}`).
    ///
    /// # Errors
    /// `KeyNotFound`, `KeyRevoked`, `InvalidField`, or `Store`.
    pub async fn update(
        &self,
        id: &KeyId,
        patch: &UpdateKeyRequest,
        actor: &str,
        now: Timestamp,
    ) -> Result<KeyRecord, AdminError> {
        if let Some(field) = patch.null_in_required_field() {
            return Err(AdminError::invalid(
                field,
                "may not be null; leave it out to keep the current value",
            ));
        }
        let record = self
            .change(id, actor, now, AuditAction::KeyUpdated, |current| {
                if current.revoked_at.is_some() {
                    return Err(AdminError::KeyRevoked);
                }
                let mut next = current.clone();
                let mut changed = Vec::new();
                if let Patch::Value(name) = &patch.name {
                    validate_name(name)?;
                    next.name.clone_from(name);
                    changed.push("name");
                }
                match patch.expires_at {
                    Patch::Absent => {}
                    Patch::Null => next.expires_at = None,
                    Patch::Value(at) => {
                        next.expires_at = Some(validate_future("expires_at", at, now)?)
                    }
                }
                if !patch.expires_at.is_absent() {
                    changed.push("expires_at");
                }
                if let Patch::Value(scopes) = &patch.scopes {
                    validate_scopes(scopes)?;
                    next.scopes.clone_from(scopes);
                    changed.push("scopes");
                }
                if let Some(rate_limit) = patched(&patch.rate_limit) {
                    next.rate_limit = rate_limit;
                    changed.push("rate_limit");
                }
                if let Some(limit) = patched(&patch.concurrency_limit) {
                    next.concurrency_limit = limit;
                    changed.push("concurrency_limit");
                }
                if let Some(quota) = patched(&patch.quota) {
                    next.quota = quota;
                    changed.push("quota");
                }
                match patch.credits {
                    Patch::Absent => {}
                    Patch::Null => next.credits_limited = false,
                    Patch::Value(_) => next.credits_limited = true,
                }
                if !patch.credits.is_absent() {
                    changed.push("credits");
                }
                if let Some(refill) = patched(&patch.refill) {
                    next.refill = refill;
                    changed.push("refill");
                }
                match &patch.metadata {
                    Patch::Absent => {}
                    Patch::Null => next.metadata.clear(),
                    Patch::Value(merge) => {
                        // RFC 7396: members set to null are removed, the rest set.
                        for (label, value) in merge {
                            match value {
                                Some(value) => next.metadata.insert(label.clone(), value.clone()),
                                None => next.metadata.remove(label),
                            };
                        }
                        validate_metadata(&next.metadata)?;
                    }
                }
                if !patch.metadata.is_absent() {
                    changed.push("metadata");
                }
                if let Patch::Value(enabled) = patch.enabled {
                    next.enabled = enabled;
                    changed.push("enabled");
                }
                let details = [("fields", changed.join(","))];
                Ok((next, Vec::new(), details.into_iter().collect()))
            })
            .await
            .map(|(record, _)| record)?;
        if let Patch::Value(credits) = patch.credits {
            let refill = record.refill.map(|refill| RefillWindow::of(&refill, now));
            self.ledger
                .adjust_credits(
                    &record.account_id,
                    &record.meter_id(),
                    CreditsChange::Set(credits),
                    refill.as_ref(),
                )
                .await?;
        }
        self.with_balance(record, now).await
    }

    /// Revokes a key; revoking a revoked key changes nothing.
    ///
    /// # Errors
    /// `KeyNotFound`, `InvalidField` (reason too long), or `Store`.
    pub async fn revoke(
        &self,
        id: &KeyId,
        reason: Option<&str>,
        actor: &str,
        now: Timestamp,
    ) -> Result<KeyRecord, AdminError> {
        if reason.is_some_and(|r| r.chars().count() > MAX_REASON_CHARS) {
            return Err(AdminError::invalid(
                "reason",
                format!("must be at most {MAX_REASON_CHARS} characters"),
            ));
        }
        let current = self.get(id).await?;
        if current.revoked_at.is_some() {
            return Ok(current);
        }
        let balance = current.credits;
        self.change(id, actor, now, AuditAction::KeyRevoked, |current| {
            let mut next = current.clone();
            if next.revoked_at.is_none() {
                next.revoked_at = Some(now);
                next.revoked_reason = reason.map(str::to_owned);
            }
            let details = reason
                .map(|r| ("reason", r.to_owned()))
                .into_iter()
                .collect();
            Ok((next, Vec::new(), details))
        })
        .await
        .map(|(mut record, _)| {
            record.credits = balance;
            record
        })
    }

    /// Rotates a key: a new key with every setting of the old one, and the
    /// old one ending at the earlier of its own expiry and now + grace.
    ///
    /// # Errors
    /// `KeyNotFound`, `KeyRevoked`, `InvalidField`, or `Store`.
    pub async fn rotate(
        &self,
        id: &KeyId,
        request: &RotateKeyRequest,
        actor: &str,
        now: Timestamp,
    ) -> Result<Rotation, AdminError> {
        if request.grace_period_seconds > MAX_GRACE_SECONDS {
            return Err(AdminError::invalid(
                "grace_period_seconds",
                format!("must be at most {MAX_GRACE_SECONDS} (one year)"),
            ));
        }
        let grace = SignedDuration::from_secs(request.grace_period_seconds as i64);
        let grace_end = now
            .checked_add(grace)
            .map_err(|_| AdminError::invalid("grace_period_seconds", "too large"))?;
        let mut issued_key = None;
        let (previous, new_records) = self
            .change(id, actor, now, AuditAction::KeyRotated, |current| {
                if current.revoked_at.is_some() {
                    return Err(AdminError::KeyRevoked);
                }
                let expires_at = match request.expires_at {
                    Patch::Absent => match current.expires_at {
                        Some(end) if end <= now => {
                            return Err(AdminError::invalid(
                                "expires_at",
                                "the key being rotated has expired, so there is no expiry to inherit; \
                                 give the new key an expires_at in the future, or null for none",
                            ));
                        }
                        inherited => inherited,
                    },
                    Patch::Null => None,
                    Patch::Value(at) => Some(validate_future("expires_at", at, now)?),
                };
                let key = ApiKey::generate(current.environment).map_err(|_| AdminError::Randomness)?;
                let new_record = KeyRecord {
                    id: new_id("key_")?,
                    hash: key.hash(),
                    enabled: true,
                    created_at: now,
                    expires_at,
                    start: key.redacted().to_string(),
                    rotated_to: None,
                    version: 1,
                    usage: Default::default(),
                    revoked_at: None,
                    revoked_reason: None,
                    // A fresh secret: the old one's leak is not the new one's.
                    leaked_at: None,
                    expiry_notice: None,
                    // The new key draws on the same quota and balance: a
                    // rotation never buys a fresh one.
                    meter_id: Some(current.meter_id()),
                    credits: None,
                    ..current.clone()
                };
                let mut old = current.clone();
                old.expires_at = Some(current.expires_at.map_or(grace_end, |end| end.min(grace_end)));
                old.rotated_to = Some(new_record.id);
                let details = [
                    ("new_key_id", new_record.id.to_string()),
                    ("grace_period_seconds", request.grace_period_seconds.to_string()),
                ];
                issued_key = Some(key);
                Ok((old, vec![new_record], details.into_iter().collect()))
            })
            .await?;
        let (Some(key), Some(record)) = (issued_key, new_records.into_iter().next()) else {
            return Err(StoreError::corrupt("rotation produced no new key").into());
        };
        self.notifier.publish(Invalidation::Key(record.hash)).await;
        let record = self.with_balance(record, now).await?;
        let previous = self.with_balance(previous, now).await?;
        Ok(Rotation {
            issued: IssuedKey { key, record },
            previous,
        })
    }

    /// An account's audit events, newest first.
    ///
    /// # Errors
    /// `InvalidField` for a bad cursor, or `Store`.
    pub async fn audit(
        &self,
        account: &AccountId,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<AuditEvent>, AdminError> {
        let page = page_request(limit, cursor)?;
        Ok(self.store.audit_events(account, &page).await?)
    }

    /// An account and the plan it is on.
    ///
    /// # Errors
    /// `AccountNotFound`, or `Store`.
    pub async fn account(
        &self,
        account: &AccountId,
    ) -> Result<(AccountRecord, PlanName), AdminError> {
        let record = self
            .store
            .account(account)
            .await?
            .ok_or(AdminError::AccountNotFound)?;
        let (plan, _) = self.plans.resolve(record.plan);
        Ok((record, plan))
    }

    /// Puts an account on a plan; creates the account if it has no keys yet.
    ///
    /// # Errors
    /// `InvalidField` for an unknown plan, or `Store`.
    pub async fn set_plan(
        &self,
        account: &AccountId,
        plan: PlanName,
        actor: &str,
        now: Timestamp,
    ) -> Result<(AccountRecord, PlanName), AdminError> {
        if self.plans.get(&plan).is_none() {
            let known: Vec<String> = self
                .plans
                .to_response()
                .plans
                .iter()
                .map(|p| p.name.to_string())
                .collect();
            return Err(AdminError::invalid(
                "plan",
                format!("unknown plan `{plan}`; known plans: {}", known.join(", ")),
            ));
        }
        let event = AuditEvent {
            id: new_id("evt_")?.to_string(),
            at: now,
            actor: actor.to_owned(),
            action: AuditAction::AccountUpdated,
            key_id: None,
            account_id: *account,
            details: [("plan".to_owned(), plan.to_string())]
                .into_iter()
                .collect(),
        };
        self.store.set_account_plan(account, &plan, event).await?;
        self.notifier.publish(Invalidation::Account(*account)).await;
        self.account(account).await
    }

    /// The read-compute-commit loop shared by every change to an existing
    /// key: `compute` gets the current record and returns the changed record,
    /// any new records and the audit details. Retries when another writer won.
    async fn change<F>(
        &self,
        id: &KeyId,
        actor: &str,
        now: Timestamp,
        action: AuditAction,
        mut compute: F,
    ) -> Result<(KeyRecord, Vec<KeyRecord>), AdminError>
    where
        F: FnMut(
            &KeyRecord,
        )
            -> Result<(KeyRecord, Vec<KeyRecord>, Vec<(&'static str, String)>), AdminError>,
    {
        self.change_or_keep(id, actor, now, action, |current| compute(current).map(Some))
            .await
    }

    /// [`KeyAdmin::change`] where `compute` may find, on the record as it is
    /// now (also after losing a race), that there is nothing to do: it
    /// answers `None`, and nothing is written, audited or invalidated.
    async fn change_or_keep<F>(
        &self,
        id: &KeyId,
        actor: &str,
        now: Timestamp,
        action: AuditAction,
        mut compute: F,
    ) -> Result<(KeyRecord, Vec<KeyRecord>), AdminError>
    where
        F: FnMut(
            &KeyRecord,
        ) -> Result<
            Option<(KeyRecord, Vec<KeyRecord>, Vec<(&'static str, String)>)>,
            AdminError,
        >,
    {
        for _ in 0..COMMIT_ATTEMPTS {
            let current = self.stored(id).await?;
            let Some((mut next, new_records, details)) = compute(&current)? else {
                return Ok((current, Vec::new()));
            };
            next.version = current.version + 1;
            let event = audit(actor, action, &next, now, details)?;
            let mut writes = vec![RecordWrite {
                record: next.clone(),
                expected_version: Some(current.version),
            }];
            writes.extend(new_records.iter().map(|r| RecordWrite {
                record: r.clone(),
                expected_version: None,
            }));
            let batch = KeyBatch {
                account_id: current.account_id,
                writes,
                audit: vec![event],
            };
            match self.store.commit(batch).await {
                Ok(()) => {
                    self.notifier.publish(Invalidation::Key(current.hash)).await;
                    next.usage = current.usage;
                    return Ok((next, new_records));
                }
                Err(StoreError::Conflict) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }
}

/// `Some(new value)` when a nullable field is patched, `None` when absent.
fn patched<T: Copy>(patch: &Patch<T>) -> Option<Option<T>> {
    match patch {
        Patch::Absent => None,
        Patch::Null => Some(None),
        Patch::Value(value) => Some(Some(*value)),
    }
}

fn page_request(limit: usize, cursor: Option<&str>) -> Result<PageRequest, AdminError> {
    let after = cursor
        .map(|text| {
            Cursor::decode(text)
                .ok_or_else(|| AdminError::invalid("cursor", "not a cursor this API returned"))
        })
        .transpose()?;
    Ok(PageRequest { limit, after })
}

fn audit(
    actor: &str,
    action: AuditAction,
    record: &KeyRecord,
    at: Timestamp,
    details: impl IntoIterator<Item = (&'static str, String)>,
) -> Result<AuditEvent, AdminError> {
    Ok(AuditEvent {
        id: new_id("evt_")?.to_string(),
        at,
        actor: actor.to_owned(),
        action,
        key_id: Some(record.id),
        account_id: record.account_id,
        details: details
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    })
}

/// `prefix` and 24 random hex digits (96 bits): ids that are unguessable and
/// say nothing about the key.
fn new_id(prefix: &str) -> Result<KeyId, AdminError> {
    let mut random = [0u8; 12];
    getrandom::fill(&mut random).map_err(|_| AdminError::Randomness)?;
    let mut text = String::with_capacity(prefix.len() + 24);
    text.push_str(prefix);
    for byte in random {
        text.push_str(&format!("{byte:02x}"));
    }
    KeyId::new(&text).map_err(|_| AdminError::Randomness)
}

fn validate_name(name: &str) -> Result<(), AdminError> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(AdminError::invalid(
            "name",
            format!("must be 1 to {MAX_NAME_CHARS} characters without control characters"),
        ));
    }
    Ok(())
}

fn validate_scopes(scopes: &[Scope]) -> Result<(), AdminError> {
    if scopes.len() > MAX_SCOPES {
        return Err(AdminError::invalid(
            "scopes",
            format!("at most {MAX_SCOPES} scopes"),
        ));
    }
    Ok(())
}

fn validate_metadata(metadata: &Metadata) -> Result<(), AdminError> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(AdminError::invalid(
            "metadata",
            format!("at most {MAX_METADATA_ENTRIES} entries"),
        ));
    }
    for (label, value) in metadata {
        if label.is_empty() || label.chars().count() > MAX_METADATA_KEY_CHARS {
            return Err(AdminError::invalid(
                "metadata",
                format!("labels must be 1 to {MAX_METADATA_KEY_CHARS} characters"),
            ));
        }
        if value.chars().count() > MAX_METADATA_VALUE_CHARS {
            return Err(AdminError::invalid(
                "metadata",
                format!("values must be at most {MAX_METADATA_VALUE_CHARS} characters"),
            ));
        }
    }
    Ok(())
}

fn validate_future(
    field: &'static str,
    at: Timestamp,
    now: Timestamp,
) -> Result<Timestamp, AdminError> {
    if at <= now {
        return Err(AdminError::invalid(
            field,
            format!("must be in the future (now is {now})"),
        ));
    }
    Ok(at)
}
