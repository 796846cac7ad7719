//! `/api/v1/pools`: the worker pools, their workers by state, last error,
//! backoff and create latency; posting a pool adds or replaces it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{ApiJson, AppState};
use crate::api::error::{ApiError, ErrorBody};
use crate::providers::{PoolError, PoolSpec};

/// A pool's view: its spec (`name`, `provider`, sizes, labels, …),
/// `offer`, `state` (`starting`, `running`, `backoff`, `stopped`,
/// `standby`), `counts` of workers by phase, `workers`, `demand`,
/// `last_error`, `last_create_error`, `consecutive_failures`, `retry_at`
/// (RFC 3339), `create_latency` and `activity`.
#[derive(Debug, ToSchema)]
#[schema(as = Pool, value_type = Object)]
#[allow(dead_code)]
pub struct PoolDoc(Value);

/// The answer of `GET /api/v1/pools`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PoolList {
    #[schema(value_type = Vec<PoolDoc>)]
    pools: Vec<Value>,
}

/// A pool of a path.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PoolPath {
    /// The pool's name.
    #[allow(dead_code)]
    name: String,
}

impl From<PoolError> for ApiError {
    fn from(err: PoolError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_POOL", err.to_string())
    }
}

/// `GET /api/v1/pools`.
#[utoipa::path(
    get, path = "/api/v1/pools", tag = "pools",
    responses((status = 200, description = "Every pool", body = PoolList))
)]
pub async fn list(State(state): State<AppState>) -> Json<PoolList> {
    let pools = state.jobs.pool_board().views();
    Json(PoolList {
        pools: pools.iter().map(|p| json!(p)).collect(),
    })
}

/// `GET /api/v1/pools/{name}`.
#[utoipa::path(
    get, path = "/api/v1/pools/{name}", tag = "pools",
    params(PoolPath),
    responses(
        (status = 200, description = "The pool", body = PoolDoc),
        (status = 404, description = "No such pool", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    post, path = "/api/v1/pools", tag = "pools",
    request_body = PoolSpec,
    responses(
        (status = 201, description = "The pool's view", body = PoolDoc),
        (status = 400, description = "`INVALID_POOL`, `VALIDATION_ERROR` or `MALFORMED_JSON`", body = ErrorBody),
    )
)]
pub async fn add(
    State(state): State<AppState>,
    ApiJson(spec): ApiJson<PoolSpec>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (name, provider) = (spec.name.clone(), spec.provider.clone());
    let view = state.provisioner.add_durably(spec).await?;
    tracing::info!(target: "hodei::audit", event = "pool_set", pool = %name, %provider, "pool added or replaced");
    Ok((StatusCode::CREATED, Json(json!(view))))
}
