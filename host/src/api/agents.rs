//! `/api/v1/agent-tokens` and `/api/v1/agents/credentials`: bootstrap
//! tokens for agents (created, shown once, listed, revoked) and the
//! per-agent credentials they turned into (listed with last use, revoked:
//! the agent's live stream closes). See `auth::agents`.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiJson, AppState};
use crate::api::error::{ApiError, ErrorBody};
use crate::auth::Authorized;
use crate::auth::agents::{AgentCredential, BootstrapToken};
use crate::domain::{Timestamp, integral};

/// Longest lifetime of a bootstrap token: it is for joining, not for
/// keeping (the credential it yields does not expire).
const MAX_TTL_SECS: u64 = 30 * 24 * 3600;
/// Most agents one token may admit.
const MAX_USES: u32 = 10_000;

/// Body of `POST /api/v1/agent-tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateAgentToken, example = json!({"name": "build-7", "pool": "linux", "ttl_secs": 900, "uses": 1}))]
pub struct Create {
    /// The agent name that may redeem it (1 to 128 characters, not blank).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, pattern = r"\S")]
    name: Option<String>,
    /// The pool its agents join (their `pool` label; 1 to 128 characters,
    /// not blank).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, pattern = r"\S")]
    pool: Option<String>,
    /// Seconds it may be redeemed for [default: 900].
    #[serde(default, deserialize_with = "integral::option")]
    #[schema(minimum = 1, maximum = 2592000)]
    ttl_secs: Option<u64>,
    /// Agents it may admit [default: 1].
    #[serde(default, deserialize_with = "integral::option")]
    #[schema(minimum = 1, maximum = 10000)]
    uses: Option<u32>,
}

/// A bootstrap token as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AgentToken)]
pub struct TokenView {
    /// `atk_` and 12 hex digits.
    #[schema(example = "atk_5e0c1a2b3c4d")]
    id: String,
    name: Option<String>,
    pool: Option<String>,
    /// Agents it may admit.
    uses: u32,
    /// Agents it admitted.
    used: usize,
    #[schema(format = DateTime)]
    created_at: String,
    created_by: Option<String>,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
}

/// The answer of `POST /api/v1/agent-tokens`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CreatedAgentToken)]
pub struct Created {
    /// The bootstrap token: shown this once.
    token: String,
    record: TokenView,
}

/// The answer of `GET /api/v1/agent-tokens`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AgentTokenList)]
pub struct TokenList {
    tokens: Vec<TokenView>,
}

/// The answer of `GET /api/v1/agents/credentials`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AgentCredentialList)]
pub struct CredentialList {
    credentials: Vec<CredentialView>,
}

/// An agent token of a path.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AgentTokenPath {
    /// The bootstrap token's id (`atk_…`).
    #[allow(dead_code)]
    id: String,
}

/// An agent of a path.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AgentPath {
    /// The agent's id.
    #[allow(dead_code)]
    id: String,
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
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AgentCredential)]
pub struct CredentialView {
    agent_id: String,
    name: String,
    /// The bootstrap token it redeemed (`atk_…`).
    token_id: String,
    pool: Option<String>,
    #[schema(format = DateTime)]
    bound_at: String,
    #[schema(format = DateTime)]
    last_used_at: String,
    #[schema(format = DateTime)]
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
#[utoipa::path(
    post, path = "/api/v1/agent-tokens", tag = "agents",
    request_body = Create,
    responses(
        (status = 201, description = "The token (shown this once) and its record", body = Created),
        (status = 400, description = "`VALIDATION_ERROR` or `MALFORMED_JSON`", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Authorized>,
    ApiJson(body): ApiJson<Create>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
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
            .is_some_and(|v| v.trim().is_empty() || v.chars().count() > 128)
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
        Json(Created {
            token,
            record: TokenView::from(&record),
        }),
    ))
}

/// `GET /api/v1/agent-tokens`: every bootstrap token, newest first.
#[utoipa::path(
    get, path = "/api/v1/agent-tokens", tag = "agents",
    responses((status = 200, description = "Every bootstrap token, newest first", body = TokenList))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<TokenList>, ApiError> {
    let tokens: Vec<TokenView> = state
        .agent_tokens
        .list()
        .await?
        .iter()
        .map(TokenView::from)
        .collect();
    Ok(Json(TokenList { tokens }))
}

/// `DELETE /api/v1/agent-tokens/{id}`: 204; no agent may redeem it any more
/// (agents it admitted keep their credentials).
#[utoipa::path(
    delete, path = "/api/v1/agent-tokens/{id}", tag = "agents",
    params(AgentTokenPath),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such agent token", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    get, path = "/api/v1/agents/credentials", tag = "agents",
    responses((status = 200, description = "Every agent a bootstrap token admitted", body = CredentialList))
)]
pub async fn credentials(State(state): State<AppState>) -> Result<Json<CredentialList>, ApiError> {
    let tokens = state.agent_tokens.list().await?;
    let credentials: Vec<CredentialView> = tokens
        .iter()
        .flat_map(|t| t.agents.iter().map(move |c| CredentialView::new(t, c)))
        .collect();
    Ok(Json(CredentialList { credentials }))
}

/// `DELETE /api/v1/agents/credentials/{agent_id}`: 204; the agent is
/// refused from now on and its live stream closes (within a second on every
/// host sharing the store).
#[utoipa::path(
    delete, path = "/api/v1/agents/credentials/{id}", tag = "agents",
    params(AgentPath),
    responses(
        (status = 204, description = "Revoked; the agent's stream closes"),
        (status = 404, description = "No credential of that agent", body = ErrorBody),
    )
)]
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
