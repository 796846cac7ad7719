//! The outbox: everything the agent owes the host, kept until the host
//! says it is stored.
//!
//! Per job it numbers the log entries (dense, from the attempt's
//! `first_sequence`), keeps every entry above the host's last
//! `Ack.log_sequence`, and keeps the `JobResult` until an Ack with
//! `result_stored`; then the job is forgotten. After a reconnect,
//! [`Outbox::rewind`] makes everything unacknowledged unsent again, so the
//! host sees each sequence at least once and stores it at most once:
//! exactly-once from a reader's point of view.
//!
//! Batching is adaptive. The pump ([`SharedOutbox::pump`]) takes the next
//! message only when the request channel (capacity 1) has room, i.e. when
//! the previous send has left; entries produced meanwhile pile up here and
//! leave together in one `LogBatch` (up to [`MAX_BATCH_BYTES`] of data).
//! Only when a small batch follows another within a millisecond (a job
//! writing line by line as fast as it can) does the pump wait a
//! millisecond for more. An idle agent therefore sends a line at once; a
//! busy one sends big batches.
//!
//! Per job the order on the wire is `JobStarted`, then its log entries in
//! sequence order, then `JobResult`: the result leaves only once every entry
//! before it has been handed to the stream. Jobs take turns (round robin),
//! so one chatty job cannot starve the others.
//!
//! # Bounded memory, no loss
//! Each job keeps at most [`MEMORY_BUDGET`] of unacknowledged entries in
//! memory. When the host is slower than the job, or away, further entries
//! go to the job's [`SpillQueue`] (an unnamed file in the agent's work
//! directory) and come back into memory, in order, as acknowledgements make
//! room. Only entries in memory are ever sent, so a resend after a
//! reconnect starts at the front of memory, and the spilled ones follow.
//! The job is never slowed down by the host: the reader threads append to
//! memory or to the file, whichever has room. If the file cannot be
//! created, entries stay in memory (unbounded, but nothing is lost).

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hodei_proto::v1::{
    Ack, AgentMessage, JobResult, JobStarted, LogBatch, LogEntry, RunningJob, Stream,
    agent_message::Msg,
};
use tokio::sync::{Notify, mpsc};
use tracing::{error, info, warn};

use crate::spill::SpillQueue;

/// Most log data (in bytes, summed over entries) one `LogBatch` carries.
pub const MAX_BATCH_BYTES: usize = 64 * 1024;
/// A batch under this size sent right after another makes the pump wait
/// [`GATHER`] before the next one.
const SMALL_BATCH_BYTES: usize = 16 * 1024;
/// How long output gathers after a small batch sent in quick succession.
const GATHER: Duration = Duration::from_millis(1);
/// Most memory the unacknowledged entries of one job may take (data plus
/// [`ENTRY_OVERHEAD`] each); beyond it they spill to disk.
pub const MEMORY_BUDGET: usize = 8 * 1024 * 1024;
/// What an entry costs in memory beyond its data: the `LogEntry` itself and
/// its allocation.
const ENTRY_OVERHEAD: usize = std::mem::size_of::<LogEntry>() + 16;

/// What the agent still has to deliver, per job. State only, except that
/// a job's entries beyond its memory budget live in a file.
#[derive(Debug)]
pub struct Outbox {
    jobs: BTreeMap<String, JobOutbox>,
    /// The job served last, so the next message comes from the one after it.
    last_served: Option<String>,
    /// Where spill files are created.
    spill_dir: PathBuf,
    /// Memory budget of each job, in bytes.
    budget: usize,
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new(std::env::temp_dir(), MEMORY_BUDGET)
    }
}

#[derive(Debug)]
struct JobOutbox {
    attempt: u32,
    first_sequence: u64,
    /// The sequence the next entry of this job will get.
    next_sequence: u64,
    /// The first sequence not yet handed to the current connection.
    next_unsent: u64,
    /// Unacknowledged entries in memory, in sequence order.
    entries: VecDeque<LogEntry>,
    /// What `entries` cost, in bytes (see [`ENTRY_OVERHEAD`]).
    memory_bytes: usize,
    /// The entries after `entries`, on disk, once the budget was reached.
    spill: Option<SpillQueue>,
    /// The spill file could not be created: entries stay in memory.
    spill_failed: bool,
    started: Option<JobStarted>,
    started_sent: bool,
    /// The host acknowledged something of this job, so it has seen (or no
    /// longer needs) `JobStarted`: a reconnect does not resend it.
    started_acked: bool,
    result: Option<JobResult>,
    result_sent: bool,
}

impl Outbox {
    /// An empty outbox spilling into `spill_dir` beyond `budget` bytes per
    /// job.
    pub fn new(spill_dir: PathBuf, budget: usize) -> Self {
        Self {
            jobs: BTreeMap::new(),
            last_served: None,
            spill_dir,
            budget,
        }
    }

    /// Starts tracking a job. False when the job id is already tracked.
    pub fn admit(&mut self, job_id: &str, attempt: u32, first_sequence: u64) -> bool {
        if self.jobs.contains_key(job_id) {
            return false;
        }
        self.jobs.insert(
            job_id.to_string(),
            JobOutbox {
                attempt,
                first_sequence,
                next_sequence: first_sequence,
                next_unsent: first_sequence,
                entries: VecDeque::new(),
                memory_bytes: 0,
                spill: None,
                spill_failed: false,
                started: None,
                started_sent: false,
                started_acked: false,
                result: None,
                result_sent: false,
            },
        );
        true
    }

    /// Queues `JobStarted`.
    pub fn started(&mut self, job_id: &str, attempt: u32, pid: u32) {
        if let Some(job) = self.job_mut(job_id, attempt) {
            job.started = Some(JobStarted {
                job_id: job_id.to_string(),
                attempt,
                pid,
            });
        }
    }

    /// Numbers and queues one log entry; returns its sequence. Ignored
    /// (None) for an unknown job or one whose result is already in.
    pub fn push_line(
        &mut self,
        job_id: &str,
        attempt: u32,
        stream: Stream,
        data: Vec<u8>,
        timestamp_us: i64,
    ) -> Option<u64> {
        let job = self
            .jobs
            .get_mut(job_id)
            .filter(|job| job.attempt == attempt)?;
        if job.result.is_some() {
            return None;
        }
        let sequence = job.next_sequence;
        job.next_sequence += 1;
        let entry = LogEntry {
            sequence,
            stream: stream.into(),
            data,
            timestamp_us,
        };
        job.queue(job_id, entry, &self.spill_dir, self.budget);
        Some(sequence)
    }

    /// Queues the job's result, filling in `last_sequence`.
    pub fn finish(&mut self, mut result: JobResult) {
        if let Some(job) = self.job_mut(&result.job_id, result.attempt) {
            result.last_sequence = if job.next_sequence == job.first_sequence {
                0
            } else {
                job.next_sequence - 1
            };
            job.result = Some(result);
        }
    }

    /// Applies the host's acknowledgement; an Ack for another attempt is
    /// ignored.
    pub fn ack(&mut self, ack: &Ack) {
        let budget = self.budget;
        let Some(job) = self.job_mut(&ack.job_id, ack.attempt) else {
            return;
        };
        job.started_acked = true;
        if ack.log_sequence >= job.first_sequence {
            while job
                .entries
                .front()
                .is_some_and(|entry| entry.sequence <= ack.log_sequence)
            {
                if let Some(entry) = job.entries.pop_front() {
                    job.memory_bytes -= cost(&entry);
                }
            }
            job.unspill(&ack.job_id, budget);
            let stored_up_to = ack.log_sequence.saturating_add(1).min(job.next_sequence);
            job.next_unsent = job.next_unsent.max(stored_up_to);
        }
        if ack.result_stored && job.result.is_some() {
            self.jobs.remove(&ack.job_id);
        }
    }

    /// Drops a job and everything queued for it (the host abandoned it).
    pub fn forget(&mut self, job_id: &str, attempt: u32) -> bool {
        self.job_mut(job_id, attempt).is_some() && self.jobs.remove(job_id).is_some()
    }

    /// A new connection: everything not acknowledged must be sent again.
    pub fn rewind(&mut self) {
        for job in self.jobs.values_mut() {
            // Sequences are dense: memory holds the oldest entries, the
            // spill file the ones after them.
            let spilled = job.spill.as_ref().map_or(0, SpillQueue::len) as u64;
            job.next_unsent = job
                .entries
                .front()
                .map_or(job.next_sequence - spilled, |entry| entry.sequence);
            job.started_sent = job.started_acked;
            job.result_sent = false;
        }
    }

    /// Whether [`Outbox::next_message`] would return something.
    pub fn has_pending(&self) -> bool {
        self.jobs.values().any(JobOutbox::has_pending)
    }

    /// The next message to send, taking turns between jobs.
    pub fn next_message(&mut self) -> Option<AgentMessage> {
        let after = self.last_served.as_deref().unwrap_or("");
        let job_id = self
            .jobs
            .range::<str, _>((Bound::Excluded(after), Bound::Unbounded))
            .chain(
                self.jobs
                    .range::<str, _>((Bound::Unbounded, Bound::Included(after))),
            )
            .find(|(_, job)| job.has_pending())
            .map(|(job_id, _)| job_id.clone())?;
        let msg = self.jobs.get_mut(&job_id)?.next_message(&job_id);
        self.last_served = Some(job_id);
        msg.map(|msg| AgentMessage { msg: Some(msg) })
    }

    /// Every tracked job, for `Register.running`.
    pub fn held(&self) -> Vec<RunningJob> {
        self.jobs
            .iter()
            .map(|(job_id, job)| RunningJob {
                job_id: job_id.clone(),
                attempt: job.attempt,
            })
            .collect()
    }

    /// Jobs still running (no result yet), for `Heartbeat.running_job_ids`.
    pub fn running_job_ids(&self) -> Vec<String> {
        self.jobs
            .iter()
            .filter(|(_, job)| job.result.is_none())
            .map(|(job_id, _)| job_id.clone())
            .collect()
    }

    /// Whether nothing at all is owed to the host.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    fn job_mut(&mut self, job_id: &str, attempt: u32) -> Option<&mut JobOutbox> {
        self.jobs
            .get_mut(job_id)
            .filter(|job| job.attempt == attempt)
    }
}

impl JobOutbox {
    /// Keeps `entry` in memory while the job is within its budget and
    /// nothing is spilled yet (order), otherwise appends it to the spill
    /// file.
    fn queue(&mut self, job_id: &str, entry: LogEntry, dir: &std::path::Path, budget: usize) {
        let spilling = self.spill.as_ref().is_some_and(|spill| !spill.is_empty());
        let over = !self.entries.is_empty() && self.memory_bytes + cost(&entry) > budget;
        if (spilling || over) && !self.spill_failed {
            if self.spill.is_none() {
                match SpillQueue::new(dir) {
                    Ok(spill) => self.spill = Some(spill),
                    Err(error) => {
                        warn!(%job_id, %error, dir = %dir.display(), "cannot create a spill file; keeping the job's output in memory");
                        self.spill_failed = true;
                    }
                }
            }
            if let Some(spill) = &mut self.spill {
                if !spilling {
                    info!(%job_id, "the host is slower than the job's output: spilling to disk");
                }
                // A failed write leaves the record in the queue's buffer,
                // to be written with the next one: nothing is lost.
                if let Err(error) = spill.push(&entry) {
                    warn!(%job_id, %error, "cannot write the spill file; retrying with the next entry");
                }
                return;
            }
        }
        self.memory_bytes += cost(&entry);
        self.entries.push_back(entry);
    }

    /// Brings spilled entries back into memory while under the budget (the
    /// last one may pass it by less than its own size).
    fn unspill(&mut self, job_id: &str, budget: usize) {
        let Some(spill) = &mut self.spill else {
            return;
        };
        while !spill.is_empty() && (self.entries.is_empty() || self.memory_bytes < budget) {
            match spill.pop() {
                Ok(Some(entry)) => {
                    self.memory_bytes += cost(&entry);
                    self.entries.push_back(entry);
                }
                Ok(None) => break,
                Err(error) => {
                    error!(%job_id, %error, lost = spill.len(), "cannot read the spill file back; its entries are lost");
                    self.spill = None;
                    self.spill_failed = true;
                    break;
                }
            }
        }
    }

    fn first_unsent(&self) -> usize {
        self.entries
            .partition_point(|entry| entry.sequence < self.next_unsent)
    }

    /// Output can be read before the spawn returns, so lines may be queued
    /// before `JobStarted`; they wait for it (or, for a job that never
    /// started, for its result) to keep the wire order `JobStarted`, logs,
    /// result.
    fn logs_may_go(&self) -> bool {
        self.started.is_some() || self.result.is_some()
    }

    /// The result goes last: after every entry, spilled ones included.
    fn result_may_go(&self) -> bool {
        self.result.is_some()
            && !self.result_sent
            && self.spill.as_ref().is_none_or(SpillQueue::is_empty)
    }

    fn has_pending(&self) -> bool {
        (self.started.is_some() && !self.started_sent)
            || (self.logs_may_go() && self.first_unsent() < self.entries.len())
            || self.result_may_go()
    }

    fn next_message(&mut self, job_id: &str) -> Option<Msg> {
        if let Some(started) = self.started.as_ref().filter(|_| !self.started_sent) {
            let msg = Msg::JobStarted(started.clone());
            self.started_sent = true;
            return Some(msg);
        }
        let first = self.first_unsent();
        if first < self.entries.len() {
            if !self.logs_may_go() {
                return None;
            }
            let mut bytes = 0;
            let mut entries = Vec::new();
            for entry in self.entries.range(first..) {
                if !entries.is_empty() && bytes + entry.data.len() > MAX_BATCH_BYTES {
                    break;
                }
                bytes += entry.data.len();
                entries.push(entry.clone());
            }
            self.next_unsent = entries.last().map_or(self.next_unsent, |e| e.sequence + 1);
            return Some(Msg::LogBatch(LogBatch {
                job_id: job_id.to_string(),
                attempt: self.attempt,
                entries,
            }));
        }
        if !self.result_may_go() {
            return None;
        }
        let result = self.result.clone()?;
        self.result_sent = true;
        Some(Msg::JobResult(result))
    }
}

/// The outbox shared by the job tasks (producers) and the connection's
/// pump (consumer).
///
/// A std Mutex, not a tokio one: no critical section awaits, and the PTY
/// reader threads push lines from outside the runtime.
#[derive(Debug, Default)]
pub struct SharedOutbox {
    state: Mutex<Outbox>,
    /// Wakes the pump when there is something to send.
    wake: Notify,
    /// Wakes shutdown when the outbox became empty.
    emptied: Notify,
}

impl SharedOutbox {
    /// A shared outbox spilling into `spill_dir`.
    pub fn new(spill_dir: PathBuf) -> Self {
        Self {
            state: Mutex::new(Outbox::new(spill_dir, MEMORY_BUDGET)),
            wake: Notify::new(),
            emptied: Notify::new(),
        }
    }

    /// Changes the outbox, then wakes whoever the change concerns.
    pub fn update<R>(&self, change: impl FnOnce(&mut Outbox) -> R) -> R {
        let mut outbox = self.lock();
        let result = change(&mut outbox);
        if outbox.has_pending() {
            self.wake.notify_one();
        }
        if outbox.is_empty() {
            self.emptied.notify_waiters();
        }
        result
    }

    /// Reads the outbox.
    pub fn read<R>(&self, look: impl FnOnce(&Outbox) -> R) -> R {
        look(&self.lock())
    }

    /// Feeds `tx` (the connection's request stream) until it closes. Takes
    /// a message only once `tx` has room, so that output produced while a
    /// send is in flight joins the next batch.
    pub async fn pump(&self, tx: mpsc::Sender<AgentMessage>) {
        // When the last small log batch left (never, at first).
        let mut last_small = Instant::now() - GATHER;
        loop {
            loop {
                let notified = self.wake.notified();
                if self.read(Outbox::has_pending) {
                    break;
                }
                notified.await;
            }
            let Ok(permit) = tx.reserve().await else {
                return;
            };
            let Some(msg) = self.update(Outbox::next_message) else {
                continue;
            };
            let small = small_batch(&msg);
            permit.send(msg);
            // A small batch right after another small batch: the job is
            // writing in small pieces faster than they can usefully leave
            // one by one (a message per read costs wake-ups on both sides).
            // Let a millisecond of output gather. An agent sending rarely
            // (one line now and then), or a job's first line right after
            // its start, or its result, never waits.
            if small {
                let now = Instant::now();
                if now.duration_since(last_small) < GATHER {
                    tokio::time::sleep(GATHER).await;
                }
                last_small = now;
            }
        }
    }

    /// Returns once nothing is owed to the host.
    pub async fn wait_empty(&self) {
        loop {
            let notified = self.emptied.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.read(Outbox::is_empty) {
                return;
            }
            notified.await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Outbox> {
        // A panic while holding the lock leaves a consistent outbox: every
        // change is a single field update or collection operation.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether `msg` is a log batch well under [`MAX_BATCH_BYTES`].
fn small_batch(msg: &AgentMessage) -> bool {
    match &msg.msg {
        Some(Msg::LogBatch(batch)) => {
            batch.entries.iter().map(|e| e.data.len()).sum::<usize>() < SMALL_BATCH_BYTES
        }
        _ => false,
    }
}

/// What an entry costs in memory while it waits for its ack.
fn cost(entry: &LogEntry) -> usize {
    entry.data.len() + ENTRY_OVERHEAD
}

/// Now, in Unix epoch microseconds (the protocol's timestamp unit).
pub fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
