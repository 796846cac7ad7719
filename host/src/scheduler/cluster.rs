//! Cluster state: which workers exist, what they hold, how to reach them.
//!
//! Fed by agent sessions (register, heartbeat, disconnect) and by the
//! scheduler's reservations. One `std::sync::Mutex` guards it: every
//! critical section is a few map operations and never awaits, and taking the
//! lock is what makes a reservation atomic (check free capacity and record
//! the assignment in one step), so a worker is never overcommitted.
//!
//! A worker whose stream ended stays here, disconnected, for a grace period
//! with its assignments: if it comes back in time its jobs are reattached,
//! otherwise [`Cluster::expire`] forgets it. Whether its jobs are lost is
//! the store's call, not memory's: each attempt holds a lease in the store,
//! renewed from [`Cluster::held`] with the time the agent was last heard
//! from, and an attempt whose lease ran out is lost by whichever host sees
//! it first. That is what lets several hosts share one store. After a host
//! restart, workers named by jobs in the store are recreated as
//! placeholders waiting for their agent.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::fairness::QueueId;
use super::policy::{Candidate, WorkerLabels};
use crate::agents::AgentLink;
use crate::domain::{JobId, Resources, Timestamp, WorkerId, WorkerInfo, WorkerMetrics};

/// A job held by a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// The attempt the worker runs.
    pub attempt: u32,
    /// Capacity it reserves.
    pub resources: Resources,
    /// The fair-share queue its slot is charged to.
    pub queue: QueueId,
    /// A cancel was asked; resent if the agent reconnects.
    pub cancel_requested: bool,
    /// The store records the attempt on this worker (false between a
    /// reservation and its placement being written): only placed
    /// attempts have leases to renew.
    pub placed: bool,
    /// The agent reported the attempt's end and its result is being
    /// stored: its process is gone, so its slot and resources are free
    /// for the next job (whose placement then shares the result's commit),
    /// while the attempt is still held until the result is stored.
    pub exited: bool,
}

#[derive(Debug)]
struct Session {
    id: u64,
    link: AgentLink,
}

#[derive(Debug)]
struct WorkerEntry {
    info: WorkerInfo,
    /// `info.labels`, as every candidate of this registration shares them.
    labels: Arc<WorkerLabels>,
    metrics: WorkerMetrics,
    session: Option<Session>,
    assignments: HashMap<JobId, Assignment>,
    last_seen: Instant,
    /// The host is handling one of this worker's messages: the lease does
    /// not run against the agent meanwhile (see [`Cluster::handling`]).
    busy: bool,
    /// Attempts this worker held that the host let go of (settled, lost,
    /// abandoned), newest last: late messages about them are dropped
    /// quietly rather than counted as offences.
    released: VecDeque<(JobId, u32)>,
    /// Messages of this worker's sessions the host refused.
    refused: u64,
    /// Being retired by its pool (idle past its timeout, or an ephemeral
    /// worker that took its job): no new job is placed on it.
    retiring: bool,
}

/// How many let-go attempts a worker entry remembers.
const RELEASED_KEPT: usize = 1024;

impl WorkerEntry {
    fn new(info: WorkerInfo, session: Option<Session>) -> Self {
        Self {
            labels: Arc::new(WorkerLabels::new(info.labels.clone())),
            info,
            metrics: WorkerMetrics::default(),
            session,
            assignments: HashMap::new(),
            last_seen: Instant::now(),
            busy: false,
            released: VecDeque::new(),
            refused: 0,
            retiring: false,
        }
    }

    fn remember_released(&mut self, job: JobId, attempt: u32) {
        if self.released.len() == RELEASED_KEPT {
            self.released.pop_front();
        }
        self.released.push_back((job, attempt));
    }

    fn reserved(&self) -> Resources {
        self.assignments
            .values()
            .filter(|a| !a.exited)
            .fold(Resources::default(), |acc, a| acc.plus(a.resources))
    }

    fn free_slots(&self) -> u32 {
        let taken = self.assignments.values().filter(|a| !a.exited).count();
        self.info
            .slots
            .saturating_sub(u32::try_from(taken).unwrap_or(u32::MAX))
    }
}

/// Whose a job-scoped message is, as far as this host knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// The session's worker holds the attempt: the message counts.
    Holds,
    /// The worker held the attempt and the host has since let go of it:
    /// acknowledge, store nothing.
    Settled,
    /// Not this worker's: refuse.
    Foreign,
    /// A newer session of the same worker replaced this one: close it.
    Superseded,
}

/// What a registering agent's reconciliation decided.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Session number; pass it back to [`Cluster::disconnect`].
    pub session: u64,
    /// The session this one replaced while it was still open, if any.
    pub replaced: Option<u64>,
    /// Jobs the host thought this worker held but the agent does not run.
    pub lost: Vec<(JobId, u32)>,
    /// Reattached jobs whose cancel must be sent again.
    pub cancels: Vec<(JobId, u32)>,
}

/// When [`Cluster::cancel`] hands back the link to send a cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelSend {
    /// Mark, and send whether or not it was marked before (a user's cancel).
    Always,
    /// Mark, and send only when the mark is new (a cancel learnt from the
    /// store on every lease renewal is sent once).
    IfNew,
    /// Do not mark; send when already marked (an assignment just sent may
    /// have overtaken a cancel that raced it).
    IfMarked,
}

/// Why a reservation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    /// Worker unknown or not connected.
    #[error("worker {0} is not connected")]
    Unavailable(WorkerId),
    /// Not enough free capacity left.
    #[error("worker {0} has no room for the job")]
    NoRoom(WorkerId),
    /// A worker holds the job already: a stale copy of it was queued (on a
    /// shared store, a refresh read it pending just before its placement
    /// was stored). Reserving it again would replace the live assignment,
    /// and the failed second placement would then release it.
    #[error("job {0} is already assigned")]
    Held(JobId),
}

/// The placed attempts of one worker and when its agent was last heard
/// from: what a lease renewal needs.
#[derive(Debug, Clone)]
pub struct Held {
    /// The worker.
    pub worker: WorkerId,
    /// Wall-clock time of its agent's last message.
    pub seen: Timestamp,
    /// Its placed attempts.
    pub attempts: Vec<(JobId, u32)>,
}

/// A worker as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    /// What it registered with.
    #[serde(flatten)]
    pub info: WorkerInfo,
    /// Connected right now.
    pub connected: bool,
    /// Jobs it holds.
    pub running_jobs: Vec<String>,
    /// Capacity reserved by those jobs.
    pub reserved: Resources,
    /// Slots taken.
    pub used_slots: u32,
    /// Latest heartbeat figures.
    pub metrics: WorkerMetrics,
    /// Milliseconds since the last message.
    pub last_seen_ms: u128,
    /// Messages of its agent the host refused (not its own jobs, gaps,
    /// broken limits).
    pub refused_messages: u64,
    /// Its pool is retiring it: it takes no new job.
    pub retiring: bool,
}

/// The cluster state (see the module docs).
#[derive(Debug, Default)]
pub struct Cluster {
    workers: Mutex<HashMap<WorkerId, WorkerEntry>>,
    next_session: std::sync::atomic::AtomicU64,
}

impl Cluster {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<WorkerId, WorkerEntry>> {
        // A panic while holding this lock leaves plain maps behind, still
        // consistent enough to keep serving: recover rather than cascade.
        self.workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a job a worker held before a host restart; the worker is a
    /// disconnected placeholder until its agent registers.
    pub fn restore_assignment(&self, worker: &WorkerId, job: JobId, assignment: Assignment) {
        let mut workers = self.lock();
        let entry = workers.entry(worker.clone()).or_insert_with(|| {
            let info = WorkerInfo {
                id: worker.clone(),
                name: worker.0.clone(),
                version: String::new(),
                os: String::new(),
                arch: String::new(),
                labels: BTreeMap::new(),
                slots: 0,
                capacity: Resources::default(),
                pool: None,
                ephemeral: false,
            };
            WorkerEntry::new(info, None)
        });
        entry.assignments.insert(job, assignment);
    }

    /// An agent registered (first time, reconnect, or after a host restart).
    /// `confirmed` is what it runs that the store says it holds; anything
    /// else memory thought it held is returned as lost. `abandoned` is what
    /// it reported and must drop. A session of the same worker still open
    /// is replaced (the agent proved its id, so this is the same agent
    /// reconnecting before the old stream was seen to die).
    pub fn connect(
        &self,
        info: WorkerInfo,
        link: AgentLink,
        confirmed: &[(JobId, Assignment)],
        abandoned: &[(JobId, u32)],
    ) -> Reconciled {
        let session = self
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut out = Reconciled {
            session,
            ..Reconciled::default()
        };
        let mut workers = self.lock();
        let id = info.id.clone();
        let previous = workers.remove(&id);
        out.replaced = previous
            .as_ref()
            .and_then(|old| old.session.as_ref().map(|s| s.id));
        let (old, released, refused, retiring) = previous.map_or_else(Default::default, |old| {
            (old.assignments, old.released, old.refused, old.retiring)
        });
        let assignments: HashMap<JobId, Assignment> = confirmed.iter().copied().collect();
        out.lost = old
            .iter()
            .filter(|(job, a)| assignments.get(job).map(|n| n.attempt) != Some(a.attempt))
            .map(|(job, a)| (*job, a.attempt))
            .collect();
        out.cancels = assignments
            .iter()
            .filter(|(job, a)| {
                a.cancel_requested || old.get(job).is_some_and(|o| o.cancel_requested)
            })
            .map(|(job, a)| (*job, a.attempt))
            .collect();
        let mut entry = WorkerEntry::new(info, Some(Session { id: session, link }));
        entry.assignments = assignments;
        entry.released = released;
        entry.refused = refused;
        entry.retiring = retiring;
        for &(job, attempt) in out.lost.iter().chain(abandoned) {
            entry.remember_released(job, attempt);
        }
        workers.insert(id, entry);
        out
    }

    /// Retires `worker` for its pool if it holds no job: from then on
    /// nothing is placed on it. Atomic with reservations, so a worker is
    /// never retired with a job on its way to it. True when it is retired
    /// (now or before) and idle.
    pub fn retire_if_idle(&self, worker: &WorkerId) -> bool {
        let mut workers = self.lock();
        let Some(entry) = workers.get_mut(worker) else {
            return false;
        };
        if entry.assignments.is_empty() {
            entry.retiring = true;
        }
        entry.retiring && entry.assignments.is_empty()
    }

    /// Whether a message of `session` about `job`'s `attempt` is the
    /// worker's to send (see [`Ownership`]).
    pub fn ownership(
        &self,
        worker: &WorkerId,
        session: u64,
        job: JobId,
        attempt: u32,
    ) -> Ownership {
        let workers = self.lock();
        let Some(entry) = workers.get(worker) else {
            return Ownership::Superseded;
        };
        if entry.session.as_ref().is_none_or(|s| s.id != session) {
            return Ownership::Superseded;
        }
        if entry
            .assignments
            .get(&job)
            .is_some_and(|a| a.attempt == attempt)
        {
            Ownership::Holds
        } else if entry.released.contains(&(job, attempt)) {
            Ownership::Settled
        } else {
            Ownership::Foreign
        }
    }

    /// True while `session` is `worker`'s open session.
    pub fn is_current(&self, worker: &WorkerId, session: u64) -> bool {
        self.lock()
            .get(worker)
            .and_then(|w| w.session.as_ref())
            .is_some_and(|s| s.id == session)
    }

    /// Counts a refused message of `worker`'s.
    pub fn count_refusal(&self, worker: &WorkerId) {
        if let Some(entry) = self.lock().get_mut(worker) {
            entry.refused += 1;
        }
    }

    /// The stream of `session` ended. The worker stays, disconnected, so it
    /// can come back within the grace period. False when a newer session
    /// had already replaced this one.
    pub fn disconnect(&self, worker: &WorkerId, session: u64) -> bool {
        let mut workers = self.lock();
        match workers.get_mut(worker) {
            Some(entry) if entry.session.as_ref().is_some_and(|s| s.id == session) => {
                entry.session = None;
                entry.busy = false;
                entry.last_seen = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// Latest figures from a heartbeat. True when the worker began
    /// draining with it.
    pub fn heartbeat(&self, worker: &WorkerId, metrics: WorkerMetrics) -> bool {
        match self.lock().get_mut(worker) {
            Some(entry) => {
                let began = metrics.draining && !entry.metrics.draining;
                entry.metrics = metrics;
                entry.last_seen = Instant::now();
                began
            }
            None => false,
        }
    }

    /// A known worker's labels (empty for one not known).
    pub fn labels_of(&self, worker: &WorkerId) -> std::collections::BTreeMap<String, String> {
        self.lock()
            .get(worker)
            .map(|w| w.info.labels.clone())
            .unwrap_or_default()
    }

    /// The host began (`true`) or finished (`false`) handling a message of
    /// `worker`'s. Any message proves the agent alive, and while the host
    /// works on one (a store stalled, a machine under load) the lease does
    /// not run against the agent: only the agent's own silence may get a
    /// live worker forgotten, never the host's slowness.
    pub fn handling(&self, worker: &WorkerId, busy: bool) {
        if let Some(entry) = self.lock().get_mut(worker) {
            entry.busy = busy;
            entry.last_seen = Instant::now();
        }
    }

    /// Connected workers with what they have free, sorted by id.
    pub fn candidates(&self) -> Vec<Candidate> {
        Self::candidates_of(&self.lock())
    }

    fn candidates_of(workers: &HashMap<WorkerId, WorkerEntry>) -> Vec<Candidate> {
        let mut out: Vec<Candidate> = workers
            .values()
            .filter(|w| w.session.is_some() && !w.metrics.draining && !w.retiring)
            .map(|w| Candidate {
                worker: w.info.id.clone(),
                labels: Arc::clone(&w.labels),
                capacity: w.info.capacity,
                free: w.info.capacity.minus(w.reserved()),
                slots: w.info.slots,
                free_slots: w.free_slots(),
                metrics: w.metrics,
            })
            .collect();
        out.sort_by(|a, b| a.worker.cmp(&b.worker));
        out
    }

    /// [`Self::candidates`], with the slots each queue holds (indexed by
    /// [`QueueId`], `queues` long): what fair share weighs, taken under
    /// the same lock so the two agree.
    pub fn candidates_and_usage(&self, queues: usize) -> (Vec<Candidate>, Vec<u32>) {
        let workers = self.lock();
        (
            Self::candidates_of(&workers),
            Self::usage_of(&workers, queues),
        )
    }

    /// The slots each queue holds (indexed by [`QueueId`], `queues` long).
    pub fn usage_by_queue(&self, queues: usize) -> Vec<u32> {
        Self::usage_of(&self.lock(), queues)
    }

    fn usage_of(workers: &HashMap<WorkerId, WorkerEntry>, queues: usize) -> Vec<u32> {
        let mut usage = vec![0u32; queues];
        for assignment in workers
            .values()
            .flat_map(|w| w.assignments.values())
            .filter(|a| !a.exited)
        {
            if let Some(used) = usage.get_mut(usize::from(assignment.queue.0)) {
                *used += 1;
            }
        }
        usage
    }

    /// Atomically checks room and records the assignment; returns the
    /// link to the agent. A job some worker holds is never reserved twice.
    pub fn reserve(
        &self,
        worker: &WorkerId,
        job: JobId,
        assignment: Assignment,
    ) -> Result<AgentLink, ReserveError> {
        let mut workers = self.lock();
        if workers.values().any(|w| w.assignments.contains_key(&job)) {
            return Err(ReserveError::Held(job));
        }
        let entry = workers
            .get_mut(worker)
            .ok_or_else(|| ReserveError::Unavailable(worker.clone()))?;
        let link = entry
            .session
            .as_ref()
            .map(|s| s.link.clone())
            .ok_or_else(|| ReserveError::Unavailable(worker.clone()))?;
        let free = entry.info.capacity.minus(entry.reserved());
        if entry.retiring
            || entry.free_slots() == 0
            || free.cpu_millis < assignment.resources.cpu_millis
            || free.memory_mb < assignment.resources.memory_mb
        {
            return Err(ReserveError::NoRoom(worker.clone()));
        }
        entry.assignments.insert(job, assignment);
        // An ephemeral worker takes one job in its life.
        entry.retiring |= entry.info.ephemeral;
        Ok(link)
    }

    /// The agent reported that `job`'s `attempt` on `worker` ended: its
    /// slot and resources are free from now on (see
    /// [`Assignment::exited`]). True when that freed something.
    pub fn exited(&self, worker: &WorkerId, job: JobId, attempt: u32) -> bool {
        let mut workers = self.lock();
        let held = workers
            .get_mut(worker)
            .and_then(|entry| entry.assignments.get_mut(&job))
            .filter(|a| a.attempt == attempt && !a.exited);
        match held {
            Some(assignment) => {
                assignment.exited = true;
                true
            }
            None => false,
        }
    }

    /// Frees what `job`'s `attempt` held on `worker`. False when it held
    /// nothing (already released, or a newer attempt).
    pub fn release(&self, worker: &WorkerId, job: JobId, attempt: u32) -> bool {
        let mut workers = self.lock();
        let Some(entry) = workers.get_mut(worker) else {
            return false;
        };
        if entry
            .assignments
            .get(&job)
            .is_some_and(|a| a.attempt == attempt)
        {
            entry.assignments.remove(&job);
            entry.remember_released(job, attempt);
            true
        } else {
            false
        }
    }

    /// The cancel of `job`'s `attempt` on `worker`: marks it (so a
    /// reconnecting agent is told again) unless `when` only resends, and
    /// returns the link to the agent when the cancel should be sent now.
    pub fn cancel(
        &self,
        worker: &WorkerId,
        job: JobId,
        attempt: u32,
        when: CancelSend,
    ) -> Option<AgentLink> {
        let mut workers = self.lock();
        let entry = workers.get_mut(worker)?;
        let held = entry
            .assignments
            .get_mut(&job)
            .filter(|a| a.attempt == attempt)?;
        let send = match when {
            CancelSend::Always => true,
            CancelSend::IfNew => !held.cancel_requested,
            CancelSend::IfMarked => held.cancel_requested,
        };
        if when != CancelSend::IfMarked {
            held.cancel_requested = true;
        }
        if !send {
            return None;
        }
        entry.session.as_ref().map(|s| s.link.clone())
    }

    /// Forgets workers silent for longer than `lease` (heartbeats stopped,
    /// or disconnected and not back) and returns them. Their jobs are not
    /// lost here: their leases in the store stopped being renewed when the
    /// agent fell silent, and the lease monitor loses them.
    pub fn expire(&self, lease: Duration) -> Vec<WorkerInfo> {
        let mut workers = self.lock();
        let now = Instant::now();
        let dead: Vec<WorkerId> = workers
            .iter()
            .filter(|(_, w)| !w.busy && now.duration_since(w.last_seen) > lease)
            .map(|(id, _)| id.clone())
            .collect();
        dead.iter()
            .filter_map(|id| workers.remove(id))
            .map(|w| w.info)
            .collect()
    }

    /// The store now records `attempt` of `job` on `worker`.
    pub fn confirm(&self, worker: &WorkerId, job: JobId, attempt: u32) {
        if let Some(a) = self
            .lock()
            .get_mut(worker)
            .and_then(|w| w.assignments.get_mut(&job))
            .filter(|a| a.attempt == attempt)
        {
            a.placed = true;
        }
    }

    /// Every worker's placed attempts, for lease renewal.
    pub fn held(&self) -> Vec<Held> {
        let workers = self.lock();
        let (now, wall) = (Instant::now(), Timestamp::now());
        workers
            .values()
            .map(|w| {
                let ago =
                    i64::try_from(now.duration_since(w.last_seen).as_micros()).unwrap_or(i64::MAX);
                Held {
                    worker: w.info.id.clone(),
                    seen: Timestamp(wall.0.saturating_sub(ago)),
                    attempts: w
                        .assignments
                        .iter()
                        .filter(|(_, a)| a.placed)
                        .map(|(job, a)| (*job, a.attempt))
                        .collect(),
                }
            })
            .filter(|h| !h.attempts.is_empty())
            .collect()
    }

    /// Frees `job`'s `attempt` on whichever worker holds it; returns that
    /// worker's link when it is connected.
    pub fn release_anywhere(&self, job: JobId, attempt: u32) -> Option<Option<AgentLink>> {
        let mut workers = self.lock();
        let entry = workers.values_mut().find(|w| {
            w.assignments
                .get(&job)
                .is_some_and(|a| a.attempt == attempt)
        })?;
        entry.assignments.remove(&job);
        entry.remember_released(job, attempt);
        Some(entry.session.as_ref().map(|s| s.link.clone()))
    }

    /// Every worker, for the API, sorted by name.
    pub fn views(&self) -> Vec<WorkerView> {
        let workers = self.lock();
        let now = Instant::now();
        let mut out: Vec<WorkerView> = workers
            .values()
            .map(|w| WorkerView {
                info: w.info.clone(),
                connected: w.session.is_some(),
                running_jobs: w.assignments.keys().map(ToString::to_string).collect(),
                reserved: w.reserved(),
                used_slots: w.info.slots - w.free_slots(),
                metrics: w.metrics,
                last_seen_ms: now.duration_since(w.last_seen).as_millis(),
                refused_messages: w.refused,
                retiring: w.retiring,
            })
            .collect();
        out.sort_by(|a, b| {
            a.info
                .name
                .cmp(&b.info.name)
                .then(a.info.id.cmp(&b.info.id))
        });
        out
    }
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
