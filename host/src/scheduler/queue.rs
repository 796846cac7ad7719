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
    /// Every distinct label set of a queued job, once, with how many
    /// queued jobs ask for it: the pools' demand, kept up to date here
    /// rather than counted over the queue on every pass.
    label_sets: HashMap<Arc<Labels>, usize>,
    /// Queued jobs with a `not_before` (a retry backoff): few, and what
    /// the demand leaves out while their time has not come.
    delayed: HashSet<JobId>,
}

impl PendingQueue {
    /// Adds (or re-adds) a job.
    pub fn push(&mut self, mut job: QueuedJob) {
        self.remove(job.id);
        job.labels = match self.label_sets.get_key_value(&job.labels) {
            Some((known, _)) => Arc::clone(known),
            None => job.labels,
        };
        *self.label_sets.entry(Arc::clone(&job.labels)).or_default() += 1;
        if job.not_before.is_some() {
            self.delayed.insert(job.id);
        }
        self.priority_of.insert(job.id, job.priority);
        self.order.insert((Reverse(job.priority), job.id), job);
    }

    /// Removes a job; false when it was not queued.
    pub fn remove(&mut self, id: JobId) -> bool {
        let Some(priority) = self.priority_of.remove(&id) else {
            return false;
        };
        self.delayed.remove(&id);
        let Some(job) = self.order.remove(&(Reverse(priority), id)) else {
            return false;
        };
        if let Some(count) = self.label_sets.get_mut(&job.labels) {
            *count -= 1;
            if *count == 0 {
                self.label_sets.remove(&job.labels);
            }
        }
        true
    }

    /// How many queued jobs ask for each label set, leaving out those
    /// still in a retry backoff at `now`. Costs the number of distinct
    /// label sets plus delayed jobs, not the length of the queue.
    pub fn demand_by_labels(&self, now: Timestamp) -> Vec<(Arc<Labels>, usize)> {
        let mut demand = self.label_sets.clone();
        for id in &self.delayed {
            let waiting = self
                .priority_of
                .get(id)
                .and_then(|priority| self.order.get(&(Reverse(*priority), *id)))
                .filter(|job| job.not_before.is_some_and(|t| t > now));
            if let Some(job) = waiting
                && let Some(count) = demand.get_mut(&job.labels)
            {
                *count -= 1;
            }
        }
        demand.into_iter().filter(|(_, n)| *n > 0).collect()
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
        let now = Timestamp::now();
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
        let again = queue.iter().next().cloned().unwrap();
        queue.push(again);
        assert_eq!(demand(&queue), vec![(Labels::new(), 1), (gpu.clone(), 2)]);
        assert!(queue.remove(jobs[0]));
        assert_eq!(demand(&queue), vec![(Labels::new(), 1), (gpu, 1)]);
        for id in jobs {
            queue.remove(id);
        }
        assert!(queue.is_empty());
        assert!(queue.label_sets.is_empty());
        assert!(queue.demand_by_labels(now).is_empty());
    }

    #[test]
    fn jobs_in_a_retry_backoff_are_not_demand_until_their_time() {
        let mut queue = PendingQueue::default();
        let now = Timestamp::now();
        let later = Timestamp(now.0 + 1_000_000);
        queue.push(queued(0));
        let delayed = QueuedJob {
            not_before: Some(later),
            ..queued(0)
        };
        let id = delayed.id;
        queue.push(delayed);
        let count = |queue: &PendingQueue, at| -> usize {
            queue.demand_by_labels(at).iter().map(|(_, n)| n).sum()
        };
        assert_eq!(count(&queue, now), 1);
        assert_eq!(count(&queue, later), 2);
        queue.remove(id);
        assert!(queue.delayed.is_empty());
        assert_eq!(count(&queue, later), 1);
    }
}
