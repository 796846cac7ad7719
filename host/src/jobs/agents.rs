//! The use cases an agent's session drives: registration and its end,
//! a job's start, log lines, results, and attempts lost with their agent.
//! The session (`agents::session`) parses and checks messages; what they
//! change happens here, like every other change to a job.

use super::{JobService, ResultTaken};
use crate::agents::{AgentLink, CANCELLED_BY_USER};
use crate::bus::Event;
use crate::domain::{
    EventKind, EventRecord, JobId, JobState, LogRecord, Outcome, Resources, Timestamp, WorkerId,
    WorkerInfo, WorkerMetrics,
};
use crate::scheduler::cluster::{Assignment, Reconciled};
use crate::store::{Appended, StoreError};

impl JobService {
    /// The agent started the process.
    pub async fn started(&self, id: JobId, attempt: u32) {
        let now = Timestamp::now();
        match self
            .store
            .update_deferred(id, Box::new(move |job| job.start(attempt, now)))
            .await
        {
            Ok(job) => {
                self.traces.step(id, attempt, "started");
                self.publish_state(&job);
            }
            Err(err) => tracing::debug!(job = %id, attempt, %err, "start ignored"),
        }
    }

    /// A registered agent's session begins: the cluster takes it (replacing
    /// an older session of the same agent), jobs memory thought it held but
    /// it no longer runs lose their attempt, and the scheduler is woken.
    /// `confirmed` and `abandoned` come from [`JobService::reconcile`]; the
    /// agent has already been told what to abandon.
    pub async fn agent_connected(
        &self,
        info: WorkerInfo,
        link: AgentLink,
        confirmed: &[(JobId, Assignment)],
        abandoned: &[(JobId, u32)],
        draining: bool,
    ) -> Reconciled {
        let worker = info.id.clone();
        let info_labels = info.labels.clone();
        let reconciled = self
            .cluster()
            .connect(info, link.clone(), confirmed, abandoned);
        self.record_worker_event(EventKind::WorkerConnected, &worker, info_labels);
        if draining {
            self.record_worker_event(
                EventKind::WorkerDraining,
                &worker,
                self.cluster().labels_of(&worker),
            );
            self.cluster().heartbeat(
                &worker,
                WorkerMetrics {
                    draining: true,
                    ..WorkerMetrics::default()
                },
            );
        }
        for (id, attempt) in &reconciled.lost {
            self.attempt_lost(*id, *attempt, "agent no longer runs it")
                .await;
        }
        for (id, attempt) in &reconciled.cancels {
            let _ = link.cancel(*id, *attempt, CANCELLED_BY_USER).await;
        }
        self.bus.publish(Event::WorkerConnected(worker));
        self.scheduler.wake();
        reconciled
    }

    /// An agent's session ended. Its worker stays, disconnected, within the
    /// lease; false when a newer session had replaced this one.
    pub fn agent_disconnected(&self, worker: &WorkerId, session: u64) -> bool {
        let gone = self.cluster().disconnect(worker, session);
        if gone {
            let labels = self.cluster().labels_of(worker);
            self.record_worker_event(EventKind::WorkerDisconnected, worker, labels);
            self.bus.publish(Event::WorkerDisconnected(worker.clone()));
        }
        gone
    }

    /// The agent's heartbeat: its figures, and a `worker.draining` event
    /// when it began draining with this one.
    pub fn heartbeat(&self, worker: &WorkerId, metrics: WorkerMetrics) {
        if self.cluster().heartbeat(worker, metrics) {
            let labels = self.cluster().labels_of(worker);
            self.record_worker_event(EventKind::WorkerDraining, worker, labels);
        }
    }

    /// Appends a worker event to the store's event log, in the background
    /// (callers are on an agent's message path), then rings the bus.
    pub(crate) fn record_worker_event(
        &self,
        kind: EventKind,
        worker: &WorkerId,
        labels: std::collections::BTreeMap<String, String>,
    ) {
        let event = EventRecord::of_worker(kind, &worker.0, labels);
        let store = std::sync::Arc::clone(&self.store);
        let bus = self.bus.clone();
        let worker = worker.clone();
        tokio::spawn(async move {
            match store.append_event(event).await {
                Ok(()) => bus.publish(Event::WorkerEvent(worker)),
                Err(err) => tracing::warn!(%worker, %err, "cannot record worker event"),
            }
        });
    }

    /// Stores log lines within the job's log `quota` (see
    /// [`JobStore::append_logs`]).
    pub async fn append_logs(
        &self,
        id: JobId,
        attempt: u32,
        lines: Vec<LogRecord>,
        quota: u64,
    ) -> Result<Appended, StoreError> {
        let appended = self.store.append_logs(id, attempt, lines, quota).await?;
        self.bus.publish(Event::LogAppended(id, appended.head));
        Ok(appended)
    }

    /// The agent reported that an attempt ended, its result not stored
    /// yet: the process is gone, so its slot takes the next job now, and
    /// the next placement is stored in the same commit as this result
    /// rather than in the one after it. [`JobService::finished`] does it
    /// too; calling it first is what sessions do.
    pub fn result_received(&self, worker: &WorkerId, id: JobId, attempt: u32) {
        if self.cluster().exited(worker, id, attempt) {
            self.scheduler.wake();
        }
    }

    /// How the agent says an attempt ended; `delivered` are the outputs
    /// the host confirmed to it (an exit 0 without all of the job's
    /// outputs fails, see [`crate::domain::Job::check_outputs`]).
    pub async fn finished(
        &self,
        worker: &WorkerId,
        id: JobId,
        attempt: u32,
        outcome: Outcome,
        error: Option<String>,
        delivered: Vec<String>,
    ) -> ResultTaken {
        let now = Timestamp::now();
        self.result_received(worker, id, attempt);
        let result = self
            .store
            .update(
                id,
                Box::new(move |job| match job.check_outputs(outcome, &delivered) {
                    Some(missing) => {
                        job.finish(attempt, Outcome::OutputsFailed, Some(&missing), now)
                    }
                    None => job.finish(attempt, outcome, error.as_deref(), now),
                }),
            )
            .await;
        let taken = match result {
            Ok(job) => {
                self.traces.ended(&job, attempt);
                self.publish_state(&job);
                ResultTaken::Done
            }
            // Already recorded (a resend after a reconnect), or fenced off.
            Err(err @ (StoreError::Domain(_) | StoreError::NotFound(_))) => {
                tracing::info!(job = %id, attempt, %worker, %err, "result not stored: the attempt is settled or not this worker's");
                ResultTaken::Done
            }
            Err(err) => {
                tracing::error!(job = %id, %err, "cannot store result");
                return ResultTaken::Retry;
            }
        };
        if self.cluster().release(worker, id, attempt) {
            self.scheduler.wake();
        }
        taken
    }

    /// An attempt's worker is gone: requeue or fail the job.
    pub async fn attempt_lost(&self, id: JobId, attempt: u32, why: &str) {
        let now = Timestamp::now();
        let why_owned = why.to_owned();
        let result = self
            .store
            .update(
                id,
                Box::new(move |job| job.lose_attempt(attempt, &why_owned, now).map(|_| ())),
            )
            .await;
        match result {
            Ok(job) => {
                tracing::warn!(job = %id, attempt, why, state = %job.state, "attempt lost");
                self.traces.ended(&job, attempt);
                if job.state == JobState::Pending {
                    self.scheduler.enqueue(&job);
                }
                self.publish_state(&job);
            }
            Err(err) => tracing::debug!(job = %id, attempt, %err, "lost attempt already settled"),
        }
        self.drop_attempt(id, attempt, why).await;
    }

    /// Frees what a settled attempt held here and, should its agent still
    /// be connected, tells it to stop (fencing at the agent, not only in
    /// the store).
    pub(super) async fn drop_attempt(&self, id: JobId, attempt: u32, why: &str) {
        if let Some(link) = self.cluster().release_anywhere(id, attempt) {
            if let Some(link) = link {
                let _ = link.cancel(id, attempt, why).await;
            }
            self.scheduler.wake();
        }
    }

    /// Which of the jobs a registering agent reports the store says it
    /// holds (with what they reserve), and which it must abandon. The store
    /// decides, so an agent that moved from another host keeps its jobs and
    /// one whose attempt was lost meanwhile drops it. A kept job the store
    /// still has `Scheduled` is recorded as started now.
    pub async fn reconcile(
        &self,
        worker: &WorkerId,
        running: &[(JobId, u32)],
    ) -> (Vec<(JobId, Assignment)>, Vec<(JobId, u32)>) {
        let (mut keep, mut abandon, mut unstarted) = (Vec::new(), Vec::new(), Vec::new());
        for &(id, attempt) in running {
            match self.store.get(id).await {
                Ok(Some(job))
                    if job.attempt == attempt
                        && job.worker_id.as_ref() == Some(worker)
                        && matches!(job.state, JobState::Scheduled | JobState::Running) =>
                {
                    if job.state == JobState::Scheduled {
                        // The agent runs it: its start was not heard, or
                        // not yet stored (it is taken in the background)
                        // or durable (see `JobStore::update_deferred`) when
                        // this host stopped; the agent does not resend it
                        // once a log line of the job was acknowledged.
                        unstarted.push((id, attempt));
                    }
                    keep.push((
                        id,
                        Assignment {
                            attempt,
                            resources: job.spec.resources,
                            queue: self.scheduler.fairness().resolve(&job.spec.queue),
                            cancel_requested: job.cancel_requested,
                            placed: true,
                            exited: false,
                        },
                    ));
                }
                Ok(_) => abandon.push((id, attempt)),
                Err(err) => {
                    // Never kill work because the store hiccupped: keep it;
                    // its lease settles it later.
                    tracing::warn!(job = %id, %err, "cannot check a reattached job; keeping it");
                    keep.push((
                        id,
                        Assignment {
                            attempt,
                            resources: Resources::default(),
                            queue: Default::default(),
                            cancel_requested: false,
                            placed: true,
                            exited: false,
                        },
                    ));
                }
            }
        }
        for (id, attempt) in unstarted {
            tracing::info!(job = %id, attempt, worker = %worker, "the agent runs a job the store has scheduled: recorded its start at reattach");
            self.started(id, attempt).await;
        }
        (keep, abandon)
    }
}
