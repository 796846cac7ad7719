//! `GET /metrics`: the host's metrics in OpenMetrics text (see
//! `crate::metrics`), gauges read from the queue and the cluster now.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;
use crate::metrics::Snapshot;

/// The content type Prometheus asks for and `prometheus-client` writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`.
#[utoipa::path(
    get, path = "/metrics", tag = "host",
    responses((status = 200, description = "OpenMetrics text (Prometheus)",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String))
)]
pub async fn scrape(State(state): State<AppState>) -> impl IntoResponse {
    let workers = state.jobs.cluster().views();
    let connected = workers.iter().filter(|w| w.connected);
    let now = Snapshot {
        queued: state.jobs.scheduler().queued() as u64,
        agents_connected: connected.clone().count() as u64,
        agents_draining: connected.filter(|w| w.metrics.draining).count() as u64,
    };
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        state.jobs.metrics().encode(now),
    )
}
