//! The [`WebhookStore`] of the [`MemoryStore`]: endpoints, outbox and
//! deliveries beside its keys, under the same mutex, so a commit and its
//! outbox events are one step here too.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use cloro_auth_core::wire::DeliveryStatus;
use jiff::Timestamp;

use super::webhooks::{Delivery, OutboxEvent, WEBHOOK_LEASE, WebhookRecord, WebhookStore};
use super::{MemoryStore, Page, PageRequest, StoreError, paginate};

/// What the memory store keeps for webhooks.
#[derive(Debug, Default)]
pub(super) struct WebhookState {
    /// In registration order.
    webhooks: Vec<WebhookRecord>,
    /// By (time, id), with the end of the claim on each.
    outbox: BTreeMap<(Timestamp, String), (OutboxEvent, Option<Timestamp>)>,
    /// By (endpoint, event id), with the end of the claim on each.
    deliveries: HashMap<(String, String), (Delivery, Option<Timestamp>)>,
}

impl WebhookState {
    /// Puts a commit's events in the outbox (the caller holds the lock the
    /// commit holds).
    pub(super) fn enqueue(&mut self, events: Vec<OutboxEvent>) {
        for event in events {
            self.outbox
                .insert((event.at, event.id.clone()), (event, None));
        }
    }
}

fn lease_end(now: Timestamp) -> Timestamp {
    now.checked_add(WEBHOOK_LEASE).unwrap_or(now)
}

fn is_free(claim: Option<Timestamp>, now: Timestamp) -> bool {
    claim.is_none_or(|until| until <= now)
}

#[async_trait]
impl WebhookStore for MemoryStore {
    async fn add_webhook(&self, record: &WebhookRecord) -> Result<(), StoreError> {
        let mut state = self.state()?;
        let webhooks = &mut state.webhooks.webhooks;
        if webhooks.iter().any(|w| w.info.id == record.info.id) {
            return Err(StoreError::Conflict);
        }
        webhooks.push(record.clone());
        Ok(())
    }

    async fn webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        let state = self.state()?;
        let mut webhooks = state.webhooks.webhooks.clone();
        webhooks
            .sort_by(|a, b| (b.info.created_at, &b.info.id).cmp(&(a.info.created_at, &a.info.id)));
        Ok(webhooks)
    }

    async fn remove_webhook(&self, id: &str) -> Result<bool, StoreError> {
        let mut state = self.state()?;
        let hooks = &mut state.webhooks;
        let before = hooks.webhooks.len();
        hooks.webhooks.retain(|w| w.info.id != id);
        hooks.deliveries.retain(|(webhook, _), _| webhook != id);
        Ok(hooks.webhooks.len() < before)
    }

    async fn outbox(&self, now: Timestamp, limit: usize) -> Result<Vec<OutboxEvent>, StoreError> {
        let mut state = self.state()?;
        let mut claimed = Vec::new();
        for (event, claim) in state.webhooks.outbox.values_mut() {
            if claimed.len() == limit {
                break;
            }
            if is_free(*claim, now) {
                *claim = Some(lease_end(now));
                claimed.push(event.clone());
            }
        }
        Ok(claimed)
    }

    async fn fan_out(
        &self,
        event: &OutboxEvent,
        webhook_ids: &[String],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut state = self.state()?;
        let hooks = &mut state.webhooks;
        for id in webhook_ids {
            if hooks.webhooks.iter().any(|w| &w.info.id == id) {
                hooks
                    .deliveries
                    .entry((id.clone(), event.id.clone()))
                    .or_insert_with(|| (Delivery::pending(id, event, now), None));
            }
        }
        hooks.outbox.remove(&(event.at, event.id.clone()));
        Ok(())
    }

    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let mut state = self.state()?;
        let mut due: Vec<&mut (Delivery, Option<Timestamp>)> = state
            .webhooks
            .deliveries
            .values_mut()
            .filter(|(delivery, claim)| {
                delivery.status == DeliveryStatus::Pending
                    && delivery.next_attempt_at.is_some_and(|at| at <= now)
                    && is_free(*claim, now)
            })
            .collect();
        due.sort_by_key(|(delivery, _)| (delivery.next_attempt_at, delivery.event.at));
        Ok(due
            .into_iter()
            .take(limit)
            .map(|(delivery, claim)| {
                *claim = Some(lease_end(now));
                delivery.clone()
            })
            .collect())
    }

    async fn record_attempt(&self, delivery: &Delivery) -> Result<(), StoreError> {
        let mut state = self.state()?;
        let key = (delivery.webhook_id.clone(), delivery.event.id.clone());
        if let Some(slot) = state.webhooks.deliveries.get_mut(&key) {
            *slot = (delivery.clone(), None);
        }
        Ok(())
    }

    async fn prune_deliveries(&self, before: Timestamp, limit: usize) -> Result<usize, StoreError> {
        let mut state = self.state()?;
        let old: Vec<(String, String)> = state
            .webhooks
            .deliveries
            .iter()
            .filter(|(_, (delivery, _))| {
                delivery.status != DeliveryStatus::Pending && delivery.event.at < before
            })
            .map(|(key, _)| key.clone())
            .take(limit)
            .collect();
        for key in &old {
            state.webhooks.deliveries.remove(key);
        }
        Ok(old.len())
    }

    async fn deliveries(
        &self,
        webhook_id: &str,
        page: &PageRequest,
    ) -> Result<Page<Delivery>, StoreError> {
        let state = self.state()?;
        let mut found: Vec<&Delivery> = state
            .webhooks
            .deliveries
            .values()
            .map(|(delivery, _)| delivery)
            .filter(|delivery| delivery.webhook_id == webhook_id)
            .collect();
        found.sort_by(|a, b| b.position().cmp(&a.position()));
        let page = paginate(found.into_iter(), page, |d| d.position(), |_| true);
        Ok(Page {
            items: page.items.into_iter().cloned().collect(),
            next: page.next,
        })
    }
}
