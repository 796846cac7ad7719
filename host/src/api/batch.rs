//! `POST /api/v1/jobs/batch`: many jobs in one durable commit.
//!
//! All or nothing: every item is parsed and validated first, and one bad
//! item refuses the whole batch, with each problem naming its item's index
//! in `details`. Items are parsed one by one (not as one typed array) so
//! that a type error names its item too. The jobs are written in one store
//! transaction, so the 201 means every one of them is durable.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::jobs::{JobView, SubmitJob};
use super::{ApiJson, AppState};
use crate::api::error::{ApiError, ErrorBody};

/// The most jobs one batch may hold.
pub const MAX_BATCH: usize = 1000;

/// Body of `POST /api/v1/jobs/batch`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBatch {
    /// 1 to 1,000 jobs, each a body of `POST /api/v1/jobs`.
    #[schema(value_type = Vec<SubmitJob>, min_items = 1, max_items = 1000)]
    pub jobs: Vec<Value>,
}

/// Answer of `POST /api/v1/jobs/batch`: the jobs in the order given.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchCreated {
    jobs: Vec<JobView>,
}

/// One item's problems, each tagged with the item's index.
fn item_problems(index: usize, error: &ApiError) -> Vec<Value> {
    match &error.details {
        Value::Array(problems) if !problems.is_empty() => problems
            .iter()
            .map(|p| {
                let field = match p["field"].as_str().unwrap_or_default() {
                    "" => format!("jobs[{index}]"),
                    field => format!("jobs[{index}].{field}"),
                };
                json!({ "index": index, "field": field, "problem": p["problem"] })
            })
            .collect(),
        _ => vec![json!({
            "index": index,
            "field": format!("jobs[{index}]"),
            "problem": error.message,
        })],
    }
}

/// `POST /api/v1/jobs/batch`: 201 once every job is durable.
#[utoipa::path(
    post, path = "/api/v1/jobs/batch", tag = "jobs", operation_id = "submit_batch",
    request_body = SubmitBatch,
    responses(
        (status = 201, description = "Every job, durable, in the order given", body = BatchCreated),
        (status = 400, description = "`VALIDATION_ERROR`: nothing was submitted; each problem in `details` has the item's `index` and its `field` (`jobs[3].command`); or `MALFORMED_JSON`", body = ErrorBody),
    )
)]
pub async fn submit(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SubmitBatch>,
) -> Result<(StatusCode, Json<BatchCreated>), ApiError> {
    if body.jobs.is_empty() || body.jobs.len() > MAX_BATCH {
        return Err(ApiError::validation(vec![(
            "jobs".into(),
            format!(
                "holds {} jobs; a batch holds 1 to {MAX_BATCH}",
                body.jobs.len()
            ),
        )]));
    }
    let mut specs = Vec::with_capacity(body.jobs.len());
    let mut problems = Vec::new();
    for (index, item) in body.jobs.into_iter().enumerate() {
        let parsed = serde_json::from_value::<SubmitJob>(item)
            .map_err(|err| ApiError::validation(vec![(String::new(), err.to_string())]))
            .and_then(SubmitJob::into_spec)
            .and_then(|spec| {
                super::jobs::check_queue(&state, &spec.queue, "queue")?;
                Ok(spec)
            });
        match parsed {
            Ok(spec) => specs.push(spec),
            Err(error) => problems.extend(item_problems(index, &error)),
        }
    }
    if !problems.is_empty() {
        let count = problems.len();
        let mut error = ApiError::new(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            format!("{count} problem(s) in the batch; nothing was submitted"),
        );
        error.details = Value::Array(problems);
        return Err(error);
    }
    let jobs = state.jobs.submit_batch(specs).await?;
    let jobs = jobs.into_iter().map(|job| JobView::of(job, None)).collect();
    Ok((StatusCode::CREATED, Json(BatchCreated { jobs })))
}
