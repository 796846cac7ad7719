//! `/api/v1/pools`: the worker pools, their workers by state, last error,
//! backoff and create latency; posting a pool adds or replaces it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{ApiJson, AppState};
use crate::api::error::ApiError;
use crate::providers::{PoolError, PoolSpec};

impl From<PoolError> for ApiError {
    fn from(err: PoolError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_POOL", err.to_string())
    }
}

/// `GET /api/v1/pools`.
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "pools": state.jobs.pool_board().views() }))
}

/// `GET /api/v1/pools/{name}`.
pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .jobs
        .pool_board()
        .view(&name)
        .map(|view| Json(json!(view)))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("pool {name:?} not found"),
            )
        })
}

/// `POST /api/v1/pools`: adds (or replaces) a pool once it is checked
/// whole, and keeps it across restarts; 201 with its view, 400 with what
/// is wrong.
pub async fn add(
    State(state): State<AppState>,
    ApiJson(spec): ApiJson<PoolSpec>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (name, provider) = (spec.name.clone(), spec.provider.clone());
    let view = state.provisioner.add_durably(spec).await?;
    tracing::info!(target: "hodei::audit", event = "pool_set", pool = %name, %provider, "pool added or replaced");
    Ok((StatusCode::CREATED, Json(json!(view))))
}
