//! The durable event log's entries: what happened to jobs, pipelines and
//! workers, in
//! the order the store committed it.
//!
//! Job events are written by the store in the same transaction as the
//! change they describe (see `store`), so a transition is in the log
//! exactly when it is in the job, and exactly once; worker events are
//! appended on their own. An [`EventId`] is the store's position in its
//! log: ordered, opaque to clients (`Last-Event-ID`), and defined by the
//! adapter (redb: a sequence; PostgreSQL: the writing transaction and a
//! sequence, see `store::postgres`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{
    DomainError, Job, JobId, JobState, PipelineId, PipelineMove, PipelineState, Timestamp,
};

/// Where an event sits in the store's log; ordered by both parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventId(pub u64, pub u64);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            0 => write!(f, "{}", self.0),
            minor => write!(f, "{}-{minor}", self.0),
        }
    }
}

impl FromStr for EventId {
    type Err = DomainError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let invalid = || DomainError::InvalidId(raw.to_owned());
        let number = |s: &str| {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u64>().ok())
                .flatten()
                .ok_or_else(invalid)
        };
        match raw.split_once('-') {
            None => Ok(Self(number(raw)?, 0)),
            Some((major, minor)) => Ok(Self(number(major)?, number(minor)?)),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A job was accepted.
    #[serde(rename = "job.created")]
    JobCreated,
    /// A job moved to a state that is not terminal.
    #[serde(rename = "job.state_changed")]
    JobStateChanged,
    /// A job reached a terminal state.
    #[serde(rename = "job.finished")]
    JobFinished,
    /// An agent registered.
    #[serde(rename = "worker.connected")]
    WorkerConnected,
    /// An agent's stream ended; its jobs wait out the lease.
    #[serde(rename = "worker.disconnected")]
    WorkerDisconnected,
    /// A worker silent past its lease was forgotten.
    #[serde(rename = "worker.lost")]
    WorkerLost,
    /// A worker began draining: it takes no new jobs.
    #[serde(rename = "worker.draining")]
    WorkerDraining,
    /// A pipeline was accepted.
    #[serde(rename = "pipeline.created")]
    PipelineCreated,
    /// A pipeline moved to a state that is not terminal (a retry too).
    #[serde(rename = "pipeline.state_changed")]
    PipelineStateChanged,
    /// A pipeline reached a terminal state.
    #[serde(rename = "pipeline.finished")]
    PipelineFinished,
    /// A step of a pipeline moved (its job's state, skipped, waiting).
    #[serde(rename = "pipeline.step_changed")]
    StepChanged,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [Self; 11] = [
        Self::JobCreated,
        Self::JobStateChanged,
        Self::JobFinished,
        Self::WorkerConnected,
        Self::WorkerDisconnected,
        Self::WorkerLost,
        Self::WorkerDraining,
        Self::PipelineCreated,
        Self::PipelineStateChanged,
        Self::PipelineFinished,
        Self::StepChanged,
    ];

    /// The wire name (`job.created`...), also the SSE `event:` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JobCreated => "job.created",
            Self::JobStateChanged => "job.state_changed",
            Self::JobFinished => "job.finished",
            Self::WorkerConnected => "worker.connected",
            Self::WorkerDisconnected => "worker.disconnected",
            Self::WorkerLost => "worker.lost",
            Self::WorkerDraining => "worker.draining",
            Self::PipelineCreated => "pipeline.created",
            Self::PipelineStateChanged => "pipeline.state_changed",
            Self::PipelineFinished => "pipeline.finished",
            Self::StepChanged => "pipeline.step_changed",
        }
    }
}

/// One entry of the event log, without its position (the store gives it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// What happened.
    pub kind: EventKind,
    /// When.
    pub at: Timestamp,
    /// The job, for job events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    /// The job's state after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
    /// The job's state before the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_state: Option<JobState>,
    /// The job's attempt after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The worker the event is about (or the job's worker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// The job's (or the worker's) labels, for filtering.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The pipeline, for pipeline and step events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<PipelineId>,
    /// The step, for step events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The pipeline's (or the step's) state after the change, by its wire
    /// name: pipeline and step states are not job states (`SKIPPED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The pipeline's (or the step's) state before the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_status: Option<String>,
}

impl EventRecord {
    /// The event for a job that was just created, or that moved from
    /// `previous` to its current state; `None` when its state did not move.
    pub fn of_job(job: &Job, previous: Option<JobState>) -> Option<Self> {
        let kind = match previous {
            None => EventKind::JobCreated,
            Some(before) if before == job.state => return None,
            Some(_) if job.state.is_terminal() => EventKind::JobFinished,
            Some(_) => EventKind::JobStateChanged,
        };
        Some(Self {
            job_id: Some(job.id),
            state: Some(job.state),
            previous_state: previous,
            attempt: Some(job.attempt),
            worker_id: job.worker_id.as_ref().map(|w| w.0.clone()),
            labels: job.spec.labels.clone(),
            ..Self::bare(kind)
        })
    }

    fn bare(kind: EventKind) -> Self {
        Self {
            kind,
            at: Timestamp::now(),
            job_id: None,
            state: None,
            previous_state: None,
            attempt: None,
            worker_id: None,
            labels: BTreeMap::new(),
            pipeline_id: None,
            step: None,
            status: None,
            previous_status: None,
        }
    }

    /// The event of a pipeline accepted in `state`.
    pub fn pipeline_created(pipeline: PipelineId, state: &str) -> Self {
        Self {
            pipeline_id: Some(pipeline),
            status: Some(state.to_owned()),
            ..Self::bare(EventKind::PipelineCreated)
        }
    }

    /// The event of a pipeline's or a step's move (`job` the step's job).
    pub fn of_pipeline(pipeline: PipelineId, moved: &PipelineMove, job: Option<JobId>) -> Self {
        let kind = match &moved.step {
            Some(_) => EventKind::StepChanged,
            None if PipelineState::parse(moved.to).is_some_and(PipelineState::is_terminal) => {
                EventKind::PipelineFinished
            }
            None => EventKind::PipelineStateChanged,
        };
        Self {
            pipeline_id: Some(pipeline),
            step: moved.step.clone(),
            job_id: job,
            status: Some(moved.to.to_owned()),
            previous_status: Some(moved.from.to_owned()),
            ..Self::bare(kind)
        }
    }

    /// A worker event.
    pub fn of_worker(kind: EventKind, worker: &str, labels: BTreeMap<String, String>) -> Self {
        Self {
            worker_id: Some(worker.to_owned()),
            labels,
            ..Self::bare(kind)
        }
    }
}

/// An event with its place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its position.
    pub id: EventId,
    /// The event.
    pub event: EventRecord,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_and_round_trip() {
        for id in [EventId(7, 0), EventId(812, 17), EventId(u64::MAX, 1)] {
            assert_eq!(id.to_string().parse::<EventId>().unwrap(), id);
        }
        assert!(EventId(1, 9) < EventId(2, 1));
        assert!(EventId(2, 1) < EventId(2, 3));
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "a",
            "1-2-3",
            "+1",
            "99999999999999999999",
        ] {
            assert!(bad.parse::<EventId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kinds_serialize_as_their_wire_names() {
        for kind in EventKind::ALL {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::String(kind.as_str().into())
            );
        }
    }
}
