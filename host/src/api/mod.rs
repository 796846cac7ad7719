//! The REST API: routes, shared state, and the extractors that turn bad
//! input into the one JSON error shape.
//!
//! One file per resource: `jobs` (and `batch`, many jobs in one commit), `pipelines` (and `artifacts`, its steps' outputs), `logs` (SSE), `workers`, `policies`,
//! `maskers`, `pools`, `tokens`, `agents` (agent tokens and credentials), `events` (the
//! event log as SSE); who may call which route is declared
//! with the route ([`routes`], see `crate::auth::guard`);
//! `error` owns the error shape.
//! `dashboard` serves the web UI (assets embedded in the binary);
//! `openapi` the API's OpenAPI 3.1 document and its docs UI.

mod agents;
mod artifacts;
mod batch;
mod dashboard;
pub mod error;
mod events;
mod jobs;
mod logs;
mod maskers;
mod metrics;
pub mod openapi;
mod pipelines;
mod policies;
mod pools;
#[cfg(test)]
mod spec_fuzz;
mod tokens;
mod workers;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts};
use axum::{Router, middleware};
use tower_http::limit::RequestBodyLimitLayer;

use self::error::ApiError;
use crate::auth::agents::AgentTokens;
use crate::auth::guard::{self, Routes};
use crate::auth::{Access, ApiTokens, Scope};
use crate::jobs::JobService;
use crate::masking::{MaskerCatalog, Masking};
use crate::pipelines::Pipelines;
use crate::plugins::PolicyCatalog;
use crate::providers::Provisioner;
use crate::usage::UsageBoard;

pub use self::jobs::{JobView, MIN_SECRET_LEN};

/// Largest plugin component an upload may carry unless configured
/// (`--max-plugin-bytes`): 32 MiB, room for a Python component made with
/// componentize-py (about 18 MB) or a JavaScript one made with jco.
pub const DEFAULT_MAX_PLUGIN_BYTES: usize = 32 << 20;

/// A list's page size when the query names none.
pub(crate) const DEFAULT_PAGE: usize = 50;
/// The largest page a list answers.
pub(crate) const MAX_PAGE: usize = 1000;

/// A list query's `limit` (default [`DEFAULT_PAGE`]), with a problem noted
/// when it is outside 1 to [`MAX_PAGE`].
pub(crate) fn page_limit(limit: Option<usize>, problems: &mut Vec<(String, String)>) -> usize {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        problems.push((
            "limit".to_owned(),
            format!("must be between 1 and {MAX_PAGE}"),
        ));
    }
    limit
}

/// A list query's `state` filter read by `parse`, with a problem noted
/// when it names no state.
pub(crate) fn state_filter<T>(
    raw: Option<&str>,
    parse: impl Fn(&str) -> Option<T>,
    problems: &mut Vec<(String, String)>,
) -> Option<T> {
    let raw = raw?;
    let parsed = parse(raw);
    if parsed.is_none() {
        problems.push(("state".to_owned(), format!("unknown state {raw:?}")));
    }
    parsed
}

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The job use cases.
    pub jobs: Arc<JobService>,
    /// Scheduling policies and their persistence.
    pub policies: PolicyCatalog,
    /// Secret maskers, the active chain, and their persistence.
    pub maskers: MaskerCatalog,
    /// The masking choke point (its counters).
    pub masking: Arc<Masking>,
    /// Per-job CPU and memory from the heartbeats.
    pub usage: Arc<UsageBoard>,
    /// The worker pools.
    pub provisioner: Arc<Provisioner>,
    /// The API tokens every request is checked against.
    pub tokens: Arc<ApiTokens>,
    /// Agents' bootstrap tokens and credentials.
    pub agent_tokens: Arc<AgentTokens>,
    /// Pipelines of jobs.
    pub pipelines: Arc<Pipelines>,
    /// The OpenAPI document this host serves ([`openapi::document_for`]).
    pub openapi: Arc<str>,
    /// Largest plugin component an upload may carry (policies, maskers).
    pub max_plugin_bytes: usize,
}

/// `axum::Json` whose rejections are [`ApiError`]s, and which takes only
/// a JSON object: serde would also fill a struct from an array (`[null,
/// null]` made an agent token with every default).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let json = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .is_some_and(|v| {
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            });
        if !json {
            return Err(axum::extract::rejection::JsonRejection::from(
                axum::extract::rejection::MissingJsonContentType::default(),
            )
            .into());
        }
        let bytes = axum::body::Bytes::from_request(request, state).await?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b != b'{') {
            return Err(ApiError::validation(vec![(
                "body".to_owned(),
                "must be a JSON object".to_owned(),
            )]));
        }
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(Self(value))
    }
}

/// `axum::extract::Query` whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// Every route with the access it needs (see `auth::guard`): what the
/// router serves and what the route × scope test walks.
pub fn routes() -> Routes<AppState> {
    use Access::{Authenticated, Public, Scope as Needs};
    use Scope::{Admin, JobsCancel, JobsRead, JobsSubmit, LogsRead, WorkersRead};
    Routes::new()
        .merge(dashboard::routes())
        .merge(openapi::docs_routes())
        .route(openapi::SPEC_PATH, guard::get(Public, openapi::spec))
        .route(
            "/api/v1/jobs/{id}/logs/page",
            guard::get(Needs(LogsRead), logs::page),
        )
        .route(
            "/api/v1/jobs/{id}/logs/search",
            guard::get(Needs(LogsRead), logs::search),
        )
        .route(
            "/api/v1/jobs/{id}/logs/raw",
            guard::get(Needs(LogsRead), logs::raw),
        )
        .route("/healthz", guard::get(Public, workers::healthz))
        .route("/metrics", guard::get(Needs(WorkersRead), metrics::scrape))
        .route(
            "/api/v1/jobs",
            guard::post(Needs(JobsSubmit), jobs::submit).get(Needs(JobsRead), jobs::list),
        )
        .route(
            "/api/v1/jobs/batch",
            guard::post(Needs(JobsSubmit), batch::submit),
        )
        .route("/api/v1/jobs/{id}", guard::get(Needs(JobsRead), jobs::get))
        .route(
            "/api/v1/jobs/{id}/cancel",
            guard::post(Needs(JobsCancel), jobs::cancel),
        )
        .route(
            "/api/v1/jobs/{id}/logs",
            guard::get(Needs(LogsRead), logs::stream),
        )
        .route(
            "/api/v1/pipelines",
            guard::post(Needs(JobsSubmit), pipelines::create).get(Needs(JobsRead), pipelines::list),
        )
        .route(
            "/api/v1/pipelines/{id}",
            guard::get(Needs(JobsRead), pipelines::get),
        )
        .route(
            "/api/v1/pipelines/{id}/cancel",
            guard::post(Needs(JobsCancel), pipelines::cancel),
        )
        .route(
            "/api/v1/pipelines/{id}/retry",
            guard::post(Needs(JobsSubmit), pipelines::retry),
        )
        .route(
            "/api/v1/pipelines/{id}/events",
            guard::get(Needs(JobsRead), events::pipeline_stream),
        )
        .route(
            "/api/v1/pipelines/{id}/artifacts",
            guard::get(Needs(JobsRead), artifacts::list),
        )
        .route(
            "/api/v1/pipelines/{id}/artifacts/{step}/{*path}",
            guard::get(Needs(JobsRead), artifacts::download),
        )
        .route(
            "/api/v1/events",
            guard::get(Needs(JobsRead), events::stream),
        )
        .route(
            "/api/v1/workers",
            guard::get(Needs(WorkersRead), workers::list),
        )
        .route(
            "/api/v1/queues",
            guard::get(Needs(WorkersRead), workers::queues),
        )
        .route(
            "/api/v1/pools",
            guard::get(Needs(WorkersRead), pools::list).post(Needs(Admin), pools::add),
        )
        .route(
            "/api/v1/pools/{name}",
            guard::get(Needs(WorkersRead), pools::get),
        )
        .route(
            "/api/v1/policies/active",
            guard::put(Needs(Admin), policies::activate),
        )
        .route(
            "/api/v1/policies/{name}",
            guard::delete(Needs(Admin), policies::remove),
        )
        .route(
            "/api/v1/maskers/chain",
            guard::put(Needs(Admin), maskers::set_chain),
        )
        .route(
            "/api/v1/maskers/{name}",
            guard::delete(Needs(Admin), maskers::remove),
        )
        .route(
            "/api/v1/tokens",
            guard::post(Authenticated, tokens::create).get(Needs(Admin), tokens::list),
        )
        .route(
            "/api/v1/tokens/{id}",
            guard::delete(Needs(Admin), tokens::revoke),
        )
        .route(
            "/api/v1/agent-tokens",
            guard::post(Needs(Admin), agents::create).get(Needs(Admin), agents::list),
        )
        .route(
            "/api/v1/agent-tokens/{id}",
            guard::delete(Needs(Admin), agents::revoke),
        )
        .route(
            "/api/v1/agents/credentials",
            guard::get(Needs(WorkersRead), agents::credentials),
        )
        .route(
            "/api/v1/agents/credentials/{id}",
            guard::delete(Needs(Admin), agents::revoke_credential),
        )
}

/// The routes that take a component as their body (policies, maskers).
pub fn upload_routes() -> Routes<AppState> {
    use Access::Scope as Needs;
    use Scope::Admin;
    Routes::new()
        .route(
            "/api/v1/policies",
            guard::get(Needs(Admin), policies::list).post(Needs(Admin), policies::upload),
        )
        .route(
            "/api/v1/maskers",
            guard::get(Needs(Admin), maskers::list).post(Needs(Admin), maskers::upload),
        )
}

/// The whole HTTP surface. `max_body_bytes` bounds every request body but
/// uploads of components, which `state.max_plugin_bytes` bounds.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let tokens = Arc::clone(&state.tokens);
    let max_plugin_bytes = state.max_plugin_bytes;
    routes()
        .into_router(Arc::clone(&tokens))
        // A body announced as too large is refused from its Content-Length
        // before any of it is read; one that grows too large while streamed
        // (chunked) is refused by the extractor's limit.
        .layer(RequestBodyLimitLayer::new(max_body_bytes))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        // Components are larger than job bodies: these routes have their
        // own cap, and an upload announced as too large is refused from its
        // Content-Length, before 50 MiB cross the wire.
        .merge(upload_routes().into_router(tokens).layer((
            // The limit layer's own 413 says which limit, as the
            // extractor's does.
            middleware::map_response_with_state(max_plugin_bytes, policies::name_the_limit),
            RequestBodyLimitLayer::new(max_plugin_bytes),
            DefaultBodyLimit::max(max_plugin_bytes),
        )))
        .layer(middleware::from_fn(error::stamp))
        .with_state(state)
}
