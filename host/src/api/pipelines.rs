//! `/api/v1/pipelines`: create, list, get, cancel, retry.
//!
//! A body is validated whole before anything is stored: each step as a
//! job body of `POST /api/v1/jobs` (with the pipeline's `env`, `labels`
//! and `secrets` merged under its own), then the graph (names, needs,
//! cycles; `crate::domain::validate`). Every problem names its step in
//! `details` (`{"field": "steps[2].needs", "step": "c", "problem": …}`).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::jobs::SubmitJob;
use super::{ApiJson, ApiQuery, AppState};
use crate::api::error::{ApiError, ErrorBody};
use crate::domain::{
    ArtifactInput, ArtifactShape, JobArtifacts, JobState, MAX_STEPS, OnFailure, Pipeline,
    PipelineId, PipelineState, Resources, Step, StepShape, StepState, Timestamp, check_artifacts,
    integral, validate,
};
use crate::pipelines::PipelineFailure;

const MAX_NAME_LEN: usize = 256;

/// One step of `POST /api/v1/pipelines`: a job body (exactly one of
/// `command` and `args`) with a name, `needs` and `on_failure`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "test", "needs": ["build"], "command": "make test"}))]
pub struct PipelineStepBody {
    /// Unique in the pipeline: 1 to 64 of `A-Z a-z 0-9 _ . -`.
    #[schema(pattern = r"^[A-Za-z0-9_.\-]{1,64}$")]
    pub name: String,
    /// Steps that must end before this one starts (each another step of
    /// the pipeline; no cycle).
    #[serde(default)]
    pub needs: Vec<String>,
    /// `fail` (default): when this step fails its dependents are skipped
    /// and the pipeline fails; `continue`: they run anyway, and the
    /// pipeline does not fail for it.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// A bash script (exclusive with `args`): not blank, no NUL byte.
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    pub command: Option<String>,
    /// An argv vector (exclusive with `command`).
    #[schema(schema_with = super::jobs::args_schema)]
    pub args: Option<Vec<String>>,
    /// Environment variables (over the pipeline's).
    #[serde(default)]
    #[schema(schema_with = super::jobs::env_schema)]
    pub env: BTreeMap<String, String>,
    /// Secret environment variables (over the pipeline's), write-only.
    #[serde(default)]
    #[schema(schema_with = super::jobs::secrets_schema)]
    pub secrets: BTreeMap<String, String>,
    /// Required worker labels (over the pipeline's).
    #[serde(default)]
    #[schema(schema_with = super::jobs::labels_schema)]
    pub labels: BTreeMap<String, String>,
    /// Capacity to reserve.
    #[serde(default)]
    pub resources: Resources,
    /// Higher first.
    #[serde(default, deserialize_with = "integral::deserialize")]
    pub priority: i32,
    /// Wall-clock limit in seconds (at least 1; absent: none).
    #[serde(default, deserialize_with = "integral::option")]
    #[schema(minimum = 1, maximum = 9007199254740991_u64)]
    pub timeout_secs: Option<u64>,
    /// Attempts allowed for infrastructure failures (1 to 100, default 3).
    #[serde(default, deserialize_with = "integral::option")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// Files (paths relative to the step's directory, no `..`) the step
    /// hands on when it exits 0; the step fails if one is missing or over
    /// the host's size limit. At most 32.
    #[serde(default)]
    #[schema(max_items = 32)]
    pub outputs: Vec<String>,
    /// Outputs of steps it needs, placed at the same relative path in its
    /// directory before it starts.
    #[serde(default)]
    pub inputs: Vec<InputBody>,
}

/// One input of a step: an output of one of its needs.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"step": "build", "output": "dist/app.tar.gz"}))]
pub struct InputBody {
    /// The step that produces it: one of this step's `needs`.
    pub step: String,
    /// One of that step's `outputs`.
    pub output: String,
}

/// Body of `POST /api/v1/pipelines`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "ci",
    "env": {"CI": "true"},
    "steps": [
        {"name": "build", "command": "make"},
        {"name": "test", "needs": ["build"], "command": "make test"},
        {"name": "lint", "needs": ["build"], "command": "make lint", "on_failure": "continue"}
    ]
}))]
pub struct CreatePipeline {
    /// Display name (at most 256 characters; default `pipeline`).
    #[schema(max_length = 256)]
    pub name: Option<String>,
    /// Environment variables every step inherits.
    #[serde(default)]
    #[schema(schema_with = super::jobs::env_schema)]
    pub env: BTreeMap<String, String>,
    /// Secret environment variables every step inherits.
    #[serde(default)]
    #[schema(schema_with = super::jobs::secrets_schema)]
    pub secrets: BTreeMap<String, String>,
    /// Worker labels every step requires.
    #[serde(default)]
    #[schema(schema_with = super::jobs::labels_schema)]
    pub labels: BTreeMap<String, String>,
    /// The fair-share queue of every step (as a job's `queue`).
    #[schema(pattern = r"^[a-z0-9_.\-]{1,64}$")]
    pub queue: Option<String>,
    /// 1 to 500 steps.
    #[schema(min_items = 1, max_items = 500)]
    pub steps: Vec<PipelineStepBody>,
}

fn merged(
    base: &BTreeMap<String, String>,
    over: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = base.clone();
    out.extend(over);
    out
}

/// The problems of one step's job, tagged with the step.
fn step_problems(index: usize, step: &str, error: &ApiError) -> Vec<Value> {
    match &error.details {
        Value::Array(problems) if !problems.is_empty() => problems
            .iter()
            .map(|p| {
                let field = match p["field"].as_str().unwrap_or_default() {
                    "" => format!("steps[{index}]"),
                    field => format!("steps[{index}].{field}"),
                };
                json!({ "field": field, "step": step, "problem": p["problem"] })
            })
            .collect(),
        _ => vec![json!({
            "field": format!("steps[{index}]"),
            "step": step,
            "problem": error.message,
        })],
    }
}

fn refuse(problems: Vec<Value>) -> ApiError {
    let message = problems
        .iter()
        .map(|p| {
            format!(
                "{}: {}",
                p["field"].as_str().unwrap_or_default(),
                p["problem"].as_str().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "VALIDATION_ERROR",
        message,
        details: Value::Array(problems),
    }
}

impl CreatePipeline {
    /// Checks everything and builds the pipeline, or lists every problem.
    pub fn into_pipeline(self) -> Result<Pipeline, ApiError> {
        let mut problems = Vec::new();
        let name = self.name.unwrap_or_else(|| "pipeline".to_owned());
        if name.chars().count() > MAX_NAME_LEN {
            problems.push(json!({"field": "name", "problem": format!("longer than {MAX_NAME_LEN} characters")}));
        }
        if self.steps.len() > MAX_STEPS {
            problems.push(json!({"field": "steps", "problem": format!("{} steps: at most {MAX_STEPS}", self.steps.len())}));
            return Err(refuse(problems));
        }
        let shapes: Vec<StepShape<'_>> = self
            .steps
            .iter()
            .map(|s| StepShape {
                name: &s.name,
                needs: &s.needs,
            })
            .collect();
        for problem in validate(&shapes) {
            let mut entry = json!({ "field": problem.field, "problem": problem.problem });
            if let Some(step) = problem.step {
                entry["step"] = json!(step);
            }
            problems.push(entry);
        }
        let inputs: Vec<Vec<ArtifactInput>> = self
            .steps
            .iter()
            .map(|s| {
                s.inputs
                    .iter()
                    .map(|i| ArtifactInput {
                        step: i.step.clone(),
                        output: i.output.clone(),
                        from_job: None,
                    })
                    .collect()
            })
            .collect();
        let shapes: Vec<ArtifactShape<'_>> = self
            .steps
            .iter()
            .zip(&inputs)
            .map(|(s, inputs)| ArtifactShape {
                name: &s.name,
                needs: &s.needs,
                outputs: &s.outputs,
                inputs,
            })
            .collect();
        for problem in check_artifacts(&shapes) {
            problems.push(
                json!({ "field": problem.field, "step": problem.step, "problem": problem.problem }),
            );
        }
        let mut inputs = inputs.into_iter();
        let mut steps = Vec::with_capacity(self.steps.len());
        for (index, body) in self.steps.into_iter().enumerate() {
            let step_inputs = inputs.next().unwrap_or_default();
            let job = SubmitJob {
                name: None,
                command: body.command,
                args: body.args,
                env: merged(&self.env, body.env),
                secrets: merged(&self.secrets, body.secrets),
                labels: merged(&self.labels, body.labels),
                resources: body.resources,
                priority: body.priority,
                queue: self.queue.clone(),
                timeout_secs: body.timeout_secs,
                max_attempts: body.max_attempts,
            };
            match job.into_spec() {
                Ok(mut spec) => {
                    spec.name = format!("{name}/{}", body.name)
                        .chars()
                        .take(MAX_NAME_LEN)
                        .collect();
                    spec.artifacts = JobArtifacts {
                        outputs: body.outputs,
                        inputs: step_inputs,
                    };
                    steps.push(Step {
                        name: body.name,
                        needs: body.needs,
                        on_failure: body.on_failure,
                        spec,
                        state: StepState::Waiting,
                        job_id: None,
                        reason: None,
                        earlier_jobs: Vec::new(),
                    });
                }
                Err(err) => problems.extend(step_problems(index, &body.name, &err)),
            }
        }
        if problems.is_empty() {
            Ok(Pipeline::new(name, steps, Timestamp::now()))
        } else {
            Err(refuse(problems))
        }
    }
}

/// One step as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PipelineStep)]
pub struct StepView {
    name: String,
    needs: Vec<String>,
    on_failure: OnFailure,
    /// `WAITING` (needs not ended), its job's state, or `SKIPPED`.
    state: StepState,
    /// Its job in the current run, once created.
    #[schema(format = Uuid)]
    job_id: Option<String>,
    /// Why it was skipped.
    reason: Option<String>,
    /// Jobs of runs before a retry, oldest first.
    earlier_jobs: Vec<String>,
    /// Files it hands on when it exits 0.
    outputs: Vec<String>,
    /// Outputs of its needs it receives.
    inputs: Vec<InputBody>,
}

/// A pipeline as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Pipeline)]
pub struct PipelineView {
    #[schema(format = Uuid)]
    id: String,
    name: String,
    state: PipelineState,
    cancel_requested: bool,
    retries: u32,
    steps: Vec<StepView>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    finished_at: Option<String>,
}

impl PipelineView {
    /// The view of a pipeline; steps whose job moved since the record was
    /// last advanced show the job's state (`live`).
    fn of(
        pipeline: Pipeline,
        live: &std::collections::HashMap<crate::domain::JobId, JobState>,
    ) -> Self {
        Self {
            id: pipeline.id.to_string(),
            name: pipeline.name,
            state: pipeline.state,
            cancel_requested: pipeline.cancel_requested,
            retries: pipeline.retries,
            steps: pipeline
                .steps
                .into_iter()
                .map(|s| StepView {
                    state: s
                        .job_id
                        .and_then(|j| live.get(&j))
                        .map_or(s.state, |j| StepState::of_job(*j)),
                    name: s.name,
                    needs: s.needs,
                    on_failure: s.on_failure,
                    job_id: s.job_id.map(|j| j.to_string()),
                    reason: s.reason,
                    earlier_jobs: s.earlier_jobs.iter().map(ToString::to_string).collect(),
                    outputs: s.spec.artifacts.outputs,
                    inputs: s
                        .spec
                        .artifacts
                        .inputs
                        .into_iter()
                        .map(|i| InputBody {
                            step: i.step,
                            output: i.output,
                        })
                        .collect(),
                })
                .collect(),
            created_at: pipeline.created_at.to_rfc3339(),
            finished_at: pipeline.finished_at.map(|t| t.to_rfc3339()),
        }
    }
}

impl From<PipelineFailure> for ApiError {
    fn from(err: PipelineFailure) -> Self {
        match err {
            PipelineFailure::NotFound(id) => not_found(&id),
            PipelineFailure::Refused(refused) => Self::new(
                StatusCode::CONFLICT,
                "ILLEGAL_TRANSITION",
                refused.to_string(),
            ),
            PipelineFailure::Store(store) => store.into(),
        }
    }
}

pub(super) fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("pipeline {id} not found"),
    )
}

pub(super) fn parse_id(raw: &str) -> Result<PipelineId, ApiError> {
    PipelineId::parse(raw).map_err(|_| not_found(raw))
}

async fn view(state: &AppState, pipeline: Pipeline) -> Result<PipelineView, ApiError> {
    let live = state.pipelines.live_states(&pipeline).await?;
    Ok(PipelineView::of(pipeline, &live))
}

/// `POST /api/v1/pipelines`: 201 once the pipeline is durable and the
/// jobs of its first steps are created.
#[utoipa::path(
    post, path = "/api/v1/pipelines", tag = "pipelines", operation_id = "create",
    request_body = CreatePipeline,
    responses(
        (status = 201, description = "The pipeline, durable", body = PipelineView),
        (status = 400, description = "`VALIDATION_ERROR`: nothing was stored; each problem in `details` has its `field` and the `step` it is about (a cycle, an unknown or repeated need, a duplicate name, a bad job field); or `MALFORMED_JSON`", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreatePipeline>,
) -> Result<(StatusCode, Json<PipelineView>), ApiError> {
    if let Some(queue) = &body.queue {
        super::jobs::check_queue(&state, queue, "queue")?;
    }
    let pipeline = body.into_pipeline()?;
    let pipeline = state.pipelines.create(pipeline).await?;
    Ok((StatusCode::CREATED, Json(view(&state, pipeline).await?)))
}

/// The pipeline of a path.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PipelinePath {
    /// The pipeline's id (a UUID; anything else names none: 404).
    #[param(format = Uuid, example = "0193a5e2-7c4b-7d3e-9f21-4b8e2a1c6d0f")]
    #[allow(dead_code)]
    id: String,
}

/// `GET /api/v1/pipelines/{id}`.
#[utoipa::path(
    get, path = "/api/v1/pipelines/{id}", tag = "pipelines",
    params(PipelinePath),
    responses(
        (status = 200, description = "The pipeline with each step's state and job", body = PipelineView),
        (status = 404, description = "No such pipeline", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PipelineView>, ApiError> {
    let pipeline = state
        .pipelines
        .get(parse_id(&id)?)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(view(&state, pipeline).await?))
}

/// Query of `GET /api/v1/pipelines`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only pipelines in this state (case-insensitive).
    #[param(value_type = Option<PipelineState>)]
    state: Option<String>,
    /// At most this many (1 to 1000, default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Answer of `GET /api/v1/pipelines`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineList {
    pipelines: Vec<PipelineView>,
}

/// `GET /api/v1/pipelines?state=&limit=`, newest first.
#[utoipa::path(
    get, path = "/api/v1/pipelines", tag = "pipelines",
    params(ListParams),
    responses(
        (status = 200, description = "Pipelines, newest first", body = PipelineList),
        (status = 400, description = "`VALIDATION_ERROR` (unknown state, limit out of range) or `INVALID_QUERY`", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<PipelineList>, ApiError> {
    let mut problems = Vec::new();
    let wanted = super::state_filter(params.state.as_deref(), PipelineState::parse, &mut problems);
    let limit = super::page_limit(params.limit, &mut problems);
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let mut pipelines = Vec::new();
    for pipeline in state.pipelines.list(wanted, limit).await? {
        pipelines.push(view(&state, pipeline).await?);
    }
    Ok(Json(PipelineList { pipelines }))
}

/// `POST /api/v1/pipelines/{id}/cancel`.
#[utoipa::path(
    post, path = "/api/v1/pipelines/{id}/cancel", tag = "pipelines",
    params(PipelinePath),
    responses(
        (status = 200, description = "The pipeline: `cancel_requested`, waiting steps SKIPPED, its jobs being cancelled; CANCELLED once they have ended", body = PipelineView),
        (status = 404, description = "No such pipeline", body = ErrorBody),
        (status = 409, description = "`ILLEGAL_TRANSITION`: the pipeline already ended", body = ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PipelineView>, ApiError> {
    let pipeline = state.pipelines.cancel(parse_id(&id)?).await?;
    Ok(Json(view(&state, pipeline).await?))
}

/// `POST /api/v1/pipelines/{id}/retry`.
#[utoipa::path(
    post, path = "/api/v1/pipelines/{id}/retry", tag = "pipelines",
    params(PipelinePath),
    responses(
        (status = 200, description = "The pipeline, RUNNING again: its failed, cancelled and skipped steps rerun, succeeded ones are kept", body = PipelineView),
        (status = 404, description = "No such pipeline", body = ErrorBody),
        (status = 409, description = "`ILLEGAL_TRANSITION`: only a FAILED or CANCELLED pipeline can be retried", body = ErrorBody),
    )
)]
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PipelineView>, ApiError> {
    let pipeline = state.pipelines.retry(parse_id(&id)?).await?;
    Ok(Json(view(&state, pipeline).await?))
}
