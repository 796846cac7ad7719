//! The REST API: routes, shared state, and the extractors that turn bad
//! input into the one JSON error shape.
//!
//! One file per resource: `jobs`, `logs` (SSE), `workers`, `policies`,
//! `pools`;
//! `error` owns the error shape.
//! `dashboard` serves the web UI (assets embedded in the binary).

mod dashboard;
pub mod error;
mod jobs;
mod logs;
mod policies;
mod pools;
mod workers;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts};
use axum::routing::{delete, get, post, put};
use axum::{Router, middleware};
use tower_http::limit::RequestBodyLimitLayer;

use self::error::ApiError;
use crate::jobs::JobService;
use crate::plugins::PolicyCatalog;
use crate::providers::Provisioner;
use crate::usage::UsageBoard;

pub use self::jobs::{JobView, MIN_SECRET_LEN};

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The job use cases.
    pub jobs: Arc<JobService>,
    /// Scheduling policies and their persistence.
    pub policies: PolicyCatalog,
    /// Per-job CPU and memory from the heartbeats.
    pub usage: Arc<UsageBoard>,
    /// The worker pools.
    pub provisioner: Arc<Provisioner>,
}

/// `axum::Json` whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Query` whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The whole HTTP surface. `max_body_bytes` bounds every request body.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .merge(dashboard::routes())
        .route("/api/v1/jobs/{id}/logs/page", get(logs::page))
        .route("/api/v1/jobs/{id}/logs/search", get(logs::search))
        .route("/api/v1/jobs/{id}/logs/raw", get(logs::raw))
        .route("/healthz", get(workers::healthz))
        .route("/api/v1/jobs", post(jobs::submit).get(jobs::list))
        .route("/api/v1/jobs/{id}", get(jobs::get))
        .route("/api/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/api/v1/jobs/{id}/logs", get(logs::stream))
        .route("/api/v1/workers", get(workers::list))
        .route("/api/v1/pools", get(pools::list).post(pools::add))
        .route("/api/v1/pools/{name}", get(pools::get))
        .route("/api/v1/policies/active", put(policies::activate))
        .route("/api/v1/policies/{name}", delete(policies::remove))
        // A body announced as too large is refused from its Content-Length
        // before any of it is read; one that grows too large while streamed
        // (chunked) is refused by the extractor's limit.
        .layer(RequestBodyLimitLayer::new(max_body_bytes))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        // Components are larger than job bodies: this route has its own cap,
        // and an upload announced as too large is refused from its
        // Content-Length, before 50 MiB cross the wire.
        .route(
            "/api/v1/policies",
            get(policies::list).post(policies::upload).layer((
                RequestBodyLimitLayer::new(policies::MAX_POLICY_BYTES),
                DefaultBodyLimit::max(policies::MAX_POLICY_BYTES),
            )),
        )
        .layer(middleware::from_fn(error::stamp))
        .with_state(state)
}
