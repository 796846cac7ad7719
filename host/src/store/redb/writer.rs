//! The writer thread: every write of the redb adapter goes through it, so
//! that concurrent callers share one transaction and one fsync (group
//! commit; see the parent module).

use redb::{Database, ReadableTable};
use tokio::sync::{mpsc, oneshot};

use super::events::EventLog;
use super::index::StateIndex;
use super::{
    ACTIVE, JOBS, LEASES, LOG_BYTES, LOG_CHUNKS, LOG_HEADS, MAX_GROUP, PLUGINS, SETTINGS, key,
    on_worker,
};
use crate::domain::{DomainError, EventRecord, Job, JobId, JobState, LogRecord, Timestamp, admit};
use crate::store::codec::{decode_job, encode_chunk, encode_job};
use crate::store::{Appended, AttemptRef, Renewal, StoreError, Transition};

/// A write waiting for the writer thread.
pub(super) enum WriteOp {
    Insert(Box<Job>, oneshot::Sender<Result<(), StoreError>>),
    /// A job, unless one with its id is stored (answers whether it was).
    InsertAbsent(Box<Job>, oneshot::Sender<Result<bool, StoreError>>),
    /// Jobs with their encodings, all in this group's transaction.
    InsertMany(
        Vec<Job>,
        Vec<Vec<u8>>,
        oneshot::Sender<Result<(), StoreError>>,
    ),
    Update(JobId, Transition, oneshot::Sender<Result<Job, StoreError>>),
    /// An update a crash may lose (see `JobStore::update_deferred`): a
    /// group of nothing else commits without a flush.
    UpdateDeferred(JobId, Transition, oneshot::Sender<Result<Job, StoreError>>),
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
    AppendEvent(Box<EventRecord>, oneshot::Sender<Result<(), StoreError>>),
    RenewLeases(
        Vec<AttemptRef>,
        Timestamp,
        oneshot::Sender<Result<Renewal, StoreError>>,
    ),
}

/// Drains the queue into shared transactions until every sender is gone.
pub(super) fn writer_loop(db: &Database, mut queue: mpsc::Receiver<WriteOp>) {
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
    Absent(
        oneshot::Sender<Result<bool, StoreError>>,
        Result<bool, StoreError>,
    ),
}

fn commit_group(db: &Database, batch: &mut Vec<WriteOp>) {
    let mut replies = Vec::with_capacity(batch.len());
    let started = std::time::Instant::now();
    // A group of deferred updates alone is not flushed: the next durable
    // commit carries it to disk (redb persists every commit before it).
    let deferred = batch
        .iter()
        .all(|op| matches!(op, WriteOp::UpdateDeferred(..)));
    let mut ops = batch.drain(..);
    let committed = (|| -> Result<(), StoreError> {
        let mut txn = db.begin_write().map_err(StoreError::backend)?;
        if deferred {
            txn.set_durability(redb::Durability::None)
                .map_err(StoreError::backend)?;
        }
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
                by_state: StateIndex::open(&txn)?,
                events: EventLog::open(&txn)?,
            };
            for op in ops.by_ref() {
                replies.push(match op {
                    WriteOp::Insert(job, reply) => Reply::Insert(reply, tables.insert(&job)),
                    WriteOp::InsertAbsent(job, reply) => {
                        Reply::Absent(reply, tables.insert_absent(&job))
                    }
                    WriteOp::InsertMany(jobs, encoded, reply) => {
                        let written = jobs
                            .iter()
                            .zip(&encoded)
                            .try_for_each(|(job, bytes)| tables.insert_encoded(job, bytes));
                        if let Err(err) = written {
                            // A half-written batch must not commit: the
                            // group's transaction is abandoned, and every
                            // op in it is answered with the failure (those
                            // not reached yet, below).
                            let message = err.to_string();
                            replies.push(Reply::Insert(reply, Err(err)));
                            return Err(StoreError::Backend(message));
                        }
                        Reply::Insert(reply, Ok(()))
                    }
                    WriteOp::Update(id, change, reply)
                    | WriteOp::UpdateDeferred(id, change, reply) => {
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
                    WriteOp::AppendEvent(event, reply) => {
                        Reply::Insert(reply, tables.events.append(&event))
                    }
                    WriteOp::RenewLeases(attempts, seen, reply) => {
                        Reply::Leases(reply, tables.renew_leases(attempts, seen))
                    }
                });
            }
        }
        txn.commit().map_err(StoreError::backend)
    })();
    crate::metrics::instruments().store_commit(started.elapsed());
    // Callers learn their result only now, after the commit: an answer
    // before durability would be a promise the disk has not kept.
    let failed = || {
        committed
            .as_ref()
            .err()
            .map(|e| StoreError::Backend(e.to_string()))
    };
    for reply in replies {
        match reply {
            Reply::Insert(tx, r) => drop(tx.send(failed().map_or(r, Err))),
            Reply::Update(tx, r) => drop(tx.send(failed().map_or(r, Err))),
            Reply::Logs(tx, r) => drop(tx.send(failed().map_or(r, Err))),
            Reply::Leases(tx, r) => drop(tx.send(failed().map_or(r, Err))),
            Reply::Absent(tx, r) => drop(tx.send(failed().map_or(r, Err))),
        }
    }
    // Ops the transaction never reached (it failed before them) get the
    // failure too; a failed op is not repeated.
    for op in ops {
        op.refuse(|| failed().unwrap_or(StoreError::Closed));
    }
    if let Err(err) = &committed {
        tracing::error!(%err, "redb commit failed");
    }
}

impl WriteOp {
    /// Answers the caller with an error without doing anything.
    fn refuse(self, err: impl Fn() -> StoreError) {
        match self {
            Self::Insert(_, reply)
            | Self::InsertMany(_, _, reply)
            | Self::PutPlugin(_, _, reply)
            | Self::DeletePlugin(_, reply)
            | Self::PutSetting(_, _, reply)
            | Self::AppendEvent(_, reply) => drop(reply.send(Err(err()))),
            Self::Update(_, _, reply) | Self::UpdateDeferred(_, _, reply) => {
                drop(reply.send(Err(err())));
            }
            Self::AppendLogs { reply, .. } => drop(reply.send(Err(err()))),
            Self::RenewLeases(_, _, reply) => drop(reply.send(Err(err()))),
            Self::InsertAbsent(_, reply) => drop(reply.send(Err(err()))),
        }
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
    by_state: StateIndex<'txn>,
    events: EventLog<'txn>,
}

impl Tables<'_> {
    fn insert(&mut self, job: &Job) -> Result<(), StoreError> {
        self.insert_encoded(job, &encode_job(job)?)
    }

    fn insert_absent(&mut self, job: &Job) -> Result<bool, StoreError> {
        if self
            .jobs
            .get(key(job.id))
            .map_err(StoreError::backend)?
            .is_some()
        {
            return Ok(false);
        }
        self.insert(job).map(|()| true)
    }

    fn insert_encoded(&mut self, job: &Job, bytes: &[u8]) -> Result<(), StoreError> {
        self.jobs
            .insert(key(job.id), bytes)
            .map_err(StoreError::backend)?;
        if !job.state.is_terminal() {
            self.active
                .insert(key(job.id), ())
                .map_err(StoreError::backend)?;
        }
        self.by_state.moved(job.id, None, job.state)?;
        self.events.job(job, None)
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
        let before = job.state;
        change(&mut job)?;
        let bytes = encode_job(&job)?;
        self.jobs
            .insert(key(id), bytes.as_slice())
            .map_err(StoreError::backend)?;
        self.by_state.moved(id, Some(before), job.state)?;
        self.events.job(&job, Some(before))?;
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
