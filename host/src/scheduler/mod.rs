//! Scheduling: queue order, cluster state, and the decision round.
//!
//! A round walks the pending queue in order (priority, then FIFO), asks the
//! active policy where each job should go, and reserves capacity for it in
//! the cluster atomically. It returns placements; the job service makes
//! them durable and tells the agents (see `jobs::JobService::place`). Why a
//! job cannot be placed is asked of the policy when someone wants to know
//! ([`Scheduler::explain`], the API's `pending_reason`).

pub mod cluster;
pub mod fairness;
pub mod policy;
pub mod queue;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use self::cluster::{Assignment, Cluster, ReserveError};
use self::policy::{Decision, Demand, PolicySource, decide};
use self::queue::{Labels, PendingQueue, QueuedJob};
use crate::agents::AgentLink;
use crate::domain::{JobId, Resources, Timestamp, WorkerId};

/// A decision the round made and reserved capacity for.
#[derive(Debug)]
pub struct Placement {
    /// The job.
    pub job: JobId,
    /// Where it goes.
    pub worker: WorkerId,
    /// The attempt it starts (the job's attempt + 1).
    pub attempt: u32,
    /// The link to its agent.
    pub link: AgentLink,
}

/// Queue and wake-up signal around one cluster and policy.
#[derive(Debug)]
pub struct Scheduler {
    queue: Mutex<PendingQueue>,
    cluster: Arc<Cluster>,
    policy: Arc<dyn PolicySource>,
    wake: Notify,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// At most this many distinct unplaceable demands are remembered per round.
const MAX_FAILED_SHAPES: usize = 64;

impl Scheduler {
    /// A scheduler deciding with `policy` over `cluster`.
    pub fn new(cluster: Arc<Cluster>, policy: Arc<dyn PolicySource>) -> Self {
        Self {
            queue: Mutex::default(),
            cluster,
            policy,
            wake: Notify::new(),
        }
    }

    /// The cluster it places onto.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Queues a pending job and wakes the loop.
    pub fn enqueue(&self, job: QueuedJob) {
        lock(&self.queue).push(job);
        self.wake.notify_one();
    }

    /// Queues many jobs under one lock, then asks for one round.
    pub fn enqueue_many(&self, jobs: impl IntoIterator<Item = QueuedJob>) {
        let mut queue = lock(&self.queue);
        for job in jobs {
            queue.push(job);
        }
        drop(queue);
        self.wake.notify_one();
    }

    /// Takes a job out of the queue (it was cancelled).
    pub fn dequeue(&self, id: JobId) {
        lock(&self.queue).remove(id);
    }

    /// How many queued jobs that may be placed now (not in a retry
    /// backoff) ask for each label set: what the pools provision for.
    pub fn pending_demands(&self) -> Vec<(Arc<Labels>, usize)> {
        lock(&self.queue).demand_by_labels(Timestamp::now())
    }

    /// Asks for a round soon (capacity changed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until a round is asked for.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Number of queued jobs.
    pub fn queued(&self) -> usize {
        lock(&self.queue).len()
    }

    /// Why a pending job with this demand is not running, asked of the
    /// active policy against the cluster as it is now. Computed on demand
    /// rather than stored by every round: rounds stay cheap with a long
    /// queue, and the answer is never stale.
    pub fn explain(&self, demand: &Demand<'_>) -> String {
        match decide(
            self.policy.current().as_ref(),
            demand,
            &self.cluster.candidates(),
        ) {
            Decision::Wait(reason) => reason,
            Decision::Place(_) => "placeable; waiting for its turn in the queue".to_owned(),
        }
    }

    /// One decision round (see the module docs).
    ///
    /// Cost is bounded for long queues: the walk stops as soon as no worker
    /// has a free slot, and a job whose demand (labels and resources) equals
    /// one that already failed this round is skipped without asking the
    /// policy again, since nothing it could see has changed.
    pub fn round(&self) -> Vec<Placement> {
        let started = std::time::Instant::now();
        let placements = self.round_inner();
        crate::metrics::instruments().scheduling_round(started.elapsed());
        placements
    }

    /// The queue by why its jobs wait (for `/metrics`). Costs the number
    /// of distinct label sets times the workers, plus one pass over the
    /// queue for the oldest job.
    pub fn pending_summary(&self) -> crate::metrics::PendingSummary {
        let now = Timestamp::now();
        let workers = self.cluster.candidates();
        let queue = lock(&self.queue);
        let mut summary = crate::metrics::PendingSummary::default();
        let mut eligible = 0;
        for (labels, count) in queue.demand_by_labels(now) {
            let count = count as u64;
            eligible += count;
            let matched = workers
                .iter()
                .any(|w| labels.iter().all(|(k, v)| w.labels.get(k) == Some(v)));
            if matched {
                summary.waiting_for_capacity += count;
            } else {
                summary.no_matching_worker += count;
            }
        }
        summary.backoff = (queue.len() as u64).saturating_sub(eligible);
        if let Some(oldest) = queue.iter().map(|job| job.id).min() {
            summary.oldest_age_seconds = oldest
                .created_at()
                .map_or(0.0, |at| (now.0 - at.0).max(0) as f64 / 1e6);
        }
        summary
    }

    fn round_inner(&self) -> Vec<Placement> {
        let mut queue = lock(&self.queue);
        let mut candidates = self.cluster.candidates();
        let policy = self.policy.current();
        let mut placements = Vec::new();
        let mut failed: Vec<(&BTreeMap<String, String>, Resources)> = Vec::new();
        let mut stale = Vec::new();
        let now = Timestamp::now();
        for job in queue.iter() {
            if !candidates.iter().any(|c| c.free_slots > 0) {
                break;
            }
            if job.not_before.is_some_and(|t| t > now) {
                continue;
            }
            if failed
                .iter()
                .any(|(labels, resources)| *resources == job.resources && **labels == *job.labels)
            {
                continue;
            }
            let demand = Demand {
                labels: &job.labels,
                resources: job.resources,
                priority: job.priority,
                queue: "default",
            };
            let Decision::Place(worker) = decide(policy.as_ref(), &demand, &candidates) else {
                if failed.len() < MAX_FAILED_SHAPES {
                    failed.push((&job.labels, job.resources));
                }
                continue;
            };
            let assignment = Assignment {
                attempt: job.attempt + 1,
                resources: job.resources,
                cancel_requested: false,
                placed: false,
                exited: false,
            };
            // The cluster re-checks under its own lock: an agent may have
            // gone since the snapshot was taken.
            match self.cluster.reserve(&worker, job.id, assignment) {
                Ok(link) => {
                    if let Some(c) = candidates.iter_mut().find(|c| c.worker == worker) {
                        c.free_slots -= 1;
                        c.free = c.free.minus(job.resources);
                    }
                    placements.push(Placement {
                        job: job.id,
                        worker,
                        attempt: assignment.attempt,
                        link,
                    });
                }
                // Placed already: this queued copy is stale. Should the
                // placement fail, it queues the job again itself.
                Err(ReserveError::Held(id)) => stale.push(id),
                Err(_) => {}
            }
        }
        for placement in &placements {
            queue.remove(placement.job);
        }
        for id in stale {
            queue.remove(id);
        }
        placements
    }
}
