//! `/api/v1/policies`: list, upload, activate and remove scheduling
//! policies while the host runs.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{ApiJson, ApiQuery, AppState};
use crate::api::error::{ApiError, ErrorBody};
use crate::plugins::{ActiveChoice, CatalogError, PluginError};

impl From<CatalogError> for ApiError {
    fn from(err: CatalogError) -> Self {
        match err {
            CatalogError::Store(store) => store.into(),
            CatalogError::Plugin(plugin) => plugin_error(&plugin, "POLICY_ACTIVE"),
        }
    }
}

/// The API's answer to a plugin refusal; `active_code` names the conflict
/// of removing a plugin in use (the active policy, a masker in the chain).
pub(super) fn plugin_error(plugin: &PluginError, active_code: &'static str) -> ApiError {
    if let PluginError::WorldVersion { found, supported } = plugin {
        let mut error = ApiError::new(
            StatusCode::BAD_REQUEST,
            "UNSUPPORTED_WORLD_VERSION",
            plugin.to_string(),
        );
        error.details = json!({ "found": found, "supported": supported });
        return error;
    }
    let (status, code) = match plugin {
        PluginError::Invalid(_) | PluginError::WorldVersion { .. } => {
            (StatusCode::BAD_REQUEST, "INVALID_PLUGIN")
        }
        PluginError::Refused(_) => (StatusCode::BAD_REQUEST, "PLUGIN_REFUSED"),
        PluginError::BadName(_) => (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
        PluginError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        PluginError::Reserved(_) => (StatusCode::CONFLICT, "RESERVED"),
        PluginError::Active(_) => (StatusCode::CONFLICT, active_code),
        PluginError::Engine(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
    };
    ApiError::new(status, code, plugin.to_string())
}

/// The component of an upload, or the error for a body too large or
/// unreadable.
pub(super) fn component_body(
    body: Result<Bytes, BytesRejection>,
    max_bytes: usize,
) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            component_too_large(max_bytes)
        } else {
            ApiError::new(status, "BAD_REQUEST", rejection.body_text())
        }
    })
}

/// The answer to an upload over `max_bytes`, whether its Content-Length
/// said so or its stream grew past it.
pub(super) fn component_too_large(max_bytes: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        format!(
            "a plugin component may be at most {max_bytes} bytes on this host \
             (--max-plugin-bytes)"
        ),
    )
}

/// Gives a 413 that names no limit (the body limit layer's, from the
/// Content-Length) the message of [`component_too_large`].
pub(super) async fn name_the_limit<B>(
    State(max_bytes): State<usize>,
    response: axum::http::Response<B>,
) -> axum::response::Response
where
    B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE
        && response.extensions().get::<ApiError>().is_none()
    {
        return axum::response::IntoResponse::into_response(component_too_large(max_bytes));
    }
    response.map(axum::body::Body::new)
}

fn listing(state: &AppState) -> Value {
    let registry = state.policies.registry();
    let (name, config) = registry.active();
    json!({
        "active": { "name": name, "config": config },
        "policies": registry.views(),
    })
}

/// The answer of the policy routes: which policy is active, and every
/// policy (`name`, `source`, `active`, `size_bytes`, `sha256` and its
/// calls, errors, last error and latency).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PolicyListing)]
#[allow(dead_code)]
pub struct Listing {
    active: Activate,
    #[schema(value_type = Vec<Object>)]
    policies: Vec<Value>,
}

/// A component upload: the `.wasm` bytes (any content type is taken; the
/// CLI sends `application/wasm`).
#[derive(Debug, ToSchema)]
#[schema(as = Component, value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct ComponentDoc(Vec<u8>);

/// A plugin of a path.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PluginPath {
    /// The plugin's name (`[a-z0-9_-]{1,64}`).
    #[allow(dead_code)]
    name: String,
}

/// `GET /api/v1/policies`: every policy with its calls, errors, last error
/// and latency; which one is active.
#[utoipa::path(
    get, path = "/api/v1/policies", tag = "policies",
    responses((status = 200, description = "The active policy and every policy", body = Listing))
)]
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    Json(listing(&state))
}

/// Query of an upload.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// The name to load it under (`[a-z0-9_-]{1,64}`).
    #[param(required = true, pattern = "^[a-z0-9_-]{1,64}$")]
    pub(super) name: Option<String>,
}

/// `POST /api/v1/policies?name=N` with the component as the body: 201 once
/// it is compiled, validated and stored.
#[utoipa::path(
    post, path = "/api/v1/policies", tag = "policies",
    params(UploadParams),
    request_body(content = ComponentDoc, content_type = "application/octet-stream",
        description = "A WebAssembly component of the `policy` world (at most `--max-plugin-bytes`, 32 MiB by default)"),
    responses(
        (status = 201, description = "Compiled, validated and stored", body = Listing),
        (status = 400, description = "`INVALID_PLUGIN` (not a component of the world), `UNSUPPORTED_WORLD_VERSION` (built against another version of wit/scheduler.wit: rebuild it), `PLUGIN_REFUSED`, `VALIDATION_ERROR`", body = ErrorBody),
        (status = 409, description = "`RESERVED`: the name of a policy shipped with hodei", body = ErrorBody),
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
            "required: POST /api/v1/policies?name=NAME".into(),
        )]));
    };
    state.policies.upload(&name, body.to_vec()).await?;
    Ok((StatusCode::CREATED, Json(listing(&state))))
}

/// Body of `PUT /api/v1/policies/active`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ActivePolicy, example = json!({"name": "binpack", "config": ""}))]
pub struct Activate {
    /// A loaded policy's name.
    name: String,
    /// Its configuration (its own syntax; "" for defaults).
    #[serde(default)]
    config: String,
}

/// `PUT /api/v1/policies/active`: the next decision uses it.
#[utoipa::path(
    put, path = "/api/v1/policies/active", tag = "policies",
    request_body = Activate,
    responses(
        (status = 200, description = "Active from the next decision", body = Listing),
        (status = 400, description = "`PLUGIN_REFUSED` (its configuration), `VALIDATION_ERROR`, `MALFORMED_JSON`", body = ErrorBody),
        (status = 404, description = "No such policy", body = ErrorBody),
    )
)]
pub async fn activate(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Activate>,
) -> Result<Json<Value>, ApiError> {
    state
        .policies
        .activate(ActiveChoice {
            name: body.name,
            config: body.config,
        })
        .await?;
    Ok(Json(listing(&state)))
}

/// `DELETE /api/v1/policies/{name}`: 204; 409 for the active or a shipped
/// policy.
#[utoipa::path(
    delete, path = "/api/v1/policies/{name}", tag = "policies",
    params(PluginPath),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "`VALIDATION_ERROR`: not a plugin name", body = ErrorBody),
        (status = 404, description = "No such policy", body = ErrorBody),
        (status = 409, description = "`POLICY_ACTIVE` or `RESERVED` (shipped with hodei)", body = ErrorBody),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.policies.remove(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
