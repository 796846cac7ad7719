//! The job use cases: the one place that changes jobs.
//!
//! The API (submit, cancel), the agent gateway (started, logs, result, lost)
//! and the scheduler loop (place) all come through [`JobService`], which
//! applies the domain's transitions inside the store, keeps the queue and
//! the cluster's reservations in step with what the store says, and
//! publishes on the bus. Rule of thumb: the store is written first, then
//! in-memory state follows, then the bus wakes people up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hodei_proto::v1::{CancelJob, ServerMessage, server_message};

use crate::agents::wire;
use crate::bus::{Bus, Event};
use crate::domain::{
    DomainError, Job, JobId, JobSpec, JobState, LogRecord, Outcome, Timestamp, WorkerId,
};
use crate::plugins::blocking_allowed;
use crate::scheduler::cluster::{Assignment, Cluster};
use crate::scheduler::policy::Demand;
use crate::scheduler::queue::QueuedJob;
use crate::scheduler::{Placement, Scheduler};
use crate::store::{Appended, JobStore, ListQuery, StoreError};

/// A job together with what only memory knows about it.
#[derive(Debug, Clone)]
pub struct JobDetails {
    /// The stored job.
    pub job: Job,
    /// Why it is not placed yet (pending jobs only).
    pub pending_reason: Option<String>,
}

/// How a result message was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultTaken {
    /// Stored, or already stored, or about an attempt nobody wants any more:
    /// the agent may forget it.
    Done,
    /// Not stored (the store failed): the agent must send it again.
    Retry,
}

/// The use cases over one store, scheduler and bus.
#[derive(Debug)]
pub struct JobService {
    store: Arc<dyn JobStore>,
    scheduler: Arc<Scheduler>,
    bus: Bus,
    lease: Duration,
    finished_total: AtomicU64,
}

impl JobService {
    /// Wires the use cases. `lease` is how long a silent worker keeps its
    /// jobs before they count as lost.
    pub fn new(
        store: Arc<dyn JobStore>,
        scheduler: Arc<Scheduler>,
        bus: Bus,
        lease: Duration,
    ) -> Self {
        Self {
            store,
            scheduler,
            bus,
            lease,
            finished_total: AtomicU64::new(0),
        }
    }

    /// Jobs this process saw reach a terminal state.
    pub fn finished_count(&self) -> u64 {
        self.finished_total.load(Ordering::Relaxed)
    }

    fn publish_state(&self, job: &Job) {
        if job.state.is_terminal() {
            self.finished_total.fetch_add(1, Ordering::Relaxed);
        }
        self.bus.publish(Event::JobStateChanged(job.id, job.state));
    }

    /// The store (read paths: logs, listing).
    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.store
    }

    /// The bus.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The cluster state.
    pub fn cluster(&self) -> &Arc<Cluster> {
        self.scheduler.cluster()
    }

    /// The scheduler.
    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }

    /// Rebuilds the queue and the cluster's reservations from the store
    /// after a start. Returns how many jobs were pending and on workers.
    pub async fn restore(&self) -> Result<(usize, usize), StoreError> {
        let (mut pending, mut held) = (0, 0);
        for job in self.store.list_active().await? {
            match (job.state, &job.worker_id) {
                (JobState::Pending, _) => {
                    self.scheduler.enqueue(QueuedJob::of(&job));
                    pending += 1;
                }
                (JobState::Scheduled | JobState::Running, Some(worker)) => {
                    let assignment = Assignment {
                        attempt: job.attempt,
                        resources: job.spec.resources,
                        cancel_requested: job.cancel_requested,
                        placed: true,
                    };
                    self.cluster()
                        .restore_assignment(worker, job.id, assignment);
                    held += 1;
                }
                (state, worker) => {
                    tracing::warn!(job = %job.id, %state, ?worker, "inconsistent active job left as is");
                }
            }
        }
        Ok((pending, held))
    }

    /// Accepts a job: durable first, then queued.
    pub async fn submit(&self, spec: JobSpec) -> Result<Job, StoreError> {
        let job = Job::new(spec, Timestamp::now());
        self.store.insert(job.clone()).await?;
        self.scheduler.enqueue(QueuedJob::of(&job));
        self.bus.publish(Event::JobCreated(job.id));
        Ok(job)
    }

    /// One job with its pending reason.
    pub async fn get(&self, id: JobId) -> Result<Option<JobDetails>, StoreError> {
        Ok(self.store.get(id).await?.map(|job| self.details(job)))
    }

    /// A page of jobs, newest first.
    pub async fn list(&self, query: ListQuery) -> Result<Vec<JobDetails>, StoreError> {
        let jobs = self.store.list(query).await?;
        Ok(jobs.into_iter().map(|job| self.details(job)).collect())
    }

    fn details(&self, job: Job) -> JobDetails {
        let pending_reason = (job.state == JobState::Pending).then(|| {
            if let Some(at) = job.not_before.filter(|t| *t > Timestamp::now()) {
                return format!("retry backoff until {at}");
            }
            blocking_allowed(|| {
                self.scheduler.explain(&Demand {
                    labels: &job.spec.labels,
                    resources: job.spec.resources,
                })
            })
        });
        JobDetails {
            job,
            pending_reason,
        }
    }

    /// A user's cancel: immediate for a pending job; for a job on a worker,
    /// the agent is told and the job ends when it confirms.
    pub async fn cancel(&self, id: JobId) -> Result<Job, StoreError> {
        let now = Timestamp::now();
        let job = self
            .store
            .update(id, Box::new(move |job| job.request_cancel(now).map(|_| ())))
            .await?;
        if job.state == JobState::Cancelled {
            self.scheduler.dequeue(id);
            self.publish_state(&job);
        } else if let Some(worker) = &job.worker_id
            && let Some(tx) = self.cluster().request_cancel(worker, id)
        {
            let _ = tx
                .send(cancel_message(id, job.attempt, "cancelled by user"))
                .await;
        }
        Ok(job)
    }

    /// Makes a round's placement durable and sends the job to its agent.
    pub async fn place(&self, placement: Placement) {
        let Placement {
            job: id,
            worker,
            attempt,
            tx,
        } = placement;
        let first_sequence = if attempt == 1 {
            1
        } else {
            match self.store.log_head(id).await {
                Ok(head) => head + 1,
                Err(err) => {
                    tracing::error!(job = %id, %err, "cannot read log head; job stays queued");
                    self.unplace(id, &worker, attempt).await;
                    return;
                }
            }
        };
        let now = Timestamp::now();
        let target = worker.clone();
        let scheduled = self
            .store
            .update(
                id,
                Box::new(move |job| {
                    let got = job.schedule(target, now)?;
                    if got == attempt {
                        Ok(())
                    } else {
                        Err(DomainError::StaleAttempt {
                            current: got,
                            got: attempt,
                        })
                    }
                }),
            )
            .await;
        let job = match scheduled {
            Ok(job) => job,
            Err(err) => {
                // Cancelled while being placed (or the store failed): give
                // the capacity back. A failed write leaves the job pending
                // in the store, so it is queued again.
                tracing::debug!(job = %id, %err, "placement not stored");
                self.unplace(id, &worker, attempt).await;
                return;
            }
        };
        self.cluster().confirm(&worker, id, attempt);
        let message = wire::assign_job(&job, first_sequence);
        if tx.send(message).await.is_err() {
            tracing::info!(job = %id, %worker, "agent went away before its assignment was sent");
            return;
        }
        self.bus.publish(Event::JobScheduled(id, worker.clone()));
        // A cancel that raced the assignment may have reached the agent
        // before the job did; send it again now that the job is there.
        if let Some(tx) = self.cluster().request_cancel_if_marked(&worker, id) {
            let _ = tx
                .send(cancel_message(id, attempt, "cancelled by user"))
                .await;
        }
    }

    async fn unplace(&self, id: JobId, worker: &WorkerId, attempt: u32) {
        self.cluster().release(worker, id, attempt);
        if let Ok(Some(job)) = self.store.get(id).await
            && job.state == JobState::Pending
        {
            self.scheduler.enqueue(QueuedJob::of(&job));
        }
        // The slot is free again: on a shared store the usual cause is that
        // another host claimed the job first, and the next queued job may
        // well be free. Waiting for the next refresh would idle the agent.
        self.scheduler.wake();
    }

    /// The agent started the process.
    pub async fn started(&self, id: JobId, attempt: u32) {
        let now = Timestamp::now();
        match self
            .store
            .update(id, Box::new(move |job| job.start(attempt, now)))
            .await
        {
            Ok(job) => self.publish_state(&job),
            Err(err) => tracing::debug!(job = %id, attempt, %err, "start ignored"),
        }
    }

    /// Stores log lines within the job's log `quota` (see
    /// [`JobStore::append_logs`]).
    pub async fn append_logs(
        &self,
        id: JobId,
        attempt: u32,
        lines: Vec<LogRecord>,
        quota: u64,
    ) -> Result<Appended, StoreError> {
        let appended = self.store.append_logs(id, attempt, lines, quota).await?;
        self.bus.publish(Event::LogAppended(id, appended.head));
        Ok(appended)
    }

    /// How the agent says an attempt ended.
    pub async fn finished(
        &self,
        worker: &WorkerId,
        id: JobId,
        attempt: u32,
        outcome: Outcome,
        error: Option<String>,
    ) -> ResultTaken {
        let now = Timestamp::now();
        let result = self
            .store
            .update(
                id,
                Box::new(move |job| job.finish(attempt, outcome, error.as_deref(), now)),
            )
            .await;
        let taken = match result {
            Ok(job) => {
                self.publish_state(&job);
                ResultTaken::Done
            }
            // Already recorded (a resend after a reconnect), or fenced off.
            Err(StoreError::Domain(_) | StoreError::NotFound(_)) => ResultTaken::Done,
            Err(err) => {
                tracing::error!(job = %id, %err, "cannot store result");
                return ResultTaken::Retry;
            }
        };
        if self.cluster().release(worker, id, attempt) {
            self.scheduler.wake();
        }
        taken
    }

    /// An attempt's worker is gone: requeue or fail the job.
    pub async fn attempt_lost(&self, id: JobId, attempt: u32, why: &str) {
        let now = Timestamp::now();
        let why_owned = why.to_owned();
        let result = self
            .store
            .update(
                id,
                Box::new(move |job| job.lose_attempt(attempt, &why_owned, now).map(|_| ())),
            )
            .await;
        match result {
            Ok(job) => {
                tracing::warn!(job = %id, attempt, why, state = %job.state, "attempt lost");
                if job.state == JobState::Pending {
                    self.scheduler.enqueue(QueuedJob::of(&job));
                }
                self.publish_state(&job);
            }
            Err(err) => tracing::debug!(job = %id, attempt, %err, "lost attempt already settled"),
        }
        self.drop_attempt(id, attempt, why).await;
    }

    /// Frees what a settled attempt held here and, should its agent still
    /// be connected, tells it to stop (fencing at the agent, not only in
    /// the store).
    async fn drop_attempt(&self, id: JobId, attempt: u32, why: &str) {
        if let Some(tx) = self.cluster().release_anywhere(id, attempt) {
            if let Some(tx) = tx {
                let _ = tx.send(cancel_message(id, attempt, why)).await;
            }
            self.scheduler.wake();
        }
    }

    /// Which of the jobs a registering agent reports the store says it
    /// holds (with what they reserve), and which it must abandon. The store
    /// decides, so an agent that moved from another host keeps its jobs and
    /// one whose attempt was lost meanwhile drops it.
    pub async fn reconcile(
        &self,
        worker: &WorkerId,
        running: &[(JobId, u32)],
    ) -> (Vec<(JobId, Assignment)>, Vec<(JobId, u32)>) {
        let (mut keep, mut abandon) = (Vec::new(), Vec::new());
        for &(id, attempt) in running {
            match self.store.get(id).await {
                Ok(Some(job))
                    if job.attempt == attempt
                        && job.worker_id.as_ref() == Some(worker)
                        && matches!(job.state, JobState::Scheduled | JobState::Running) =>
                {
                    keep.push((
                        id,
                        Assignment {
                            attempt,
                            resources: job.spec.resources,
                            cancel_requested: job.cancel_requested,
                            placed: true,
                        },
                    ));
                }
                Ok(_) => abandon.push((id, attempt)),
                Err(err) => {
                    // Never kill work because the store hiccupped: keep it;
                    // its lease settles it later.
                    tracing::warn!(job = %id, %err, "cannot check a reattached job; keeping it");
                    keep.push((
                        id,
                        Assignment {
                            attempt,
                            resources: crate::domain::Resources::default(),
                            cancel_requested: false,
                            placed: true,
                        },
                    ));
                }
            }
        }
        (keep, abandon)
    }

    /// The decision loop: a round whenever woken (and at least every
    /// second), placements made durable concurrently so they share commits.
    /// On a shared store the queue is also refreshed from it, for jobs
    /// submitted or requeued by other hosts.
    pub async fn run_scheduler(self: Arc<Self>) {
        let shared = self.store.is_shared();
        let mut refreshed = tokio::time::Instant::now();
        loop {
            let wait = if shared {
                QUEUE_REFRESH
            } else {
                Duration::from_secs(1)
            };
            let _ = tokio::time::timeout(wait, self.scheduler.woken()).await;
            if shared && refreshed.elapsed() >= QUEUE_REFRESH {
                refreshed = tokio::time::Instant::now();
                match self.store.pending(QUEUE_REFRESH_LIMIT).await {
                    Ok(jobs) => {
                        for job in &jobs {
                            self.scheduler.enqueue(QueuedJob::of(job));
                        }
                    }
                    Err(err) => tracing::warn!(%err, "cannot refresh the queue from the store"),
                }
            }
            // A round calls the policy, which may be a Wasm plugin doing
            // blocking work (its deadline bounds it): off the async path.
            let placements = blocking_allowed(|| self.scheduler.round());
            if !placements.is_empty() {
                futures::future::join_all(placements.into_iter().map(|p| self.place(p))).await;
            }
        }
    }

    /// Leases: renews those of the attempts on this host's agents, learns
    /// of cancels and settled attempts from the store, and loses attempts
    /// whose lease ran out, whichever host they were on. A host that just
    /// started waits one lease before losing anything, so agents have time
    /// to come back.
    pub async fn run_monitor(self: Arc<Self>) {
        let started = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(MONITOR_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for worker in self.cluster().expire(self.lease) {
                tracing::warn!(%worker, "worker forgotten (silent past the lease)");
                self.bus.publish(Event::WorkerDisconnected(worker));
            }
            self.renew_leases().await;
            if started.elapsed() < self.lease {
                continue;
            }
            let lease_us = i64::try_from(self.lease.as_micros()).unwrap_or(i64::MAX);
            let cutoff = Timestamp(Timestamp::now().0.saturating_sub(lease_us));
            match self.store.expired_leases(cutoff).await {
                Ok(expired) => {
                    for (id, attempt) in expired {
                        self.attempt_lost(id, attempt, "agent lost").await;
                    }
                }
                Err(err) => tracing::warn!(%err, "cannot look for expired leases"),
            }
        }
    }

    async fn renew_leases(&self) {
        for held in self.cluster().held() {
            let renewal = match self.store.renew_leases(held.attempts, held.seen).await {
                Ok(renewal) => renewal,
                Err(err) => {
                    tracing::warn!(worker = %held.worker, %err, "cannot renew leases");
                    continue;
                }
            };
            for (id, attempt) in renewal.cancel_requested {
                if let Some(tx) = self.cluster().mark_cancel(&held.worker, id, attempt) {
                    let _ = tx
                        .send(cancel_message(id, attempt, "cancelled by user"))
                        .await;
                }
            }
            for (id, attempt) in renewal.gone {
                tracing::info!(job = %id, attempt, worker = %held.worker, "attempt settled elsewhere; dropping it");
                self.drop_attempt(id, attempt, "attempt no longer current")
                    .await;
            }
        }
    }
}

/// How often a host on a shared store re-reads the pending jobs.
const QUEUE_REFRESH: Duration = Duration::from_millis(500);
/// Most pending jobs one refresh reads.
const QUEUE_REFRESH_LIMIT: usize = 10_000;
/// How often leases are renewed and checked.
const MONITOR_TICK: Duration = Duration::from_millis(500);

/// A `CancelJob` message.
pub fn cancel_message(id: JobId, attempt: u32, reason: &str) -> ServerMessage {
    ServerMessage {
        msg: Some(server_message::Msg::CancelJob(CancelJob {
            job_id: id.to_string(),
            attempt,
            reason: reason.to_owned(),
        })),
    }
}
