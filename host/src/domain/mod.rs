//! The model: jobs, their state machine, pipelines of jobs, workers and
//! what they offer.
//!
//! Pure: no I/O, no tokio, no storage layout. Everything else in the host
//! (store, scheduler, agents, api) speaks these types, so the rules live in
//! one place and are unit-tested without a runtime.

mod artifact;
mod event;
pub mod integral;
mod job;
mod log;
mod pipeline;
mod provisioned;
mod worker;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use artifact::{
    ArtifactInput, ArtifactShape, JobArtifacts, MAX_OUTPUTS, check_artifacts, check_output_path,
};
pub use event::{EventId, EventKind, EventRecord, StoredEvent};
pub use job::{Command, DEFAULT_QUEUE, Job, JobId, JobSpec, JobState, Outcome};
pub use log::{Admission, LogRecord, LogStream, admit, quota_marker};
pub use pipeline::{
    Advance, MAX_STEP_NAME, MAX_STEPS, OnFailure, Pipeline, PipelineError, PipelineId,
    PipelineMove, PipelineState, Step, StepProblem, StepShape, StepState, validate,
};
pub use provisioned::{ProvisionedWorker, TokenRefusal, WorkerPhase};
pub use worker::{Resources, WorkerId, WorkerInfo, WorkerMetrics};

/// A rule of the model was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The state machine has no such move.
    #[error("illegal transition from {from} to {to}")]
    IllegalTransition {
        /// State the job is in.
        from: JobState,
        /// State that was asked for.
        to: JobState,
    },
    /// A message about an attempt that is no longer the job's current one.
    #[error("stale attempt {got}: the job is on attempt {current}")]
    StaleAttempt {
        /// The job's attempt.
        current: u32,
        /// The attempt the message was about.
        got: u32,
    },
    /// Log lines that do not continue the job's log densely.
    #[error("log sequence gap: expected {expected}, got {got}")]
    LogGap {
        /// The next sequence the log takes.
        expected: u64,
        /// The first sequence of the batch past the stored head.
        got: u64,
    },
    /// Not a well-formed id.
    #[error("invalid id {0:?}")]
    InvalidId(String),
}

/// A point in time, as microseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self(i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX))
    }

    /// This time plus `duration` (saturating).
    pub fn plus(self, duration: std::time::Duration) -> Self {
        let micros = i64::try_from(duration.as_micros()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(micros))
    }

    /// RFC 3339 with microseconds, e.g. `2026-11-22T06:13:50.123456Z`.
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000;
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| self.0.to_string())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}
