//! `GET /metrics`: the host's metrics (see `crate::metrics`), gauges read
//! from the queue and the cluster now.
//!
//! OpenMetrics text when the scraper asks for it (Prometheus does, in its
//! `Accept` header); otherwise the older Prometheus text format 0.0.4,
//! which `promtool check metrics` and plain `curl` users get. The two
//! differ only in counter family names (`_total` on the family too), the
//! `# UNIT` lines and the `# EOF` marker, so the second is derived from
//! the first.

use std::collections::HashSet;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;

use super::AppState;
use crate::metrics::Snapshot;

/// The content type Prometheus asks for and `prometheus-client` writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format.
const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`.
#[utoipa::path(
    get, path = "/metrics", tag = "host",
    responses((status = 200, description = "OpenMetrics text when the `Accept` header asks for it (Prometheus does), else Prometheus text format 0.0.4",
        content(
            (String = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
            (String = "text/plain; version=0.0.4; charset=utf-8"),
        )))
)]
pub async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let workers = state.jobs.cluster().views();
    let connected = workers.iter().filter(|w| w.connected);
    let now = Snapshot {
        queued: state.jobs.scheduler().queued() as u64,
        agents_connected: connected.clone().count() as u64,
        agents_draining: connected.filter(|w| w.metrics.draining).count() as u64,
        pending: state.jobs.scheduler().pending_summary(),
    };
    let text = state.jobs.metrics().encode(now);
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    if wants_openmetrics {
        ([(header::CONTENT_TYPE, OPENMETRICS)], text)
    } else {
        ([(header::CONTENT_TYPE, TEXT_004)], to_text_004(&text))
    }
}

/// OpenMetrics text as Prometheus text format 0.0.4.
fn to_text_004(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let family_line = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match family_line {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::to_text_004;

    #[test]
    fn counters_get_total_on_their_family_and_openmetrics_lines_go() {
        let open = "# HELP hodei_jobs Jobs.\n# TYPE hodei_jobs counter\nhodei_jobs_total 2\n\
                    # HELP hodei_wait Wait.\n# TYPE hodei_wait histogram\n# UNIT hodei_wait seconds\n\
                    hodei_wait_count 1\n# EOF\n";
        assert_eq!(
            to_text_004(open),
            "# HELP hodei_jobs_total Jobs.\n# TYPE hodei_jobs_total counter\nhodei_jobs_total 2\n\
             # HELP hodei_wait Wait.\n# TYPE hodei_wait histogram\nhodei_wait_count 1\n"
        );
    }
}
