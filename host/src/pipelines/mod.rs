//! The pipeline use cases: create, read, cancel, retry, and the engine
//! that moves pipelines forward (`engine`).
//!
//! A pipeline is one record in the store's record collection `pipeline`
//! (key: its id), holding its steps, each step's state and job id: that
//! record is the pipeline's progress, so a host killed at any moment
//! resumes from it. Every change of the record goes through one
//! transaction ([`RecordStore::update_logged`]) together with the events
//! that describe it, so pipeline and step transitions are in the event log
//! exactly when they are in the record. Unfinished pipelines also have a
//! marker in `pipeline.active`, written before the pipeline and removed
//! after it ends, which is what a host reads to find the pipelines it must
//! advance (after a restart, or those other hosts sharing PostgreSQL
//! started).
//!
//! Exactly-once steps: the engine decides a step's job id inside the
//! record's transaction (a step with a job id never gets another in the
//! same run), and only then inserts the job with
//! [`crate::store::JobStore::insert_absent`]. A host that dies between the
//! two finds the job missing on its next pass and inserts it; two hosts
//! inserting the same job store it once.
//!
//! Artifacts: a step's `outputs` and `inputs` travel in its job's spec;
//! when the engine creates a step's job it names, in each input, the job
//! of the need that produced it (ended by then). The bytes are kept by
//! [`crate::artifacts`], reached here through [`Pipelines::artifacts`].

mod engine;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::artifacts::Artifacts;
use crate::bus::Event;
use crate::domain::{
    EventRecord, JobId, Pipeline, PipelineError, PipelineId, PipelineState, Timestamp,
};
use crate::jobs::JobService;
use crate::store::{RecordStore, RecordUpdate, StoreError};

/// The record collection of pipelines.
const PIPELINES: &str = "pipeline";
/// Markers of the pipelines not ended yet.
const ACTIVE: &str = "pipeline.active";
/// A marker whose pipeline record is missing is removed only after this
/// long: its pipeline may be being written right now.
const ORPHAN_MARKER_AGE: Duration = Duration::from_secs(60);

/// What can go wrong with a pipeline call.
#[derive(Debug, thiserror::Error)]
pub enum PipelineFailure {
    /// No pipeline with this id.
    #[error("pipeline {0} not found")]
    NotFound(String),
    /// The pipeline's state does not allow the move.
    #[error(transparent)]
    Refused(#[from] PipelineError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The pipeline use cases over the job service and the record store.
#[derive(Debug)]
pub struct Pipelines {
    jobs: Arc<JobService>,
    records: Arc<dyn RecordStore>,
    /// Which pipeline each step job this host created or saw belongs to:
    /// the end of such a job wakes its pipeline at once, rather than at
    /// the next sweep.
    owners: Mutex<HashMap<JobId, PipelineId>>,
    /// Rung when a pipeline was created, cancelled or retried here.
    wake: Notify,
    /// The steps' outputs.
    artifacts: Arc<Artifacts>,
}

fn decode(doc: &[u8]) -> Result<Pipeline, StoreError> {
    serde_json::from_slice(doc).map_err(|e| StoreError::Backend(format!("pipeline record: {e}")))
}

fn encode(pipeline: &Pipeline) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(pipeline).map_err(StoreError::backend)
}

impl Pipelines {
    /// Wires the use cases to the jobs' store and the steps' artifacts.
    pub fn new(jobs: Arc<JobService>, artifacts: Arc<Artifacts>) -> Self {
        let records = jobs.store().records();
        Self {
            jobs,
            records,
            owners: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            artifacts,
        }
    }

    /// Where the steps' outputs are kept.
    pub fn artifacts(&self) -> &Arc<Artifacts> {
        &self.artifacts
    }

    /// Stores a validated pipeline (its steps' secrets in clear; they are
    /// sealed here), then creates the jobs of the steps that need nothing.
    pub async fn create(&self, mut pipeline: Pipeline) -> Result<Pipeline, PipelineFailure> {
        for step in &mut pipeline.steps {
            step.spec.secrets = self
                .jobs
                .sealer()
                .seal_all(std::mem::take(&mut step.spec.secrets));
        }
        let id = pipeline.id;
        self.mark_active(id).await?;
        let doc = encode(&pipeline)?;
        let created = EventRecord::pipeline_created(id, pipeline.state.as_str());
        self.records
            .update_logged(
                PIPELINES,
                &id.to_string(),
                Box::new(move |_| (RecordUpdate::Put(doc), vec![created])),
            )
            .await?;
        self.jobs.bus().publish(Event::PipelineChanged(id));
        let advanced = self.advance(id).await?;
        self.wake.notify_one();
        Ok(advanced.unwrap_or(pipeline))
    }

    async fn mark_active(&self, id: PipelineId) -> Result<(), StoreError> {
        let marker = serde_json::json!({ "since": Timestamp::now().0 });
        self.records
            .put(ACTIVE, &id.to_string(), marker.to_string().into_bytes())
            .await
    }

    /// One pipeline as stored.
    pub async fn get(&self, id: PipelineId) -> Result<Option<Pipeline>, StoreError> {
        self.records
            .get(PIPELINES, &id.to_string())
            .await?
            .map(|doc| decode(&doc))
            .transpose()
    }

    /// Pipelines newest first, optionally in one state, at most `limit`.
    pub async fn list(
        &self,
        state: Option<PipelineState>,
        limit: usize,
    ) -> Result<Vec<Pipeline>, StoreError> {
        let mut all = Vec::new();
        for (_, doc) in self.records.list(PIPELINES).await? {
            let pipeline = decode(&doc)?;
            if state.is_none_or(|s| s == pipeline.state) {
                all.push(pipeline);
            }
        }
        all.sort_by_key(|p| std::cmp::Reverse(p.id));
        all.truncate(limit);
        Ok(all)
    }

    /// A user's cancel: waiting steps are skipped, the jobs of the others
    /// cancelled; the pipeline is CANCELLED once they have ended.
    pub async fn cancel(&self, id: PipelineId) -> Result<Pipeline, PipelineFailure> {
        let refused = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&refused);
        let after = self
            .records
            .update_logged(
                PIPELINES,
                &id.to_string(),
                Box::new(move |doc| {
                    let Some(Ok(mut pipeline)) = doc.map(decode) else {
                        return (RecordUpdate::Keep, Vec::new());
                    };
                    match pipeline.request_cancel() {
                        Ok(_) => match encode(&pipeline) {
                            Ok(doc) => (RecordUpdate::Put(doc), Vec::new()),
                            Err(_) => (RecordUpdate::Keep, Vec::new()),
                        },
                        Err(err) => {
                            *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(err);
                            (RecordUpdate::Keep, Vec::new())
                        }
                    }
                }),
            )
            .await?
            .ok_or_else(|| PipelineFailure::NotFound(id.to_string()))?;
        if let Some(err) = refused.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Err(err.into());
        }
        let pipeline = decode(&after)?;
        for job in pipeline.unfinished_jobs() {
            self.cancel_job(job).await;
        }
        let advanced = self.advance(id).await?;
        self.wake.notify_one();
        Ok(advanced.unwrap_or(pipeline))
    }

    async fn cancel_job(&self, job: JobId) {
        match self.jobs.cancel(job).await {
            Ok(_) | Err(StoreError::Domain(_) | StoreError::NotFound(_)) => {}
            Err(err) => tracing::warn!(%job, %err, "cannot cancel a step's job"),
        }
    }

    /// Reruns the failed, cancelled and skipped steps of an ended
    /// pipeline; succeeded steps keep their result.
    pub async fn retry(&self, id: PipelineId) -> Result<Pipeline, PipelineFailure> {
        if self.get(id).await?.is_none() {
            return Err(PipelineFailure::NotFound(id.to_string()));
        }
        // Marked first: a host dying right after the retry still finds it.
        self.mark_active(id).await?;
        let refused = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&refused);
        let after = self
            .records
            .update_logged(
                PIPELINES,
                &id.to_string(),
                Box::new(move |doc| {
                    let Some(Ok(mut pipeline)) = doc.map(decode) else {
                        return (RecordUpdate::Keep, Vec::new());
                    };
                    match pipeline.retry() {
                        Ok(moves) => match encode(&pipeline) {
                            Ok(doc) => {
                                let events = moves
                                    .iter()
                                    .map(|m| EventRecord::of_pipeline(pipeline.id, m, None))
                                    .collect();
                                (RecordUpdate::Put(doc), events)
                            }
                            Err(_) => (RecordUpdate::Keep, Vec::new()),
                        },
                        Err(err) => {
                            *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(err);
                            (RecordUpdate::Keep, Vec::new())
                        }
                    }
                }),
            )
            .await?
            .ok_or_else(|| PipelineFailure::NotFound(id.to_string()))?;
        if let Some(err) = refused.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Err(err.into());
        }
        self.jobs.bus().publish(Event::PipelineChanged(id));
        let advanced = self.advance(id).await?;
        self.wake.notify_one();
        Ok(advanced.unwrap_or(decode(&after)?))
    }

    /// The current state of the steps' jobs that have not settled in the
    /// record (what a reader sees between two advances).
    pub async fn live_states(
        &self,
        pipeline: &Pipeline,
    ) -> Result<HashMap<JobId, crate::domain::JobState>, StoreError> {
        let mut states = HashMap::new();
        for job in pipeline.unfinished_jobs() {
            if let Some(found) = self.jobs.store().get(job).await? {
                states.insert(job, found.state);
            }
        }
        Ok(states)
    }
}

#[cfg(test)]
mod tests;
