//! The job use cases: the one place that changes jobs.
//!
//! The API (submit, cancel), the agent gateway (`agents`: registration,
//! started, logs, result, lost), the lease monitor (`leases`) and the
//! scheduler loop (place) all come through [`JobService`], which
//! applies the domain's transitions inside the store, keeps the queue and
//! the cluster's reservations in step with what the store says, and
//! publishes on the bus. Rule of thumb: the store is written first, then
//! in-memory state follows, then the bus wakes people up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod agents;
mod leases;
mod traces;

use crate::agents::{ArtifactGrant, CANCELLED_BY_USER};
use crate::bus::{Bus, Event};
use crate::domain::{DomainError, Job, JobId, JobSpec, JobState, Timestamp, WorkerId};
use crate::plugins::blocking_allowed;
use crate::providers::PoolBoard;
use crate::scheduler::cluster::{Assignment, CancelSend, Cluster};
use crate::scheduler::policy::Demand;
use crate::scheduler::{Placement, Scheduler};
use crate::sealing::Sealer;
use crate::store::{JobStore, ListQuery, StoreError};

/// A job together with what only memory knows about it.
#[derive(Debug, Clone)]
pub struct JobDetails {
    /// The stored job.
    pub job: Job,
    /// Why it is not placed yet (pending jobs only).
    pub pending_reason: Option<String>,
    /// Its priority with what waiting earned it (pending jobs; else the
    /// priority it asked).
    pub effective_priority: i32,
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
    metrics: Arc<crate::metrics::Metrics>,
    pools: Arc<PoolBoard>,
    sealer: Arc<Sealer>,
    traces: traces::JobTraces,
    /// Largest output a pipeline step may send (told to its agent).
    max_artifact_bytes: u64,
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
            metrics: Arc::default(),
            pools: Arc::new(PoolBoard::default()),
            sealer: Arc::new(Sealer::ephemeral()),
            traces: traces::JobTraces::default(),
            max_artifact_bytes: crate::artifacts::DEFAULT_MAX_ARTIFACT_BYTES,
        }
    }

    /// Tells agents that outputs over `bytes` are refused.
    #[must_use]
    pub fn with_max_artifact_bytes(mut self, bytes: u64) -> Self {
        self.max_artifact_bytes = bytes;
        self
    }

    /// Seals job secrets with `sealer` (the host's key) rather than a key
    /// of this process's own.
    #[must_use]
    pub fn with_sealer(mut self, sealer: Arc<Sealer>) -> Self {
        self.sealer = sealer;
        self
    }

    /// What seals and opens job secrets.
    pub fn sealer(&self) -> &Arc<Sealer> {
        &self.sealer
    }

    /// The counters `/metrics` shows.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Jobs this process saw reach a terminal state.
    pub fn finished_count(&self) -> u64 {
        self.finished_total.load(Ordering::Relaxed)
    }

    fn publish_state(&self, job: &Job) {
        if job.state.is_terminal() {
            self.finished_total.fetch_add(1, Ordering::Relaxed);
            self.metrics.finished(job.state);
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

    /// What the pools are doing (their loops publish here; pending
    /// reasons read it).
    pub fn pool_board(&self) -> &Arc<PoolBoard> {
        &self.pools
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
                    self.scheduler.enqueue(&job);
                    pending += 1;
                }
                (JobState::Scheduled | JobState::Running, Some(worker)) => {
                    let assignment = Assignment {
                        attempt: job.attempt,
                        resources: job.spec.resources,
                        queue: self.scheduler.fairness().resolve(&job.spec.queue),
                        cancel_requested: job.cancel_requested,
                        placed: true,
                        exited: false,
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
    pub async fn submit(&self, mut spec: JobSpec) -> Result<Job, StoreError> {
        // Secrets never reach the store (or the bus, or a log) in clear.
        spec.secrets = self.sealer.seal_all(std::mem::take(&mut spec.secrets));
        let job = Job::new(spec, Timestamp::now());
        self.store.insert(job.clone()).await?;
        self.metrics.submitted();
        self.traces.submitted(&job);
        self.scheduler.enqueue(&job);
        self.bus.publish(Event::JobCreated(job.id));
        Ok(job)
    }

    /// Stores a job whose id was decided and recorded beforehand (a
    /// pipeline step's), unless it is stored already, and queues it when
    /// it was stored here. Its secrets are sealed already. Answers whether
    /// this call stored it.
    pub async fn submit_once(&self, job: Job) -> Result<bool, StoreError> {
        if !self.store.insert_absent(job.clone()).await? {
            return Ok(false);
        }
        self.metrics.submitted();
        self.traces.submitted(&job);
        self.scheduler.enqueue(&job);
        self.bus.publish(Event::JobCreated(job.id));
        Ok(true)
    }

    /// Accepts many jobs in one durable commit: all of them or none.
    pub async fn submit_batch(&self, specs: Vec<JobSpec>) -> Result<Vec<Job>, StoreError> {
        let now = Timestamp::now();
        let jobs: Vec<Job> = specs
            .into_iter()
            .map(|mut spec| {
                spec.secrets = self.sealer.seal_all(std::mem::take(&mut spec.secrets));
                Job::new(spec, now)
            })
            .collect();
        self.store.insert_many(jobs.clone()).await?;
        self.metrics.submitted_many(jobs.len());
        for job in &jobs {
            self.traces.submitted(job);
        }
        self.scheduler.enqueue_many(&jobs);
        for job in &jobs {
            self.bus.publish(Event::JobCreated(job.id));
        }
        Ok(jobs)
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
        let effective = if job.state == JobState::Pending {
            self.scheduler.fairness().effective_priority(
                job.spec.priority,
                crate::scheduler::queue::eligible_since(&job),
                Timestamp::now(),
            )
        } else {
            job.spec.priority
        };
        let pending_reason = (job.state == JobState::Pending).then(|| {
            if let Some(at) = job.not_before.filter(|t| *t > Timestamp::now()) {
                return format!("retry backoff until {at}");
            }
            let policy = blocking_allowed(|| {
                self.scheduler.explain(
                    job.id,
                    &Demand {
                        labels: &job.spec.labels,
                        resources: job.spec.resources,
                        priority: effective,
                        queue: &job.spec.queue,
                    },
                )
            });
            match self.pools.explain(&job.spec.labels) {
                Some(pool) => format!("{policy}; {pool}"),
                None => policy,
            }
        });
        JobDetails {
            job,
            pending_reason,
            effective_priority: effective,
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
            && let Some(link) = self
                .cluster()
                .cancel(worker, id, job.attempt, CancelSend::Always)
        {
            let _ = link.cancel(id, job.attempt, CANCELLED_BY_USER).await;
        }
        Ok(job)
    }

    /// Makes a round's placement durable and sends the job to its agent.
    pub async fn place(&self, placement: Placement) {
        let Placement {
            job: id,
            worker,
            attempt,
            link,
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
        if let Some(at) = job.scheduled_at {
            let eligible = job.not_before.unwrap_or(job.created_at).max(job.created_at);
            let micros = u64::try_from(at.0.saturating_sub(eligible.0)).unwrap_or(0);
            self.metrics.placed(Duration::from_micros(micros));
            self.traces
                .scheduled(id, attempt, &worker, Duration::from_micros(micros));
        }
        let mut job = job;
        match self.sealer.open_all(&job.spec.secrets) {
            Ok(opened) => job.spec.secrets = opened,
            Err(err) => {
                tracing::error!(job = %id, %err, "cannot open the job's secrets");
                let error = format!("its secrets cannot be opened on this host: {err}");
                self.finished(
                    &worker,
                    id,
                    attempt,
                    crate::domain::Outcome::FailedToStart,
                    Some(error),
                    Vec::new(),
                )
                .await;
                return;
            }
        }
        let grant = (!job.spec.artifacts.is_empty()).then(|| ArtifactGrant {
            token: self
                .sealer
                .grant(&crate::agents::grant_subject(id, attempt)),
            max_bytes: self.max_artifact_bytes,
        });
        if link.assign(&job, first_sequence, grant).await.is_err() {
            tracing::info!(job = %id, %worker, "agent went away before its assignment was sent");
            return;
        }
        self.traces.step(id, attempt, "assigned");
        self.bus.publish(Event::JobScheduled(id, worker.clone()));
        // A cancel that raced the assignment may have reached the agent
        // before the job did; send it again now that the job is there.
        if let Some(link) = self
            .cluster()
            .cancel(&worker, id, attempt, CancelSend::IfMarked)
        {
            let _ = link.cancel(id, attempt, CANCELLED_BY_USER).await;
        }
    }

    async fn unplace(&self, id: JobId, worker: &WorkerId, attempt: u32) {
        self.cluster().release(worker, id, attempt);
        if let Ok(Some(job)) = self.store.get(id).await
            && job.state == JobState::Pending
        {
            self.scheduler.enqueue(&job);
        }
        // The slot is free again: on a shared store the usual cause is that
        // another host claimed the job first, and the next queued job may
        // well be free. Waiting for the next refresh would idle the agent.
        self.scheduler.wake();
    }

    /// The decision loop: a round whenever woken (and at least every
    /// second), placements made durable concurrently so they share commits.
    /// On a shared store the queue is also refreshed from it, for jobs
    /// submitted or requeued by other hosts: every 0.5 s what is new since
    /// the previous refresh (less a margin for clocks and slow commits),
    /// so a deep backlog already known is not read again; every 30 s the
    /// head of the queue as well, for anything a skewed clock hid.
    pub async fn run_scheduler(self: Arc<Self>) {
        let shared = self.store.is_shared();
        let mut refreshed = tokio::time::Instant::now();
        let mut resynced: Option<tokio::time::Instant> = None;
        let mut since = Timestamp::now();
        loop {
            let wait = if shared {
                QUEUE_REFRESH
            } else {
                Duration::from_secs(1)
            };
            let _ = tokio::time::timeout(wait, self.scheduler.woken()).await;
            if shared && refreshed.elapsed() >= QUEUE_REFRESH {
                refreshed = tokio::time::Instant::now();
                let now = Timestamp::now();
                let read = if resynced.is_none_or(|at| at.elapsed() >= QUEUE_RESYNC) {
                    resynced = Some(refreshed);
                    self.store.pending(QUEUE_REFRESH_LIMIT).await
                } else {
                    self.store
                        .pending_since(Timestamp(since.0 - REFRESH_MARGIN_US), QUEUE_REFRESH_LIMIT)
                        .await
                };
                match read {
                    Ok(jobs) => {
                        since = now;
                        self.scheduler.enqueue_unknown(&jobs);
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
}

/// How often a host on a shared store re-reads the pending jobs.
const QUEUE_REFRESH: Duration = Duration::from_millis(500);
/// Most pending jobs one refresh reads.
const QUEUE_REFRESH_LIMIT: usize = 10_000;
/// How often a refresh also reads the head of the queue whatever its age.
const QUEUE_RESYNC: Duration = Duration::from_secs(30);
/// How far before the previous refresh a refresh reads new jobs from:
/// clocks of hosts sharing a store and commits may lag by this much.
const REFRESH_MARGIN_US: i64 = 10_000_000;
