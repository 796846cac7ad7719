//! One trace span per job attempt: `attempt` (job id, attempt, worker,
//! time queued) opens when the placement is stored and closes with the
//! attempt's result, with an event for each step between (`assigned`,
//! `started`, `result`). A job's submit is an event of its own carrying
//! the job id. Everything is at DEBUG level under this module's target
//! (`RUST_LOG=hodei::jobs::traces=debug`), so a host at the default
//! level pays nothing for it; with `--log-format json` each line carries
//! its span, and an OpenTelemetry layer would see one trace per attempt.
//!
//! Spans are kept only while an attempt is on a worker (bounded by the
//! cluster's slots), never for pending jobs, so a deep backlog costs no
//! memory here.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tracing::{Level, Span};

use crate::domain::{Job, JobId, WorkerId};

/// The open attempt spans.
#[derive(Debug, Default)]
pub struct JobTraces {
    open: Mutex<HashMap<JobId, (u32, Span)>>,
}

impl JobTraces {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, (u32, Span)>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether anyone listens: spans cost nothing when nobody does.
    fn enabled() -> bool {
        tracing::enabled!(Level::DEBUG)
    }

    /// A job was accepted.
    pub fn submitted(&self, job: &Job) {
        tracing::debug!(job_id = %job.id, name = %job.spec.name, "job submitted");
    }

    /// The placement of `attempt` on `worker` is stored, `queued` after the
    /// job became eligible: the attempt's span opens.
    pub fn scheduled(&self, id: JobId, attempt: u32, worker: &WorkerId, queued: Duration) {
        if !Self::enabled() {
            return;
        }
        let span = tracing::debug_span!(
            "attempt",
            job_id = %id,
            attempt,
            worker = %worker,
            queued_ms = queued.as_secs_f64() * 1e3,
        );
        span.in_scope(|| tracing::debug!("scheduled"));
        self.lock().insert(id, (attempt, span));
    }

    /// A step of an open attempt (`assigned`, `started`).
    pub fn step(&self, id: JobId, attempt: u32, what: &'static str) {
        if !Self::enabled() {
            return;
        }
        if let Some((_, span)) = self.lock().get(&id).filter(|(a, _)| *a == attempt) {
            span.in_scope(|| tracing::debug!(step = what, "{what}"));
        }
    }

    /// The attempt ended with `job` as stored: its span closes.
    pub fn ended(&self, job: &Job, attempt: u32) {
        if !Self::enabled() {
            return;
        }
        let open = {
            let mut open = self.lock();
            match open.get(&job.id) {
                Some((a, _)) if *a == attempt => open.remove(&job.id),
                _ => None,
            }
        };
        if let Some((_, span)) = open {
            span.in_scope(|| {
                tracing::debug!(
                    state = %job.state,
                    exit_code = job.exit_code,
                    reason = job.reason.as_deref(),
                    "result"
                );
            });
        }
    }
}
