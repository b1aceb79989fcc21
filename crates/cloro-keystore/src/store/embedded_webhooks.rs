//! The [`WebhookStore`] of the [`EmbeddedStore`]: four tables in the same
//! redb file, so a commit writes its outbox events in its own transaction.
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `webhooks` | endpoint id | JSON of [`WebhookRecord`] (the secret sealed) |
//! | `webhook_outbox` | (`at` in ns, event id) | (end of the claim in ns, or `i128::MIN`; JSON of [`OutboxEvent`]) |
//! | `webhook_deliveries` | (endpoint id, event `at` in ns, event id) | (its row in `webhook_due`, or `i128::MIN`; JSON of [`Delivery`]) |
//! | `webhook_due` | (due in ns, endpoint id, event `at` in ns, event id) | `()` |
//!
//! `webhook_due` holds one row per pending delivery, at the time it is due
//! or, while claimed, at the end of the claim; a delivery's row notes which
//! one, so moving it never scans. Every change is one write transaction,
//! and redb runs one at a time: a claim cannot be taken twice.

use async_trait::async_trait;
use cloro_auth_core::wire::DeliveryStatus;
use jiff::Timestamp;
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::embedded::{begin_write, commit, open_write, redb_error};
use super::webhooks::{Delivery, OutboxEvent, WEBHOOK_LEASE, WebhookRecord, WebhookStore};
use super::{EmbeddedStore, Page, PageRequest, StoreError, paginate};

pub(super) const WEBHOOKS: TableDefinition<&str, &[u8]> = TableDefinition::new("webhooks");
pub(super) const OUTBOX: TableDefinition<(i128, &str), (i128, &[u8])> =
    TableDefinition::new("webhook_outbox");
pub(super) const DELIVERIES: TableDefinition<(&str, i128, &str), (i128, &[u8])> =
    TableDefinition::new("webhook_deliveries");
pub(super) const DUE: TableDefinition<(i128, &str, i128, &str), ()> =
    TableDefinition::new("webhook_due");

/// No claim, or no row in `webhook_due`.
const NONE: i128 = i128::MIN;

fn encode<T: serde::Serialize>(value: &T, what: &str) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value)
        .map_err(|error| StoreError::corrupt(format!("{what} cannot be encoded")).caused_by(error))
}

fn decode<T: serde::de::DeserializeOwned>(json: &[u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(json)
        .map_err(|error| StoreError::corrupt(format!("{what} cannot be read")).caused_by(error))
}

fn nanos(at: Timestamp) -> i128 {
    at.as_nanosecond()
}

fn lease_end(now: Timestamp) -> i128 {
    nanos(now.checked_add(WEBHOOK_LEASE).unwrap_or(now))
}

/// Commits a claim, or aborts a transaction that claimed nothing: the
/// worker asks every second, and an idle store should not sync the disk
/// for nothing.
fn commit_if_claimed<T>(txn: WriteTransaction, claimed: &[T]) -> Result<(), StoreError> {
    if claimed.is_empty() {
        return txn
            .abort()
            .map_err(|error| redb_error("cannot end a read of the webhook tables", error));
    }
    commit(txn)
}

/// Puts a commit's events in the outbox, inside the commit's transaction.
pub(super) fn enqueue(txn: &WriteTransaction, events: &[OutboxEvent]) -> Result<(), StoreError> {
    let mut outbox = open_write(txn, OUTBOX)?;
    for event in events {
        let json = encode(event, "an outbox event")?;
        outbox
            .insert(
                (nanos(event.at), event.id.as_str()),
                (NONE, json.as_slice()),
            )
            .map_err(|error| redb_error("cannot write the webhook outbox", error))?;
    }
    Ok(())
}

/// Writes `delivery` with its `webhook_due` row at `due` (or none), moving
/// the row it had.
fn write_delivery(
    txn: &WriteTransaction,
    delivery: &Delivery,
    due: Option<i128>,
) -> Result<(), StoreError> {
    let mut deliveries = open_write(txn, DELIVERIES)?;
    let mut due_index = open_write(txn, DUE)?;
    let (at, event_id) = (nanos(delivery.event.at), delivery.event.id.as_str());
    let webhook = delivery.webhook_id.as_str();
    let previous = deliveries
        .get((webhook, at, event_id))
        .map_err(|error| redb_error("cannot read a delivery", error))?
        .map(|row| row.value().0);
    if let Some(previous) = previous.filter(|&row| row != NONE) {
        due_index
            .remove((previous, webhook, at, event_id))
            .map_err(|error| redb_error("cannot write the delivery index", error))?;
    }
    if let Some(due) = due {
        due_index
            .insert((due, webhook, at, event_id), ())
            .map_err(|error| redb_error("cannot write the delivery index", error))?;
    }
    let json = encode(delivery, "a delivery")?;
    deliveries
        .insert(
            (webhook, at, event_id),
            (due.unwrap_or(NONE), json.as_slice()),
        )
        .map_err(|error| redb_error("cannot write a delivery", error))?;
    Ok(())
}

#[async_trait]
impl WebhookStore for EmbeddedStore {
    async fn add_webhook(&self, record: &WebhookRecord) -> Result<(), StoreError> {
        let record = record.clone();
        self.blocking(move |db| {
            let txn = begin_write(db)?;
            {
                let mut webhooks = open_write(&txn, WEBHOOKS)?;
                let taken = webhooks
                    .get(record.info.id.as_str())
                    .map_err(|error| redb_error("cannot read the webhooks", error))?
                    .is_some();
                if taken {
                    return Err(StoreError::Conflict);
                }
                let json = encode(&record, "a webhook")?;
                webhooks
                    .insert(record.info.id.as_str(), json.as_slice())
                    .map_err(|error| redb_error("cannot write a webhook", error))?;
            }
            commit(txn)
        })
        .await
    }

    async fn webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        self.blocking(|db| {
            let txn = super::embedded::begin_read(db)?;
            let table = super::embedded::open_read(&txn, WEBHOOKS)?;
            let mut webhooks = Vec::new();
            for entry in table
                .iter()
                .map_err(|error| redb_error("cannot read the webhooks", error))?
            {
                let (_, json) =
                    entry.map_err(|error| redb_error("cannot read the webhooks", error))?;
                webhooks.push(decode::<WebhookRecord>(json.value(), "a webhook")?);
            }
            webhooks.sort_by(|a, b| {
                (b.info.created_at, &b.info.id).cmp(&(a.info.created_at, &a.info.id))
            });
            Ok(webhooks)
        })
        .await
    }

    async fn remove_webhook(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = begin_write(db)?;
            let existed = {
                let mut webhooks = open_write(&txn, WEBHOOKS)?;
                let existed = webhooks
                    .remove(id.as_str())
                    .map_err(|error| redb_error("cannot remove a webhook", error))?
                    .is_some();
                let mut deliveries = open_write(&txn, DELIVERIES)?;
                let mut due_index = open_write(&txn, DUE)?;
                let rows: Vec<(i128, i128, String)> = deliveries
                    .range((id.as_str(), i128::MIN, "")..=(id.as_str(), i128::MAX, "\u{10ffff}"))
                    .map_err(|error| redb_error("cannot read the deliveries", error))?
                    .map(|entry| {
                        entry
                            .map(|(key, row)| {
                                let (_, at, event) = key.value();
                                (row.value().0, at, event.to_owned())
                            })
                            .map_err(|error| redb_error("cannot read the deliveries", error))
                    })
                    .collect::<Result<_, _>>()?;
                for (due, at, event) in rows {
                    deliveries
                        .remove((id.as_str(), at, event.as_str()))
                        .map_err(|error| redb_error("cannot remove a delivery", error))?;
                    if due != NONE {
                        due_index
                            .remove((due, id.as_str(), at, event.as_str()))
                            .map_err(|error| redb_error("cannot remove a delivery", error))?;
                    }
                }
                existed
            };
            commit(txn)?;
            Ok(existed)
        })
        .await
    }

    async fn outbox(&self, now: Timestamp, limit: usize) -> Result<Vec<OutboxEvent>, StoreError> {
        self.blocking(move |db| {
            let txn = begin_write(db)?;
            let claimed = {
                let mut outbox = open_write(&txn, OUTBOX)?;
                let mut claimed = Vec::new();
                for entry in outbox
                    .iter()
                    .map_err(|error| redb_error("cannot read the webhook outbox", error))?
                {
                    if claimed.len() == limit {
                        break;
                    }
                    let (_, row) = entry
                        .map_err(|error| redb_error("cannot read the webhook outbox", error))?;
                    let (claim, json) = row.value();
                    if claim == NONE || claim <= nanos(now) {
                        claimed.push(decode::<OutboxEvent>(json, "an outbox event")?);
                    }
                }
                for event in &claimed {
                    let json = encode(event, "an outbox event")?;
                    outbox
                        .insert(
                            (nanos(event.at), event.id.as_str()),
                            (lease_end(now), json.as_slice()),
                        )
                        .map_err(|error| redb_error("cannot write the webhook outbox", error))?;
                }
                claimed
            };
            commit_if_claimed(txn, &claimed)?;
            Ok(claimed)
        })
        .await
    }

    async fn fan_out(
        &self,
        event: &OutboxEvent,
        webhook_ids: &[String],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let (event, webhook_ids) = (event.clone(), webhook_ids.to_vec());
        self.blocking(move |db| {
            let txn = begin_write(db)?;
            for id in &webhook_ids {
                let registered = open_write(&txn, WEBHOOKS)?
                    .get(id.as_str())
                    .map_err(|error| redb_error("cannot read the webhooks", error))?
                    .is_some();
                let exists = open_write(&txn, DELIVERIES)?
                    .get((id.as_str(), nanos(event.at), event.id.as_str()))
                    .map_err(|error| redb_error("cannot read a delivery", error))?
                    .is_some();
                if registered && !exists {
                    write_delivery(&txn, &Delivery::pending(id, &event, now), Some(nanos(now)))?;
                }
            }
            open_write(&txn, OUTBOX)?
                .remove((nanos(event.at), event.id.as_str()))
                .map_err(|error| redb_error("cannot write the webhook outbox", error))?;
            commit(txn)
        })
        .await
    }

    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        self.blocking(move |db| {
            let txn = begin_write(db)?;
            let keys: Vec<(String, i128, String)> = {
                let due_index = open_write(&txn, DUE)?;
                due_index
                    .range(
                        (i128::MIN, "", i128::MIN, "")
                            ..=(nanos(now), "\u{10ffff}", i128::MAX, "\u{10ffff}"),
                    )
                    .map_err(|error| redb_error("cannot read the delivery index", error))?
                    .take(limit)
                    .map(|entry| {
                        entry
                            .map(|(key, _)| {
                                let (_, webhook, at, event) = key.value();
                                (webhook.to_owned(), at, event.to_owned())
                            })
                            .map_err(|error| redb_error("cannot read the delivery index", error))
                    })
                    .collect::<Result<_, _>>()?
            };
            let mut claimed = Vec::with_capacity(keys.len());
            for (webhook, at, event) in keys {
                let delivery = {
                    let deliveries = open_write(&txn, DELIVERIES)?;
                    let row = deliveries
                        .get((webhook.as_str(), at, event.as_str()))
                        .map_err(|error| redb_error("cannot read a delivery", error))?;
                    match row {
                        Some(row) => decode::<Delivery>(row.value().1, "a delivery")?,
                        None => continue,
                    }
                };
                if delivery.status != DeliveryStatus::Pending {
                    continue;
                }
                write_delivery(&txn, &delivery, Some(lease_end(now)))?;
                claimed.push(delivery);
            }
            commit_if_claimed(txn, &claimed)?;
            Ok(claimed)
        })
        .await
    }

    async fn record_attempt(&self, delivery: &Delivery) -> Result<(), StoreError> {
        let delivery = delivery.clone();
        self.blocking(move |db| {
            let txn = begin_write(db)?;
            let exists = open_write(&txn, DELIVERIES)?
                .get((
                    delivery.webhook_id.as_str(),
                    nanos(delivery.event.at),
                    delivery.event.id.as_str(),
                ))
                .map_err(|error| redb_error("cannot read a delivery", error))?
                .is_some();
            if exists {
                let due = match delivery.status {
                    DeliveryStatus::Pending => delivery.next_attempt_at.map(nanos),
                    DeliveryStatus::Delivered | DeliveryStatus::Failed => None,
                };
                write_delivery(&txn, &delivery, due)?;
            }
            commit(txn)
        })
        .await
    }

    async fn prune_deliveries(&self, before: Timestamp, limit: usize) -> Result<usize, StoreError> {
        self.blocking(move |db| {
            let txn = begin_write(db)?;
            let mut pruned = 0;
            {
                let webhook_ids: Vec<String> = open_write(&txn, WEBHOOKS)?
                    .iter()
                    .map_err(|error| redb_error("cannot read the webhooks", error))?
                    .map(|entry| {
                        entry
                            .map(|(id, _)| id.value().to_owned())
                            .map_err(|error| redb_error("cannot read the webhooks", error))
                    })
                    .collect::<Result<_, _>>()?;
                let mut deliveries = open_write(&txn, DELIVERIES)?;
                for id in &webhook_ids {
                    if pruned == limit {
                        break;
                    }
                    // Only rows without a due time: finished deliveries.
                    let old: Vec<(i128, String)> = deliveries
                        .range((id.as_str(), i128::MIN, "")..(id.as_str(), nanos(before), ""))
                        .map_err(|error| redb_error("cannot read the deliveries", error))?
                        .filter_map(|entry| match entry {
                            Ok((key, row)) if row.value().0 == NONE => {
                                let (_, at, event) = key.value();
                                Some(Ok((at, event.to_owned())))
                            }
                            Ok(_) => None,
                            Err(error) => {
                                Some(Err(redb_error("cannot read the deliveries", error)))
                            }
                        })
                        .take(limit - pruned)
                        .collect::<Result<_, _>>()?;
                    for (at, event) in old {
                        deliveries
                            .remove((id.as_str(), at, event.as_str()))
                            .map_err(|error| redb_error("cannot remove a delivery", error))?;
                        pruned += 1;
                    }
                }
            }
            if pruned == 0 {
                txn.abort()
                    .map_err(|error| redb_error("cannot end a read of the deliveries", error))?;
            } else {
                commit(txn)?;
            }
            Ok(pruned)
        })
        .await
    }

    async fn deliveries(
        &self,
        webhook_id: &str,
        page: &PageRequest,
    ) -> Result<Page<Delivery>, StoreError> {
        let (webhook_id, page) = (webhook_id.to_owned(), page.clone());
        self.blocking(move |db| {
            let txn = super::embedded::begin_read(db)?;
            let deliveries = super::embedded::open_read(&txn, DELIVERIES)?;
            let (upper_at, upper_id) = match &page.after {
                Some(cursor) => (cursor.at.as_nanosecond(), cursor.id.as_str()),
                None => (i128::MAX, ""),
            };
            let mut failure = None;
            let rows = deliveries
                .range(
                    (webhook_id.as_str(), i128::MIN, "")..(webhook_id.as_str(), upper_at, upper_id),
                )
                .map_err(|error| redb_error("cannot read the deliveries", error))?;
            let items = rows.rev().map_while(|entry| {
                entry
                    .map_err(|error| redb_error("cannot read the deliveries", error))
                    .and_then(|(_, row)| decode::<Delivery>(row.value().1, "a delivery"))
                    .map_err(|error| failure = Some(error))
                    .ok()
            });
            let found = paginate(items, &page, |d| d.position(), |_| true);
            match failure {
                Some(error) => Err(error),
                None => Ok(found),
            }
        })
        .await
    }
}
