//! The [`AdminTokenStore`] of the [`EmbeddedStore`]: one redb table,
//! `admin_tokens`, id → JSON of [`AdminTokenRecord`]. Tokens are few (at
//! most `MAX_ADMIN_TOKENS`), so a lookup by hash reads them all.

use async_trait::async_trait;
use cloro_auth_core::KeyHash;
use jiff::Timestamp;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::admin_tokens::{AdminTokenRecord, AdminTokenStore, may_add, newest_first};
use super::embedded::{begin_write, commit, open_read, open_write, redb_error};
use super::{EmbeddedStore, StoreError};

pub(super) const ADMIN_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("admin_tokens");

fn decode(json: &[u8]) -> Result<AdminTokenRecord, StoreError> {
    serde_json::from_slice(json)
        .map_err(|error| StoreError::corrupt("an admin token cannot be read").caused_by(error))
}

fn encode(record: &AdminTokenRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record)
        .map_err(|error| StoreError::corrupt("an admin token cannot be encoded").caused_by(error))
}

fn all(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<AdminTokenRecord>, StoreError> {
    let mut tokens = Vec::new();
    for entry in table
        .iter()
        .map_err(|error| redb_error("cannot read the admin tokens", error))?
    {
        let (_, json) = entry.map_err(|error| redb_error("cannot read the admin tokens", error))?;
        tokens.push(decode(json.value())?);
    }
    Ok(tokens)
}

#[async_trait]
impl AdminTokenStore for EmbeddedStore {
    async fn add_token(&self, record: &AdminTokenRecord, limit: usize) -> Result<(), StoreError> {
        let record = record.clone();
        self.blocking(move |db| {
            let txn = begin_write(db)?;
            {
                let mut table = open_write(&txn, ADMIN_TOKENS)?;
                if !may_add(&all(&table)?, &record, limit) {
                    return Err(StoreError::Conflict);
                }
                table
                    .insert(record.info.id.as_str(), encode(&record)?.as_slice())
                    .map_err(|error| redb_error("cannot write an admin token", error))?;
            }
            commit(txn)
        })
        .await
    }

    async fn tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError> {
        self.blocking(|db| {
            let txn = db
                .begin_read()
                .map_err(|error| redb_error("cannot start a read", error))?;
            let mut tokens = all(&open_read(&txn, ADMIN_TOKENS)?)?;
            newest_first(&mut tokens);
            Ok(tokens)
        })
        .await
    }

    async fn token_by_hash(&self, hash: &KeyHash) -> Result<Option<AdminTokenRecord>, StoreError> {
        let hash = *hash;
        Ok(self
            .tokens()
            .await?
            .into_iter()
            .find(|record| record.hash == hash))
    }

    async fn remove_token(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = begin_write(db)?;
            let removed = open_write(&txn, ADMIN_TOKENS)?
                .remove(id.as_str())
                .map_err(|error| redb_error("cannot remove an admin token", error))?
                .is_some();
            commit(txn)?;
            Ok(removed)
        })
        .await
    }

    async fn touch_token(&self, id: &str, at: Timestamp) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = begin_write(db)?;
            {
                let mut table = open_write(&txn, ADMIN_TOKENS)?;
                let stored = table
                    .get(id.as_str())
                    .map_err(|error| redb_error("cannot read an admin token", error))?
                    .map(|json| decode(json.value()))
                    .transpose()?;
                if let Some(mut record) = stored {
                    record.info.last_used_at = record.info.last_used_at.max(Some(at));
                    table
                        .insert(id.as_str(), encode(&record)?.as_slice())
                        .map_err(|error| redb_error("cannot write an admin token", error))?;
                }
            }
            commit(txn)
        })
        .await
    }
}
