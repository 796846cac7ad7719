//! `GET /api/v1/jobs/{id}/logs`: a job's log as server-sent events.
//!
//! Each line is `id: <sequence>` + `data: {"timestamp","stream","line","sequence"}`;
//! the stream ends with `event: done` carrying the job's `state`. A client
//! that reconnects with `Last-Event-ID` resumes right after that line.
//!
//! Beside it, what a viewer of a long log needs: `logs/page` (a window of
//! lines by sequence, with the log's head, for windowed rendering),
//! `logs/search` (the sequence of every stored line containing a term) and
//! `logs/raw` (the whole log as plain text, streamed).

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
use utoipa::{IntoParams, ToSchema};

use super::jobs::{JobPath, parse_id};
use super::{ApiQuery, AppState};
use crate::api::error::{ApiError, ErrorBody};
use crate::domain::{JobId, LogRecord, LogStream, Timestamp};
use crate::logs::{self, LogItem, Start};
use crate::store::StoreError;

/// Largest sequence or count of lines a query may name: JSON's exact
/// integers (2^53 - 1), far past any log. Larger is refused.
pub(super) const MAX_COUNT: u64 = super::jobs::MAX_SAFE;

/// 400 when a query names a sequence or count past [`MAX_COUNT`].
fn within_bounds(params: &[(&str, Option<u64>)]) -> Result<(), ApiError> {
    let problems: Vec<(String, String)> = params
        .iter()
        .filter(|(_, value)| value.is_some_and(|v| v > MAX_COUNT))
        .map(|(name, _)| ((*name).to_owned(), format!("at most {MAX_COUNT}")))
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(problems))
    }
}

/// Most events one body chunk carries (one page of the store).
const CHUNK_EVENTS: usize = 1000;
/// Idle time after which a comment line is sent.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Query of the logs endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    /// Keep the stream open until the job ends.
    #[serde(default)]
    follow: bool,
    /// Start with the last `tail` lines instead of the first.
    #[param(maximum = 9007199254740991_u64)] // MAX_COUNT, checked by a test
    tail: Option<u64>,
}

/// The data of one line's event. A struct rather than `json!`: no map is
/// built per line, and the line is borrowed when it is valid UTF-8.
#[derive(Serialize, ToSchema)]
#[schema(as = LogLine)]
pub struct LineData<'a> {
    /// When the agent read it (RFC 3339).
    #[schema(value_type = String, format = DateTime)]
    timestamp: Cow<'a, str>,
    stream: LogStream,
    /// The line without its terminator (invalid UTF-8 replaced).
    #[schema(value_type = String)]
    line: Cow<'a, str>,
    /// Dense per job from 1, across attempts: the SSE `id:`.
    sequence: u64,
}

/// One server-sent event of a job's log, as the stream frames it.
#[derive(ToSchema)]
#[schema(as = LogEvent)]
#[allow(dead_code)]
pub struct EventDoc {
    /// Absent for a line; `done` at the end of the log; `error` when
    /// reading the store failed.
    event: Option<String>,
    /// A line's sequence (what `Last-Event-ID` resumes after).
    id: Option<String>,
    /// JSON: a `LogLine`; for `done` a `LogDone`; for `error` `{"error",
    /// "message"}`.
    data: String,
}

/// The data of the SSE `event: done` that ends a log: how the job ended.
#[derive(Serialize, ToSchema)]
#[schema(as = LogDone)]
pub struct DoneData {
    /// The job's state, as in the job JSON.
    state: crate::domain::JobState,
    exit_code: Option<i32>,
    reason: Option<String>,
}

/// Largest window `logs/page` answers.
const MAX_PAGE_LINES: usize = 5000;
/// Lines read from the store per query while searching.
const SCAN_PAGE: usize = 5000;

/// 404 unless the job exists.
async fn existing(state: &AppState, id: &str) -> Result<JobId, ApiError> {
    let job_id = parse_id(id)?;
    if state.jobs.get(job_id).await?.is_none() {
        return Err(ApiError::job_not_found(id));
    }
    Ok(job_id)
}

/// The data of a line as the API shows it.
fn line_data(line: &LogRecord) -> LineData<'_> {
    LineData {
        timestamp: Cow::Owned(line.timestamp.to_rfc3339()),
        stream: line.stream,
        line: String::from_utf8_lossy(&line.data),
        sequence: line.sequence,
    }
}

/// Query of `logs/page`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// The lines after this sequence.
    #[param(maximum = 9007199254740991_u64)] // MAX_COUNT, checked by a test
    after: Option<u64>,
    /// Or the last `tail` lines.
    #[param(maximum = 9007199254740991_u64)] // MAX_COUNT, checked by a test
    tail: Option<u64>,
    /// At most this many lines (default and cap 5000: more is taken as
    /// 5000).
    #[param(maximum = 9007199254740991_u64)] // MAX_COUNT, checked by a test
    limit: Option<usize>,
}

/// `GET /api/v1/jobs/{id}/logs/page?after=|tail=&limit=`: `{"head", "lines"}`,
/// `head` being the last sequence stored (sequences are dense from 1).
#[utoipa::path(
    get, path = "/api/v1/jobs/{id}/logs/page", tag = "logs",
    params(JobPath, PageParams),
    responses(
        (status = 200, description = "A window of the log and its head", body = Page<'static>),
        (status = 400, description = "`INVALID_QUERY`, or `VALIDATION_ERROR` past the bounds", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    )
)]
pub async fn page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<impl IntoResponse, ApiError> {
    within_bounds(&[
        ("after", params.after),
        ("tail", params.tail),
        ("limit", params.limit.map(|l| l as u64)),
    ])?;
    let job_id = existing(&state, &id).await?;
    let store = state.jobs.store();
    let head = store.log_head(job_id).await?;
    let limit = params.limit.unwrap_or(MAX_PAGE_LINES).min(MAX_PAGE_LINES);
    let after = match (params.after, params.tail) {
        (Some(after), _) => after,
        (None, Some(tail)) => head.saturating_sub(tail),
        (None, None) => 0,
    };
    let records = store.read_logs(job_id, after, limit).await?;
    // Serialized here, borrowing the records: no JSON tree per line.
    let body = serde_json::to_vec(&Page {
        head,
        lines: records.iter().map(line_data).collect(),
    })
    .map_err(|err| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            err.to_string(),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body))
}

/// The answer of `logs/page`.
#[derive(Serialize, ToSchema)]
#[schema(as = LogPage)]
struct Page<'a> {
    /// The last sequence stored (0: no line yet).
    head: u64,
    lines: Vec<LineData<'a>>,
}

/// Query of `logs/search`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// The term: a literal, case-sensitive substring of the stored line.
    #[param(min_length = 1)]
    q: String,
}

/// The answer of `logs/search`.
#[derive(Serialize, ToSchema)]
#[schema(as = LogSearch)]
struct SearchResult {
    /// The term searched for.
    query: String,
    /// The last sequence stored when the search began.
    head: u64,
    /// How many lines matched.
    count: usize,
    /// The sequence of every matching line, in order.
    matches: Vec<u64>,
}

/// `GET /api/v1/jobs/{id}/logs/search?q=`: `{"query", "head", "count",
/// "matches"}`, `matches` the sequence of every line up to `head` (the last
/// stored when the search began) containing `q`, in order, none left out.
/// Lines are matched as stored (escape sequences included).
#[utoipa::path(
    get, path = "/api/v1/jobs/{id}/logs/search", tag = "logs",
    params(JobPath, SearchParams),
    responses(
        (status = 200, description = "Every matching line's sequence", body = SearchResult),
        (status = 400, description = "`VALIDATION_ERROR` (empty `q`) or `INVALID_QUERY`", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    )
)]
pub async fn search(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<SearchParams>,
) -> Result<impl IntoResponse, ApiError> {
    if params.q.is_empty() {
        return Err(ApiError::validation(vec![(
            "q".into(),
            "required: the term to search for".into(),
        )]));
    }
    let job_id = existing(&state, &id).await?;
    let store = state.jobs.store();
    // The log as it stands now: a job still writing does not keep the
    // search going.
    let head = store.log_head(job_id).await?;
    let mut matches = Vec::new();
    let mut after = 0;
    while after < head {
        let lines = store.read_logs(job_id, after, SCAN_PAGE).await?;
        let Some(last) = lines.last() else { break };
        after = last.sequence;
        matches.extend(
            lines
                .iter()
                .filter(|line| String::from_utf8_lossy(&line.data).contains(&params.q))
                .map(|line| line.sequence),
        );
    }
    Ok(axum::Json(SearchResult {
        query: params.q,
        head,
        count: matches.len(),
        matches,
    }))
}

/// `GET /api/v1/jobs/{id}/logs/raw`: every stored line, as stored, one per
/// `\n`, streamed as `text/plain` (a download: `job-ID.log`).
#[utoipa::path(
    get, path = "/api/v1/jobs/{id}/logs/raw", tag = "logs",
    params(JobPath),
    responses(
        (status = 200, description = "The whole log, one line per `\\n`", content_type = "text/plain; charset=utf-8", body = String),
        (status = 404, description = "No such job", body = ErrorBody),
    )
)]
pub async fn raw(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let job_id = existing(&state, &id).await?;
    let body = logs::read(state.jobs.clone(), job_id, Start::After(0), false)
        .ready_chunks(CHUNK_EVENTS)
        .map(|items| {
            let mut chunk = Vec::with_capacity(items.len() * 80);
            for item in items {
                match item {
                    Ok(LogItem::Line(line)) => {
                        chunk.extend_from_slice(&line.data);
                        chunk.push(b'\n');
                    }
                    Ok(LogItem::Done(_)) => {}
                    Err(err) => {
                        let _ = writeln!(chunk, "[hodei: reading the log failed: {err}]");
                    }
                }
            }
            Ok::<_, Infallible>(Bytes::from(chunk))
        });
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"job-{job_id}.log\""),
            ),
        ],
        Body::from_stream(body),
    ))
}

/// The SSE handler.
#[utoipa::path(
    get, path = "/api/v1/jobs/{id}/logs", tag = "logs",
    params(
        JobPath, LogParams,
        ("Last-Event-ID" = Option<u64>, Header, nullable = false, maximum = 9007199254740991_u64, description = "Resume right after this line's sequence"),
    ),
    responses(
        (status = 200, description = "Server-sent events: per line `id: SEQUENCE` and `data:` a `LogLine`; \
            at the end `event: done` with a `LogDone` (or `event: error`); `:` comments keep idle streams open",
            content_type = "text/event-stream", body = EventDoc),
        (status = 400, description = "`INVALID_QUERY`, or `VALIDATION_ERROR` for `tail` past its bound or a `Last-Event-ID` that is no sequence", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    )
)]
pub async fn stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<LogParams>,
) -> Result<impl IntoResponse, ApiError> {
    within_bounds(&[("tail", params.tail)])?;
    let job_id = existing(&state, &id).await?;
    // Only ids this stream gave (sequences) resume it; anything else is
    // the client's mistake, not a reason to start over silently.
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|seq| *seq <= MAX_COUNT)
                .ok_or_else(|| {
                    ApiError::validation(vec![(
                        "Last-Event-ID".into(),
                        "not a line's sequence from this stream".into(),
                    )])
                })?,
        ),
    };
    let start = match (resume, params.tail) {
        (Some(seq), _) => Start::After(seq),
        (None, Some(n)) => Start::Tail(n),
        (None, None) => Start::After(0),
    };
    // Lines already stored leave in one body chunk per page rather than
    // one per line: far fewer frames for the server and for every client,
    // and a lone new line still leaves at once (nothing waits to fill a
    // chunk).
    let mut stamp = LastStamp::default();
    let events = logs::read(state.jobs.clone(), job_id, start, params.follow)
        .ready_chunks(CHUNK_EVENTS)
        .map(move |items| {
            let mut chunk = Vec::with_capacity(items.len() * 160);
            for item in items {
                write_event(&mut chunk, &mut stamp, item);
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

/// The RFC 3339 text of the last timestamp a stream wrote. The lines of
/// one batch share the agent's read time, so most lines reuse it rather
/// than format it again.
#[derive(Default)]
struct LastStamp(Option<(Timestamp, String)>);

impl LastStamp {
    fn text(&mut self, at: Timestamp) -> &str {
        match &mut self.0 {
            Some((last, _)) if *last == at => {}
            slot => *slot = Some((at, at.to_rfc3339())),
        }
        self.0.as_ref().map_or("", |(_, text)| text)
    }
}

/// Appends one item as SSE text: `id:` + `data:` for a line, `event: done`
/// or `event: error` at the end. JSON escapes newlines, so each `data:` is
/// one line.
fn write_event(out: &mut Vec<u8>, stamp: &mut LastStamp, item: Result<LogItem, StoreError>) {
    let written = match item {
        Ok(LogItem::Line(line)) => {
            let _ = write!(out, "id: {}\ndata: ", line.sequence);
            let data = LineData {
                timestamp: Cow::Borrowed(stamp.text(line.timestamp)),
                stream: line.stream,
                line: String::from_utf8_lossy(&line.data),
                sequence: line.sequence,
            };
            serde_json::to_writer(&mut *out, &data)
        }
        Ok(LogItem::Done(job)) => {
            out.extend_from_slice(b"event: done\ndata: ");
            serde_json::to_writer(
                &mut *out,
                &DoneData {
                    state: job.state,
                    exit_code: job.exit_code,
                    reason: job.reason,
                },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_stamp_is_the_one_formatted_for_that_time() {
        let mut stamp = LastStamp::default();
        let (a, b) = (
            Timestamp(1_764_000_000_123_456),
            Timestamp(1_764_000_001_000_001),
        );
        for at in [a, a, b, a, b, b] {
            assert_eq!(stamp.text(at), at.to_rfc3339());
        }
        assert_eq!(stamp.text(a), "2025-11-24T16:00:00.123456Z");
    }
}
