//! A pipeline: named steps, each a job spec with the steps it `needs`,
//! and the rules that move it (pure; the engine in `crate::pipelines`
//! applies them inside the store's transaction).
//!
//! Why these rules live here: the same decision must be taken by whichever
//! host advances a pipeline (on PostgreSQL, any of them), from the stored
//! record and the states of the steps' jobs alone. [`Pipeline::advance`]
//! is that decision; it is deterministic apart from the ids it gives to
//! the jobs it creates, and a step that has a job id never gets another
//! one in the same run: that is what makes a step's job be created once.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{DomainError, JobId, JobSpec, JobState, Timestamp};

/// Most steps a pipeline may have.
pub const MAX_STEPS: usize = 500;
/// Longest step name.
pub const MAX_STEP_NAME: usize = 64;

/// Identifies a pipeline (UUIDv7: ids sort by creation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PipelineId(pub Uuid);

impl PipelineId {
    /// A fresh id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses the canonical hyphenated form.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| DomainError::InvalidId(s.to_owned()))
    }
}

impl Default for PipelineId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for PipelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// What a failing step does to the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Its dependents are skipped and the pipeline fails.
    #[default]
    Fail,
    /// Its dependents run anyway, and the pipeline does not fail for it.
    Continue,
}

/// Where a pipeline is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PipelineState {
    /// Accepted; no step's job has left the queue yet.
    Pending,
    /// A step's job was placed, or has ended, and some step is not settled.
    Running,
    /// Every step ended and none failed with `on_failure = fail`.
    Succeeded,
    /// Every step is settled and one failed with `on_failure = fail`.
    Failed,
    /// Cancelled by a user; every step is settled.
    Cancelled,
}

impl PipelineState {
    /// True for the states a pipeline leaves only through a retry.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// Parses a wire name, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Running,
            Self::Succeeded,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|state| state.as_str().eq_ignore_ascii_case(s))
    }
}

/// Where a step is: waiting for its needs, its job's state, or skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepState {
    /// Its needs have not all ended; it has no job.
    Waiting,
    /// Its job waits for a worker.
    Pending,
    /// Its job is assigned.
    Scheduled,
    /// Its job runs.
    Running,
    /// Its job exited 0.
    Succeeded,
    /// Its job failed.
    Failed,
    /// Its job was cancelled.
    Cancelled,
    /// Its job ran past its timeout.
    TimedOut,
    /// Never run: a need failed or was skipped, or the pipeline was
    /// cancelled first (`reason` says which).
    Skipped,
}

impl StepState {
    /// The step's state for its job's.
    pub fn of_job(state: JobState) -> Self {
        match state {
            JobState::Pending => Self::Pending,
            JobState::Scheduled => Self::Scheduled,
            JobState::Running => Self::Running,
            JobState::Succeeded => Self::Succeeded,
            JobState::Failed => Self::Failed,
            JobState::Cancelled => Self::Cancelled,
            JobState::TimedOut => Self::TimedOut,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "WAITING",
            Self::Skipped => "SKIPPED",
            Self::Pending => "PENDING",
            Self::Scheduled => "SCHEDULED",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::TimedOut => "TIMED_OUT",
        }
    }

    /// True once the step will not move again in this run.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::TimedOut | Self::Skipped
        )
    }

    /// Its job ended without succeeding.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::Cancelled | Self::TimedOut)
    }
}

/// One step of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Its name, unique in the pipeline.
    pub name: String,
    /// The steps that must end before it starts.
    pub needs: Vec<String>,
    /// What its failure does to the rest.
    pub on_failure: OnFailure,
    /// The job it runs (pipeline-level env, labels and secrets merged in;
    /// secrets sealed).
    pub spec: JobSpec,
    /// Where it is.
    pub state: StepState,
    /// Its job in the current run, once created.
    pub job_id: Option<JobId>,
    /// Why it is in its state, when that is not obvious (skipped).
    pub reason: Option<String>,
    /// Jobs of earlier runs (before retries), oldest first.
    #[serde(default)]
    pub earlier_jobs: Vec<JobId>,
}

/// A pipeline and its progress: the stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    /// Identity.
    pub id: PipelineId,
    /// Display name.
    pub name: String,
    /// Where it is.
    pub state: PipelineState,
    /// Its steps, in the order given.
    pub steps: Vec<Step>,
    /// A user asked to cancel it.
    pub cancel_requested: bool,
    /// How many times it was retried.
    pub retries: u32,
    /// When accepted.
    pub created_at: Timestamp,
    /// When it last reached a terminal state.
    pub finished_at: Option<Timestamp>,
}

/// A move of the pipeline (`step` is `None`) or of one step, for the
/// event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineMove {
    /// The step, or `None` for the pipeline itself.
    pub step: Option<String>,
    /// The state before (wire name).
    pub from: &'static str,
    /// The state after (wire name).
    pub to: &'static str,
}

/// What [`Pipeline::advance`] decided.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Advance {
    /// Steps whose job must now be created (index, the job's id).
    pub create: Vec<(usize, JobId)>,
    /// What moved.
    pub moves: Vec<PipelineMove>,
}

/// A step as submitted, for [`validate`].
#[derive(Debug, Clone, Copy)]
pub struct StepShape<'a> {
    /// Its name.
    pub name: &'a str,
    /// What it needs.
    pub needs: &'a [String],
}

/// One problem of a submitted pipeline, naming the step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepProblem {
    /// The step's index, when the problem is one step's.
    pub index: Option<usize>,
    /// The step's name, when it has one.
    pub step: Option<String>,
    /// The field (`steps[3].needs`).
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

/// Checks the graph of a pipeline: at least one and at most [`MAX_STEPS`]
/// steps, names well-formed and unique, every need a known other step,
/// no cycle. Returns every problem found.
pub fn validate(steps: &[StepShape<'_>]) -> Vec<StepProblem> {
    let mut problems = Problems(Vec::new());
    if steps.is_empty() {
        problems.add(
            None,
            None,
            "steps".into(),
            "a pipeline needs at least one step".into(),
        );
        return problems.0;
    }
    if steps.len() > MAX_STEPS {
        problems.add(
            None,
            None,
            "steps".into(),
            format!("{} steps: at most {MAX_STEPS}", steps.len()),
        );
        return problems.0;
    }
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        let name = step.name;
        if !is_step_name(name) {
            problems.add(
                Some(i),
                Some(name),
                format!("steps[{i}].name"),
                format!("{name:?} is not a step name (1 to {MAX_STEP_NAME} of A-Z a-z 0-9 _ . -)"),
            );
        } else if let Some(first) = by_name.insert(name, i) {
            by_name.insert(name, first);
            problems.add(
                Some(i),
                Some(name),
                format!("steps[{i}].name"),
                format!("duplicate step name {name:?} (also steps[{first}])"),
            );
        }
    }
    for (i, step) in steps.iter().enumerate() {
        let mut seen = Vec::new();
        for need in step.needs {
            let field = format!("steps[{i}].needs");
            if need == step.name {
                problems.add(
                    Some(i),
                    Some(step.name),
                    field,
                    "a step cannot need itself".into(),
                );
            } else if !by_name.contains_key(need.as_str()) {
                problems.add(
                    Some(i),
                    Some(step.name),
                    field,
                    format!("needs unknown step {need:?}"),
                );
            } else if seen.contains(&need) {
                problems.add(
                    Some(i),
                    Some(step.name),
                    field,
                    format!("needs {need:?} twice"),
                );
            }
            seen.push(need);
        }
    }
    if problems.0.is_empty()
        && let Some(cycle) = find_cycle(steps, &by_name)
    {
        let path: Vec<&str> = cycle.iter().map(|&i| steps[i].name).collect();
        let first = cycle[0];
        problems.add(
            Some(first),
            Some(steps[first].name),
            format!("steps[{first}].needs"),
            format!("cycle: {} → {}", path.join(" → "), path[0]),
        );
    }
    problems.0
}

/// The problems [`validate`] found so far.
struct Problems(Vec<StepProblem>);

impl Problems {
    fn add(&mut self, index: Option<usize>, step: Option<&str>, field: String, problem: String) {
        self.0.push(StepProblem {
            index,
            step: step.map(str::to_owned),
            field,
            problem,
        });
    }
}

fn is_step_name(name: &str) -> bool {
    (1..=MAX_STEP_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A cycle of the needs graph, as step indexes in need order, if any.
fn find_cycle(steps: &[StepShape<'_>], by_name: &HashMap<&str, usize>) -> Option<Vec<usize>> {
    // Iterative depth-first search: 0 unvisited, 1 on the stack, 2 done.
    let mut mark = vec![0u8; steps.len()];
    for root in 0..steps.len() {
        if mark[root] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(need) = steps[node].needs.get(*next) {
                *next += 1;
                let Some(&to) = by_name.get(need.as_str()) else {
                    continue;
                };
                match mark[to] {
                    0 => {
                        mark[to] = 1;
                        stack.push((to, 0));
                    }
                    1 => {
                        let from = stack.iter().position(|&(n, _)| n == to).unwrap_or(0);
                        return Some(stack[from..].iter().map(|&(n, _)| n).collect());
                    }
                    _ => {}
                }
            } else {
                mark[node] = 2;
                stack.pop();
            }
        }
    }
    None
}

impl Pipeline {
    /// A new pending pipeline of `steps` (each `Waiting`).
    pub fn new(name: String, steps: Vec<Step>, now: Timestamp) -> Self {
        Self {
            id: PipelineId::new(),
            name,
            state: PipelineState::Pending,
            steps,
            cancel_requested: false,
            retries: 0,
            created_at: now,
            finished_at: None,
        }
    }

    /// Takes the observed states of the steps' jobs (a job missing from
    /// `observed` keeps the step's last known state), then moves every
    /// step and the pipeline as far as the rules allow: a waiting step
    /// whose needs all succeeded (or ended, for a need with
    /// `on_failure = continue`) gets a new job id; one with a need that
    /// failed (`fail`) or was skipped is skipped; after a cancel every
    /// waiting step is skipped.
    pub fn advance(&mut self, observed: &HashMap<JobId, JobState>, now: Timestamp) -> Advance {
        let mut out = Advance::default();
        for step in &mut self.steps {
            let Some(job) = step.job_id else { continue };
            if step.state.is_settled() {
                continue;
            }
            if let Some(&state) = observed.get(&job) {
                let to = StepState::of_job(state);
                if to != step.state {
                    out.moves.push(PipelineMove {
                        step: Some(step.name.clone()),
                        from: step.state.as_str(),
                        to: to.as_str(),
                    });
                    step.state = to;
                }
            }
        }
        let index: HashMap<String, usize> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        // Skips cascade along needs; repeat until nothing moves (at most
        // the depth of the graph).
        loop {
            let mut moved = false;
            for i in 0..self.steps.len() {
                if self.steps[i].state != StepState::Waiting {
                    continue;
                }
                let decision = if self.cancel_requested {
                    Some(Err("the pipeline was cancelled".to_owned()))
                } else {
                    self.readiness(i, &index)
                };
                let step = &mut self.steps[i];
                match decision {
                    None => continue,
                    Some(Ok(())) => {
                        let job = JobId::new();
                        step.job_id = Some(job);
                        step.state = StepState::Pending;
                        step.reason = None;
                        out.create.push((i, job));
                    }
                    Some(Err(reason)) => {
                        step.state = StepState::Skipped;
                        step.reason = Some(reason);
                    }
                }
                out.moves.push(PipelineMove {
                    step: Some(step.name.clone()),
                    from: StepState::Waiting.as_str(),
                    to: step.state.as_str(),
                });
                moved = true;
            }
            if !moved {
                break;
            }
        }
        let to = self.derived_state();
        if to != self.state {
            out.moves.push(PipelineMove {
                step: None,
                from: self.state.as_str(),
                to: to.as_str(),
            });
            self.state = to;
            self.finished_at = to.is_terminal().then_some(now);
        }
        out
    }

    /// `None` while a need has not ended; `Ok` when the step may run;
    /// `Err(reason)` when it must be skipped.
    fn readiness(&self, i: usize, index: &HashMap<String, usize>) -> Option<Result<(), String>> {
        let mut ready = true;
        for need in &self.steps[i].needs {
            let Some(&n) = index.get(need) else {
                return Some(Err(format!("needs unknown step {need:?}")));
            };
            let dep = &self.steps[n];
            match dep.state {
                StepState::Succeeded => {}
                StepState::Skipped => {
                    return Some(Err(format!("needs {need:?}, which was skipped")));
                }
                s if s.is_failure() && dep.on_failure == OnFailure::Fail => {
                    return Some(Err(format!("needs {need:?}, which ended {}", s.as_str())));
                }
                s if s.is_failure() => {}
                _ => ready = false,
            }
        }
        ready.then_some(Ok(()))
    }

    /// The pipeline's state from its steps'.
    fn derived_state(&self) -> PipelineState {
        if self.steps.iter().all(|s| s.state.is_settled()) {
            if self.cancel_requested {
                PipelineState::Cancelled
            } else if self
                .steps
                .iter()
                .any(|s| s.state.is_failure() && s.on_failure == OnFailure::Fail)
                || self.steps.iter().any(|s| s.state == StepState::Skipped)
            {
                PipelineState::Failed
            } else {
                PipelineState::Succeeded
            }
        } else if self.steps.iter().any(|s| {
            !matches!(
                s.state,
                StepState::Waiting | StepState::Pending | StepState::Skipped
            )
        }) || self.state == PipelineState::Running
        {
            PipelineState::Running
        } else {
            PipelineState::Pending
        }
    }

    /// A user's cancel: marks the pipeline (waiting steps are skipped by
    /// the next [`Pipeline::advance`]) and answers the jobs of its steps
    /// that have not ended, to be cancelled.
    pub fn request_cancel(&mut self) -> Result<Vec<JobId>, PipelineError> {
        if self.state.is_terminal() {
            return Err(PipelineError::Ended(self.state));
        }
        self.cancel_requested = true;
        Ok(self.unfinished_jobs())
    }

    /// The jobs of steps that have one and are not settled.
    pub fn unfinished_jobs(&self) -> Vec<JobId> {
        self.steps
            .iter()
            .filter(|s| !s.state.is_settled())
            .filter_map(|s| s.job_id)
            .collect()
    }

    /// A retry of an ended pipeline that did not succeed: its failed,
    /// cancelled, timed-out and skipped steps wait again (their jobs are
    /// kept in `earlier_jobs`); succeeded steps are kept.
    pub fn retry(&mut self) -> Result<Vec<PipelineMove>, PipelineError> {
        if !matches!(self.state, PipelineState::Failed | PipelineState::Cancelled) {
            return Err(PipelineError::NotRetryable(self.state));
        }
        let mut moves = Vec::new();
        for step in &mut self.steps {
            if step.state.is_failure() || step.state == StepState::Skipped {
                moves.push(PipelineMove {
                    step: Some(step.name.clone()),
                    from: step.state.as_str(),
                    to: StepState::Waiting.as_str(),
                });
                if let Some(job) = step.job_id.take() {
                    step.earlier_jobs.push(job);
                }
                step.state = StepState::Waiting;
                step.reason = None;
            }
        }
        moves.push(PipelineMove {
            step: None,
            from: self.state.as_str(),
            to: PipelineState::Running.as_str(),
        });
        self.state = PipelineState::Running;
        self.cancel_requested = false;
        self.finished_at = None;
        self.retries += 1;
        Ok(moves)
    }
}

/// A move the pipeline's state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    /// Cancel of an ended pipeline.
    #[error("the pipeline already ended {}", .0.as_str())]
    Ended(PipelineState),
    /// Retry of a pipeline that is running or succeeded.
    #[error("only a FAILED or CANCELLED pipeline can be retried; this one is {}", .0.as_str())]
    NotRetryable(PipelineState),
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
