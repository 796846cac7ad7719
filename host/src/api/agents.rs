//! `/api/v1/agent-tokens` and `/api/v1/agents/credentials`: bootstrap
//! tokens for agents (created, shown once, listed, revoked) and the
//! per-agent credentials they turned into (listed with last use, revoked:
//! the agent's live stream closes). See `auth::agents`.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ApiJson, AppState};
use crate::api::error::ApiError;
use crate::auth::Authorized;
use crate::auth::agents::{AgentCredential, BootstrapToken};
use crate::domain::Timestamp;

/// Longest lifetime of a bootstrap token: it is for joining, not for
/// keeping (the credential it yields does not expire).
const MAX_TTL_SECS: u64 = 30 * 24 * 3600;
/// Most agents one token may admit.
const MAX_USES: u32 = 10_000;

/// Body of `POST /api/v1/agent-tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Create {
    /// The agent name that may redeem it.
    #[serde(default)]
    name: Option<String>,
    /// The pool its agents join (their `pool` label).
    #[serde(default)]
    pool: Option<String>,
    /// Seconds it may be redeemed for [default: 900].
    #[serde(default)]
    ttl_secs: Option<u64>,
    /// Agents it may admit [default: 1].
    #[serde(default)]
    uses: Option<u32>,
}

/// A bootstrap token as the API shows it.
#[derive(Debug, Serialize)]
pub struct TokenView {
    id: String,
    name: Option<String>,
    pool: Option<String>,
    uses: u32,
    used: usize,
    created_at: String,
    created_by: Option<String>,
    expires_at: Option<String>,
    revoked_at: Option<String>,
}

impl From<&BootstrapToken> for TokenView {
    fn from(t: &BootstrapToken) -> Self {
        Self {
            id: t.id.clone(),
            name: t.name.clone(),
            pool: t.pool.clone(),
            uses: t.uses,
            used: t.agents.len(),
            created_at: t.created.to_rfc3339(),
            created_by: t.created_by.clone(),
            expires_at: t.expires.map(Timestamp::to_rfc3339),
            revoked_at: t.revoked.map(Timestamp::to_rfc3339),
        }
    }
}

/// A credential as the API shows it.
#[derive(Debug, Serialize)]
pub struct CredentialView {
    agent_id: String,
    name: String,
    token_id: String,
    pool: Option<String>,
    bound_at: String,
    last_used_at: String,
    revoked_at: Option<String>,
}

impl CredentialView {
    fn new(token: &BootstrapToken, c: &AgentCredential) -> Self {
        Self {
            agent_id: c.agent_id.clone(),
            name: c.name.clone(),
            token_id: token.id.clone(),
            pool: token.pool.clone(),
            bound_at: c.bound.to_rfc3339(),
            last_used_at: c.last_used.to_rfc3339(),
            revoked_at: c.revoked.map(Timestamp::to_rfc3339),
        }
    }
}

/// `POST /api/v1/agent-tokens`: 201 with the token (shown this once).
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Authorized>,
    ApiJson(body): ApiJson<Create>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ttl = body.ttl_secs.unwrap_or(900);
    let uses = body.uses.unwrap_or(1);
    let mut problems = Vec::new();
    if ttl == 0 || ttl > MAX_TTL_SECS {
        problems.push((
            "ttl_secs".into(),
            format!("must be between 1 and {MAX_TTL_SECS}"),
        ));
    }
    if uses == 0 || uses > MAX_USES {
        problems.push(("uses".into(), format!("must be between 1 and {MAX_USES}")));
    }
    for (field, value) in [("name", &body.name), ("pool", &body.pool)] {
        if value
            .as_ref()
            .is_some_and(|v| v.trim().is_empty() || v.len() > 128)
        {
            problems.push((field.into(), "must be 1 to 128 characters".into()));
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let (token, record) = state
        .agent_tokens
        .create(
            body.name,
            body.pool,
            Some(Duration::from_secs(ttl)),
            uses,
            caller.token_id.clone(),
            Timestamp::now(),
        )
        .await?;
    tracing::info!(target: "hodei::audit", event = "agent_token_created", token = %record.id,
        by = ?caller.token_id, pool = ?record.pool, uses = record.uses, "agent bootstrap token created");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "token": token, "record": TokenView::from(&record) })),
    ))
}

/// `GET /api/v1/agent-tokens`: every bootstrap token, newest first.
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let tokens: Vec<TokenView> = state
        .agent_tokens
        .list()
        .await?
        .iter()
        .map(TokenView::from)
        .collect();
    Ok(Json(json!({ "tokens": tokens })))
}

/// `DELETE /api/v1/agent-tokens/{id}`: 204; no agent may redeem it any more
/// (agents it admitted keep their credentials).
pub async fn revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Authorized>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state
        .agent_tokens
        .revoke_token(&id, Timestamp::now())
        .await?
    {
        tracing::info!(target: "hodei::audit", event = "agent_token_revoked", token = %id,
            by = ?caller.token_id, "agent bootstrap token revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(format!("agent token {id} not found")))
    }
}

/// `GET /api/v1/agents/credentials`: every agent a bootstrap token admitted.
pub async fn credentials(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let tokens = state.agent_tokens.list().await?;
    let credentials: Vec<CredentialView> = tokens
        .iter()
        .flat_map(|t| t.agents.iter().map(move |c| CredentialView::new(t, c)))
        .collect();
    Ok(Json(json!({ "credentials": credentials })))
}

/// `DELETE /api/v1/agents/credentials/{agent_id}`: 204; the agent is
/// refused from now on and its live stream closes (within a second on every
/// host sharing the store).
pub async fn revoke_credential(
    State(state): State<AppState>,
    Extension(caller): Extension<Authorized>,
    Path(agent_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state
        .agent_tokens
        .revoke_agent(&agent_id, Timestamp::now())
        .await?
    {
        tracing::info!(target: "hodei::audit", event = "agent_credential_revoked", agent_id = %agent_id,
            by = ?caller.token_id, "agent credential revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(format!("no credential of agent {agent_id}")))
    }
}

fn not_found(message: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
}
