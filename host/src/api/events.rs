//! `GET /api/v1/events`: what happens to jobs, pipelines and workers, as server-sent
//! events read from the store's durable event log.
//!
//! Each event is `id: <event id>` + `event: <kind>` + `data: {…}`. The log
//! is the truth and the bus only a doorbell: the stream reads the store
//! after the last id it sent, then waits for the bus (or a short tick, for
//! events other hosts wrote to a shared store) and reads again. So a client
//! that reconnects with `Last-Event-ID` (or `?after=`) gets every event
//! after that one exactly once, across a host restart too, and a slow
//! client cannot lose events the bus dropped.
//!
//! Filters: `kind` (comma-separated kinds or families: `job`,
//! `worker.lost`), `label` (`key=value`, comma-separated; all must match
//! the job's or the worker's labels) and `pipeline` (one pipeline's own
//! and its steps' transitions). `GET /api/v1/pipelines/{id}/events` is
//! that last filter as a resource of the pipeline, and ends once the
//! pipeline has.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiQuery, AppState};
use crate::api::error::{ApiError, ErrorBody};
use crate::bus::Event;
use crate::domain::{EventId, EventKind, EventRecord, JobState, PipelineId, StoredEvent};

/// Events read from the store per page.
const PAGE: usize = 500;
/// How long the stream waits without a wake-up before reading again
/// (events written by other hosts reach this one only through the store).
const POLL: Duration = Duration::from_millis(500);
/// Idle time after which a comment line is sent.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Query of the events endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Kinds or families, comma-separated: `job`, `worker`, `pipeline`,
    /// `job.created`, `job.state_changed`, `job.finished`,
    /// `worker.connected`, `worker.disconnected`, `worker.lost`,
    /// `worker.draining`, `pipeline.created`, `pipeline.state_changed`,
    /// `pipeline.finished`, `pipeline.step_changed`. All when absent.
    #[param(example = "job.finished,worker")]
    kind: Option<String>,
    /// `key=value` pairs, comma-separated: only events whose job (or
    /// worker) has all these labels.
    #[param(example = "team=red")]
    label: Option<String>,
    /// Only this pipeline's events (`pipeline.*`: its own transitions and
    /// its steps').
    #[param(format = Uuid)]
    pipeline: Option<String>,
    /// Start right after this event id (`Last-Event-ID` wins when both are
    /// given); from the oldest kept when absent.
    after: Option<String>,
    /// `false`: end the stream once the events stored now are sent (a
    /// catch-up read). Default `true`: keep it open for new events.
    follow: Option<bool>,
}

/// One server-sent event of the event stream, as the stream frames it.
#[derive(ToSchema)]
#[schema(as = StreamedEvent)]
#[allow(dead_code)]
pub struct EventFrame {
    /// The event's kind (`job.created`...); `error` when reading the store
    /// failed (the stream then ends: reconnect with `Last-Event-ID`).
    event: String,
    /// The event's id, what `Last-Event-ID` resumes after.
    id: String,
    /// JSON: an `Event`.
    data: String,
}

/// Which events a client asked for.
#[derive(Debug, Default)]
struct Filter {
    kinds: Option<Vec<EventKind>>,
    labels: BTreeMap<String, String>,
    pipeline: Option<PipelineId>,
}

impl Filter {
    fn parse(params: &EventParams) -> Result<Self, ApiError> {
        let mut problems = Vec::new();
        let kinds = params.kind.as_deref().map(|raw| {
            let mut kinds = Vec::new();
            for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let matching: Vec<EventKind> = EventKind::ALL
                    .into_iter()
                    .filter(|k| {
                        let wire = k.as_str();
                        wire == name || wire.split('.').next() == Some(name)
                    })
                    .collect();
                if matching.is_empty() {
                    problems.push((
                        "kind".to_owned(),
                        format!(
                            "unknown kind {name:?}; one of job, worker, pipeline, {}",
                            EventKind::ALL.map(EventKind::as_str).join(", ")
                        ),
                    ));
                }
                kinds.extend(matching);
            }
            kinds
        });
        let mut labels = BTreeMap::new();
        for pair in params
            .label
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .filter(|p| !p.is_empty())
        {
            match pair.split_once('=') {
                Some((key, value)) if !key.is_empty() => {
                    labels.insert(key.to_owned(), value.to_owned());
                }
                _ => problems.push(("label".to_owned(), format!("{pair:?} is not key=value"))),
            }
        }
        let pipeline = match params.pipeline.as_deref().map(PipelineId::parse) {
            None => None,
            Some(Ok(id)) => Some(id),
            Some(Err(_)) => {
                problems.push((
                    "pipeline".to_owned(),
                    "not a pipeline id (a UUID)".to_owned(),
                ));
                None
            }
        };
        if problems.is_empty() {
            Ok(Self {
                kinds,
                labels,
                pipeline,
            })
        } else {
            Err(ApiError::validation(problems))
        }
    }

    fn matches(&self, event: &EventRecord) -> bool {
        self.kinds.as_ref().is_none_or(|k| k.contains(&event.kind))
            && self.pipeline.is_none_or(|p| event.pipeline_id == Some(p))
            && self
                .labels
                .iter()
                .all(|(k, v)| event.labels.get(k) == Some(v))
    }
}

/// The data of one event.
#[derive(Serialize, ToSchema)]
#[schema(as = Event)]
pub struct EventData<'a> {
    /// Its id (the SSE `id:`): opaque, ordered.
    id: String,
    /// What happened (the SSE `event:`).
    #[schema(value_type = String, example = "job.finished")]
    kind: &'static str,
    /// When (RFC 3339).
    #[schema(format = DateTime)]
    at: String,
    /// The job, for job events.
    #[serde(skip_serializing_if = "Option::is_none")]
    job_id: Option<String>,
    /// The state after the change: the job's (a `JobState`), or for
    /// `pipeline.*` events the pipeline's (a `PipelineState`) or, with
    /// `step`, the step's (a `StepState`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "SUCCEEDED")]
    state: Option<&'a str>,
    /// The state before the change (absent for `job.created` and
    /// `pipeline.created`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    previous_state: Option<&'a str>,
    /// The pipeline, for `pipeline.*` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    pipeline_id: Option<String>,
    /// The step, for `pipeline.step_changed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    step: Option<&'a str>,
    /// The job's attempt after the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u32>,
    /// The worker (for worker events, or the job's worker).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    worker_id: Option<&'a str>,
    /// The job's or the worker's labels.
    #[schema(value_type = BTreeMap<String, String>)]
    labels: &'a BTreeMap<String, String>,
}

fn write_event(out: &mut Vec<u8>, stored: &StoredEvent) {
    let event = &stored.event;
    let id = stored.id.to_string();
    let _ = write!(out, "id: {id}\nevent: {}\ndata: ", event.kind.as_str());
    let data = EventData {
        id,
        kind: event.kind.as_str(),
        at: event.at.to_rfc3339(),
        job_id: event.job_id.map(|id| id.to_string()),
        state: event
            .state
            .map(JobState::as_str)
            .or(event.status.as_deref()),
        previous_state: event
            .previous_state
            .map(JobState::as_str)
            .or(event.previous_status.as_deref()),
        pipeline_id: event.pipeline_id.map(|id| id.to_string()),
        step: event.step.as_deref(),
        attempt: event.attempt,
        worker_id: event.worker_id.as_deref(),
        labels: &event.labels,
    };
    if serde_json::to_writer(&mut *out, &data).is_err() {
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
}

fn parse_after(raw: &str, field: &str) -> Result<EventId, ApiError> {
    raw.trim().parse().map_err(|_| {
        ApiError::validation(vec![(
            field.to_owned(),
            format!("{raw:?} is not an event id"),
        )])
    })
}

/// The SSE handler.
#[utoipa::path(
    get, path = "/api/v1/events", tag = "events",
    params(
        EventParams,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume right after this event"),
    ),
    responses(
        (status = 200, description = "Server-sent events, one per `Event`: `id: ID`, `event: KIND`, `data:` an `Event`; \
            `:` comments keep idle streams open. Unending unless `follow=false`",
            content_type = "text/event-stream", body = EventFrame),
        (status = 400, description = "`VALIDATION_ERROR`: an unknown kind, a label that is not key=value, an id that is no event id; or `INVALID_QUERY`", body = ErrorBody),
    )
)]
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<EventParams>,
) -> Result<impl IntoResponse, ApiError> {
    let filter = Filter::parse(&params)?;
    event_stream(state, &headers, &params, filter, false)
}

/// One pipeline's events as server-sent events.
#[utoipa::path(
    get, path = "/api/v1/pipelines/{id}/events", tag = "pipelines", operation_id = "events",
    params(
        ("id" = String, Path, format = Uuid, description = "Pipeline id"),
        PipelineEventParams,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume right after this event"),
    ),
    responses(
        (status = 200, description = "Server-sent events as `/api/v1/events` frames them, the pipeline's own and its steps' \
            transitions (`pipeline.*`), from its creation; the stream ends after `pipeline.finished` (a retry's events: \
            reconnect with `Last-Event-ID`) or, with `follow=false`, once the stored ones are sent",
            content_type = "text/event-stream", body = EventFrame),
        (status = 400, description = "`VALIDATION_ERROR`: an id that is no event id; or `INVALID_QUERY`", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: no such pipeline", body = ErrorBody),
    )
)]
pub async fn pipeline_stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<PipelineEventParams>,
) -> Result<impl IntoResponse, ApiError> {
    let pipeline = super::pipelines::parse_id(&id)?;
    if state.pipelines.get(pipeline).await?.is_none() {
        return Err(super::pipelines::not_found(&id));
    }
    let params = EventParams {
        kind: None,
        label: None,
        pipeline: Some(id),
        after: query.after,
        follow: query.follow,
    };
    let filter = Filter::parse(&params)?;
    event_stream(state, &headers, &params, filter, true)
}

/// Query of a pipeline's events.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PipelineEventParams {
    /// Start right after this event id (`Last-Event-ID` wins).
    after: Option<String>,
    /// `false`: end once the events stored now are sent.
    follow: Option<bool>,
}

/// The stream of the events `filter` lets through; with `until_finished`
/// it ends after a `pipeline.finished`.
fn event_stream(
    state: AppState,
    headers: &HeaderMap,
    params: &EventParams,
    filter: Filter,
    until_finished: bool,
) -> Result<impl IntoResponse + use<>, ApiError> {
    let resume = match headers.get("last-event-id") {
        Some(value) => Some(parse_after(
            value.to_str().unwrap_or_default(),
            "Last-Event-ID",
        )?),
        None => params
            .after
            .as_deref()
            .map(|raw| parse_after(raw, "after"))
            .transpose()?,
    };
    let follow = params.follow.unwrap_or(true);
    let jobs = state.jobs;
    // Subscribed before the first read: a change committed between that
    // read and the wait still rings.
    let mut bell = jobs.bus().subscribe();
    let body = async_stream::stream! {
        let mut cursor = resume;
        let mut idle = tokio::time::Instant::now();
        loop {
            match jobs.store().events_after(cursor, PAGE).await {
                Ok(page) => {
                    let full = page.len() == PAGE;
                    let mut chunk = Vec::new();
                    let mut finished = false;
                    for stored in &page {
                        cursor = Some(stored.id);
                        if filter.matches(&stored.event) {
                            write_event(&mut chunk, stored);
                            if until_finished && stored.event.kind == EventKind::PipelineFinished {
                                finished = true;
                                break;
                            }
                        }
                    }
                    if !chunk.is_empty() {
                        idle = tokio::time::Instant::now();
                        yield Ok::<_, Infallible>(Bytes::from(chunk));
                    }
                    if finished {
                        return;
                    }
                    if full {
                        continue;
                    }
                    if !follow {
                        return;
                    }
                }
                Err(err) => {
                    // The client keeps its place: it reconnects with the
                    // last id it got.
                    let mut chunk = b"event: error\ndata: ".to_vec();
                    let _ = serde_json::to_writer(
                        &mut chunk,
                        &serde_json::json!({ "error": "STORE_UNAVAILABLE", "message": err.to_string() }),
                    );
                    chunk.extend_from_slice(b"\n\n");
                    yield Ok(Bytes::from(chunk));
                    return;
                }
            }
            if idle.elapsed() >= KEEPALIVE {
                idle = tokio::time::Instant::now();
                yield Ok(Bytes::from_static(b":\n\n"));
            }
            // A change (or a lag, or the tick) means: read again. Log
            // lines are not changes of this log.
            let changed = async {
                loop {
                    match bell.recv().await {
                        Ok(event) if matches!(*event, Event::LogAppended(..)) => {}
                        _ => break,
                    }
                }
            };
            let _ = tokio::time::timeout(POLL, changed).await;
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    ))
}
