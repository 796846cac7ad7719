//! The engine: moves pipelines forward, on any host, any number of times.
//!
//! [`Pipelines::advance`] reads a pipeline and the states of its steps'
//! jobs, decides on a copy (nothing to write: nothing written), then
//! applies the same decision to the record inside its transaction with
//! the events it makes, and inserts the jobs of the steps that became
//! ready. It is idempotent: running it twice, or on two hosts at once,
//! creates each step's job once (see the parent module).
//!
//! [`Pipelines::run`] calls it when a step's job changes state (the bus),
//! when a pipeline was created, cancelled or retried here, and for every
//! unfinished pipeline at start and on every sweep (`SWEEP`, or
//! `SHARED_SWEEP` when other hosts may write the store): after a restart,
//! after bus lag, and for pipelines other hosts started.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use super::{ACTIVE, ORPHAN_MARKER_AGE, PIPELINES, Pipelines, decode, encode};
use crate::bus::Event;
use crate::domain::{Advance, EventRecord, Job, JobId, JobState, Pipeline, PipelineId, Timestamp};
use crate::store::{RecordUpdate, StoreError};

/// How often a host on its own store sweeps the unfinished pipelines.
const SWEEP: Duration = Duration::from_secs(2);
/// How often a host sharing its store sweeps them.
const SHARED_SWEEP: Duration = Duration::from_millis(500);

impl Pipelines {
    /// The engine's loop; runs for the life of the host.
    pub async fn run(self: Arc<Self>) {
        let mut bell = self.jobs.bus().subscribe();
        let period = if self.jobs.store().is_shared() {
            SHARED_SWEEP
        } else {
            SWEEP
        };
        let mut sweep = tokio::time::interval(period);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut dirty: HashSet<PipelineId> = HashSet::new();
        loop {
            tokio::select! {
                event = bell.recv() => match event {
                    Ok(event) => self.note(&event, &mut dirty),
                    Err(RecvError::Lagged(_)) => self.sweep_into(&mut dirty).await,
                    Err(RecvError::Closed) => return,
                },
                _ = sweep.tick() => self.sweep_into(&mut dirty).await,
                () = self.wake.notified() => {}
            }
            // Whatever else already rang joins this pass.
            while let Ok(event) = bell.try_recv() {
                self.note(&event, &mut dirty);
            }
            let passes = dirty.drain().map(|id| {
                let engine = Arc::clone(&self);
                async move {
                    if let Err(err) = engine.advance(id).await {
                        tracing::warn!(pipeline = %id, %err, "pipeline not advanced; retried at the next sweep");
                    }
                }
            });
            futures::future::join_all(passes).await;
        }
    }

    fn note(&self, event: &Event, dirty: &mut HashSet<PipelineId>) {
        if let Event::JobStateChanged(job, _) = event
            && let Some(pipeline) = self.owners().get(job)
        {
            dirty.insert(*pipeline);
        }
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, PipelineId>> {
        self.owners.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn sweep_into(&self, dirty: &mut HashSet<PipelineId>) {
        match self.records.list(ACTIVE).await {
            Ok(markers) => {
                for (key, doc) in markers {
                    match PipelineId::parse(&key) {
                        Ok(id) => {
                            dirty.insert(id);
                            self.forget_orphan(id, &doc).await;
                        }
                        Err(_) => tracing::warn!(%key, "malformed pipeline marker left as is"),
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "cannot list unfinished pipelines"),
        }
    }

    /// Removes a marker whose pipeline was never written (its creation
    /// failed after the marker), once it is old enough not to be racing
    /// that creation.
    async fn forget_orphan(&self, id: PipelineId, marker: &[u8]) {
        let since = serde_json::from_slice::<serde_json::Value>(marker)
            .ok()
            .and_then(|m| m["since"].as_i64())
            .unwrap_or(0);
        let old = Timestamp::now().0.saturating_sub(since)
            > i64::try_from(ORPHAN_MARKER_AGE.as_micros()).unwrap_or(i64::MAX);
        if old && matches!(self.get(id).await, Ok(None)) {
            self.unmark(id, Timestamp(i64::MAX)).await;
        }
    }

    /// Removes the pipeline's marker if it was set before `ended`: a
    /// retry marks its pipeline again before it runs, and that newer
    /// marker must survive an engine that read the pipeline as ended.
    async fn unmark(&self, id: PipelineId, ended: Timestamp) {
        let key = id.to_string();
        if let Err(err) = self
            .records
            .update(
                ACTIVE,
                &key,
                Box::new(move |marker| {
                    let since = marker
                        .and_then(|m| serde_json::from_slice::<serde_json::Value>(m).ok())
                        .and_then(|m| m["since"].as_i64())
                        .unwrap_or(i64::MIN);
                    if since <= ended.0 {
                        RecordUpdate::Delete
                    } else {
                        RecordUpdate::Keep
                    }
                }),
            )
            .await
        {
            tracing::warn!(pipeline = %id, %err, "cannot clear the pipeline's marker");
        }
    }

    /// Moves one pipeline as far as it can go now; answers it as stored
    /// afterwards (`None`: no such pipeline).
    pub async fn advance(&self, id: PipelineId) -> Result<Option<Pipeline>, StoreError> {
        let Some(pipeline) = self.get(id).await? else {
            return Ok(None);
        };
        if pipeline.state.is_terminal() {
            self.settled(&pipeline).await;
            return Ok(Some(pipeline));
        }
        let observed = self.observe(&pipeline).await?;
        let mut trial = pipeline.clone();
        if trial.advance(&observed, Timestamp::now()).moves.is_empty() {
            if trial.state.is_terminal() {
                self.settled(&trial).await;
            }
            return Ok(Some(pipeline));
        }
        let decided: Arc<Mutex<Option<(Pipeline, Advance)>>> = Arc::default();
        let out = Arc::clone(&decided);
        self.records
            .update_logged(
                PIPELINES,
                &id.to_string(),
                Box::new(move |doc| {
                    let Some(Ok(mut pipeline)) = doc.map(decode) else {
                        return (RecordUpdate::Keep, Vec::new());
                    };
                    let advance = pipeline.advance(&observed, Timestamp::now());
                    if advance.moves.is_empty() {
                        return (RecordUpdate::Keep, Vec::new());
                    }
                    let Ok(doc) = encode(&pipeline) else {
                        return (RecordUpdate::Keep, Vec::new());
                    };
                    let events = advance
                        .moves
                        .iter()
                        .map(|m| {
                            let job = m.step.as_ref().and_then(|name| {
                                pipeline.steps.iter().find(|s| &s.name == name)?.job_id
                            });
                            EventRecord::of_pipeline(pipeline.id, m, job)
                        })
                        .collect();
                    *out.lock().unwrap_or_else(|e| e.into_inner()) = Some((pipeline, advance));
                    (RecordUpdate::Put(doc), events)
                }),
            )
            .await?;
        let taken = decided.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some((pipeline, advance)) = taken else {
            return self.get(id).await;
        };
        for (index, job) in advance.create {
            self.create_step_job(&pipeline, index, job).await?;
        }
        self.jobs.bus().publish(Event::PipelineChanged(id));
        if pipeline.state.is_terminal() {
            self.settled(&pipeline).await;
        }
        Ok(Some(pipeline))
    }

    /// Reads the state of every step's job that has not settled; inserts
    /// those the record names but the store lacks (a host died between
    /// deciding the job and inserting it); after a cancel, cancels the
    /// ones still running.
    async fn observe(&self, pipeline: &Pipeline) -> Result<HashMap<JobId, JobState>, StoreError> {
        let mut observed = HashMap::new();
        for (index, step) in pipeline.steps.iter().enumerate() {
            let Some(job_id) = step.job_id.filter(|_| !step.state.is_settled()) else {
                continue;
            };
            self.owners().insert(job_id, pipeline.id);
            match self.jobs.store().get(job_id).await? {
                Some(job) => {
                    if pipeline.cancel_requested
                        && !job.state.is_terminal()
                        && !job.cancel_requested
                    {
                        self.cancel_job(job_id).await;
                    }
                    observed.insert(job_id, job.state);
                }
                None => self.create_step_job(pipeline, index, job_id).await?,
            }
        }
        Ok(observed)
    }

    /// Inserts the job of step `index` under the id the record gave it,
    /// unless it is stored already.
    async fn create_step_job(
        &self,
        pipeline: &Pipeline,
        index: usize,
        id: JobId,
    ) -> Result<(), StoreError> {
        let step = &pipeline.steps[index];
        let mut spec = step.spec.clone();
        // Its needs have ended by now: each input names the job whose
        // output it is.
        for input in &mut spec.artifacts.inputs {
            input.from_job = pipeline
                .steps
                .iter()
                .find(|s| s.name == input.step)
                .and_then(|s| s.job_id);
        }
        let mut job = Job::new(spec, Timestamp::now());
        job.id = id;
        self.owners().insert(id, pipeline.id);
        let created = self.jobs.submit_once(job).await?;
        tracing::debug!(pipeline = %pipeline.id, step = %step.name, job = %id, created, "step job");
        Ok(())
    }

    /// An ended pipeline: its marker goes, and so do its jobs' owners.
    async fn settled(&self, pipeline: &Pipeline) {
        self.owners().retain(|_, p| *p != pipeline.id);
        let ended = pipeline.finished_at.unwrap_or(Timestamp(i64::MAX));
        self.unmark(pipeline.id, ended).await;
    }
}
