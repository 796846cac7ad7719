//! `/api/v1/workers` and `/healthz`.
//!
//! A worker's `metrics` are its latest heartbeat's machine figures (and
//! whether it drains); `job_usage` the CPU and memory of each job it runs.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::AppState;

/// The answer of `GET /api/v1/workers`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerList {
    /// Each worker: its registration (`id`, `name`, `version`, `os`,
    /// `arch`, `labels`, `slots`, `capacity`, `pool`), `connected`,
    /// `running_jobs`, `reserved`, `used_slots`, `metrics` (latest
    /// heartbeat), `last_seen_ms`, `refused_messages`, `retiring` and
    /// `job_usage` (a `JobUsage` per running job).
    #[schema(value_type = Vec<Object>)]
    workers: Vec<Value>,
}

/// The answer of `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the process serves.
    #[schema(example = "ok")]
    status: &'static str,
    /// The host's version.
    version: &'static str,
    /// Jobs waiting in the queue.
    queued_jobs: usize,
    /// Jobs finished since the host started.
    jobs_finished: u64,
    /// Agents connected now.
    connected_workers: usize,
}

/// `GET /api/v1/workers`: every worker the host knows, connected or within
/// its grace period.
#[utoipa::path(
    get, path = "/api/v1/workers", tag = "workers",
    responses((status = 200, description = "Every worker the host knows", body = WorkerList))
)]
pub async fn list(State(state): State<AppState>) -> Json<WorkerList> {
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
    Json(WorkerList { workers })
}

/// The configured fair-share queues.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueList {
    /// `default` first, then by name.
    pub queues: Vec<crate::scheduler::QueueStatus>,
}

/// `GET /api/v1/queues`: every configured queue with its weight, its
/// pending jobs and the slots its jobs hold on this host's workers.
#[utoipa::path(
    get, path = "/api/v1/queues", tag = "workers",
    responses((status = 200, description = "Every configured queue", body = QueueList))
)]
pub async fn queues(State(state): State<AppState>) -> Json<QueueList> {
    Json(QueueList {
        queues: state.jobs.scheduler().queues(),
    })
}

/// `GET /healthz`: the process serves and how much waits.
#[utoipa::path(
    get, path = "/healthz", tag = "host",
    responses((status = 200, description = "The host serves", body = Health))
)]
pub async fn healthz(State(state): State<AppState>) -> Json<Health> {
    let workers = state.jobs.cluster().views();
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        queued_jobs: state.jobs.scheduler().queued(),
        jobs_finished: state.jobs.finished_count(),
        connected_workers: workers.iter().filter(|w| w.connected).count(),
    })
}
