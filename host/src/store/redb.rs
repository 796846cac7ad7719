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
//! agent was last heard from).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::codec::{decode_chunk, decode_job, decode_line_v1, encode_chunk, encode_job};
use super::ledger::RedbLedger;
use super::records::RedbRecords;
use super::{
    Appended, AttemptRef, JobStore, ListQuery, Renewal, StoreError, Transition, WorkerLedger,
};
use crate::domain::{DomainError, Job, JobId, JobState, LogRecord, Timestamp, admit};

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

/// The redb adapter of [`JobStore`].
#[derive(Debug, Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    writes: mpsc::Sender<WriteOp>,
}

/// A write waiting for the writer thread.
enum WriteOp {
    Insert(Box<Job>, oneshot::Sender<Result<(), StoreError>>),
    Update(JobId, Transition, oneshot::Sender<Result<Job, StoreError>>),
    AppendLogs {
        id: JobId,
        attempt: u32,
        lines: Vec<LogRecord>,
        quota: u64,
        reply: oneshot::Sender<Result<Appended, StoreError>>,
    },
    PutPlugin(String, Vec<u8>, oneshot::Sender<Result<(), StoreError>>),
    DeletePlugin(String, oneshot::Sender<Result<(), StoreError>>),
    PutSetting(String, String, oneshot::Sender<Result<(), StoreError>>),
    RenewLeases(
        Vec<AttemptRef>,
        Timestamp,
        oneshot::Sender<Result<Renewal, StoreError>>,
    ),
}

impl RedbStore {
    /// Opens (or creates) the database file and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(StoreError::backend)?;
        }
        let db = Database::create(path).map_err(StoreError::backend)?;
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
        }
        txn.commit().map_err(StoreError::backend)?;
        let db = Arc::new(db);
        let (writes, queue) = mpsc::channel(MAX_GROUP * 4);
        let writer_db = Arc::clone(&db);
        std::thread::Builder::new()
            .name("hodei-redb-writer".into())
            .spawn(move || writer_loop(&writer_db, queue))
            .map_err(StoreError::backend)?;
        Ok(Self { db, writes })
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

/// Drains the queue into shared transactions until every sender is gone.
fn writer_loop(db: &Database, mut queue: mpsc::Receiver<WriteOp>) {
    let mut batch = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        commit_group(db, &mut batch);
    }
}

/// Outcome of one op, held back until the group's commit is durable.
#[allow(clippy::large_enum_variant)] // lives for one commit; boxing would cost an allocation per op
enum Reply {
    Insert(
        oneshot::Sender<Result<(), StoreError>>,
        Result<(), StoreError>,
    ),
    Update(
        oneshot::Sender<Result<Job, StoreError>>,
        Result<Job, StoreError>,
    ),
    Logs(
        oneshot::Sender<Result<Appended, StoreError>>,
        Result<Appended, StoreError>,
    ),
    Leases(
        oneshot::Sender<Result<Renewal, StoreError>>,
        Result<Renewal, StoreError>,
    ),
}

fn commit_group(db: &Database, batch: &mut Vec<WriteOp>) {
    let mut replies = Vec::with_capacity(batch.len());
    let committed = (|| -> Result<(), StoreError> {
        let txn = db.begin_write().map_err(StoreError::backend)?;
        {
            let mut tables = Tables {
                jobs: txn.open_table(JOBS).map_err(StoreError::backend)?,
                active: txn.open_table(ACTIVE).map_err(StoreError::backend)?,
                logs: txn.open_table(LOG_CHUNKS).map_err(StoreError::backend)?,
                heads: txn.open_table(LOG_HEADS).map_err(StoreError::backend)?,
                bytes: txn.open_table(LOG_BYTES).map_err(StoreError::backend)?,
                plugins: txn.open_table(PLUGINS).map_err(StoreError::backend)?,
                settings: txn.open_table(SETTINGS).map_err(StoreError::backend)?,
                leases: txn.open_table(LEASES).map_err(StoreError::backend)?,
            };
            for op in batch.drain(..) {
                replies.push(match op {
                    WriteOp::Insert(job, reply) => Reply::Insert(reply, tables.insert(&job)),
                    WriteOp::Update(id, change, reply) => {
                        Reply::Update(reply, tables.update(id, change))
                    }
                    WriteOp::AppendLogs {
                        id,
                        attempt,
                        lines,
                        quota,
                        reply,
                    } => Reply::Logs(reply, tables.append_logs(id, attempt, &lines, quota)),
                    WriteOp::PutPlugin(name, bytes, reply) => Reply::Insert(
                        reply,
                        tables
                            .plugins
                            .insert(name.as_str(), bytes.as_slice())
                            .map(drop)
                            .map_err(StoreError::backend),
                    ),
                    WriteOp::DeletePlugin(name, reply) => Reply::Insert(
                        reply,
                        tables
                            .plugins
                            .remove(name.as_str())
                            .map(drop)
                            .map_err(StoreError::backend),
                    ),
                    WriteOp::PutSetting(key, value, reply) => Reply::Insert(
                        reply,
                        tables
                            .settings
                            .insert(key.as_str(), value.as_str())
                            .map(drop)
                            .map_err(StoreError::backend),
                    ),
                    WriteOp::RenewLeases(attempts, seen, reply) => {
                        Reply::Leases(reply, tables.renew_leases(attempts, seen))
                    }
                });
            }
        }
        txn.commit().map_err(StoreError::backend)
    })();
    // Callers learn their result only now, after the commit: an answer
    // before durability would be a promise the disk has not kept.
    for reply in replies {
        let failed = || {
            committed
                .as_ref()
                .err()
                .map(|e| StoreError::Backend(e.to_string()))
        };
        match reply {
            Reply::Insert(tx, r) => drop(tx.send(failed().map_or(r, Err))),
            Reply::Update(tx, r) => drop(tx.send(failed().map_or(r, Err))),
            Reply::Logs(tx, r) => drop(tx.send(failed().map_or(r, Err))),
            Reply::Leases(tx, r) => drop(tx.send(failed().map_or(r, Err))),
        }
    }
    if let Err(err) = committed {
        tracing::error!(%err, "redb commit failed");
        // A failed op is not repeated: its caller got the error.
        batch.clear();
    }
}

/// The tables of one write transaction.
struct Tables<'txn> {
    jobs: redb::Table<'txn, u128, &'static [u8]>,
    active: redb::Table<'txn, u128, ()>,
    logs: redb::Table<'txn, (u128, u64), &'static [u8]>,
    heads: redb::Table<'txn, u128, u64>,
    bytes: redb::Table<'txn, u128, u64>,
    plugins: redb::Table<'txn, &'static str, &'static [u8]>,
    settings: redb::Table<'txn, &'static str, &'static str>,
    leases: redb::Table<'txn, u128, (u32, i64)>,
}

impl Tables<'_> {
    fn insert(&mut self, job: &Job) -> Result<(), StoreError> {
        let bytes = encode_job(job)?;
        self.jobs
            .insert(key(job.id), bytes.as_slice())
            .map_err(StoreError::backend)?;
        if !job.state.is_terminal() {
            self.active
                .insert(key(job.id), ())
                .map_err(StoreError::backend)?;
        }
        Ok(())
    }

    fn load(&self, id: JobId) -> Result<Job, StoreError> {
        let guard = self
            .jobs
            .get(key(id))
            .map_err(StoreError::backend)?
            .ok_or(StoreError::NotFound(id))?;
        decode_job(guard.value())
    }

    fn update(&mut self, id: JobId, change: Transition) -> Result<Job, StoreError> {
        let mut job = self.load(id)?;
        change(&mut job)?;
        let bytes = encode_job(&job)?;
        self.jobs
            .insert(key(id), bytes.as_slice())
            .map_err(StoreError::backend)?;
        if job.state.is_terminal() {
            self.active.remove(key(id)).map_err(StoreError::backend)?;
            self.leases.remove(key(id)).map_err(StoreError::backend)?;
        }
        Ok(job)
    }

    fn renew_leases(
        &mut self,
        attempts: Vec<AttemptRef>,
        seen: Timestamp,
    ) -> Result<Renewal, StoreError> {
        let mut renewal = Renewal::default();
        for (id, attempt) in attempts {
            let job = match self.load(id) {
                Ok(job) => job,
                Err(StoreError::NotFound(_)) => {
                    renewal.gone.push((id, attempt));
                    continue;
                }
                Err(err) => return Err(err),
            };
            if job.attempt != attempt || !on_worker(job.state) {
                renewal.gone.push((id, attempt));
                continue;
            }
            let before = self
                .leases
                .get(key(id))
                .map_err(StoreError::backend)?
                .map(|g| g.value())
                .filter(|(a, _)| *a == attempt)
                .map_or(i64::MIN, |(_, at)| at);
            if seen.0 > before {
                self.leases
                    .insert(key(id), (attempt, seen.0))
                    .map_err(StoreError::backend)?;
            }
            if job.cancel_requested {
                renewal.cancel_requested.push((id, attempt));
            }
        }
        Ok(renewal)
    }

    fn append_logs(
        &mut self,
        id: JobId,
        attempt: u32,
        lines: &[LogRecord],
        quota: u64,
    ) -> Result<Appended, StoreError> {
        let job = self.load(id)?;
        if job.attempt != attempt || job.state == JobState::Pending {
            return Err(DomainError::StaleAttempt {
                current: job.attempt,
                got: attempt,
            }
            .into());
        }
        let read = |table: &redb::Table<'_, u128, u64>| {
            table
                .get(key(id))
                .map(|g| g.map_or(0, |g| g.value()))
                .map_err(StoreError::backend)
        };
        let (head, bytes) = (read(&self.heads)?, read(&self.bytes)?);
        let admission = admit(head, bytes, quota, lines)?;
        let mut rows = admission.kept;
        rows.extend(admission.marker.as_ref());
        if let Some(first) = rows.first() {
            // One row for the whole batch: a row per line made the B-tree
            // insert the most expensive step of ingesting short lines.
            self.logs
                .insert((key(id), first.sequence), encode_chunk(&rows).as_slice())
                .map_err(StoreError::backend)?;
        }
        if admission.head != head {
            self.heads
                .insert(key(id), admission.head)
                .map_err(StoreError::backend)?;
        }
        if admission.bytes != bytes {
            self.bytes
                .insert(key(id), admission.bytes)
                .map_err(StoreError::backend)?;
        }
        Ok(Appended {
            head: admission.head,
            quota_reached: admission.marker.is_some(),
        })
    }
}

#[async_trait]
impl JobStore for RedbStore {
    async fn insert(&self, job: Job) -> Result<(), StoreError> {
        self.submit(|reply| WriteOp::Insert(Box::new(job), reply))
            .await
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
            let end = query.before.map_or(u128::MAX, key);
            let mut out = Vec::with_capacity(query.limit.min(1024));
            for entry in jobs.range(..end).map_err(StoreError::backend)?.rev() {
                if out.len() >= query.limit {
                    break;
                }
                let (_, value) = entry.map_err(StoreError::backend)?;
                let job = decode_job(value.value())?;
                if query.state.is_none_or(|state| state == job.state) {
                    out.push(job);
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
        let mut pending: Vec<Job> = self
            .list_active()
            .await?
            .into_iter()
            .filter(|job| job.state == JobState::Pending)
            .collect();
        pending.sort_by_key(|job| (std::cmp::Reverse(job.spec.priority), job.id));
        pending.truncate(limit);
        Ok(pending)
    }

    async fn update(&self, id: JobId, change: Transition) -> Result<Job, StoreError> {
        self.submit(|reply| WriteOp::Update(id, change, reply))
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
            let active = txn.open_table(ACTIVE).map_err(StoreError::backend)?;
            let jobs = txn.open_table(JOBS).map_err(StoreError::backend)?;
            let leases = txn.open_table(LEASES).map_err(StoreError::backend)?;
            let mut out = Vec::new();
            for entry in active.iter().map_err(StoreError::backend)? {
                let (id, _) = entry.map_err(StoreError::backend)?;
                let Some(value) = jobs.get(id.value()).map_err(StoreError::backend)? else {
                    continue;
                };
                let job = decode_job(value.value())?;
                if !on_worker(job.state) {
                    continue;
                }
                let renewed = leases
                    .get(id.value())
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
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redb_honours_the_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("contract.redb")).unwrap();
        super::super::ledger::contract(store.ledger().as_ref()).await;
        super::super::records::contract(store.records().as_ref()).await;
        super::super::contract::run_all(Arc::new(store)).await;
    }

    #[tokio::test]
    async fn a_file_with_a_row_per_line_is_moved_to_chunks_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.redb");
        let id = JobId::new();
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut old = txn.open_table(LOGS_V1).unwrap();
                for (seq, text) in [(1_u64, &b"first"[..]), (2, b"second")] {
                    let mut row = 7_i64.to_le_bytes().to_vec();
                    row.push(2);
                    row.extend_from_slice(text);
                    old.insert((key(id), seq), row.as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        let lines = store.read_logs(id, 0, 10).await.unwrap();
        assert_eq!(
            lines
                .iter()
                .map(|l| (l.sequence, l.data.as_slice(), l.timestamp.0))
                .collect::<Vec<_>>(),
            vec![(1, &b"first"[..], 7), (2, &b"second"[..], 7)]
        );
        assert!(
            lines
                .iter()
                .all(|l| l.stream == crate::domain::LogStream::Stderr)
        );
        assert_eq!(store.read_logs(id, 1, 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn reopening_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reopen.redb");
        let job = Job::new(
            crate::domain::JobSpec {
                name: "n".into(),
                command: crate::domain::Command::Args(vec!["true".into()]),
                env: Default::default(),
                secrets: Default::default(),
                labels: Default::default(),
                resources: Default::default(),
                priority: 0,
                timeout_secs: None,
                max_attempts: 1,
            },
            Timestamp::now(),
        );
        {
            let store = RedbStore::open(&path).unwrap();
            store.insert(job.clone()).await.unwrap();
        }
        // The writer thread holds the database until its queue closes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let store = loop {
            match RedbStore::open(&path) {
                Ok(store) => break store,
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(err) => panic!("{err}"),
            }
        };
        assert_eq!(store.get(job.id).await.unwrap(), Some(job));
    }
}
