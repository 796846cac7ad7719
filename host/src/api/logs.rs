//! `GET /api/v1/jobs/{id}/logs`: a job's log as server-sent events.
//!
//! Each line is `id: <sequence>` + `data: {"timestamp","stream","line","sequence"}`;
//! the stream ends with `event: done` carrying the job's status. A client
//! that reconnects with `Last-Event-ID` resumes right after that line.

use std::borrow::Cow;
use std::convert::Infallible;
use std::time::Duration;

use std::io::Write;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_stream::wrappers::IntervalStream;

use super::jobs::parse_id;
use super::{ApiQuery, AppState};
use crate::api::error::ApiError;
use crate::domain::LogStream;
use crate::logs::{self, LogItem, Start};
use crate::store::StoreError;

/// Most events one body chunk carries (one page of the store).
const CHUNK_EVENTS: usize = 1000;
/// Idle time after which a comment line is sent.
const KEEPALIVE: Duration = Duration::from_secs(15);

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

/// The data of one line's event. A struct rather than `json!`: no map is
/// built per line, and the line is borrowed when it is valid UTF-8.
#[derive(Serialize)]
struct LineData<'a> {
    timestamp: String,
    stream: LogStream,
    line: Cow<'a, str>,
    sequence: u64,
}

/// The SSE handler.
pub async fn stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<LogParams>,
) -> Result<impl IntoResponse, ApiError> {
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
    // Lines already stored leave in one body chunk per page rather than
    // one per line: far fewer frames for the server and for every client,
    // and a lone new line still leaves at once (nothing waits to fill a
    // chunk).
    let events = logs::read(state.jobs.clone(), job_id, start, params.follow)
        .ready_chunks(CHUNK_EVENTS)
        .map(|items| {
            let mut chunk = Vec::with_capacity(items.len() * 160);
            for item in items {
                write_event(&mut chunk, item);
            }
            Some(Bytes::from(chunk))
        })
        .chain(futures::stream::once(async { None }));
    // A comment line every 15 s keeps idle connections open through
    // proxies; the merged stream ends with the log.
    let keepalive = IntervalStream::new(tokio::time::interval_at(
        tokio::time::Instant::now() + KEEPALIVE,
        KEEPALIVE,
    ))
    .map(|_| Some(Bytes::from_static(b":\n\n")));
    let body = futures::stream::select(events, keepalive)
        .take_while(|chunk| std::future::ready(chunk.is_some()))
        .filter_map(|chunk| std::future::ready(chunk.map(Ok::<_, Infallible>)));
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    ))
}

/// Appends one item as SSE text: `id:` + `data:` for a line, `event: done`
/// or `event: error` at the end. JSON escapes newlines, so each `data:` is
/// one line.
fn write_event(out: &mut Vec<u8>, item: Result<LogItem, StoreError>) {
    let written = match item {
        Ok(LogItem::Line(line)) => {
            let _ = write!(out, "id: {}\ndata: ", line.sequence);
            serde_json::to_writer(
                &mut *out,
                &LineData {
                    timestamp: line.timestamp.to_rfc3339(),
                    stream: line.stream,
                    line: String::from_utf8_lossy(&line.data),
                    sequence: line.sequence,
                },
            )
        }
        Ok(LogItem::Done(job)) => {
            out.extend_from_slice(b"event: done\ndata: ");
            serde_json::to_writer(
                &mut *out,
                &json!({
                    "status": job.state,
                    "exit_code": job.exit_code,
                    "reason": job.reason,
                }),
            )
        }
        Err(err) => {
            out.extend_from_slice(b"event: error\ndata: ");
            serde_json::to_writer(
                &mut *out,
                &json!({ "error": "STORE_UNAVAILABLE", "message": err.to_string() }),
            )
        }
    };
    if written.is_err() {
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
}
