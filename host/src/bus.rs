//! The in-memory event bus: a tokio broadcast of `Arc<Event>`.
//!
//! The bus only wakes people up. Nothing that must not be lost travels on it:
//! job state and log lines are in the store, and a subscriber that lags (the
//! broadcast drops its oldest events) simply re-reads the store. That is why
//! a slow SSE client can never lose a line, and why the bus can be bounded.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::domain::{JobId, JobState, PipelineId, WorkerId};

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A job was accepted (durably).
    JobCreated(JobId),
    /// A job was assigned to a worker.
    JobScheduled(JobId, WorkerId),
    /// A job's log grew up to this sequence.
    LogAppended(JobId, u64),
    /// A job changed state (including reaching a terminal one).
    JobStateChanged(JobId, JobState),
    /// An agent registered.
    WorkerConnected(WorkerId),
    /// An agent's stream ended.
    WorkerDisconnected(WorkerId),
    /// A worker event reached the store's event log.
    WorkerEvent(WorkerId),
    /// A pipeline or one of its steps moved (its events are in the log).
    PipelineChanged(PipelineId),
}

/// Cheap to clone; every clone publishes to the same subscribers.
#[derive(Debug, Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Bus {
    /// A bus keeping up to `capacity` events per lagging subscriber.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        Self { tx }
    }

    /// Publishes; having no subscriber is fine.
    pub fn publish(&self, event: Event) {
        let _ = self.tx.send(Arc::new(event));
    }

    /// A new subscriber, seeing events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}
