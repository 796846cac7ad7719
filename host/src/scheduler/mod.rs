//! Scheduling: queue order, cluster state, and the decision round.
//!
//! A round places the pending jobs that fit, in this order:
//! - **fair share** first: the next job comes from the queue holding the
//!   fewest slots for its weight (`usage / weight`, counted on the
//!   cluster), so two saturating queues weighted 3:1 hold 75 % and 25 % of
//!   the slots; a queue alone takes everything (work-conserving);
//! - then, within a queue, by **rank**: priority plus aging (points per
//!   minute waited, capped; [`fairness::Fairness::rank`]), then the
//!   longest wait.
//!
//! The queue is indexed by demand shape ([`queue`]): a round looks only at
//! the head of each bucket, and a head that fits nowhere rules its bucket
//! out for the round, so a deep backlog of jobs no worker can take costs
//! one decision per round, not one per job.
//!
//! **Backfill**: when a head that fits nowhere has waited past the
//! configured threshold, one worker that could take it is held for its
//! shape (the one with the most free now): nothing else is placed there
//! until a job of that shape is, while every other worker keeps taking
//! smaller jobs. Without runtime estimates nothing is backfilled onto the
//! held worker itself (Slurm does that with time limits).
//!
//! The policy decides where each job goes and the cluster reserves
//! capacity atomically. A round returns placements; the job service makes
//! them durable and tells the agents (see `jobs::JobService::place`). Why a
//! job cannot be placed is asked of the policy when someone wants to know
//! ([`Scheduler::explain`], the API's `pending_reason`).

pub mod cluster;
pub mod fairness;
pub mod policy;
pub mod queue;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use self::cluster::{Assignment, Cluster, ReserveError};
use self::fairness::{Fairness, QueueId};
use self::policy::{Candidate, Decision, Demand, PlacementPolicy, PolicySource, decide};
use self::queue::{Bucket, Labels, PendingQueue, QueuedJob, Shape};
use crate::agents::AgentLink;
use crate::domain::{Job, JobId, Timestamp, WorkerId};

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
    state: Mutex<State>,
    cluster: Arc<Cluster>,
    policy: Arc<dyn PolicySource>,
    fairness: Arc<Fairness>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct State {
    queue: PendingQueue,
    /// The worker held for a job that fits nowhere (backfill).
    reservation: Option<Reservation>,
}

/// A worker held for the jobs of one shape: the job that waited past the
/// backfill threshold, or another of the same shape ahead of it.
#[derive(Debug, Clone)]
struct Reservation {
    job: JobId,
    shape: Arc<Shape>,
    worker: WorkerId,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The slots and queue sizes of one queue, for the API.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct QueueStatus {
    /// Its name.
    pub name: String,
    /// Its share of contended capacity, relative to the others'.
    pub weight: u32,
    /// Its jobs waiting here (a retry backoff included).
    pub pending: usize,
    /// Slots its jobs hold on this host's workers.
    pub slots_held: u32,
}

impl Scheduler {
    /// A scheduler deciding with `policy` over `cluster`, with the default
    /// queue alone and default aging.
    pub fn new(cluster: Arc<Cluster>, policy: Arc<dyn PolicySource>) -> Self {
        Self {
            state: Mutex::default(),
            cluster,
            policy,
            fairness: Arc::default(),
            wake: Notify::new(),
        }
    }

    /// Orders contended capacity by `fairness` (queues, aging, backfill).
    #[must_use]
    pub fn with_fairness(mut self, fairness: Fairness) -> Self {
        self.fairness = Arc::new(fairness);
        self
    }

    /// The queues, aging and backfill settings.
    pub fn fairness(&self) -> &Arc<Fairness> {
        &self.fairness
    }

    /// The cluster it places onto.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Queues a pending job and wakes the loop.
    pub fn enqueue(&self, job: &Job) {
        self.enqueue_queued(QueuedJob::of(job, &self.fairness));
    }

    /// Queues what a decision needs of a job, and wakes the loop.
    pub fn enqueue_queued(&self, job: QueuedJob) {
        lock(&self.state).queue.push(Timestamp::now(), job);
        self.wake.notify_one();
    }

    /// Queues many jobs under one lock, then asks for one round.
    pub fn enqueue_many<'a>(&self, jobs: impl IntoIterator<Item = &'a Job>) {
        let now = Timestamp::now();
        let queued: Vec<QueuedJob> = jobs
            .into_iter()
            .map(|job| QueuedJob::of(job, &self.fairness))
            .collect();
        let mut state = lock(&self.state);
        for job in queued {
            state.queue.push(now, job);
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Queues the jobs of `jobs` not queued yet (a shared store's refresh:
    /// most are known, and re-pushing them would cost a bucket move each).
    pub fn enqueue_unknown<'a>(&self, jobs: impl IntoIterator<Item = &'a Job>) -> usize {
        let now = Timestamp::now();
        let mut state = lock(&self.state);
        let mut added = 0;
        for job in jobs {
            if !state.queue.contains(job.id) {
                state.queue.push(now, QueuedJob::of(job, &self.fairness));
                added += 1;
            }
        }
        drop(state);
        if added > 0 {
            self.wake.notify_one();
        }
        added
    }

    /// Takes a job out of the queue (it was cancelled).
    pub fn dequeue(&self, id: JobId) {
        lock(&self.state).queue.remove(id);
    }

    /// How many queued jobs that may be placed now (not in a retry
    /// backoff) ask for each label set: what the pools provision for.
    pub fn pending_demands(&self) -> Vec<(Arc<Labels>, usize)> {
        lock(&self.state).queue.demand_by_labels(Timestamp::now())
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
        lock(&self.state).queue.len()
    }

    /// Every configured queue with its weight, its pending jobs and the
    /// slots it holds.
    pub fn queues(&self) -> Vec<QueueStatus> {
        let counts = lock(&self.state).queue.count_by_queue();
        let usage = self.cluster.usage_by_queue(self.fairness.len());
        self.fairness
            .queues()
            .map(|(id, name, weight)| QueueStatus {
                name: name.to_string(),
                weight,
                pending: counts.get(&id).copied().unwrap_or(0),
                slots_held: usage[usize::from(id.0)],
            })
            .collect()
    }

    /// Why a pending job with this demand is not running, asked of the
    /// active policy against the cluster as it is now. Computed on demand
    /// rather than stored by every round: rounds stay cheap with a long
    /// queue, and the answer is never stale.
    pub fn explain(&self, job: JobId, demand: &Demand<'_>) -> String {
        let held = lock(&self.state)
            .reservation
            .as_ref()
            .filter(|r| r.job == job)
            .map(|r| r.worker.clone());
        match decide(
            self.policy.current().as_ref(),
            demand,
            &self.cluster.candidates(),
        ) {
            Decision::Wait(reason) => match held {
                Some(worker) => format!("{reason}; worker {worker} is held for it (backfill)"),
                None => reason,
            },
            Decision::Place(_) => "placeable; waiting for its turn in the queue".to_owned(),
        }
    }

    /// One decision round (see the module docs).
    pub fn round(&self) -> Vec<Placement> {
        let started = std::time::Instant::now();
        let placements = self.round_inner();
        crate::metrics::instruments().scheduling_round(started.elapsed());
        placements
    }

    /// The queue by why its jobs wait (for `/metrics`). Costs the number
    /// of distinct label sets times the workers, plus the buckets.
    pub fn pending_summary(&self) -> crate::metrics::PendingSummary {
        let now = Timestamp::now();
        let workers = self.cluster.candidates();
        let state = lock(&self.state);
        let queue = &state.queue;
        let mut summary = crate::metrics::PendingSummary::default();
        let mut eligible = 0;
        for (labels, count) in queue.demand_by_labels(now) {
            let count = count as u64;
            eligible += count;
            let matched = workers.iter().any(|w| fits_labels(w, &labels));
            if matched {
                summary.waiting_for_capacity += count;
            } else {
                summary.no_matching_worker += count;
            }
        }
        summary.backoff = (queue.len() as u64).saturating_sub(eligible);
        if let Some(oldest) = queue.oldest_since() {
            summary.oldest_age_seconds = (now.0 - oldest.0).max(0) as f64 / 1e6;
        }
        summary
    }

    fn round_inner(&self) -> Vec<Placement> {
        let now = Timestamp::now();
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        state.queue.promote(now);
        let (candidates, usage) = self.cluster.candidates_and_usage(self.fairness.len());
        let mut round = Round {
            fairness: &self.fairness,
            cluster: &self.cluster,
            policy: self.policy.current(),
            now,
            candidates,
            held: None,
            reservation: state.reservation.take(),
            usage,
            placements: Vec::new(),
            stale: Vec::new(),
        };
        round.hold_reserved(&state.queue);
        round.run(&state.queue);
        let Round {
            placements,
            stale,
            reservation,
            ..
        } = round;
        for placement in &placements {
            state.queue.remove(placement.job);
        }
        for id in stale {
            state.queue.remove(id);
        }
        state.reservation = reservation;
        placements
    }
}

/// True when `worker` carries every label of `labels`.
fn fits_labels(worker: &Candidate, labels: &Labels) -> bool {
    labels.iter().all(|(k, v)| worker.labels.get(k) == Some(v))
}

/// One bucket as a round walks it.
struct Cursor<'q> {
    shape: &'q Arc<Shape>,
    jobs:
        std::iter::Peekable<std::collections::btree_map::Values<'q, (Timestamp, JobId), QueuedJob>>,
}

/// The working state of one round.
struct Round<'a> {
    fairness: &'a Fairness,
    cluster: &'a Cluster,
    policy: Arc<dyn PlacementPolicy>,
    now: Timestamp,
    /// Workers others may be placed on, with what the round took.
    candidates: Vec<Candidate>,
    /// The worker held for the reservation's shape, out of `candidates`.
    held: Option<Candidate>,
    reservation: Option<Reservation>,
    /// Slots held per queue, with what the round placed.
    usage: Vec<u32>,
    placements: Vec<Placement>,
    stale: Vec<JobId>,
}

impl Round<'_> {
    /// Keeps the reservation of a still-queued job whose worker is still
    /// there, and takes that worker out of everyone else's candidates.
    fn hold_reserved(&mut self, queue: &PendingQueue) {
        let Some(reservation) = self.reservation.take() else {
            return;
        };
        if !queue.contains(reservation.job) {
            return;
        }
        if let Some(i) = self
            .candidates
            .iter()
            .position(|c| c.worker == reservation.worker)
        {
            self.held = Some(self.candidates.remove(i));
            self.reservation = Some(reservation);
        }
    }

    fn has_room(&self) -> bool {
        self.candidates.iter().any(|c| c.free_slots > 0)
            || self.held.as_ref().is_some_and(|c| c.free_slots > 0)
    }

    fn run(&mut self, queue: &PendingQueue) {
        let mut cursors: Vec<Cursor<'_>> = queue
            .buckets()
            .map(|(shape, bucket): (&Arc<Shape>, &Bucket)| Cursor {
                shape,
                jobs: bucket.values().peekable(),
            })
            .collect();
        while self.has_room() {
            let Some(i) = self.pick(&mut cursors) else {
                break;
            };
            let shape = cursors[i].shape;
            let Some(&job) = cursors[i].jobs.peek() else {
                cursors.swap_remove(i);
                continue;
            };
            match self.try_place(shape, job) {
                Tried::Placed | Tried::Stale => {
                    cursors[i].jobs.next();
                }
                Tried::FitsNowhere => {
                    cursors.swap_remove(i);
                    self.maybe_reserve(shape, job);
                }
                Tried::Retry => {}
            }
        }
    }

    /// The next bucket to serve: among the queues with a bucket left, the
    /// one holding the fewest slots for its weight (ties: the earlier
    /// queue); within it, the head of highest rank, then the longest
    /// waiting. Drops exhausted cursors.
    fn pick(&self, cursors: &mut Vec<Cursor<'_>>) -> Option<usize> {
        cursors.retain_mut(|c| c.jobs.peek().is_some());
        let share = |q: QueueId| {
            (
                u64::from(self.usage[usize::from(q.0)]),
                u64::from(self.fairness.weight(q)),
            )
        };
        let queue = cursors.iter().map(|c| c.shape.queue).min_by(|a, b| {
            let ((ua, wa), (ub, wb)) = (share(*a), share(*b));
            (ua * wb).cmp(&(ub * wa)).then(a.cmp(b))
        })?;
        cursors
            .iter_mut()
            .enumerate()
            .filter(|(_, c)| c.shape.queue == queue)
            .filter_map(|(i, c)| {
                let job = *c.jobs.peek()?;
                let rank = self.fairness.rank(job.priority, job.since, self.now);
                Some((i, rank, job.since, job.id))
            })
            .max_by(|a, b| {
                a.1.cmp(&b.1)
                    .then_with(|| b.2.cmp(&a.2))
                    .then_with(|| b.3.cmp(&a.3))
            })
            .map(|(i, ..)| i)
    }

    fn try_place(&mut self, shape: &Arc<Shape>, job: &QueuedJob) -> Tried {
        let reserved = self.reservation.as_ref().is_some_and(|r| r.shape == *shape);
        let demand = Demand {
            labels: &job.labels,
            resources: job.resources,
            priority: self
                .fairness
                .effective_priority(job.priority, job.since, self.now),
            queue: self.fairness.name(job.queue),
        };
        // The held worker is a candidate for its shape only: lent to the
        // list for this one decision.
        let lent = reserved && self.held.is_some();
        if lent {
            self.candidates.extend(self.held.take());
        }
        let decision = decide(self.policy.as_ref(), &demand, &self.candidates);
        if lent {
            self.held = self.candidates.pop();
        }
        let Decision::Place(worker) = decision else {
            return Tried::FitsNowhere;
        };
        let assignment = Assignment {
            attempt: job.attempt + 1,
            resources: job.resources,
            queue: job.queue,
            cancel_requested: false,
            placed: false,
            exited: false,
        };
        // The cluster re-checks under its own lock: an agent may have
        // gone since the snapshot was taken.
        match self.cluster.reserve(&worker, job.id, assignment) {
            Ok(link) => {
                let taken = self
                    .candidates
                    .iter_mut()
                    .chain(self.held.as_mut())
                    .find(|c| c.worker == worker);
                if let Some(c) = taken {
                    c.free_slots -= 1;
                    c.free = c.free.minus(job.resources);
                }
                if let Some(used) = self.usage.get_mut(usize::from(job.queue.0)) {
                    *used += 1;
                }
                if reserved {
                    // Served: the held worker goes back to everyone.
                    self.reservation = None;
                    self.candidates.extend(self.held.take());
                }
                self.placements.push(Placement {
                    job: job.id,
                    worker,
                    attempt: assignment.attempt,
                    link,
                });
                Tried::Placed
            }
            // Placed already: this queued copy is stale. Should the
            // placement fail, it queues the job again itself.
            Err(ReserveError::Held(id)) => {
                self.stale.push(id);
                Tried::Stale
            }
            // The snapshot was wrong about that worker: it has no room.
            Err(_) => {
                for c in self.candidates.iter_mut().chain(self.held.as_mut()) {
                    if c.worker == worker {
                        c.free_slots = 0;
                    }
                }
                Tried::Retry
            }
        }
    }

    /// Holds a worker for `job`'s shape when it has waited past the
    /// threshold and nothing is held yet: of the workers that could ever
    /// take it (labels, capacity), the one with the most free now.
    fn maybe_reserve(&mut self, shape: &Arc<Shape>, job: &QueuedJob) {
        let waited = self.now.0.saturating_sub(job.since.0);
        let threshold =
            i64::try_from(self.fairness.backfill_after().as_micros()).unwrap_or(i64::MAX);
        if self.reservation.is_some() || waited < threshold {
            return;
        }
        let best = self
            .candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                c.slots > 0
                    && c.capacity.cpu_millis >= job.resources.cpu_millis
                    && c.capacity.memory_mb >= job.resources.memory_mb
                    && fits_labels(c, &job.labels)
            })
            .max_by(|(_, a), (_, b)| {
                (a.free_slots.min(1), a.free.cpu_millis, a.free.memory_mb)
                    .cmp(&(b.free_slots.min(1), b.free.cpu_millis, b.free.memory_mb))
                    .then_with(|| b.worker.cmp(&a.worker))
            })
            .map(|(i, _)| i);
        if let Some(i) = best {
            let held = self.candidates.remove(i);
            tracing::info!(job = %job.id, worker = %held.worker, "holding a worker for a job that fits nowhere (backfill)");
            self.reservation = Some(Reservation {
                job: job.id,
                shape: Arc::clone(shape),
                worker: held.worker.clone(),
            });
            self.held = Some(held);
        }
    }
}

/// What came of trying a bucket's head.
enum Tried {
    Placed,
    /// Already placed elsewhere: skip it.
    Stale,
    /// No worker takes it now: its bucket is out for the round.
    FitsNowhere,
    /// A worker turned out to have no room: decide again without it.
    Retry,
}

#[cfg(test)]
mod round_tests;
