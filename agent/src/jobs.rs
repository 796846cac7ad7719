//! The jobs this agent runs: starting them on `AssignJob`, stopping them on
//! `CancelJob`, abandon or shutdown, refusing new ones while draining, and
//! wiring each job's events into the outbox.
//!
//! A job id is *known* while its job runs here or the outbox still holds
//! something of it; an `AssignJob` for a known id is ignored, which makes a
//! repeated assignment (say, after a reconnect) harmless.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hodei_proto::v1::{AssignJob, JobResult, Outcome, Stream};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use crate::executor::{self, ExecConfig, JobSink, Stop};
use crate::outbox::{SharedOutbox, unix_micros};

/// The running jobs, keyed by job id.
#[derive(Debug)]
pub struct JobTable {
    /// A std Mutex: no critical section awaits.
    running: Mutex<HashMap<String, RunningJob>>,
    /// Wakes shutdown when the last job ended.
    idle: Notify,
    outbox: Arc<SharedOutbox>,
    exec: ExecConfig,
    slots: usize,
    /// Cleared at shutdown: new assignments are refused from then on.
    accepting: AtomicBool,
    /// Set on drain; tells the heartbeat to report it at once.
    draining: watch::Sender<bool>,
}

/// A running job's process tree, for [`crate::metrics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRoot {
    /// The job.
    pub job_id: String,
    /// Its attempt.
    pub attempt: u32,
    /// Its process (and process group) id.
    pub pid: u32,
}

#[derive(Debug)]
struct RunningJob {
    attempt: u32,
    /// Process group id, once the process runs.
    pgid: Option<Pid>,
    stop: watch::Sender<Option<Stop>>,
}

impl JobTable {
    /// An empty table whose jobs report into `outbox`.
    pub fn new(outbox: Arc<SharedOutbox>, exec: ExecConfig, slots: usize) -> Self {
        Self {
            running: Mutex::default(),
            idle: Notify::new(),
            outbox,
            exec,
            slots,
            accepting: AtomicBool::new(true),
            draining: watch::Sender::new(false),
        }
    }

    /// Drain: refuse new jobs from now on, let the running ones finish.
    pub fn drain(&self) {
        self.accepting.store(false, Ordering::SeqCst);
        self.draining.send_replace(true);
    }

    /// Whether the agent drains.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Whether the agent drains; the receiver sees the change.
    pub fn draining(&self) -> watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// The running jobs whose process is started.
    pub fn roots(&self) -> Vec<JobRoot> {
        self.lock()
            .iter()
            .filter_map(|(job_id, job)| {
                Some(JobRoot {
                    job_id: job_id.clone(),
                    attempt: job.attempt,
                    pid: u32::try_from(job.pgid?.as_raw()).ok()?,
                })
            })
            .collect()
    }

    /// Runs `job` in the background unless its id is already known.
    pub fn start(self: &Arc<Self>, job: AssignJob) {
        let (job_id, attempt) = (job.job_id.clone(), job.attempt);
        let admitted = !self.lock().contains_key(&job_id)
            && self
                .outbox
                .update(|outbox| outbox.admit(&job_id, attempt, job.first_sequence));
        if !admitted {
            debug!(%job_id, attempt, "job already known, assignment ignored");
            return;
        }
        if !self.accepting.load(Ordering::SeqCst) {
            warn!(%job_id, attempt, "draining or shutting down, job refused");
            self.outbox.update(|outbox| {
                outbox.finish(JobResult {
                    job_id,
                    attempt,
                    exit_code: -1,
                    outcome: Outcome::FailedToStart.into(),
                    error: "the agent is draining or shutting down".into(),
                    ..Default::default()
                });
            });
            return;
        }
        let (stop, stop_rx) = watch::channel(None);
        let busy = {
            let mut running = self.lock();
            running.insert(
                job_id.clone(),
                RunningJob {
                    attempt,
                    pgid: None,
                    stop,
                },
            );
            running.len()
        };
        if busy > self.slots {
            warn!(%job_id, busy, slots = self.slots, "host assigned more jobs than slots; running it anyway");
        }
        info!(%job_id, attempt, "job assigned");
        let table = Arc::clone(self);
        tokio::spawn(async move {
            let sink = Arc::new(OutboxSink {
                table: Arc::clone(&table),
                job_id: job_id.clone(),
                attempt,
            });
            let result = executor::run_job(&table.exec, &job, sink, stop_rx).await;
            info!(
                %job_id,
                attempt,
                exit_code = result.exit_code,
                signal = result.signal,
                outcome = ?result.outcome(),
                duration_ms = result.duration_ms,
                error = %result.error,
                "job ended"
            );
            // Out of the table before the result can leave: the host frees
            // the slot as soon as it hears the result and may place the
            // next job here at once. Both under the table's lock (taken
            // before the outbox's, as in `start`), so that `wait_idle`
            // never sees the table empty before the result is queued.
            let mut running = table.lock();
            running.remove(&job_id);
            table.outbox.update(|outbox| outbox.finish(result));
            if running.is_empty() {
                table.idle.notify_waiters();
            }
        });
    }

    /// Cancels the job if it runs with this attempt (SIGTERM, then SIGKILL
    /// after the grace period).
    pub fn cancel(&self, job_id: &str, attempt: u32, reason: &str) {
        match self.lock().get(job_id) {
            Some(job) if job.attempt == attempt => {
                info!(%job_id, attempt, %reason, "cancelling job");
                request(job, Stop::Cancel);
            }
            _ => debug!(%job_id, attempt, "cancel for a job not running here ignored"),
        }
    }

    /// The host no longer wants this job: end it if it runs and drop
    /// everything the outbox holds of it, its result included.
    pub fn abandon(&self, job_id: &str, attempt: u32) {
        let forgotten = self.outbox.update(|outbox| outbox.forget(job_id, attempt));
        let stopped = match self.lock().get(job_id) {
            Some(job) if job.attempt == attempt => {
                request(job, Stop::Cancel);
                true
            }
            _ => false,
        };
        info!(%job_id, attempt, forgotten, stopped, "host abandoned job");
    }

    /// Refuses new jobs from now on and stops every running one.
    pub fn stop_all(&self, how: Stop) {
        self.accepting.store(false, Ordering::SeqCst);
        for job in self.lock().values() {
            request(job, how);
            if let (Stop::Kill, Some(pgid)) = (how, job.pgid) {
                // Directly as well: the agent may exit before the job's
                // task runs again.
                let _ = killpg(pgid, Signal::SIGKILL);
            }
        }
    }

    /// Returns once no job runs.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().is_empty() {
                return;
            }
            notified.await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, RunningJob>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Asks a job to stop; a kill is never downgraded to a cancel.
fn request(job: &RunningJob, how: Stop) {
    job.stop.send_if_modified(|current| {
        let upgrade = *current != Some(Stop::Kill) && *current != Some(how);
        if upgrade {
            *current = Some(how);
        }
        upgrade
    });
}

/// Routes one job's events into the outbox.
struct OutboxSink {
    table: Arc<JobTable>,
    job_id: String,
    attempt: u32,
}

impl JobSink for OutboxSink {
    fn started(&self, pid: u32) {
        if let Some(job) = self.table.lock().get_mut(&self.job_id) {
            job.pgid = i32::try_from(pid).ok().map(Pid::from_raw);
        }
        self.table
            .outbox
            .update(|outbox| outbox.started(&self.job_id, self.attempt, pid));
        info!(job_id = %self.job_id, attempt = self.attempt, pid, "job started");
    }

    fn output(&self, stream: Stream, lines: Vec<Vec<u8>>) {
        let now = unix_micros();
        self.table.outbox.update(|outbox| {
            for data in lines {
                outbox.push_line(&self.job_id, self.attempt, stream, data, now);
            }
        });
    }
}
