//! Scheduling: queue order, cluster state, and the decision round.
//!
//! A round walks the pending queue in order (priority, then FIFO), asks the
//! active policy where each job should go, and reserves capacity for it in
//! the cluster atomically. It returns placements; the job service makes
//! them durable and tells the agents (see `jobs::JobService::place`). Jobs a
//! round cannot place keep the policy's reason, which the API shows as the
//! job's `pending_reason`.

pub mod cluster;
pub mod policy;
pub mod queue;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use self::cluster::{AgentTx, Assignment, Cluster};
use self::policy::{Decision, Demand, PlacementPolicy, decide};
use self::queue::{PendingQueue, QueuedJob};
use crate::domain::{JobId, WorkerId};

/// A decision the round made and reserved capacity for.
#[derive(Debug)]
pub struct Placement {
    /// The job.
    pub job: JobId,
    /// Where it goes.
    pub worker: WorkerId,
    /// The attempt it starts (the job's attempt + 1).
    pub attempt: u32,
    /// The agent's channel.
    pub tx: AgentTx,
}

/// Queue, reasons and the wake-up signal around one cluster and policy.
#[derive(Debug)]
pub struct Scheduler {
    queue: Mutex<PendingQueue>,
    reasons: Mutex<HashMap<JobId, String>>,
    cluster: Arc<Cluster>,
    policy: Arc<dyn PlacementPolicy>,
    wake: Notify,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Scheduler {
    /// A scheduler deciding with `policy` over `cluster`.
    pub fn new(cluster: Arc<Cluster>, policy: Arc<dyn PlacementPolicy>) -> Self {
        Self {
            queue: Mutex::default(),
            reasons: Mutex::default(),
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

    /// Takes a job out of the queue (it was cancelled).
    pub fn dequeue(&self, id: JobId) {
        lock(&self.queue).remove(id);
        lock(&self.reasons).remove(&id);
    }

    /// Asks for a round soon (capacity changed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until a round is asked for.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Why a pending job is not placed yet, if a round said so.
    pub fn pending_reason(&self, id: JobId) -> Option<String> {
        lock(&self.reasons).get(&id).cloned()
    }

    /// Number of queued jobs.
    pub fn queued(&self) -> usize {
        lock(&self.queue).len()
    }

    /// One decision round (see the module docs).
    pub fn round(&self) -> Vec<Placement> {
        let mut queue = lock(&self.queue);
        if queue.is_empty() {
            return Vec::new();
        }
        let mut candidates = self.cluster.candidates();
        let mut reasons = lock(&self.reasons);
        let mut placements = Vec::new();
        for job in queue.iter() {
            if !candidates.iter().any(|c| c.free_slots > 0) {
                // Nothing can be placed until capacity frees up; leave the
                // rest of the queue with the reasons it already has.
                if !candidates.is_empty() {
                    reasons
                        .entry(job.id)
                        .or_insert_with(|| "waiting for a free slot".to_owned());
                    continue;
                }
            }
            let demand = Demand {
                labels: &job.labels,
                resources: job.resources,
            };
            match decide(self.policy.as_ref(), &demand, &candidates) {
                Decision::Place(worker) => {
                    let assignment = Assignment {
                        attempt: job.attempt + 1,
                        resources: job.resources,
                        cancel_requested: false,
                    };
                    match self.cluster.reserve(&worker, job.id, assignment) {
                        Ok(tx) => {
                            if let Some(c) = candidates.iter_mut().find(|c| c.worker == worker) {
                                c.free_slots -= 1;
                                c.free = c.free.minus(job.resources);
                            }
                            placements.push(Placement {
                                job: job.id,
                                worker,
                                attempt: assignment.attempt,
                                tx,
                            });
                        }
                        Err(err) => {
                            reasons.insert(job.id, err.to_string());
                        }
                    }
                }
                Decision::Wait(reason) => {
                    reasons.insert(job.id, reason);
                }
            }
        }
        for placement in &placements {
            queue.remove(placement.job);
            reasons.remove(&placement.job);
        }
        placements
    }
}
