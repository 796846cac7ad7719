//! The pending queue: priority first (higher first), then FIFO.
//!
//! FIFO falls out of the key: job ids are UUIDv7, so within one priority the
//! id order is the submission order. The queue keeps only what a decision
//! needs (labels, resources, attempt), never the whole job, and each
//! distinct label set once: jobs share it (most ask for one of a few sets,
//! often none), so a queued job costs a fixed ~150 bytes whatever it asks.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, LazyLock};

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
    /// Higher first.
    pub priority: i32,
    /// Required worker labels (shared between jobs asking the same).
    pub labels: Arc<Labels>,
    /// Capacity to reserve.
    pub resources: Resources,
    /// Attempts used so far; the next assignment is `attempt + 1`.
    pub attempt: u32,
    /// Not placed before this time (retry backoff).
    pub not_before: Option<Timestamp>,
}

impl QueuedJob {
    /// Extracts the decision inputs of a pending job.
    pub fn of(job: &Job) -> Self {
        Self {
            id: job.id,
            priority: job.spec.priority,
            labels: if job.spec.labels.is_empty() {
                Arc::clone(&NO_LABELS)
            } else {
                Arc::new(job.spec.labels.clone())
            },
            resources: job.spec.resources,
            attempt: job.attempt,
            not_before: job.not_before,
        }
    }
}

type Key = (Reverse<i32>, JobId);

/// Ordered pending jobs.
#[derive(Debug, Default)]
pub struct PendingQueue {
    order: BTreeMap<Key, QueuedJob>,
    priority_of: HashMap<JobId, i32>,
    /// Every distinct label set of a queued job, once.
    label_sets: HashSet<Arc<Labels>>,
}

/// Above this many remembered label sets, sets no queued job uses any
/// more are forgotten when a job leaves.
const LABEL_SETS_KEPT: usize = 64;

impl PendingQueue {
    /// Adds (or re-adds) a job.
    pub fn push(&mut self, mut job: QueuedJob) {
        job.labels = self.intern(job.labels);
        if let Some(old) = self.priority_of.insert(job.id, job.priority) {
            self.order.remove(&(Reverse(old), job.id));
        }
        self.order.insert((Reverse(job.priority), job.id), job);
    }

    fn intern(&mut self, labels: Arc<Labels>) -> Arc<Labels> {
        if let Some(known) = self.label_sets.get(&labels) {
            return Arc::clone(known);
        }
        self.label_sets.insert(Arc::clone(&labels));
        labels
    }

    /// Removes a job; false when it was not queued.
    pub fn remove(&mut self, id: JobId) -> bool {
        let Some(priority) = self.priority_of.remove(&id) else {
            return false;
        };
        let removed = self.order.remove(&(Reverse(priority), id)).is_some();
        if self.label_sets.len() > LABEL_SETS_KEPT.max(self.order.len()) {
            self.label_sets.retain(|set| Arc::strong_count(set) > 1);
        }
        removed
    }

    /// How many queued jobs ask for each label set, skipping those for
    /// which `skip` holds. Counted without copying the jobs.
    pub fn demand_by_labels(&self, skip: impl Fn(&QueuedJob) -> bool) -> Vec<(Arc<Labels>, usize)> {
        let mut counts: HashMap<*const Labels, (Arc<Labels>, usize)> = HashMap::new();
        for job in self.order.values().filter(|job| !skip(job)) {
            counts
                .entry(Arc::as_ptr(&job.labels))
                .or_insert_with(|| (Arc::clone(&job.labels), 0))
                .1 += 1;
        }
        counts.into_values().collect()
    }

    /// Jobs in scheduling order.
    pub fn iter(&self) -> impl Iterator<Item = &QueuedJob> {
        self.order.values()
    }

    /// How many jobs wait.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(priority: i32) -> QueuedJob {
        QueuedJob {
            id: JobId::new(),
            priority,
            labels: Arc::default(),
            resources: Resources::default(),
            attempt: 0,
            not_before: None,
        }
    }

    #[test]
    fn priority_first_then_fifo() {
        let mut queue = PendingQueue::default();
        let (a, b, c, d) = (queued(0), queued(5), queued(0), queued(5));
        for job in [&a, &b, &c, &d] {
            queue.push(job.clone());
        }
        let order: Vec<JobId> = queue.iter().map(|j| j.id).collect();
        assert_eq!(order, vec![b.id, d.id, a.id, c.id]);
        assert!(queue.remove(d.id));
        assert!(!queue.remove(d.id));
        assert_eq!(queue.len(), 3);
    }

    #[test]
    fn equal_label_sets_are_stored_once_and_counted_together() {
        let mut queue = PendingQueue::default();
        let gpu: Labels = [("gpu".to_owned(), "yes".to_owned())].into();
        let mut jobs = Vec::new();
        for labels in [gpu.clone(), gpu.clone(), Labels::new()] {
            let job = QueuedJob {
                labels: Arc::new(labels),
                ..queued(0)
            };
            jobs.push(job.id);
            queue.push(job);
        }
        let stored: Vec<&Arc<Labels>> = queue.iter().map(|j| &j.labels).collect();
        assert!(Arc::ptr_eq(stored[0], stored[1]));
        let mut demand: Vec<(Labels, usize)> = queue
            .demand_by_labels(|_| false)
            .into_iter()
            .map(|(labels, n)| ((*labels).clone(), n))
            .collect();
        demand.sort();
        assert_eq!(demand, vec![(Labels::new(), 1), (gpu.clone(), 2)]);
        assert!(queue.demand_by_labels(|j| j.id == jobs[2]).len() == 1);
        for id in jobs {
            queue.remove(id);
        }
        assert!(queue.is_empty());
        assert!(queue.demand_by_labels(|_| false).is_empty());
    }

    #[test]
    fn label_sets_nobody_uses_are_forgotten() {
        let mut queue = PendingQueue::default();
        let ids: Vec<JobId> = (0..200)
            .map(|i| {
                let job = QueuedJob {
                    labels: Arc::new([("n".to_owned(), i.to_string())].into()),
                    ..queued(0)
                };
                let id = job.id;
                queue.push(job);
                id
            })
            .collect();
        for id in ids {
            queue.remove(id);
        }
        assert!(queue.label_sets.len() <= LABEL_SETS_KEPT);
    }
}
