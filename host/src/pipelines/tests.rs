//! The engine against real stores (redb; PostgreSQL with two "hosts"):
//! the window a SIGKILL can hit — a step's job decided in the record but
//! not inserted — and many passes racing over one pipeline.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::{ACTIVE, PIPELINES, Pipelines, encode};
use crate::bus::Bus;
use crate::domain::{
    Command, EventKind, Job, JobSpec, OnFailure, Outcome, Pipeline, PipelineState, Resources, Step,
    StepState, Timestamp, WorkerId,
};
use crate::jobs::JobService;
use crate::scheduler::Scheduler;
use crate::scheduler::cluster::Cluster;
use crate::scheduler::policy::BuiltinPolicy;
use crate::store::{JobStore, ListQuery, PgOptions, PgStore, RedbStore};

fn step(name: &str, needs: &[&str]) -> Step {
    Step {
        name: name.into(),
        needs: needs.iter().map(|n| (*n).to_owned()).collect(),
        on_failure: OnFailure::Fail,
        spec: JobSpec {
            name: name.into(),
            command: Command::Script("true".into()),
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            labels: BTreeMap::new(),
            resources: Resources::default(),
            priority: 0,
            queue: crate::domain::DEFAULT_QUEUE.to_owned(),
            timeout_secs: None,
            max_attempts: 1,
            artifacts: Default::default(),
        },
        state: StepState::Waiting,
        job_id: None,
        reason: None,
        earlier_jobs: Vec::new(),
    }
}

fn engine(store: Arc<dyn JobStore>) -> Arc<Pipelines> {
    let scheduler = Arc::new(Scheduler::new(
        Arc::new(Cluster::default()),
        Arc::new(BuiltinPolicy),
    ));
    let artifacts = Arc::new(crate::artifacts::Artifacts::new(
        &store,
        crate::artifacts::DEFAULT_MAX_ARTIFACT_BYTES,
    ));
    let jobs = JobService::new(store, scheduler, Bus::new(64), Duration::from_secs(10));
    Arc::new(Pipelines::new(Arc::new(jobs), artifacts))
}

async fn all_jobs(store: &dyn JobStore) -> Vec<Job> {
    store
        .list(ListQuery {
            limit: 100,
            ..ListQuery::default()
        })
        .await
        .unwrap()
}

async fn succeed(store: &dyn JobStore, job: crate::domain::JobId) {
    store
        .update(
            job,
            Box::new(|j| j.schedule(WorkerId("w".into()), Timestamp::now()).map(drop)),
        )
        .await
        .unwrap();
    store
        .update(
            job,
            Box::new(|j| j.finish(1, Outcome::Exited(0), None, Timestamp::now())),
        )
        .await
        .unwrap();
}

/// Advances the pipeline 8 times at once, spread over the engines.
async fn race(engines: &[Arc<Pipelines>], id: crate::domain::PipelineId) {
    let passes = (0..8).map(|i| {
        let engine = Arc::clone(&engines[i % engines.len()]);
        async move { engine.advance(id).await.unwrap() }
    });
    futures::future::join_all(passes).await;
}

/// The whole event log once it shows `pipeline`'s end (30 s at most).
async fn visible_events_through_finish(
    store: &dyn JobStore,
    pipeline: crate::domain::PipelineId,
) -> Vec<crate::domain::StoredEvent> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = store.events_after(None, 10_000).await.unwrap();
        let finished = events.iter().any(|e| {
            e.event.kind == EventKind::PipelineFinished && e.event.pipeline_id == Some(pipeline)
        });
        if finished || std::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `stores`: one per host, all over the same data.
async fn a_decided_step_job_is_inserted_once_however_many_passes_race(
    stores: Vec<Arc<dyn JobStore>>,
) {
    let engines: Vec<Arc<Pipelines>> = stores.iter().map(|s| engine(Arc::clone(s))).collect();
    let store = Arc::clone(&stores[0]);
    let records = store.records();
    // What a host killed right after deciding a's job leaves: the record
    // names the job, the job store does not have it.
    let mut pipeline = Pipeline::new(
        "crash".into(),
        vec![step("a", &[]), step("b", &["a"])],
        Timestamp::now(),
    );
    pipeline.advance(&HashMap::new(), Timestamp::now());
    let a = pipeline.steps[0].job_id.unwrap();
    let id = pipeline.id;
    records
        .put(ACTIVE, &id.to_string(), b"{\"since\":0}".to_vec())
        .await
        .unwrap();
    records
        .put(PIPELINES, &id.to_string(), encode(&pipeline).unwrap())
        .await
        .unwrap();
    assert!(store.get(a).await.unwrap().is_none());

    race(&engines, id).await;
    let jobs = all_jobs(store.as_ref()).await;
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a]);

    succeed(store.as_ref(), a).await;
    race(&engines, id).await;
    let after = engines[0].get(id).await.unwrap().unwrap();
    let b = after.steps[1].job_id.expect("b has its job");
    assert_eq!(all_jobs(store.as_ref()).await.len(), 2);
    assert_eq!(after.state, PipelineState::Running);

    succeed(store.as_ref(), b).await;
    race(&engines, id).await;
    let done = engines[0].get(id).await.unwrap().unwrap();
    assert_eq!(done.state, PipelineState::Succeeded);
    assert_eq!(all_jobs(store.as_ref()).await.len(), 2);
    assert_eq!(records.get(ACTIVE, &id.to_string()).await.unwrap(), None);

    // Each transition is in the event log once. On PostgreSQL a reader
    // sees an event only once every transaction older than it has ended
    // (the log's visibility horizon, cluster-wide: other tests' open
    // transactions hold it back), so wait until the last one is readable.
    let events = visible_events_through_finish(store.as_ref(), id).await;
    let count = |kind: EventKind, step: Option<&str>, to: &str| {
        events
            .iter()
            .filter(|e| {
                e.event.kind == kind
                    && e.event.pipeline_id == Some(id)
                    && e.event.step.as_deref() == step
                    && e.event.status.as_deref() == Some(to)
            })
            .count()
    };
    assert_eq!(count(EventKind::StepChanged, Some("a"), "SUCCEEDED"), 1);
    assert_eq!(count(EventKind::StepChanged, Some("b"), "PENDING"), 1);
    assert_eq!(count(EventKind::StepChanged, Some("b"), "SUCCEEDED"), 1);
    assert_eq!(count(EventKind::PipelineFinished, None, "SUCCEEDED"), 1);
    let created = |job| {
        events
            .iter()
            .filter(|e| e.event.kind == EventKind::JobCreated && e.event.job_id == Some(job))
            .count()
    };
    assert_eq!((created(a), created(b)), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_a_decided_step_job_is_inserted_once() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn JobStore> =
        Arc::new(RedbStore::open(&dir.path().join("pipelines.redb")).unwrap());
    a_decided_step_job_is_inserted_once_however_many_passes_race(vec![store]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_hosts_insert_a_decided_step_job_once() {
    let Some(admin) = crate::store::test_database_url() else {
        return;
    };
    let url = PgStore::scratch_database(&admin, "hodei_pipelines")
        .await
        .unwrap();
    let mut stores: Vec<Arc<dyn JobStore>> = Vec::new();
    for _ in 0..2 {
        let store = PgStore::connect(&PgOptions {
            url: Some(url.clone()),
            ..PgOptions::default()
        })
        .await
        .unwrap();
        stores.push(Arc::new(store));
    }
    a_decided_step_job_is_inserted_once_however_many_passes_race(stores.clone()).await;
    drop(stores);
    PgStore::drop_database(&admin, &url).await.unwrap();
}
