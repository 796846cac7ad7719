//! `/api/v1/pipelines/{id}/artifacts`: the outputs a pipeline's steps
//! stored, listed and downloaded.
//!
//! A step's artifacts are those of its job in the current run (a retried
//! step's earlier outputs are not listed). A download streams the blob
//! chunk by chunk (never whole in memory) with its size, and its SHA-256
//! in `ETag` and `Repr-Digest` (RFC 9530), so a client can check what it
//! received.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use crate::api::error::{ApiError, ErrorBody};
use crate::domain::{Pipeline, PipelineId};
use crate::store::StoreError;

/// One stored output.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArtifactView {
    /// The step that produced it.
    step: String,
    /// Its path in the step's directory.
    path: String,
    /// The step's job that sent it.
    #[schema(format = Uuid)]
    job_id: String,
    /// Size in bytes.
    size: u64,
    /// Hex SHA-256 of its bytes.
    sha256: String,
    /// Where to download it.
    url: String,
}

/// Answer of `GET /api/v1/pipelines/{id}/artifacts`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArtifactList {
    artifacts: Vec<ArtifactView>,
}

fn not_found(what: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", what)
}

async fn pipeline(state: &AppState, id: &str) -> Result<Pipeline, ApiError> {
    let parsed =
        PipelineId::parse(id).map_err(|_| not_found(format!("pipeline {id} not found")))?;
    state
        .pipelines
        .get(parsed)
        .await?
        .ok_or_else(|| not_found(format!("pipeline {id} not found")))
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

/// `GET /api/v1/pipelines/{id}/artifacts`.
#[utoipa::path(
    get, path = "/api/v1/pipelines/{id}/artifacts", tag = "pipelines",
    operation_id = "artifacts",
    params(PipelinePath),
    responses(
        (status = 200, description = "The outputs its steps stored, in step order", body = ArtifactList),
        (status = 404, description = "No such pipeline", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ArtifactList>, ApiError> {
    let pipeline = pipeline(&state, &id).await?;
    let mut artifacts = Vec::new();
    for step in &pipeline.steps {
        let Some(job) = step.job_id else { continue };
        for (path, meta) in state.pipelines.artifacts().of_job(job).await? {
            artifacts.push(ArtifactView {
                url: format!(
                    "/api/v1/pipelines/{}/artifacts/{}/{path}",
                    pipeline.id, step.name
                ),
                step: step.name.clone(),
                path,
                job_id: job.to_string(),
                size: meta.size,
                sha256: meta.sha256,
            });
        }
    }
    Ok(Json(ArtifactList { artifacts }))
}

/// An artifact's bytes, as the document shows them.
#[derive(Debug, ToSchema)]
#[schema(as = ArtifactBytes, value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct ArtifactBytes(Vec<u8>);

/// The artifact of a path.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ArtifactPath {
    /// The pipeline's id.
    #[param(format = Uuid, example = "0193a5e2-7c4b-7d3e-9f21-4b8e2a1c6d0f")]
    #[allow(dead_code)]
    id: String,
    /// The step that produced it.
    #[allow(dead_code)]
    step: String,
    /// The output's path in the step's directory (may contain `/`).
    #[allow(dead_code)]
    path: String,
}

/// `GET /api/v1/pipelines/{id}/artifacts/{step}/{path}`.
#[utoipa::path(
    get, path = "/api/v1/pipelines/{id}/artifacts/{step}/{path}", tag = "pipelines",
    operation_id = "artifact",
    params(ArtifactPath),
    responses(
        (status = 200, description = "The output's bytes; `ETag` is its hex SHA-256, `Repr-Digest` the same as base64", content_type = "application/octet-stream", body = ArtifactBytes),
        (status = 404, description = "No such pipeline, step, or stored output", body = ErrorBody),
    )
)]
pub async fn download(
    State(state): State<AppState>,
    Path((id, step, path)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let pipeline = pipeline(&state, &id).await?;
    let job = pipeline
        .steps
        .iter()
        .find(|s| s.name == step)
        .ok_or_else(|| not_found(format!("pipeline {id} has no step {step:?}")))?
        .job_id
        .ok_or_else(|| not_found(format!("step {step:?} has not run")))?;
    let artifacts = std::sync::Arc::clone(state.pipelines.artifacts());
    let meta = artifacts
        .get(job, &path)
        .await?
        .ok_or_else(|| not_found(format!("step {step:?} stored no output {path:?}")))?;
    let digest = hex_to_base64(&meta.sha256);
    let (size, etag) = (meta.size, format!("\"{}\"", meta.sha256));
    let body = Body::from_stream(Box::pin(async_stream::stream! {
        let mut index = 0;
        loop {
            match artifacts.chunk(&meta, index).await {
                Ok(Some(chunk)) => yield Ok::<_, StoreError>(chunk),
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(%err, "artifact download cut short");
                    yield Err(err);
                    break;
                }
            }
            index += 1;
        }
    }));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::ETAG, etag),
            (
                header::HeaderName::from_static("repr-digest"),
                format!("sha-256=:{digest}:"),
            ),
        ],
        body,
    )
        .into_response())
}

fn hex_to_base64(hex: &str) -> String {
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
