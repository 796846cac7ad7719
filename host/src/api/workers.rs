//! `/api/v1/workers` and `/healthz`.
//!
//! A worker's `metrics` are its latest heartbeat's machine figures (and
//! whether it drains); `job_usage` the CPU and memory of each job it runs.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;

/// `GET /api/v1/workers`: every worker the host knows, connected or within
/// its grace period.
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let workers: Vec<Value> = state
        .jobs
        .cluster()
        .views()
        .into_iter()
        .map(|view| {
            let job_usage = state.usage.of_worker(&view.info.id);
            let mut worker = json!(view);
            worker["job_usage"] = json!(job_usage);
            worker
        })
        .collect();
    Json(json!({ "workers": workers }))
}

/// `GET /healthz`: the process serves and how much waits.
pub async fn healthz(State(state): State<AppState>) -> Json<Value> {
    let workers = state.jobs.cluster().views();
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "queued_jobs": state.jobs.scheduler().queued(),
        "jobs_finished": state.jobs.finished_count(),
        "connected_workers": workers.iter().filter(|w| w.connected).count(),
    }))
}
