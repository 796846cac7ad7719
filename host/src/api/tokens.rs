//! `/api/v1/tokens`: create (the token is shown once), list and revoke API
//! tokens.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ApiJson, AppState};
use crate::api::error::ApiError;
use crate::auth::tokens::{ApiToken, CreateError};
use crate::auth::{Authorized, Scope};

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Create {
    name: String,
    scopes: BTreeSet<Scope>,
    /// Lifetime in seconds; none: until revoked.
    #[serde(default)]
    ttl_secs: Option<u64>,
}

/// A token as the API shows it (never the token itself, but once).
#[derive(Debug, Serialize)]
pub struct TokenView {
    id: String,
    name: String,
    scopes: BTreeSet<Scope>,
    created_at: String,
    created_by: Option<String>,
    expires_at: Option<String>,
    last_used_at: Option<String>,
    revoked_at: Option<String>,
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
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Authorized>,
    ApiJson(body): ApiJson<Create>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
                Json(json!({ "token": token, "record": TokenView::from(record) })),
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
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let tokens: Vec<TokenView> = state.tokens.list().into_iter().map(Into::into).collect();
    Json(json!({ "tokens": tokens }))
}

/// `DELETE /api/v1/tokens/{id}`: 204; the token is refused from now on and
/// its open streams end.
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
