//! The pending queue, indexed by demand so a round costs what it can
//! place, not how many jobs wait.
//!
//! Jobs are kept in buckets: one per distinct (queue, priority, labels,
//! resources). Inside a bucket every job asks the same of a worker and
//! has the same base priority, so its jobs are in rank order simply by
//! how long they have waited (aging is the same function of waiting for
//! all of them): a bucket is a FIFO keyed by the time the job became
//! eligible. A round looks at bucket heads only; a head that cannot be
//! placed rules its whole bucket out for the round. So 100,000 jobs no
//! worker can take, asking alike, cost one decision per round, and the
//! queue's memory is a fixed ~200 bytes a job whatever it asks (label
//! sets are shared by the bucket).
//!
//! Jobs in a retry backoff wait aside, ordered by when they may run, and
//! join their bucket when their time comes ([`PendingQueue::promote`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use super::fairness::{Fairness, QueueId};
use crate::domain::{Job, JobId, Resources, Timestamp};

/// Worker labels a job requires.
pub type Labels = BTreeMap<String, String>;

/// The label set of the many jobs that ask for none: no allocation each.
static NO_LABELS: LazyLock<Arc<Labels>> = LazyLock::new(Arc::default);

/// What the scheduler needs to decide for one job.
#[derive(Debug, Clone)]
pub struct QueuedJob {
    /// Identity.
    pub id: JobId,
    /// Higher first (before aging).
    pub priority: i32,
    /// The fair-share queue it is charged to.
    pub queue: QueueId,
    /// Required worker labels (shared between jobs asking the same).
    pub labels: Arc<Labels>,
    /// Capacity to reserve.
    pub resources: Resources,
    /// Attempts used so far; the next assignment is `attempt + 1`.
    pub attempt: u32,
    /// Not placed before this time (retry backoff).
    pub not_before: Option<Timestamp>,
    /// When it became eligible: its creation, or the end of its backoff.
    /// Aging counts from here.
    pub since: Timestamp,
}

impl QueuedJob {
    /// Extracts the decision inputs of a pending job; its queue is
    /// resolved against the configured ones.
    pub fn of(job: &Job, fairness: &Fairness) -> Self {
        Self {
            id: job.id,
            priority: job.spec.priority,
            queue: fairness.resolve(&job.spec.queue),
            labels: if job.spec.labels.is_empty() {
                Arc::clone(&NO_LABELS)
            } else {
                Arc::new(job.spec.labels.clone())
            },
            resources: job.spec.resources,
            attempt: job.attempt,
            not_before: job.not_before,
            since: eligible_since(job),
        }
    }
}

/// When a pending job became eligible to run (what aging counts from).
pub fn eligible_since(job: &Job) -> Timestamp {
    job.not_before
        .map_or(job.created_at, |t| t.max(job.created_at))
}

/// What every job of a bucket shares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shape {
    /// The fair-share queue.
    pub queue: QueueId,
    /// Base priority.
    pub priority: i32,
    /// Required labels.
    pub labels: Arc<Labels>,
    /// Capacity asked.
    pub resources: Resources,
}

impl Shape {
    fn of(job: &QueuedJob) -> Self {
        Self {
            queue: job.queue,
            priority: job.priority,
            labels: Arc::clone(&job.labels),
            resources: job.resources,
        }
    }
}

/// Jobs of one shape, oldest-eligible first.
pub type Bucket = BTreeMap<(Timestamp, JobId), QueuedJob>;

#[derive(Debug, Clone)]
enum Place {
    /// In the bucket of this shape, at this key.
    Bucket(Arc<Shape>, Timestamp),
    /// Waiting out a backoff, at this key of `delayed`.
    Delayed(Timestamp),
}

/// Pending jobs by shape.
#[derive(Debug, Default)]
pub struct PendingQueue {
    /// Every shape ever seen while jobs of it were queued, with its bucket;
    /// empty buckets are dropped.
    buckets: HashMap<Arc<Shape>, Bucket>,
    /// Where each queued job is.
    place: HashMap<JobId, Place>,
    /// Jobs in a retry backoff, by when they may run.
    delayed: BTreeMap<(Timestamp, JobId), QueuedJob>,
}

impl PendingQueue {
    /// Adds (or re-adds) a job.
    pub fn push(&mut self, now: Timestamp, mut job: QueuedJob) {
        self.remove(job.id);
        if let Some(at) = job.not_before.filter(|t| *t > now) {
            self.place.insert(job.id, Place::Delayed(at));
            self.delayed.insert((at, job.id), job);
            return;
        }
        let shape = Shape::of(&job);
        let (shape, bucket) = match self.buckets.get_key_value(&shape) {
            Some((known, _)) => {
                let known = Arc::clone(known);
                let bucket = self.buckets.get_mut(&known).expect("just found");
                (known, bucket)
            }
            None => {
                let shape = Arc::new(shape);
                let bucket = self.buckets.entry(Arc::clone(&shape)).or_default();
                (shape, bucket)
            }
        };
        job.labels = Arc::clone(&shape.labels);
        self.place
            .insert(job.id, Place::Bucket(Arc::clone(&shape), job.since));
        bucket.insert((job.since, job.id), job);
    }

    /// Removes a job; false when it was not queued.
    pub fn remove(&mut self, id: JobId) -> bool {
        let Some(place) = self.place.remove(&id) else {
            return false;
        };
        match place {
            Place::Delayed(at) => self.delayed.remove(&(at, id)).is_some(),
            Place::Bucket(shape, since) => {
                let Some(bucket) = self.buckets.get_mut(&shape) else {
                    return false;
                };
                let removed = bucket.remove(&(since, id)).is_some();
                if bucket.is_empty() {
                    self.buckets.remove(&shape);
                }
                removed
            }
        }
    }

    /// True when the job is queued.
    pub fn contains(&self, id: JobId) -> bool {
        self.place.contains_key(&id)
    }

    /// Moves the jobs whose backoff ended by `now` into their buckets.
    pub fn promote(&mut self, now: Timestamp) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let job = entry.remove();
            self.place.remove(&job.id);
            self.push(now, job);
        }
    }

    /// The non-empty buckets, each with its shape (any order).
    pub fn buckets(&self) -> impl Iterator<Item = (&Arc<Shape>, &Bucket)> {
        self.buckets.iter()
    }

    /// A queued job.
    pub fn get(&self, id: JobId) -> Option<&QueuedJob> {
        match self.place.get(&id)? {
            Place::Delayed(at) => self.delayed.get(&(*at, id)),
            Place::Bucket(shape, since) => self.buckets.get(shape)?.get(&(*since, id)),
        }
    }

    /// How many queued jobs ask for each label set, leaving out those
    /// still in a retry backoff at `now`. Costs the number of buckets plus
    /// the delayed jobs whose time came, not the length of the queue.
    pub fn demand_by_labels(&self, now: Timestamp) -> Vec<(Arc<Labels>, usize)> {
        let mut demand: HashMap<Arc<Labels>, usize> = HashMap::new();
        for (shape, bucket) in &self.buckets {
            *demand.entry(Arc::clone(&shape.labels)).or_default() += bucket.len();
        }
        for ((at, _), job) in &self.delayed {
            if *at > now {
                break;
            }
            *demand.entry(Arc::clone(&job.labels)).or_default() += 1;
        }
        demand.into_iter().collect()
    }

    /// Jobs per queue (delayed ones included).
    pub fn count_by_queue(&self) -> HashMap<QueueId, usize> {
        let mut counts: HashMap<QueueId, usize> = HashMap::new();
        for (shape, bucket) in &self.buckets {
            *counts.entry(shape.queue).or_default() += bucket.len();
        }
        for job in self.delayed.values() {
            *counts.entry(job.queue).or_default() += 1;
        }
        counts
    }

    /// When the longest-waiting eligible job became eligible.
    pub fn oldest_since(&self) -> Option<Timestamp> {
        self.buckets
            .values()
            .filter_map(|bucket| bucket.keys().next().map(|(since, _)| *since))
            .min()
    }

    /// How many jobs wait in a backoff.
    pub fn delayed_len(&self) -> usize {
        self.delayed.len()
    }

    /// How many jobs wait.
    pub fn len(&self) -> usize {
        self.place.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.place.is_empty()
    }

    /// Every queued job, in no particular order (tests and diagnostics).
    pub fn iter(&self) -> impl Iterator<Item = &QueuedJob> {
        self.buckets
            .values()
            .flat_map(BTreeMap::values)
            .chain(self.delayed.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(priority: i32) -> QueuedJob {
        let id = JobId::new();
        QueuedJob {
            id,
            priority,
            queue: QueueId(0),
            labels: Arc::default(),
            resources: Resources::default(),
            attempt: 0,
            not_before: None,
            since: id.created_at().unwrap_or(Timestamp(0)),
        }
    }

    #[test]
    fn jobs_asking_alike_share_a_bucket_in_fifo_order() {
        let mut queue = PendingQueue::default();
        let now = Timestamp::now();
        let (a, b, c, d) = (queued(0), queued(5), queued(0), queued(5));
        for job in [&a, &b, &c, &d] {
            queue.push(now, job.clone());
        }
        assert_eq!(queue.buckets().count(), 2);
        let zero: Vec<JobId> = queue
            .buckets()
            .find(|(shape, _)| shape.priority == 0)
            .unwrap()
            .1
            .values()
            .map(|j| j.id)
            .collect();
        assert_eq!(zero, vec![a.id, c.id]);
        assert!(queue.remove(d.id));
        assert!(!queue.remove(d.id));
        assert_eq!(queue.len(), 3);
        assert!(queue.remove(b.id));
        // The emptied bucket is gone.
        assert_eq!(queue.buckets().count(), 1);
    }

    #[test]
    fn equal_label_sets_are_stored_once_and_counted_together() {
        let mut queue = PendingQueue::default();
        let now = Timestamp::now();
        let gpu: Labels = [("gpu".to_owned(), "yes".to_owned())].into();
        let mut jobs = Vec::new();
        for labels in [gpu.clone(), gpu.clone(), Labels::new()] {
            let job = QueuedJob {
                labels: Arc::new(labels),
                ..queued(0)
            };
            jobs.push(job.id);
            queue.push(now, job);
        }
        let first = queue.get(jobs[0]).unwrap().labels.clone();
        assert!(Arc::ptr_eq(&first, &queue.get(jobs[1]).unwrap().labels));
        let demand = |queue: &PendingQueue| {
            let mut demand: Vec<(Labels, usize)> = queue
                .demand_by_labels(now)
                .into_iter()
                .map(|(labels, n)| ((*labels).clone(), n))
                .collect();
            demand.sort();
            demand
        };
        assert_eq!(demand(&queue), vec![(Labels::new(), 1), (gpu.clone(), 2)]);
        // Pushed again (a requeue): still counted once.
        let again = queue.get(jobs[0]).cloned().unwrap();
        queue.push(now, again);
        assert_eq!(demand(&queue), vec![(Labels::new(), 1), (gpu.clone(), 2)]);
        assert!(queue.remove(jobs[0]));
        assert_eq!(demand(&queue), vec![(Labels::new(), 1), (gpu, 1)]);
        for id in jobs {
            queue.remove(id);
        }
        assert!(queue.is_empty());
        assert!(queue.buckets.is_empty());
        assert!(queue.demand_by_labels(now).is_empty());
    }

    #[test]
    fn jobs_in_a_retry_backoff_wait_aside_until_their_time() {
        let mut queue = PendingQueue::default();
        let now = Timestamp::now();
        let later = Timestamp(now.0 + 1_000_000);
        queue.push(now, queued(0));
        let delayed = QueuedJob {
            not_before: Some(later),
            since: later,
            ..queued(0)
        };
        let id = delayed.id;
        queue.push(now, delayed.clone());
        let count = |queue: &PendingQueue, at| -> usize {
            queue.demand_by_labels(at).iter().map(|(_, n)| n).sum()
        };
        assert_eq!(count(&queue, now), 1);
        assert_eq!(count(&queue, later), 2);
        assert_eq!(queue.delayed_len(), 1);
        queue.promote(now);
        assert_eq!(queue.delayed_len(), 1);
        queue.promote(later);
        assert_eq!(queue.delayed_len(), 0);
        assert_eq!(queue.buckets().map(|(_, b)| b.len()).sum::<usize>(), 2);
        assert!(queue.contains(id));
        queue.remove(id);
        assert_eq!(count(&queue, later), 1);
        // Removed while still delayed.
        queue.push(now, delayed);
        assert!(queue.remove(id));
        assert!(queue.delayed.is_empty());
        assert_eq!(queue.len(), 1);
    }
}
