//! The worker ledger in the redb file: `workers` id → JSON row,
//! `pool_leads` pool → (holder, until µs).

use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{RowChange, WorkerLedger, decode, encode};
use crate::domain::{ProvisionedWorker, Timestamp, TokenRefusal};
use crate::store::StoreError;

const WORKERS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("workers");
const POOL_LEADS: TableDefinition<'_, &str, (&str, i64)> = TableDefinition::new("pool_leads");

/// The ledger over the job store's redb database.
#[derive(Clone)]
pub(crate) struct RedbLedger {
    db: Arc<Database>,
}

impl RedbLedger {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    /// Runs `f` in one write transaction, off the async threads.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(StoreError::backend)?;
            let out = f(&txn)?;
            txn.commit().map_err(StoreError::backend)?;
            Ok(out)
        })
        .await
        .map_err(StoreError::backend)?
    }

    /// Runs `f` on the workers table in a read transaction (no write lock,
    /// no flush: a pool's loop reads the ledger five times a second), off
    /// the async threads; `f` gets None before the first row was written.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(
            Option<&redb::ReadOnlyTable<&'static str, &'static [u8]>>,
        ) -> Result<T, StoreError>
        + Send
        + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(StoreError::backend)?;
            match txn.open_table(WORKERS) {
                Ok(table) => f(Some(&table)),
                Err(redb::TableError::TableDoesNotExist(_)) => f(None),
                Err(err) => Err(StoreError::backend(err)),
            }
        })
        .await
        .map_err(StoreError::backend)?
    }
}

fn rows(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<ProvisionedWorker>, StoreError> {
    let mut out = Vec::new();
    for entry in table.iter().map_err(StoreError::backend)? {
        let (_, value) = entry.map_err(StoreError::backend)?;
        out.push(decode(value.value())?);
    }
    Ok(out)
}

#[async_trait]
impl WorkerLedger for RedbLedger {
    async fn put(&self, worker: &ProvisionedWorker) -> Result<(), StoreError> {
        let (id, bytes) = (worker.id.clone(), encode(worker)?);
        self.write(move |txn| {
            let mut table = txn.open_table(WORKERS).map_err(StoreError::backend)?;
            table
                .insert(id.as_str(), bytes.as_slice())
                .map_err(StoreError::backend)?;
            Ok(())
        })
        .await
    }

    async fn update(
        &self,
        id: &str,
        change: RowChange,
    ) -> Result<Option<ProvisionedWorker>, StoreError> {
        let id = id.to_owned();
        self.write(move |txn| {
            let mut table = txn.open_table(WORKERS).map_err(StoreError::backend)?;
            let current = table
                .get(id.as_str())
                .map_err(StoreError::backend)?
                .map(|v| decode(v.value()))
                .transpose()?;
            let Some(mut worker) = current else {
                return Ok(None);
            };
            change(&mut worker);
            let bytes = encode(&worker)?;
            table
                .insert(id.as_str(), bytes.as_slice())
                .map_err(StoreError::backend)?;
            Ok(Some(worker))
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<ProvisionedWorker>, StoreError> {
        let id = id.to_owned();
        self.read(move |table| {
            let Some(table) = table else {
                return Ok(None);
            };
            let row = table.get(id.as_str()).map_err(StoreError::backend)?;
            row.map(|v| decode(v.value())).transpose()
        })
        .await
    }

    async fn list(&self, pool: Option<&str>) -> Result<Vec<ProvisionedWorker>, StoreError> {
        let pool = pool.map(str::to_owned);
        self.read(move |table| {
            let Some(table) = table else {
                return Ok(Vec::new());
            };
            let mut all = rows(table)?;
            all.retain(|w| pool.as_ref().is_none_or(|p| &w.pool == p));
            Ok(all)
        })
        .await
    }

    async fn remove(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.write(move |txn| {
            let mut table = txn.open_table(WORKERS).map_err(StoreError::backend)?;
            table.remove(id.as_str()).map_err(StoreError::backend)?;
            Ok(())
        })
        .await
    }

    async fn redeem(
        &self,
        token_hash: &str,
        agent_id: &str,
        now: Timestamp,
    ) -> Result<Result<ProvisionedWorker, TokenRefusal>, StoreError> {
        let (token_hash, agent_id) = (token_hash.to_owned(), agent_id.to_owned());
        self.write(move |txn| {
            let mut table = txn.open_table(WORKERS).map_err(StoreError::backend)?;
            let found = rows(&table)?
                .into_iter()
                .find(|w| w.token_hash == token_hash);
            let Some(mut worker) = found else {
                return Ok(Err(TokenRefusal::Unknown));
            };
            if let Err(refusal) = worker.redeem(&agent_id, now) {
                return Ok(Err(refusal));
            }
            let bytes = encode(&worker)?;
            table
                .insert(worker.id.as_str(), bytes.as_slice())
                .map_err(StoreError::backend)?;
            Ok(Ok(worker))
        })
        .await
    }

    async fn lead(
        &self,
        pool: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<bool, StoreError> {
        let (pool, holder) = (pool.to_owned(), holder.to_owned());
        self.write(move |txn| {
            let mut table = txn.open_table(POOL_LEADS).map_err(StoreError::backend)?;
            let free = match table.get(pool.as_str()).map_err(StoreError::backend)? {
                Some(lead) => {
                    let (current, expires) = lead.value();
                    current == holder || expires < now.0
                }
                None => true,
            };
            if free {
                table
                    .insert(pool.as_str(), (holder.as_str(), until.0))
                    .map_err(StoreError::backend)?;
            }
            Ok(free)
        })
        .await
    }
}
