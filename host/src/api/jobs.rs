//! `/api/v1/jobs`: submit, list, get, cancel.
//!
//! Handlers are thin: parse, validate into a domain `JobSpec`, call the job
//! service, map to the view. Validation collects every problem in one answer
//! rather than stopping at the first.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiJson, ApiQuery, AppState};
use crate::api::error::{ApiError, ErrorBody};
use crate::domain::{Command, DEFAULT_QUEUE, Job, JobId, JobSpec, JobState, Resources, integral};
use crate::jobs::JobDetails;
use crate::store::ListQuery;
use crate::usage::JobUsage;

/// Secrets shorter than this are refused: masking them would blank out
/// ordinary text all over the log. One fact, owned by the masking crate
/// that agents and the host's fallback masker share.
pub use hodei_mask::MIN_SECRET_LEN;
const MAX_NAME_LEN: usize = 256;
/// The largest whole number every JSON client holds exactly (2^53 − 1):
/// the bound of a job's counts and durations.
pub const MAX_SAFE: u64 = (1 << 53) - 1;
const DEFAULT_MAX_ATTEMPTS: u32 = 3;
const MAX_ATTEMPTS_LIMIT: u32 = 100;

/// Body of `POST /api/v1/jobs`: exactly one of `command` and `args`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "build",
    "command": "make -j4 && make test",
    "env": {"RUST_LOG": "info"},
    "secrets": {"DEPLOY_TOKEN": "s3cr3t-value-1234"},
    "labels": {"os": "linux"},
    "resources": {"cpu_millis": 2000, "memory_mb": 1024},
    "priority": 10,
    "queue": "nightly",
    "timeout_secs": 3600,
    "max_attempts": 3
}))]
pub struct SubmitJob {
    /// Display name (at most 256 characters); defaults to the command's
    /// first line.
    #[schema(max_length = 256)]
    pub name: Option<String>,
    /// A bash script (exclusive with `args`): not blank, no NUL byte.
    #[schema(pattern = r"^[^\x00]*\S[^\x00]*$")]
    pub command: Option<String>,
    /// An argv vector (exclusive with `command`): the program first (not
    /// empty), no NUL byte.
    #[schema(schema_with = args_schema)]
    pub args: Option<Vec<String>>,
    /// Environment variables, by valid name (`[A-Za-z_][A-Za-z0-9_]*`).
    #[serde(default)]
    #[schema(schema_with = env_schema)]
    pub env: BTreeMap<String, String>,
    /// Secret environment variables: write-only (the job shows their
    /// names), masked in the log, each at least `MIN_SECRET_LEN` bytes,
    /// none also in `env`.
    #[serde(default)]
    #[schema(schema_with = secrets_schema)]
    pub secrets: BTreeMap<String, String>,
    /// Required worker labels (names not empty).
    #[serde(default)]
    #[schema(schema_with = labels_schema)]
    pub labels: BTreeMap<String, String>,
    /// Capacity to reserve.
    #[serde(default)]
    pub resources: Resources,
    /// Higher first.
    #[serde(default, deserialize_with = "integral::deserialize")]
    pub priority: i32,
    /// The fair-share queue (1 to 64 of `a-z 0-9 _ . -`, default
    /// `default`): queues share contended capacity by their weights.
    #[schema(pattern = r"^[a-z0-9_.\-]{1,64}$")]
    pub queue: Option<String>,
    /// Wall-clock limit in seconds (at least 1; absent: none).
    #[serde(default, deserialize_with = "integral::option")]
    #[schema(minimum = 1, maximum = 9007199254740991_u64)] // MAX_SAFE, checked by a test
    pub timeout_secs: Option<u64>,
    /// Attempts allowed for infrastructure failures (1 to 100, default 3).
    #[serde(default, deserialize_with = "integral::option")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
}

/// What [`is_env_name`] accepts, for the document.
const ENV_NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]*$";
/// No NUL byte, for the document.
const NO_NUL_PATTERN: &str = "^[^\\x00]*$";

fn string_map(
    names: utoipa::openapi::Object,
    values: utoipa::openapi::Object,
    description: &str,
) -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .property_names(Some(names))
        .additional_properties(Some(AdditionalProperties::RefOr(values.into())))
        .build()
}

fn string(pattern: Option<&str>, min_length: Option<usize>) -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(pattern)
        .min_length(min_length)
        .build()
}

pub(super) fn env_schema() -> utoipa::openapi::Object {
    string_map(
        string(Some(ENV_NAME_PATTERN), None),
        string(None, None),
        "Environment variables, by valid name",
    )
}

pub(super) fn secrets_schema() -> utoipa::openapi::Object {
    string_map(
        string(Some(ENV_NAME_PATTERN), None),
        string(None, Some(MIN_SECRET_LEN)),
        "Secret environment variables (values of at least MIN_SECRET_LEN bytes; none also in `env`)",
    )
}

pub(super) fn labels_schema() -> utoipa::openapi::Object {
    string_map(
        string(None, Some(1)),
        string(None, None),
        "Required worker labels",
    )
}

pub(super) fn args_schema() -> utoipa::openapi::Array {
    use utoipa::openapi::schema::ArrayBuilder;
    // Every item without NUL; the first (the program) not empty.
    let mut array = ArrayBuilder::new()
        .items(string(Some(NO_NUL_PATTERN), None))
        .min_items(Some(1))
        .build();
    array.prefix_items = vec![string(Some(NO_NUL_PATTERN), Some(1)).into()];
    array
}

/// `command` and `args`: exactly one, as [`SubmitJob::into_spec`] checks;
/// added to the `SubmitJob` schema by `super::openapi`.
pub(super) fn command_or_args() -> utoipa::openapi::schema::OneOf {
    use utoipa::openapi::Type;
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder};
    // The one given is present and not null; the other absent or null.
    let one = |given: &str, kind: Type, other: &str| {
        ObjectBuilder::new()
            .required(given)
            .property(given, ObjectBuilder::new().schema_type(kind))
            .property(other, ObjectBuilder::new().schema_type(Type::Null))
    };
    OneOfBuilder::new()
        .item(one("command", Type::String, "args"))
        .item(one("args", Type::Array, "command"))
        .build()
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl SubmitJob {
    /// Checks everything and builds the spec, or lists every problem.
    pub fn into_spec(self) -> Result<JobSpec, ApiError> {
        let mut problems: Vec<(String, String)> = Vec::new();
        let mut problem = |field: &str, what: &str| problems.push((field.into(), what.into()));
        let command = match (self.command, self.args) {
            (Some(_), Some(_)) => {
                problem("command", "give either `command` or `args`, not both");
                None
            }
            (None, None) => {
                problem(
                    "command",
                    "required: a script in `command` or an argv in `args`",
                );
                None
            }
            (Some(script), None) if script.trim().is_empty() => {
                problem("command", "must not be empty");
                None
            }
            (Some(script), None) if script.contains('\0') => {
                problem("command", "must not contain NUL bytes");
                None
            }
            (Some(script), None) => Some(Command::Script(script)),
            (None, Some(args)) if args.first().is_none_or(|a| a.is_empty()) => {
                problem("args", "must start with a non-empty program name");
                None
            }
            (None, Some(args)) if args.iter().any(|a| a.contains('\0')) => {
                problem("args", "must not contain NUL bytes");
                None
            }
            (None, Some(args)) => Some(Command::Args(args)),
        };
        for name in self.env.keys() {
            if !is_env_name(name) {
                problem(
                    &format!("env.{name}"),
                    "not a valid environment variable name",
                );
            }
        }
        for (name, value) in &self.secrets {
            if !is_env_name(name) {
                problem(
                    &format!("secrets.{name}"),
                    "not a valid environment variable name",
                );
            } else if self.env.contains_key(name) {
                problem(&format!("secrets.{name}"), "also given in `env`");
            } else if value.len() < MIN_SECRET_LEN {
                problem(
                    &format!("secrets.{name}"),
                    &format!(
                        "shorter than {MIN_SECRET_LEN} bytes; masking it would garble the log"
                    ),
                );
            }
        }
        if self.labels.keys().any(|k| k.is_empty()) {
            problem("labels", "label names must not be empty");
        }
        if self
            .name
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_NAME_LEN)
        {
            problem("name", &format!("longer than {MAX_NAME_LEN} characters"));
        }
        if let Some(queue) = &self.queue
            && !crate::scheduler::fairness::is_queue_name(queue)
        {
            problem("queue", "1 to 64 of a-z 0-9 _ . -");
        }
        if self.timeout_secs == Some(0) {
            problem(
                "timeout_secs",
                "must be at least 1 (omit it for no timeout)",
            );
        }
        // Past 2^53 − 1 a JSON number is no longer exact in most clients;
        // the document states the same bound.
        for (field, value) in [
            ("timeout_secs", self.timeout_secs.unwrap_or(0)),
            ("resources.cpu_millis", self.resources.cpu_millis),
            ("resources.memory_mb", self.resources.memory_mb),
        ] {
            if value > MAX_SAFE {
                problem(field, &format!("at most {MAX_SAFE}"));
            }
        }
        let max_attempts = self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts) {
            problem(
                "max_attempts",
                &format!("must be between 1 and {MAX_ATTEMPTS_LIMIT}"),
            );
        }
        match command {
            Some(command) if problems.is_empty() => Ok(JobSpec {
                name: self.name.unwrap_or_else(|| default_name(&command)),
                command,
                env: self.env,
                secrets: self.secrets,
                labels: self.labels,
                resources: self.resources,
                priority: self.priority,
                queue: self.queue.unwrap_or_else(|| DEFAULT_QUEUE.to_owned()),
                timeout_secs: self.timeout_secs,
                max_attempts,
                artifacts: Default::default(),
            }),
            _ => Err(ApiError::validation(problems)),
        }
    }
}

fn default_name(command: &Command) -> String {
    let text = match command {
        Command::Script(script) => script.lines().next().unwrap_or_default().to_owned(),
        Command::Args(args) => args.join(" "),
    };
    text.chars().take(64).collect()
}

/// A job as the API shows it. Secret values never appear; their names do.
/// Ids are UUID strings, times RFC 3339 (UTC, microseconds).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Job)]
pub struct JobView {
    #[schema(format = Uuid, example = "0193a5e2-7c4b-7d3e-9f21-4b8e2a1c6d0f")]
    id: String,
    name: String,
    /// Where the job is in its life; the list filter and the log's `done`
    /// event use the same name and values.
    state: JobState,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<Vec<String>>,
    env: BTreeMap<String, String>,
    secret_names: Vec<String>,
    labels: BTreeMap<String, String>,
    resources: Resources,
    priority: i32,
    /// The fair-share queue it is charged to.
    queue: String,
    /// Its priority as the queue orders it now: `priority` plus what it
    /// gained by waiting (aging); equal to `priority` unless PENDING.
    effective_priority: i32,
    timeout_secs: Option<u64>,
    max_attempts: u32,
    attempt: u32,
    worker_id: Option<String>,
    cancel_requested: bool,
    exit_code: Option<i32>,
    reason: Option<String>,
    pending_reason: Option<String>,
    /// CPU and memory of the running attempt's process tree, from the
    /// agent's latest heartbeat; absent unless RUNNING.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<JobUsage>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    scheduled_at: Option<String>,
    #[schema(format = DateTime)]
    started_at: Option<String>,
    #[schema(format = DateTime)]
    finished_at: Option<String>,
}

impl JobView {
    /// The view of a job; `pending_reason` from the scheduler.
    pub fn of(job: Job, pending_reason: Option<String>) -> Self {
        let (command, args) = match job.spec.command {
            Command::Script(script) => (Some(script), None),
            Command::Args(args) => (None, Some(args)),
        };
        Self {
            id: job.id.to_string(),
            name: job.spec.name,
            state: job.state,
            command,
            args,
            env: job.spec.env,
            secret_names: job.spec.secrets.into_keys().collect(),
            labels: job.spec.labels,
            resources: job.spec.resources,
            priority: job.spec.priority,
            effective_priority: job.spec.priority,
            queue: job.spec.queue,
            timeout_secs: job.spec.timeout_secs,
            max_attempts: job.spec.max_attempts,
            attempt: job.attempt,
            worker_id: job.worker_id.map(|w| w.0),
            cancel_requested: job.cancel_requested,
            exit_code: job.exit_code,
            reason: job.reason,
            pending_reason,
            usage: None,
            created_at: job.created_at.to_rfc3339(),
            scheduled_at: job.scheduled_at.map(|t| t.to_rfc3339()),
            started_at: job.started_at.map(|t| t.to_rfc3339()),
            finished_at: job.finished_at.map(|t| t.to_rfc3339()),
        }
    }
}

impl From<JobDetails> for JobView {
    fn from(details: JobDetails) -> Self {
        let mut view = Self::of(details.job, details.pending_reason);
        view.effective_priority = details.effective_priority;
        view
    }
}

/// Refuses a queue this host is not configured with, naming the ones it
/// is (`field` is where the body gave it).
pub(super) fn check_queue(state: &AppState, queue: &str, field: &str) -> Result<(), ApiError> {
    let fairness = state.jobs.scheduler().fairness();
    if fairness.id(queue).is_some() {
        return Ok(());
    }
    let known: Vec<&str> = fairness.queues().map(|(_, name, _)| &**name).collect();
    Err(ApiError::validation(vec![(
        field.to_owned(),
        format!("unknown queue {queue:?}; configured: {}", known.join(", ")),
    )]))
}

/// Parses a path id; a malformed id names no job, so it is a 404 too.
pub fn parse_id(raw: &str) -> Result<JobId, ApiError> {
    JobId::parse(raw).map_err(|_| ApiError::job_not_found(raw))
}

/// `POST /api/v1/jobs`: 201 once the job is durable.
#[utoipa::path(
    post, path = "/api/v1/jobs", tag = "jobs",
    request_body = SubmitJob,
    responses(
        (status = 201, description = "The job, durable", body = JobView),
        (status = 400, description = "`VALIDATION_ERROR` (every problem, in `details`) or `MALFORMED_JSON`", body = ErrorBody),
    )
)]
pub async fn submit(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SubmitJob>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let spec = body.into_spec()?;
    check_queue(&state, &spec.queue, "queue")?;
    let job = state.jobs.submit(spec).await?;
    Ok((StatusCode::CREATED, Json(JobView::of(job, None))))
}

/// `GET /api/v1/jobs/{id}`.
#[utoipa::path(
    get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(JobPath),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 404, description = "No such job", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job_id = parse_id(&id)?;
    let details = state
        .jobs
        .get(job_id)
        .await?
        .ok_or_else(|| ApiError::job_not_found(&id))?;
    let running = (details.job.state == JobState::Running).then_some(details.job.attempt);
    let mut view = JobView::from(details);
    view.usage = running.and_then(|attempt| state.usage.of_job(job_id, attempt));
    Ok(Json(view))
}

/// The job of a path (`/api/v1/jobs/{id}/…`).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct JobPath {
    /// The job's id (a UUID; anything else names no job: 404).
    #[param(format = Uuid, example = "0193a5e2-7c4b-7d3e-9f21-4b8e2a1c6d0f")]
    #[allow(dead_code)]
    id: String,
}

/// Query of `GET /api/v1/jobs`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only jobs in this state (case-insensitive).
    #[param(value_type = Option<JobState>)]
    state: Option<String>,
    /// Page size (1 to 1000, default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(format = Uuid)]
    cursor: Option<String>,
}

/// A page of jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobPage {
    jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[schema(format = Uuid)]
    next_cursor: Option<String>,
}

/// `GET /api/v1/jobs?state=&limit=&cursor=`, newest first.
#[utoipa::path(
    get, path = "/api/v1/jobs", tag = "jobs",
    params(ListParams),
    responses(
        (status = 200, description = "A page of jobs, newest first", body = JobPage),
        (status = 400, description = "`VALIDATION_ERROR` (unknown state, limit out of range, bad cursor) or `INVALID_QUERY`", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<JobPage>, ApiError> {
    let mut problems = Vec::new();
    let state_filter = super::state_filter(params.state.as_deref(), JobState::parse, &mut problems);
    let limit = super::page_limit(params.limit, &mut problems);
    let before = params.cursor.as_deref().and_then(|c| {
        let parsed = JobId::parse(c).ok();
        if parsed.is_none() {
            problems.push((
                "cursor".to_owned(),
                "not a cursor from a previous page".to_owned(),
            ));
        }
        parsed
    });
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let query = ListQuery {
        state: state_filter,
        before,
        limit: limit + 1,
    };
    let mut jobs = state.jobs.list(query).await?;
    let next_cursor = if jobs.len() > limit {
        jobs.truncate(limit);
        jobs.last().map(|d| d.job.id.to_string())
    } else {
        None
    };
    Ok(Json(JobPage {
        jobs: jobs.into_iter().map(JobView::from).collect(),
        next_cursor,
    }))
}

/// `POST /api/v1/jobs/{id}/cancel`: 200 with the job; CANCELLED at once when
/// pending, otherwise `cancel_requested` until the agent confirms.
#[utoipa::path(
    post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs",
    params(JobPath),
    responses(
        (status = 200, description = "The job: CANCELLED when it was pending, else `cancel_requested`", body = JobView),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "`ILLEGAL_TRANSITION`: the job already ended", body = ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job_id = parse_id(&id)?;
    let job = state.jobs.cancel(job_id).await?;
    Ok(Json(JobView::of(job, None)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> SubmitJob {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let err = body(serde_json::json!({
            "env": {"1BAD": "x"},
            "secrets": {"TOKEN": "abc"},
            "timeout_secs": 0,
            "max_attempts": 0
        }))
        .into_spec()
        .unwrap_err();
        let fields: Vec<&str> = err
            .details
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["field"].as_str().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "command",
                "env.1BAD",
                "secrets.TOKEN",
                "timeout_secs",
                "max_attempts"
            ]
        );
    }

    #[test]
    fn a_valid_body_becomes_a_spec_with_defaults() {
        let spec = body(serde_json::json!({"args": ["echo", "hi"]}))
            .into_spec()
            .unwrap();
        assert_eq!(spec.name, "echo hi");
        assert_eq!(spec.max_attempts, 3);
        assert_eq!(
            spec.command,
            Command::Args(vec!["echo".into(), "hi".into()])
        );
    }
}
