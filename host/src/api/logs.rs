//! `GET /api/v1/jobs/{id}/logs`: a job's log as server-sent events.
//!
//! Each line is `id: <sequence>` + `data: {"timestamp","stream","line","sequence"}`;
//! the stream ends with `event: done` carrying the job's status. A client
//! that reconnects with `Last-Event-ID` resumes right after that line.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;

use super::jobs::parse_id;
use super::{ApiQuery, AppState};
use crate::api::error::ApiError;
use crate::logs::{self, LogItem, Start};

/// Query of the logs endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    /// Keep the stream open until the job ends.
    #[serde(default)]
    follow: bool,
    /// Start with the last `tail` lines instead of the first.
    tail: Option<u64>,
}

/// The SSE handler.
pub async fn stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<LogParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let job_id = parse_id(&id)?;
    if state.jobs.get(job_id).await?.is_none() {
        return Err(ApiError::job_not_found(&id));
    }
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let start = match (resume, params.tail) {
        (Some(seq), _) => Start::After(seq),
        (None, Some(n)) => Start::Tail(n),
        (None, None) => Start::After(0),
    };
    let events = logs::read(state.jobs.clone(), job_id, start, params.follow).map(|item| {
        Ok(match item {
            Ok(LogItem::Line(line)) => Event::default()
                .id(line.sequence.to_string())
                .json_data(json!({
                    "timestamp": line.timestamp.to_rfc3339(),
                    "stream": line.stream,
                    "line": String::from_utf8_lossy(&line.data),
                    "sequence": line.sequence,
                }))
                .unwrap_or_default(),
            Ok(LogItem::Done(job)) => Event::default()
                .event("done")
                .json_data(json!({
                    "status": job.state,
                    "exit_code": job.exit_code,
                    "reason": job.reason,
                }))
                .unwrap_or_default(),
            Err(err) => Event::default()
                .event("error")
                .json_data(json!({ "error": "STORE_UNAVAILABLE", "message": err.to_string() }))
                .unwrap_or_default(),
        })
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
