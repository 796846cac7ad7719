//! The embedded default: one redb file, written by one thread with group
//! commit.
//!
//! redb allows one write transaction at a time and makes each commit durable
//! with fsync. Committing once per request would cap submits at the disk's
//! fsync rate, so every write goes through a queue to a dedicated writer
//! thread that drains whatever has accumulated, applies it all in one
//! transaction, commits once, and only then answers each caller. Under load
//! many submits share one fsync; when idle a lone submit commits at once (no
//! timer). Reads use their own read transactions on the blocking pool and
//! never wait for the writer.
//!
//! Layout (version 1): `jobs` u128 id → JSON envelope `{"v":1,"job":…}`;
//! `active` u128 id → () for non-terminal jobs (so a restart does not scan
//! history); `log_chunks` (u128 id, u64 first sequence) → the lines of one
//! stored batch (see `codec::encode_chunk`), a row per batch rather than
//! per line (files with the older row-per-line `logs` table are moved over
//! at open);
//! `log_heads` u128 id → highest sequence taken; `log_bytes` u128 id → bytes
//! of output offered (for the log quota; absent reads as 0); `plugins` name → component
//! bytes; `settings` key → value; `leases` u128 id → (attempt, µs when its
//! agent was last heard from); `jobs_by_state` (u8 state, u128 id) → ()
//! (see [`index`]; built at open for files from before it); `events` u64
//! sequence → JSON event (see [`events`], written with the changes).
//!
//! Memory: redb caches pages up to a fixed size ([`RedbStore::open_with_cache`],
//! the `--store-cache-mb` setting), so the host's footprint does not grow
//! with the file.
//!
//! Files: `writer.rs` (the writer thread and the write side of every
//! table), `index.rs` (the state index), `events.rs` (the event log),
//! `tests.rs`.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use self::index::BY_STATE;
use self::writer::{WriteOp, writer_loop};
use super::codec::{decode_chunk, decode_job, decode_line_v1, encode_chunk, encode_job};
use super::ledger::RedbLedger;
use super::records::RedbRecords;
use super::{
    Appended, AttemptRef, JobStore, ListQuery, Renewal, StoreError, Transition, WorkerLedger,
};
use crate::domain::{
    EventId, EventRecord, Job, JobId, JobState, LogRecord, StoredEvent, Timestamp,
};

pub(in crate::store) mod events;
mod index;
mod writer;

const JOBS: TableDefinition<'_, u128, &[u8]> = TableDefinition::new("jobs");
const ACTIVE: TableDefinition<'_, u128, ()> = TableDefinition::new("active");
/// Layout 1 of the log: a row per line. Only read, to move old files over.
const LOGS_V1: TableDefinition<'_, (u128, u64), &[u8]> = TableDefinition::new("logs");
const LOG_CHUNKS: TableDefinition<'_, (u128, u64), &[u8]> = TableDefinition::new("log_chunks");
const LOG_HEADS: TableDefinition<'_, u128, u64> = TableDefinition::new("log_heads");
const LOG_BYTES: TableDefinition<'_, u128, u64> = TableDefinition::new("log_bytes");
const PLUGINS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("plugins");
const SETTINGS: TableDefinition<'_, &str, &str> = TableDefinition::new("settings");
const LEASES: TableDefinition<'_, u128, (u32, i64)> = TableDefinition::new("leases");

/// How many queued writes one transaction takes at most, so one commit
/// never holds up its first caller for too long.
const MAX_GROUP: usize = 4096;
/// Page cache of [`RedbStore::open`]: what the store may keep in memory
/// whatever the size of the file (redb's own default is 1 GiB).
pub const DEFAULT_CACHE_BYTES: usize = 256 * 1024 * 1024;

/// The redb adapter of [`JobStore`].
#[derive(Debug, Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    writes: mpsc::Sender<WriteOp>,
    /// Where blobs go: `artifacts/` beside the database file.
    blobs_dir: std::path::PathBuf,
}

impl RedbStore {
    /// Opens (or creates) the database file and starts its writer thread,
    /// with the default page cache ([`DEFAULT_CACHE_BYTES`]).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// The same with a page cache of `cache_bytes`.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(StoreError::backend)?;
        }
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(StoreError::backend)?;
        let txn = db.begin_write().map_err(StoreError::backend)?;
        {
            txn.open_table(JOBS).map_err(StoreError::backend)?;
            txn.open_table(ACTIVE).map_err(StoreError::backend)?;
            txn.open_table(LOG_CHUNKS).map_err(StoreError::backend)?;
            txn.open_table(LOG_HEADS).map_err(StoreError::backend)?;
            migrate_line_rows(&txn)?;
            txn.open_table(PLUGINS).map_err(StoreError::backend)?;
            txn.open_table(SETTINGS).map_err(StoreError::backend)?;
            txn.open_table(LEASES).map_err(StoreError::backend)?;
            index::build_if_missing(&txn)?;
        }
        txn.commit().map_err(StoreError::backend)?;
        let db = Arc::new(db);
        let (writes, queue) = mpsc::channel(MAX_GROUP * 4);
        let writer_db = Arc::clone(&db);
        std::thread::Builder::new()
            .name("hodei-redb-writer".into())
            .spawn(move || writer_loop(&writer_db, queue))
            .map_err(StoreError::backend)?;
        let blobs_dir = path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join("artifacts");
        Ok(Self {
            db,
            writes,
            blobs_dir,
        })
    }

    async fn submit<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> WriteOp,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writes
            .send(make(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(StoreError::backend)?
    }
}

fn key(id: JobId) -> u128 {
    id.0.as_u128()
}

fn on_worker(state: JobState) -> bool {
    matches!(state, JobState::Scheduled | JobState::Running)
}

/// Every job in one of `states`, oldest first within each, through the
/// state index.
fn in_states(txn: &redb::ReadTransaction, states: &[JobState]) -> Result<Vec<Job>, StoreError> {
    let by_state = txn.open_table(BY_STATE).map_err(StoreError::backend)?;
    let jobs = txn.open_table(JOBS).map_err(StoreError::backend)?;
    let mut out = Vec::new();
    for &state in states {
        for entry in by_state
            .range(index::range(state, None))
            .map_err(StoreError::backend)?
        {
            let (row, _) = entry.map_err(StoreError::backend)?;
            if let Some(value) = jobs.get(row.value().1).map_err(StoreError::backend)? {
                out.push(decode_job(value.value())?);
            }
        }
    }
    Ok(out)
}

/// Moves a file written with a row per log line to a row per batch (each
/// old line becomes a chunk of one), then drops the old table.
fn migrate_line_rows(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let moved = {
        let old = txn.open_table(LOGS_V1).map_err(StoreError::backend)?;
        let mut chunks = txn.open_table(LOG_CHUNKS).map_err(StoreError::backend)?;
        let mut moved = 0_u64;
        for entry in old.iter().map_err(StoreError::backend)? {
            let (k, value) = entry.map_err(StoreError::backend)?;
            let (id, sequence) = k.value();
            let line = decode_line_v1(sequence, value.value())?;
            chunks
                .insert((id, sequence), encode_chunk(&[&line]).as_slice())
                .map_err(StoreError::backend)?;
            moved += 1;
        }
        moved
    };
    txn.delete_table(LOGS_V1).map_err(StoreError::backend)?;
    if moved > 0 {
        tracing::info!(lines = moved, "log moved to the chunked layout");
    }
    Ok(())
}

#[async_trait]
impl JobStore for RedbStore {
    async fn insert(&self, job: Job) -> Result<(), StoreError> {
        self.submit(|reply| WriteOp::Insert(Box::new(job), reply))
            .await
    }

    async fn insert_absent(&self, job: Job) -> Result<bool, StoreError> {
        self.submit(|reply| WriteOp::InsertAbsent(Box::new(job), reply))
            .await
    }

    async fn insert_many(&self, jobs: Vec<Job>) -> Result<(), StoreError> {
        // Encoded up front: a job that cannot be encoded refuses the batch
        // before anything reaches the transaction.
        let encoded = jobs.iter().map(encode_job).collect::<Result<Vec<_>, _>>()?;
        self.submit(|reply| WriteOp::InsertMany(jobs, encoded, reply))
            .await
    }

    async fn append_event(&self, event: EventRecord) -> Result<(), StoreError> {
        self.submit(|reply| WriteOp::AppendEvent(Box::new(event), reply))
            .await
    }

    async fn events_after(
        &self,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(move |db| events::after(db, after, limit)).await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(StoreError::backend)?;
            let jobs = txn.open_table(JOBS).map_err(StoreError::backend)?;
            jobs.get(key(id))
                .map_err(StoreError::backend)?
                .map(|g| decode_job(g.value()))
                .transpose()
        })
        .await
    }

    async fn list(&self, query: ListQuery) -> Result<Vec<Job>, StoreError> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(StoreError::backend)?;
            let jobs = txn.open_table(JOBS).map_err(StoreError::backend)?;
            let mut out = Vec::with_capacity(query.limit.min(1024));
            let Some(state) = query.state else {
                let end = query.before.map_or(u128::MAX, key);
                for entry in jobs.range(..end).map_err(StoreError::backend)?.rev() {
                    if out.len() >= query.limit {
                        break;
                    }
                    let (_, value) = entry.map_err(StoreError::backend)?;
                    out.push(decode_job(value.value())?);
                }
                return Ok(out);
            };
            // Through the state index: only the rows returned are read.
            let by_state = txn.open_table(BY_STATE).map_err(StoreError::backend)?;
            let rows = by_state
                .range(index::range(state, query.before))
                .map_err(StoreError::backend)?;
            for entry in rows.rev() {
                if out.len() >= query.limit {
                    break;
                }
                let (row, _) = entry.map_err(StoreError::backend)?;
                let (_, id) = row.value();
                if let Some(value) = jobs.get(id).map_err(StoreError::backend)? {
                    out.push(decode_job(value.value())?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn list_active(&self) -> Result<Vec<Job>, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(StoreError::backend)?;
            let active = txn.open_table(ACTIVE).map_err(StoreError::backend)?;
            let jobs = txn.open_table(JOBS).map_err(StoreError::backend)?;
            let mut out = Vec::new();
            for entry in active.iter().map_err(StoreError::backend)? {
                let (id, _) = entry.map_err(StoreError::backend)?;
                if let Some(value) = jobs.get(id.value()).map_err(StoreError::backend)? {
                    out.push(decode_job(value.value())?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn pending(&self, limit: usize) -> Result<Vec<Job>, StoreError> {
        let mut pending = self
            .read(|db| {
                let txn = db.begin_read().map_err(StoreError::backend)?;
                in_states(&txn, &[JobState::Pending])
            })
            .await?;
        pending.sort_by_key(|job| (std::cmp::Reverse(job.spec.priority), job.id));
        pending.truncate(limit);
        Ok(pending)
    }

    async fn update(&self, id: JobId, change: Transition) -> Result<Job, StoreError> {
        self.submit(|reply| WriteOp::Update(id, change, reply))
            .await
    }

    async fn update_deferred(&self, id: JobId, change: Transition) -> Result<Job, StoreError> {
        self.submit(|reply| WriteOp::UpdateDeferred(id, change, reply))
            .await
    }

    async fn renew_leases(
        &self,
        attempts: Vec<AttemptRef>,
        seen: Timestamp,
    ) -> Result<Renewal, StoreError> {
        if attempts.is_empty() {
            return Ok(Renewal::default());
        }
        self.submit(|reply| WriteOp::RenewLeases(attempts, seen, reply))
            .await
    }

    async fn expired_leases(&self, cutoff: Timestamp) -> Result<Vec<AttemptRef>, StoreError> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(StoreError::backend)?;
            let on_workers = in_states(&txn, &[JobState::Scheduled, JobState::Running])?;
            let leases = txn.open_table(LEASES).map_err(StoreError::backend)?;
            let mut out = Vec::new();
            for job in on_workers {
                let renewed = leases
                    .get(key(job.id))
                    .map_err(StoreError::backend)?
                    .map(|g| g.value())
                    .filter(|(attempt, _)| *attempt == job.attempt)
                    .map_or(i64::MIN, |(_, at)| at);
                let since = renewed.max(job.scheduled_at.map_or(i64::MIN, |t| t.0));
                if since < cutoff.0 {
                    out.push((job.id, job.attempt));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn append_logs(
        &self,
        id: JobId,
        attempt: u32,
        lines: Vec<LogRecord>,
        quota: u64,
    ) -> Result<Appended, StoreError> {
        self.submit(|reply| WriteOp::AppendLogs {
            id,
            attempt,
            lines,
            quota,
            reply,
        })
        .await
    }

    async fn read_logs(
        &self,
        id: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, StoreError> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(StoreError::backend)?;
            let logs = txn.open_table(LOG_CHUNKS).map_err(StoreError::backend)?;
            let wanted = after.saturating_add(1);
            // The chunk holding `wanted` starts at or before it.
            let first = logs
                .range((key(id), 0)..=(key(id), wanted))
                .map_err(StoreError::backend)?
                .next_back()
                .transpose()
                .map_err(StoreError::backend)?
                .map_or(wanted, |(k, _)| k.value().1);
            let mut out = Vec::new();
            for entry in logs
                .range((key(id), first)..=(key(id), u64::MAX))
                .map_err(StoreError::backend)?
            {
                if out.len() >= limit {
                    break;
                }
                let (_, value) = entry.map_err(StoreError::backend)?;
                decode_chunk(value.value(), |line| {
                    if line.sequence > after && out.len() < limit {
                        out.push(line);
                    }
                })?;
            }
            Ok(out)
        })
        .await
    }

    async fn log_head(&self, id: JobId) -> Result<u64, StoreError> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(StoreError::backend)?;
            let heads = txn.open_table(LOG_HEADS).map_err(StoreError::backend)?;
            Ok(heads
                .get(key(id))
                .map_err(StoreError::backend)?
                .map_or(0, |g| g.value()))
        })
        .await
    }

    async fn put_plugin(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.submit(|reply| WriteOp::PutPlugin(name, bytes, reply))
            .await
    }

    async fn delete_plugin(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.submit(|reply| WriteOp::DeletePlugin(name, reply))
            .await
    }

    async fn plugins(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(StoreError::backend)?;
            let plugins = txn.open_table(PLUGINS).map_err(StoreError::backend)?;
            let mut out = Vec::new();
            for entry in plugins.iter().map_err(StoreError::backend)? {
                let (name, bytes) = entry.map_err(StoreError::backend)?;
                out.push((name.value().to_owned(), bytes.value().to_vec()));
            }
            Ok(out)
        })
        .await
    }

    async fn put_setting(&self, key: &str, value: String) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.submit(|reply| WriteOp::PutSetting(key, value, reply))
            .await
    }

    fn records(&self) -> Arc<dyn super::RecordStore> {
        Arc::new(RedbRecords::new(Arc::clone(&self.db)))
    }

    fn blobs(&self) -> Arc<dyn super::BlobStore> {
        Arc::new(super::blobs::FsBlobs::new(self.blobs_dir.clone()))
    }

    fn ledger(&self) -> Arc<dyn WorkerLedger> {
        Arc::new(RedbLedger::new(Arc::clone(&self.db)))
    }

    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_owned();
        self.read(move |db| {
            let txn = db.begin_read().map_err(StoreError::backend)?;
            let settings = txn.open_table(SETTINGS).map_err(StoreError::backend)?;
            Ok(settings
                .get(key.as_str())
                .map_err(StoreError::backend)?
                .map(|v| v.value().to_owned()))
        })
        .await
    }
}

#[cfg(test)]
mod tests;
