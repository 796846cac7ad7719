//! The pending queue: priority first (higher first), then FIFO.
//!
//! FIFO falls out of the key: job ids are UUIDv7, so within one priority the
//! id order is the submission order. The queue keeps only what a decision
//! needs (labels, resources, attempt), never the whole job.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::domain::{Job, JobId, Resources, Timestamp};

/// What the scheduler needs to decide for one job.
#[derive(Debug, Clone)]
pub struct QueuedJob {
    /// Identity.
    pub id: JobId,
    /// Higher first.
    pub priority: i32,
    /// Required worker labels.
    pub labels: Arc<BTreeMap<String, String>>,
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
            labels: Arc::new(job.spec.labels.clone()),
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
}

impl PendingQueue {
    /// Adds (or re-adds) a job.
    pub fn push(&mut self, job: QueuedJob) {
        if let Some(old) = self.priority_of.insert(job.id, job.priority) {
            self.order.remove(&(Reverse(old), job.id));
        }
        self.order.insert((Reverse(job.priority), job.id), job);
    }

    /// Removes a job; false when it was not queued.
    pub fn remove(&mut self, id: JobId) -> bool {
        match self.priority_of.remove(&id) {
            Some(priority) => self.order.remove(&(Reverse(priority), id)).is_some(),
            None => false,
        }
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
}
