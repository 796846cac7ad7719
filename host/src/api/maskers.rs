//! `/api/v1/maskers`: list, upload and remove secret maskers and set the
//! active chain while the host runs. Uploads pass the same checks as
//! policies (size, component, world, a default configuration that starts).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::policies::{UploadParams, component_body, plugin_error};
use super::{ApiJson, ApiQuery, AppState};
use crate::api::error::ApiError;
use crate::masking::ChainEntry;
use crate::plugins::CatalogError;

fn error(err: CatalogError) -> ApiError {
    match err {
        CatalogError::Store(store) => store.into(),
        CatalogError::Plugin(plugin) => plugin_error(&plugin, "MASKER_IN_CHAIN"),
    }
}

fn listing(state: &AppState) -> Value {
    json!({
        "chain": state.maskers.registry().chain().entries(),
        "maskers": state.maskers.registry().views(),
        "masking": state.masking.stats(),
    })
}

/// `GET /api/v1/maskers`: the active chain; every masker with its calls,
/// errors, last error and latency; the choke point's counters (batches,
/// lines, fallbacks to the native masker, lines withheld).
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    Json(listing(&state))
}

/// `POST /api/v1/maskers?name=N` with the component as the body: 201 once
/// it is compiled, validated and stored.
pub async fn upload(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<UploadParams>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = component_body(body, "masker")?;
    let Some(name) = params.name else {
        return Err(ApiError::validation(vec![(
            "name".into(),
            "required: POST /api/v1/maskers?name=NAME".into(),
        )]));
    };
    state
        .maskers
        .upload(&name, body.to_vec())
        .await
        .map_err(error)?;
    Ok((StatusCode::CREATED, Json(listing(&state))))
}

/// Body of `PUT /api/v1/maskers/chain`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetChain {
    maskers: Vec<ChainEntry>,
}

/// `PUT /api/v1/maskers/chain`: the next batch is masked by this chain, in
/// this order. Every masker must accept its configuration, or nothing
/// changes; an empty chain is refused.
pub async fn set_chain(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SetChain>,
) -> Result<Json<Value>, ApiError> {
    state.maskers.activate(body.maskers).await.map_err(error)?;
    Ok(Json(listing(&state)))
}

/// `DELETE /api/v1/maskers/{name}`: 204; 409 for a masker in the chain or
/// one shipped with hodei.
pub async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.maskers.remove(&name).await.map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}
