//! Records in the redb file: one table, `records`, keyed by
//! `(kind, key)`.

use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{LoggedChange, RecordStore, RecordUpdate};
use crate::store::StoreError;
use crate::store::redb::events::EventLog;

const RECORDS: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("records");

/// The records over the job store's redb database.
#[derive(Clone)]
pub(crate) struct RedbRecords {
    db: Arc<Database>,
}

impl RedbRecords {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(StoreError::backend)?
    }
}

#[async_trait]
impl RecordStore for RedbRecords {
    async fn get(&self, kind: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (kind, key) = (kind.to_owned(), key.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(StoreError::backend)?;
            let table = match txn.open_table(RECORDS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(err) => return Err(StoreError::backend(err)),
            };
            let value = table
                .get((kind.as_str(), key.as_str()))
                .map_err(StoreError::backend)?;
            Ok(value.map(|v| v.value().to_vec()))
        })
        .await
    }

    async fn list(&self, kind: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let kind = kind.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(StoreError::backend)?;
            let table = match txn.open_table(RECORDS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(err) => return Err(StoreError::backend(err)),
            };
            let mut out = Vec::new();
            let range = table
                .range((kind.as_str(), "")..)
                .map_err(StoreError::backend)?;
            for entry in range {
                let (k, v) = entry.map_err(StoreError::backend)?;
                let (k_kind, k_key) = k.value();
                if k_kind != kind {
                    break;
                }
                out.push((k_key.to_owned(), v.value().to_vec()));
            }
            Ok(out)
        })
        .await
    }

    async fn put(&self, kind: &str, key: &str, doc: Vec<u8>) -> Result<(), StoreError> {
        self.update(kind, key, Box::new(move |_| RecordUpdate::Put(doc)))
            .await
            .map(drop)
    }

    async fn update_logged(
        &self,
        kind: &str,
        key: &str,
        change: LoggedChange,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let (kind, key) = (kind.to_owned(), key.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(StoreError::backend)?;
            let after = {
                let mut table = txn.open_table(RECORDS).map_err(StoreError::backend)?;
                let id = (kind.as_str(), key.as_str());
                let before = table
                    .get(id)
                    .map_err(StoreError::backend)?
                    .map(|v| v.value().to_vec());
                let (update, events) = change(before.as_deref());
                if !events.is_empty() {
                    let mut log = EventLog::open(&txn)?;
                    for event in &events {
                        log.append(event)?;
                    }
                }
                match update {
                    RecordUpdate::Keep => before,
                    RecordUpdate::Put(doc) => {
                        table
                            .insert(id, doc.as_slice())
                            .map_err(StoreError::backend)?;
                        Some(doc)
                    }
                    RecordUpdate::Delete => {
                        table.remove(id).map_err(StoreError::backend)?;
                        None
                    }
                }
            };
            txn.commit().map_err(StoreError::backend)?;
            Ok(after)
        })
        .await
    }
}
