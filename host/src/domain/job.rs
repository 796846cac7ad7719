//! A job, what it asks for, and the state machine it moves through.
//!
//! Every state change is a method that checks the move is legal and returns
//! [`DomainError`] when it is not, so the store, the scheduler and the API
//! cannot put a job into a state the model does not allow. Serde derives are
//! here because the data model is the job itself; how it is laid out on disk
//! is the store's business (it wraps these in a versioned envelope).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{DomainError, JobArtifacts, Resources, Timestamp, WorkerId};

/// Identifies a job. UUIDv7, so ids sort in submission order: the queue's
/// FIFO order and the store's cursor pagination both lean on that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
    /// A fresh id, ordered after every id this process made before.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// When the id was made (its UUIDv7 time, millisecond precision);
    /// `None` for an id that is not a v7.
    pub fn created_at(self) -> Option<Timestamp> {
        let (secs, nanos) = self.0.get_timestamp()?.to_unix();
        let micros = i128::from(secs) * 1_000_000 + i128::from(nanos / 1_000);
        i64::try_from(micros).ok().map(Timestamp)
    }

    /// The smallest UUIDv7 made at `at` (its millisecond): every id made
    /// at or after `at` orders at or after it.
    pub fn first_at(at: Timestamp) -> Self {
        let millis = u64::try_from(at.0.div_euclid(1000)).unwrap_or(0);
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
        bytes[6] = 0x70;
        bytes[8] = 0x80;
        Self(Uuid::from_bytes(bytes))
    }

    /// Parses the canonical hyphenated form.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| DomainError::InvalidId(s.to_owned()))
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The queue of a job that names none.
pub const DEFAULT_QUEUE: &str = "default";

fn default_queue() -> String {
    DEFAULT_QUEUE.to_owned()
}

/// What to execute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// A bash script (run after `set -euo pipefail`).
    Script(String),
    /// An argv vector, executed without a shell.
    Args(Vec<String>),
}

/// Everything the submitter asked for. Immutable once accepted, except that
/// secrets are wiped when the job ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Display name.
    pub name: String,
    /// What to run.
    pub command: Command,
    /// Plain environment variables.
    pub env: BTreeMap<String, String>,
    /// Secret environment variables: handed to the agent, never shown.
    pub secrets: BTreeMap<String, String>,
    /// Labels a worker must carry, all of them, with these values.
    pub labels: BTreeMap<String, String>,
    /// Capacity reserved on the worker while the job holds it.
    pub resources: Resources,
    /// Higher runs first.
    pub priority: i32,
    /// The fair-share queue it is charged to ([`DEFAULT_QUEUE`] unless
    /// asked); queues share capacity by their configured weights.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Wall-clock limit; `None` means none.
    pub timeout_secs: Option<u64>,
    /// How many attempts infrastructure failures (a lost agent) may use.
    pub max_attempts: u32,
    /// Files it sends and receives (a pipeline step's outputs and inputs).
    #[serde(default, skip_serializing_if = "JobArtifacts::is_empty")]
    pub artifacts: JobArtifacts,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// Accepted and waiting for a worker.
    Pending,
    /// Assigned to a worker; the agent has not reported the start yet.
    Scheduled,
    /// The agent started the process.
    Running,
    /// Exited with code 0.
    Succeeded,
    /// Exited non-zero, could not start, or ran out of attempts.
    Failed,
    /// Cancelled by a user.
    Cancelled,
    /// Ran past `timeout_secs`.
    TimedOut,
}

impl JobState {
    /// All states, in lifecycle order.
    pub const ALL: [JobState; 7] = [
        Self::Pending,
        Self::Scheduled,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
        Self::TimedOut,
    ];

    /// True for the states a job never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::TimedOut
        )
    }

    /// The wire name (`PENDING`, `TIMED_OUT`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Scheduled => "SCHEDULED",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::TimedOut => "TIMED_OUT",
        }
    }

    /// Parses a wire name, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an attempt ended, as the agent reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The process ended by itself with this exit code.
    Exited(i32),
    /// Killed by a signal it was not sent by us.
    Signalled(i32),
    /// Ended at the host's request.
    Cancelled,
    /// Ended for running past its timeout.
    TimedOut,
    /// Never started.
    FailedToStart,
    /// Exited 0, but its outputs were not all delivered.
    OutputsFailed,
}

/// A job and its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Identity.
    pub id: JobId,
    /// What was asked.
    pub spec: JobSpec,
    /// Current state.
    pub state: JobState,
    /// Attempt number: 0 before the first assignment, then 1, 2... It is the
    /// fencing token: messages about an older attempt are ignored.
    pub attempt: u32,
    /// Worker holding the current attempt.
    pub worker_id: Option<WorkerId>,
    /// A cancel was asked while the job was on a worker; the agent confirms.
    pub cancel_requested: bool,
    /// Exit code of the last attempt, when it exited.
    pub exit_code: Option<i32>,
    /// Why the job is in its state, when that is not obvious (a failure
    /// reason, "agent lost", a requeue).
    pub reason: Option<String>,
    /// When accepted.
    pub created_at: Timestamp,
    /// When last assigned.
    pub scheduled_at: Option<Timestamp>,
    /// When the agent last started it.
    pub started_at: Option<Timestamp>,
    /// When it reached a terminal state.
    pub finished_at: Option<Timestamp>,
    /// A requeued job is not placed before this time (retry backoff).
    #[serde(default)]
    pub not_before: Option<Timestamp>,
}

/// How long a job whose `attempt` was lost waits before it is placed
/// again: 1 s, doubling per attempt, at most 60 s. A flapping worker or a
/// job that kills its agent does not spin through its attempts.
pub fn retry_backoff(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_secs(1u64 << attempt.saturating_sub(1).min(6))
        .min(std::time::Duration::from_secs(60))
}

impl Job {
    /// A new pending job.
    pub fn new(spec: JobSpec, now: Timestamp) -> Self {
        Self {
            id: JobId::new(),
            spec,
            state: JobState::Pending,
            attempt: 0,
            worker_id: None,
            cancel_requested: false,
            exit_code: None,
            reason: None,
            created_at: now,
            scheduled_at: None,
            started_at: None,
            finished_at: None,
            not_before: None,
        }
    }

    fn illegal(&self, to: JobState) -> DomainError {
        DomainError::IllegalTransition {
            from: self.state,
            to,
        }
    }

    /// Pending → Scheduled on `worker`; starts a new attempt and returns its
    /// number.
    pub fn schedule(&mut self, worker: WorkerId, now: Timestamp) -> Result<u32, DomainError> {
        if self.state != JobState::Pending {
            return Err(self.illegal(JobState::Scheduled));
        }
        self.state = JobState::Scheduled;
        self.attempt += 1;
        self.worker_id = Some(worker);
        self.scheduled_at = Some(now);
        self.reason = None;
        Ok(self.attempt)
    }

    /// Scheduled → Running, for the current attempt only.
    pub fn start(&mut self, attempt: u32, now: Timestamp) -> Result<(), DomainError> {
        self.check_attempt(attempt)?;
        if self.state != JobState::Scheduled {
            return Err(self.illegal(JobState::Running));
        }
        self.state = JobState::Running;
        self.started_at = Some(now);
        Ok(())
    }

    /// An exit 0 of a job with outputs counts only if the agent reports
    /// every output as delivered (`delivered`): otherwise it is
    /// [`Outcome::OutputsFailed`], naming the first missing one.
    pub fn check_outputs(&self, outcome: Outcome, delivered: &[String]) -> Option<String> {
        if outcome != Outcome::Exited(0) {
            return None;
        }
        self.spec
            .artifacts
            .outputs
            .iter()
            .find(|output| !delivered.contains(output))
            .map(|missing| format!("output {missing:?} was not received by the host"))
    }

    /// Records how the current attempt ended and moves to the terminal state
    /// that outcome means.
    pub fn finish(
        &mut self,
        attempt: u32,
        outcome: Outcome,
        error: Option<&str>,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        self.check_attempt(attempt)?;
        let (to, exit_code, reason) = match outcome {
            Outcome::Exited(0) => (JobState::Succeeded, Some(0), None),
            Outcome::Exited(code) => (
                JobState::Failed,
                Some(code),
                Some(format!("exited with code {code}")),
            ),
            Outcome::Signalled(sig) => (
                JobState::Failed,
                None,
                Some(format!("killed by signal {sig}")),
            ),
            Outcome::Cancelled => (JobState::Cancelled, None, Some("cancelled".to_owned())),
            Outcome::TimedOut => (
                JobState::TimedOut,
                None,
                Some(format!(
                    "ran past its timeout of {}s",
                    self.spec.timeout_secs.unwrap_or_default()
                )),
            ),
            Outcome::FailedToStart => (
                JobState::Failed,
                None,
                Some(format!(
                    "could not start: {}",
                    error.unwrap_or("unknown error")
                )),
            ),
            Outcome::OutputsFailed => (
                JobState::Failed,
                Some(0),
                Some(format!(
                    "exited 0 but its outputs were not delivered: {}",
                    error.unwrap_or("unknown error")
                )),
            ),
        };
        if !matches!(self.state, JobState::Scheduled | JobState::Running) {
            return Err(self.illegal(to));
        }
        self.end(to, now);
        self.exit_code = exit_code;
        self.reason = reason;
        Ok(())
    }

    /// The worker holding the current attempt was lost. Requeues the job
    /// when attempts remain (returns `Pending`), otherwise fails it.
    pub fn lose_attempt(
        &mut self,
        attempt: u32,
        why: &str,
        now: Timestamp,
    ) -> Result<JobState, DomainError> {
        self.check_attempt(attempt)?;
        if !matches!(self.state, JobState::Scheduled | JobState::Running) {
            return Err(self.illegal(JobState::Pending));
        }
        if self.cancel_requested {
            self.end(JobState::Cancelled, now);
            self.reason = Some(format!("cancelled ({why})"));
        } else if self.attempt < self.spec.max_attempts {
            let backoff = retry_backoff(attempt);
            self.state = JobState::Pending;
            self.worker_id = None;
            self.not_before = Some(Timestamp(
                now.0
                    .saturating_add(i64::try_from(backoff.as_micros()).unwrap_or(i64::MAX)),
            ));
            self.reason = Some(format!(
                "attempt {attempt} lost: {why}; retried after {}s",
                backoff.as_secs()
            ));
        } else {
            self.end(JobState::Failed, now);
            self.reason = Some(why.to_owned());
        }
        Ok(self.state)
    }

    /// A user's cancel. A pending job ends at once (returns true); a job on
    /// a worker is marked and ends when the agent confirms (returns false).
    pub fn request_cancel(&mut self, now: Timestamp) -> Result<bool, DomainError> {
        match self.state {
            JobState::Pending => {
                self.end(JobState::Cancelled, now);
                self.reason = Some("cancelled before it was scheduled".to_owned());
                Ok(true)
            }
            JobState::Scheduled | JobState::Running => {
                self.cancel_requested = true;
                Ok(false)
            }
            _ => Err(self.illegal(JobState::Cancelled)),
        }
    }

    fn check_attempt(&self, attempt: u32) -> Result<(), DomainError> {
        if attempt == self.attempt {
            Ok(())
        } else {
            Err(DomainError::StaleAttempt {
                current: self.attempt,
                got: attempt,
            })
        }
    }

    /// Terminal bookkeeping shared by every ending: the secret values have
    /// served their purpose and are not kept one moment longer (their names
    /// stay, so the job still says which secrets it had).
    fn end(&mut self, to: JobState, now: Timestamp) {
        self.state = to;
        self.finished_at = Some(now);
        for value in self.spec.secrets.values_mut() {
            value.clear();
        }
    }

    /// True once no secret value is held any more.
    pub fn secrets_wiped(&self) -> bool {
        self.spec.secrets.values().all(String::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            name: "t".into(),
            command: Command::Script("true".into()),
            env: BTreeMap::new(),
            secrets: [("TOKEN".to_string(), "s3cr3t-value".to_string())].into(),
            labels: BTreeMap::new(),
            resources: Resources::default(),
            priority: 0,
            queue: crate::domain::DEFAULT_QUEUE.to_owned(),
            timeout_secs: None,
            max_attempts: 2,
            artifacts: Default::default(),
        }
    }

    fn worker() -> WorkerId {
        WorkerId("w1".into())
    }

    #[test]
    fn happy_path_succeeds_and_wipes_secrets() {
        let mut job = Job::new(spec(), Timestamp::now());
        let attempt = job.schedule(worker(), Timestamp::now()).unwrap();
        assert_eq!(attempt, 1);
        job.start(1, Timestamp::now()).unwrap();
        job.finish(1, Outcome::Exited(0), None, Timestamp::now())
            .unwrap();
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.exit_code, Some(0));
        assert!(job.secrets_wiped());
        assert_eq!(job.spec.secrets.keys().collect::<Vec<_>>(), ["TOKEN"]);
    }

    #[test]
    fn non_zero_exit_fails_with_code() {
        let mut job = Job::new(spec(), Timestamp::now());
        job.schedule(worker(), Timestamp::now()).unwrap();
        job.finish(1, Outcome::Exited(3), None, Timestamp::now())
            .unwrap();
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(job.exit_code, Some(3));
    }

    #[test]
    fn finished_jobs_refuse_every_move() {
        let mut job = Job::new(spec(), Timestamp::now());
        job.schedule(worker(), Timestamp::now()).unwrap();
        job.finish(1, Outcome::TimedOut, None, Timestamp::now())
            .unwrap();
        assert_eq!(job.state, JobState::TimedOut);
        assert!(matches!(
            job.request_cancel(Timestamp::now()),
            Err(DomainError::IllegalTransition { .. })
        ));
        assert!(job.schedule(worker(), Timestamp::now()).is_err());
        assert!(job.start(1, Timestamp::now()).is_err());
        assert!(
            job.finish(1, Outcome::Exited(0), None, Timestamp::now())
                .is_err()
        );
    }

    #[test]
    fn a_lost_attempt_is_retried_after_a_growing_backoff() {
        let mut job = Job::new(spec(), Timestamp::now());
        job.spec.max_attempts = 10;
        let mut waits = Vec::new();
        for attempt in 1..=9 {
            job.schedule(worker(), Timestamp(0)).unwrap();
            let now = Timestamp(1_000_000 * i64::from(attempt));
            job.lose_attempt(attempt, "agent lost", now).unwrap();
            waits.push((job.not_before.unwrap().0 - now.0) / 1_000_000);
        }
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert!(job.reason.as_deref().unwrap().contains("retried after 60s"));
    }

    #[test]
    fn stale_attempts_are_fenced_off() {
        let mut job = Job::new(spec(), Timestamp::now());
        job.schedule(worker(), Timestamp::now()).unwrap();
        assert_eq!(
            job.lose_attempt(1, "agent lost", Timestamp::now()).unwrap(),
            JobState::Pending
        );
        job.schedule(worker(), Timestamp::now()).unwrap();
        let err = job
            .finish(1, Outcome::Exited(0), None, Timestamp::now())
            .unwrap_err();
        assert!(matches!(
            err,
            DomainError::StaleAttempt { current: 2, got: 1 }
        ));
        assert_eq!(job.state, JobState::Scheduled);
    }

    #[test]
    fn losing_the_last_attempt_fails_the_job() {
        let mut job = Job::new(spec(), Timestamp::now());
        for attempt in 1..=2 {
            job.schedule(worker(), Timestamp::now()).unwrap();
            job.lose_attempt(attempt, "agent lost", Timestamp::now())
                .unwrap();
        }
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(job.reason.as_deref(), Some("agent lost"));
    }

    #[test]
    fn cancel_of_pending_is_immediate_of_running_is_requested() {
        let mut pending = Job::new(spec(), Timestamp::now());
        assert!(pending.request_cancel(Timestamp::now()).unwrap());
        assert_eq!(pending.state, JobState::Cancelled);

        let mut running = Job::new(spec(), Timestamp::now());
        running.schedule(worker(), Timestamp::now()).unwrap();
        running.start(1, Timestamp::now()).unwrap();
        assert!(!running.request_cancel(Timestamp::now()).unwrap());
        assert_eq!(running.state, JobState::Running);
        assert!(running.cancel_requested);
        // A lost attempt of a job being cancelled ends it, not requeues it.
        running
            .lose_attempt(1, "agent lost", Timestamp::now())
            .unwrap();
        assert_eq!(running.state, JobState::Cancelled);
    }

    #[test]
    fn state_names_round_trip() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
        }
        assert_eq!(JobState::parse("timed_out"), Some(JobState::TimedOut));
        assert_eq!(JobState::parse("nope"), None);
    }
}
