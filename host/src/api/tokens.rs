//! `/api/v1/tokens`: create (the token is shown once), list and revoke API
//! tokens.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiJson, AppState};
use crate::api::error::{ApiError, ErrorBody};
use crate::auth::tokens::{ApiToken, CreateError};
use crate::auth::{Authorized, Scope};

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateApiToken, example = json!({"name": "ci", "scopes": ["jobs:submit", "logs:read"], "ttl_secs": 86400}))]
pub struct Create {
    /// 1 to 128 characters.
    #[schema(min_length = 1, max_length = 128)]
    name: String,
    /// What it allows (at least one); only scopes the caller holds.
    #[schema(value_type = Vec<Scope>, min_items = 1)]
    scopes: BTreeSet<Scope>,
    /// Lifetime in seconds (at most 100 years); none: until revoked.
    #[serde(default, deserialize_with = "crate::domain::integral::option")]
    #[schema(minimum = 1, maximum = 3153600000_u64)]
    ttl_secs: Option<u64>,
}

/// A token as the API shows it (never the token itself, but once).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ApiToken)]
pub struct TokenView {
    /// `tok_` and 12 hex digits (from the token's hash).
    #[schema(example = "tok_5e0c1a2b3c4d")]
    id: String,
    name: String,
    #[schema(value_type = Vec<Scope>)]
    scopes: BTreeSet<Scope>,
    #[schema(format = DateTime)]
    created_at: String,
    /// The id of the token that created it (none: the host's own).
    created_by: Option<String>,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    #[schema(format = DateTime)]
    last_used_at: Option<String>,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
}

/// The answer of `POST /api/v1/tokens`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CreatedApiToken)]
pub struct Created {
    /// The token: shown this once, stored only hashed.
    #[schema(example = "hodei_0123456789abcdefghijklmnopqrst_abc123")]
    token: String,
    record: TokenView,
}

/// The answer of `GET /api/v1/tokens`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ApiTokenList)]
pub struct TokenList {
    tokens: Vec<TokenView>,
}

/// A token of a path.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TokenPath {
    /// The token's id (`tok_…`).
    #[allow(dead_code)]
    id: String,
}

impl From<ApiToken> for TokenView {
    fn from(t: ApiToken) -> Self {
        Self {
            id: t.id,
            name: t.name,
            scopes: t.scopes,
            created_at: t.created.to_rfc3339(),
            created_by: t.created_by,
            expires_at: t.expires.map(|at| at.to_rfc3339()),
            last_used_at: t.last_used.map(|at| at.to_rfc3339()),
            revoked_at: t.revoked.map(|at| at.to_rfc3339()),
        }
    }
}

/// `POST /api/v1/tokens`: 201 with the token (shown this once) and its
/// record; 403 when asking for a scope the caller lacks.
#[utoipa::path(
    post, path = "/api/v1/tokens", tag = "tokens",
    request_body = Create,
    responses(
        (status = 201, description = "The token (shown this once) and its record", body = Created),
        (status = 400, description = "`VALIDATION_ERROR` or `MALFORMED_JSON`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: a scope the caller lacks", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Authorized>,
    ApiJson(body): ApiJson<Create>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let ttl = body.ttl_secs.map(Duration::from_secs);
    match state
        .tokens
        .create(Some(&caller), &body.name, body.scopes, ttl)
        .await
    {
        Ok((token, record)) => {
            tracing::info!(target: "hodei::audit", event = "token_created", token = %record.id,
                by = ?caller.token_id, scopes = ?record.scopes, "API token created");
            Ok((
                StatusCode::CREATED,
                Json(Created {
                    token,
                    record: TokenView::from(record),
                }),
            ))
        }
        Err(CreateError::NotAllowed(scope)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            CreateError::NotAllowed(scope).to_string(),
        )),
        Err(CreateError::Invalid(problem)) => {
            Err(ApiError::validation(vec![("token".into(), problem)]))
        }
        Err(CreateError::Store(err)) => Err(err.into()),
    }
}

/// `GET /api/v1/tokens`: every token, newest first, with last use.
#[utoipa::path(
    get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, description = "Every token, newest first", body = TokenList))
)]
pub async fn list(State(state): State<AppState>) -> Json<TokenList> {
    let tokens: Vec<TokenView> = state.tokens.list().into_iter().map(Into::into).collect();
    Json(TokenList { tokens })
}

/// `DELETE /api/v1/tokens/{id}`: 204; the token is refused from now on and
/// its open streams end.
#[utoipa::path(
    delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(TokenPath),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such token", body = ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Authorized>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.tokens.revoke(&id).await? {
        tracing::info!(target: "hodei::audit", event = "token_revoked", token = %id,
            by = ?caller.token_id, "API token revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("token {id} not found"),
        ))
    }
}
