//! `/api/v1/maskers`: list, upload and remove secret maskers and set the
//! active chain while the host runs. Uploads pass the same checks as
//! policies (size, component, world, a default configuration that starts).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::policies::{ComponentDoc, PluginPath, UploadParams, component_body, plugin_error};
use super::{ApiJson, ApiQuery, AppState};
use crate::api::error::{ApiError, ErrorBody};
use crate::masking::{ChainEntry, MaskingStats};
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

/// The answer of the masker routes: the active chain, every masker
/// (`name`, `source`, `position` in the chain, `info`, `size_bytes`,
/// `sha256`, calls, errors, last error, latency) and the choke point's
/// counters.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = MaskerListing)]
#[allow(dead_code)]
pub struct Listing {
    chain: Vec<ChainEntry>,
    #[schema(value_type = Vec<Object>)]
    maskers: Vec<Value>,
    masking: MaskingStats,
}

/// `GET /api/v1/maskers`: the active chain; every masker with its calls,
/// errors, last error and latency; the choke point's counters (batches,
/// lines, fallbacks to the native masker, lines withheld).
#[utoipa::path(
    get, path = "/api/v1/maskers", tag = "maskers",
    responses((status = 200, description = "The chain, every masker, the counters", body = Listing))
)]
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    Json(listing(&state))
}

/// `POST /api/v1/maskers?name=N` with the component as the body: 201 once
/// it is compiled, validated and stored.
#[utoipa::path(
    post, path = "/api/v1/maskers", tag = "maskers",
    params(UploadParams),
    request_body(content = ComponentDoc, content_type = "application/octet-stream",
        description = "A WebAssembly component of the `masker` world (at most `--max-plugin-bytes`, 32 MiB by default)"),
    responses(
        (status = 201, description = "Compiled, validated and stored", body = Listing),
        (status = 400, description = "`INVALID_PLUGIN` (not a component of the world), `PLUGIN_REFUSED`, `VALIDATION_ERROR`", body = ErrorBody),
        (status = 409, description = "`RESERVED`: the name of a masker shipped with hodei", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`: over `--max-plugin-bytes`", body = ErrorBody),
    )
)]
pub async fn upload(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<UploadParams>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = component_body(body, state.max_plugin_bytes)?;
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
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = MaskerChain, example = json!({"maskers": [{"name": "literal", "config": ""}]}))]
pub struct SetChain {
    /// The maskers, in order (not empty).
    #[schema(min_items = 1)]
    maskers: Vec<ChainEntry>,
}

/// `PUT /api/v1/maskers/chain`: the next batch is masked by this chain, in
/// this order. Every masker must accept its configuration, or nothing
/// changes; an empty chain is refused.
#[utoipa::path(
    put, path = "/api/v1/maskers/chain", tag = "maskers",
    request_body = SetChain,
    responses(
        (status = 200, description = "The chain masks the next batch", body = Listing),
        (status = 400, description = "`PLUGIN_REFUSED` (a configuration), `VALIDATION_ERROR`, `MALFORMED_JSON`", body = ErrorBody),
        (status = 404, description = "No such masker", body = ErrorBody),
    )
)]
pub async fn set_chain(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SetChain>,
) -> Result<Json<Value>, ApiError> {
    state.maskers.activate(body.maskers).await.map_err(error)?;
    Ok(Json(listing(&state)))
}

/// `DELETE /api/v1/maskers/{name}`: 204; 409 for a masker in the chain or
/// one shipped with hodei.
#[utoipa::path(
    delete, path = "/api/v1/maskers/{name}", tag = "maskers",
    params(PluginPath),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "`VALIDATION_ERROR`: not a plugin name", body = ErrorBody),
        (status = 404, description = "No such masker", body = ErrorBody),
        (status = 409, description = "`MASKER_IN_CHAIN` or `RESERVED` (shipped with hodei)", body = ErrorBody),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.maskers.remove(&name).await.map_err(error)?;
    Ok(StatusCode::NO_CONTENT)
}
