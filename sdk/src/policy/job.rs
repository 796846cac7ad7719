//! [`Job`]: what the job being placed asks for.

use std::sync::Arc;

use super::bindings::Demand;

/// The job being placed: its required labels, reservations, priority and
/// queue.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Job {
    /// Labels the worker must carry, as `key=value`.
    labels: Vec<String>,
    /// Thousandths of a CPU core to reserve.
    cpu_millis: u64,
    /// MiB of memory to reserve.
    memory_mb: u64,
    /// Priority, higher first.
    priority: i32,
    /// The fair-share queue it is charged to.
    queue: String,
    /// `missing label key=value` for each label, made once per decision so
    /// rejecting many workers costs no formatting.
    missing: Vec<Arc<str>>,
}

impl Job {
    /// Labels the worker must carry, as `key=value`, in the host's order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Thousandths of a CPU core the job reserves.
    #[inline]
    pub fn cpu_millis(&self) -> u64 {
        self.cpu_millis
    }

    /// MiB of memory the job reserves.
    #[inline]
    pub fn memory_mb(&self) -> u64 {
        self.memory_mb
    }

    /// The job's priority as the queue orders it at this decision (higher
    /// first): what the job asked for, plus any aging.
    pub fn priority(&self) -> i32 {
        self.priority
    }

    /// The fair-share queue the job is charged to (`default` unless the
    /// job named one).
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The shared reason `missing label <labels[index]>`.
    #[inline]
    pub(crate) fn missing_reason(&self, index: usize) -> Option<Arc<str>> {
        self.missing.get(index).cloned()
    }
}

impl From<Demand> for Job {
    fn from(demand: Demand) -> Self {
        Self {
            missing: demand
                .labels
                .iter()
                .map(|label| Arc::from(format!("missing label {label}")))
                .collect(),
            labels: demand.labels,
            cpu_millis: demand.cpu_millis,
            memory_mb: demand.memory_mb,
            priority: demand.priority,
            queue: demand.queue,
        }
    }
}
