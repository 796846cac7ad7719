//! The `JobStore` contract: behaviour every adapter must have, written once
//! against the port. Each adapter's tests call [`run_all`] with a fresh
//! store.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{JobStore, ListQuery, StoreError};
use crate::domain::{
    Command, DomainError, EventId, EventKind, EventRecord, Job, JobSpec, JobState, LogRecord,
    LogStream, Outcome, Resources, Timestamp, WorkerId, quota_marker,
};

/// A quota no test reaches.
const NO_QUOTA: u64 = u64::MAX;

mod events;
mod listing;
mod logs;

use events::*;
use listing::*;
use logs::*;

fn spec(priority: i32) -> JobSpec {
    JobSpec {
        name: "contract".into(),
        command: Command::Script("true".into()),
        env: BTreeMap::new(),
        secrets: [("TOKEN".to_string(), "secret-value".to_string())].into(),
        labels: BTreeMap::new(),
        resources: Resources::default(),
        priority,
        queue: crate::domain::DEFAULT_QUEUE.to_owned(),
        timeout_secs: None,
        max_attempts: 2,
        artifacts: Default::default(),
    }
}

fn line(sequence: u64, text: &str) -> LogRecord {
    LogRecord {
        sequence,
        stream: if sequence.is_multiple_of(2) {
            LogStream::Stderr
        } else {
            LogStream::Stdout
        },
        data: text.as_bytes().to_vec(),
        timestamp: Timestamp(1_700_000_000_000_000 + i64::try_from(sequence).unwrap()),
    }
}

/// Job `id`'s first attempt exits 0.
async fn succeed(store: &dyn JobStore, id: crate::domain::JobId) -> Job {
    store
        .update(
            id,
            Box::new(|j| j.finish(1, Outcome::Exited(0), None, Timestamp::now())),
        )
        .await
        .unwrap()
}

async fn scheduled(store: &dyn JobStore) -> Job {
    let job = Job::new(spec(0), Timestamp::now());
    store.insert(job.clone()).await.unwrap();
    schedule_on_w(store, job.id).await
}

/// Every contract check, in turn.
/// Places `id` on worker `w` (it must be pending).
async fn schedule_on_w(store: &dyn JobStore, id: crate::domain::JobId) -> Job {
    store
        .update(
            id,
            Box::new(|j| {
                j.schedule(WorkerId("w".into()), Timestamp::now())
                    .map(|_| ())
            }),
        )
        .await
        .unwrap()
}

/// Asks to cancel `id` (it must not have ended).
async fn request_cancel(store: &dyn JobStore, id: crate::domain::JobId) -> Job {
    store
        .update(
            id,
            Box::new(|j| j.request_cancel(Timestamp::now()).map(|_| ())),
        )
        .await
        .unwrap()
}

pub async fn run_all(store: Arc<dyn JobStore>) {
    insert_then_get_round_trips(store.as_ref()).await;
    events_follow_every_transition_once(store.as_ref()).await;
    a_batch_lands_whole_and_is_listed_by_state(store.as_ref()).await;
    update_applies_transitions_atomically_and_refuses_illegal_ones(store.as_ref()).await;
    a_deferred_update_is_seen_at_once_and_kept_by_the_next_write(store.as_ref()).await;
    terminal_jobs_leave_the_active_set_and_lose_their_secrets(store.as_ref()).await;
    logs_are_stored_once_per_sequence_in_order(store.as_ref()).await;
    a_log_past_its_quota_ends_with_a_marker(store.as_ref()).await;
    logs_of_a_stale_attempt_are_refused(store.as_ref()).await;
    listing_pages_newest_first_and_filters(store.as_ref()).await;
    listing_by_state_follows_every_transition(store.as_ref()).await;
    plugins_and_settings_round_trip(store.as_ref()).await;
    pending_jobs_come_in_queue_order(store.as_ref()).await;
    pending_since_has_the_new_and_the_requeued(store.as_ref()).await;
    leases_are_renewed_per_attempt_and_expire(store.as_ref()).await;
    concurrent_claims_of_one_job_have_one_winner(Arc::clone(&store)).await;
    concurrent_writers_all_land(Arc::clone(&store)).await;
    insert_absent_stores_a_job_once(Arc::clone(&store)).await;
}

async fn pending_jobs_come_in_queue_order(store: &dyn JobStore) {
    // Priorities above anything else in the store, so these lead the queue.
    let low = Job::new(spec(1_000), Timestamp::now());
    let high_first = Job::new(spec(2_000), Timestamp::now());
    let high_second = Job::new(spec(2_000), Timestamp::now());
    for job in [&low, &high_first, &high_second] {
        store.insert((*job).clone()).await.unwrap();
    }
    let taken = scheduled(store).await;
    let head: Vec<_> = store
        .pending(3)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(head, vec![high_first.id, high_second.id, low.id]);
    let all = store.pending(usize::MAX).await.unwrap();
    assert!(all.iter().all(|j| j.state == JobState::Pending));
    assert!(!all.iter().any(|j| j.id == taken.id));
    cancel_all(store, &[low, high_first, high_second]).await;
}

async fn pending_since_has_the_new_and_the_requeued(store: &dyn JobStore) {
    let never_ran = Job::new(spec(0), Timestamp::now());
    store.insert(never_ran.clone()).await.unwrap();
    let requeued = scheduled(store).await;
    store
        .update(
            requeued.id,
            Box::new(|j| j.lose_attempt(1, "test", Timestamp::now()).map(|_| ())),
        )
        .await
        .unwrap();
    let later = Timestamp(Timestamp::now().0 + 2_000);
    std::thread::sleep(std::time::Duration::from_millis(3));
    let new = Job::new(spec(0), Timestamp::now());
    store.insert(new.clone()).await.unwrap();
    let since: Vec<crate::domain::JobId> = store
        .pending_since(later, usize::MAX)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert!(since.contains(&new.id), "a job created after `since`");
    assert!(since.contains(&requeued.id), "a requeued job, however old");
    if store.is_shared() {
        // What hosts sharing the store read every refresh: not the backlog.
        assert!(
            !since.contains(&never_ran.id),
            "an older job that never ran"
        );
    }
    cancel_all(store, &[never_ran, requeued, new]).await;
}

async fn leases_are_renewed_per_attempt_and_expire(store: &dyn JobStore) {
    const SECOND: i64 = 1_000_000;
    let job = scheduled(store).await;
    let at = job.scheduled_at.unwrap().0;
    let expired = |cutoff: i64| async move {
        store
            .expired_leases(Timestamp(cutoff))
            .await
            .unwrap()
            .contains(&(job.id, 1))
    };
    assert!(!expired(at).await, "a fresh attempt holds its lease");
    assert!(
        expired(at + SECOND).await,
        "never renewed: runs from scheduling"
    );

    let missing = crate::domain::JobId::new();
    let renewal = store
        .renew_leases(
            vec![(job.id, 1), (job.id, 2), (missing, 1)],
            Timestamp(at + 10 * SECOND),
        )
        .await
        .unwrap();
    assert_eq!(renewal.gone, vec![(job.id, 2), (missing, 1)]);
    assert!(renewal.cancel_requested.is_empty());
    assert!(!expired(at + 5 * SECOND).await);
    assert!(expired(at + 11 * SECOND).await);
    // An older sighting (another host's late renewal) does not move it back.
    store
        .renew_leases(vec![(job.id, 1)], Timestamp(at + SECOND))
        .await
        .unwrap();
    assert!(!expired(at + 5 * SECOND).await);

    request_cancel(store, job.id).await;
    let renewal = store
        .renew_leases(vec![(job.id, 1)], Timestamp(at + 12 * SECOND))
        .await
        .unwrap();
    assert_eq!(renewal.cancel_requested, vec![(job.id, 1)]);
    assert!(renewal.gone.is_empty());

    let lost = store
        .update(
            job.id,
            Box::new(|j| {
                j.lose_attempt(1, "agent lost", Timestamp::now())
                    .map(|_| ())
            }),
        )
        .await
        .unwrap();
    assert!(lost.state.is_terminal(), "a cancel request ends a lost job");
    let renewal = store
        .renew_leases(vec![(job.id, 1)], Timestamp(at + 13 * SECOND))
        .await
        .unwrap();
    assert_eq!(renewal.gone, vec![(job.id, 1)]);
    assert!(
        !expired(at + 100 * SECOND).await,
        "settled attempts hold no lease"
    );
}

async fn concurrent_claims_of_one_job_have_one_winner(store: Arc<dyn JobStore>) {
    let job = Job::new(spec(0), Timestamp::now());
    store.insert(job.clone()).await.unwrap();
    let claims: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .update(
                        job.id,
                        Box::new(move |j| {
                            j.schedule(WorkerId(format!("w{i}")), Timestamp::now())
                                .map(|_| ())
                        }),
                    )
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for claim in claims {
        match claim.await.unwrap() {
            Ok(job) => winners.push(job),
            Err(err) => assert!(
                matches!(
                    err,
                    StoreError::Domain(DomainError::IllegalTransition { .. })
                ),
                "{err}"
            ),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claim wins");
    let stored = store.get(job.id).await.unwrap().unwrap();
    assert_eq!(stored.attempt, 1);
    assert_eq!(stored.worker_id, winners[0].worker_id);
}

async fn plugins_and_settings_round_trip(store: &dyn JobStore) {
    assert!(store.plugins().await.unwrap().is_empty());
    store
        .put_plugin("spread", vec![0, 97, 115, 109])
        .await
        .unwrap();
    store.put_plugin("other", vec![1]).await.unwrap();
    store.put_plugin("spread", vec![2, 3]).await.unwrap();
    let mut plugins = store.plugins().await.unwrap();
    plugins.sort();
    assert_eq!(
        plugins,
        vec![
            ("other".to_owned(), vec![1]),
            ("spread".to_owned(), vec![2, 3])
        ]
    );
    store.delete_plugin("other").await.unwrap();
    store.delete_plugin("never-there").await.unwrap();
    assert_eq!(store.plugins().await.unwrap().len(), 1);

    assert_eq!(store.setting("active_policy").await.unwrap(), None);
    store
        .put_setting("active_policy", "binpack".into())
        .await
        .unwrap();
    assert_eq!(
        store.setting("active_policy").await.unwrap().as_deref(),
        Some("binpack")
    );
}

async fn insert_then_get_round_trips(store: &dyn JobStore) {
    let job = Job::new(spec(3), Timestamp::now());
    store.insert(job.clone()).await.unwrap();
    assert_eq!(store.get(job.id).await.unwrap(), Some(job));
    assert_eq!(store.get(crate::domain::JobId::new()).await.unwrap(), None);
}

async fn update_applies_transitions_atomically_and_refuses_illegal_ones(store: &dyn JobStore) {
    let job = scheduled(store).await;
    assert_eq!(job.state, JobState::Scheduled);
    assert_eq!(job.attempt, 1);
    let err = store
        .update(job.id, Box::new(|j| j.start(7, Timestamp::now())))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Domain(DomainError::StaleAttempt { current: 1, got: 7 })
    ));
    assert_eq!(
        store.get(job.id).await.unwrap().unwrap(),
        job,
        "refused change wrote nothing"
    );
    let missing = crate::domain::JobId::new();
    assert!(matches!(
        store.update(missing, Box::new(|_| Ok(()))).await,
        Err(StoreError::NotFound(id)) if id == missing
    ));
}

/// A deferred update (a job's start) is a transition like any other to
/// every reader at once, refuses what `update` refuses, and a durable
/// write after it (the result) lands on top of it.
async fn a_deferred_update_is_seen_at_once_and_kept_by_the_next_write(store: &dyn JobStore) {
    let job = scheduled(store).await;
    let err = store
        .update_deferred(job.id, Box::new(|j| j.start(7, Timestamp::now())))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Domain(DomainError::StaleAttempt { current: 1, got: 7 })
    ));
    let started = store
        .update_deferred(job.id, Box::new(|j| j.start(1, Timestamp::now())))
        .await
        .unwrap();
    assert_eq!(started.state, JobState::Running);
    assert_eq!(store.get(job.id).await.unwrap().unwrap(), started);
    let done = succeed(store, job.id).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.started_at, started.started_at);
}

async fn terminal_jobs_leave_the_active_set_and_lose_their_secrets(store: &dyn JobStore) {
    let job = scheduled(store).await;
    assert!(
        store
            .list_active()
            .await
            .unwrap()
            .iter()
            .any(|j| j.id == job.id)
    );
    let done = succeed(store, job.id).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert!(done.secrets_wiped());
    assert!(
        !store
            .list_active()
            .await
            .unwrap()
            .iter()
            .any(|j| j.id == job.id)
    );
    assert!(store.get(job.id).await.unwrap().unwrap().secrets_wiped());
}

async fn concurrent_writers_all_land(store: Arc<dyn JobStore>) {
    let writers: Vec<_> = (0..64)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..20 {
                    let job = Job::new(spec(0), Timestamp::now());
                    ids.push(job.id);
                    store.insert(job).await.unwrap();
                }
                ids
            })
        })
        .collect();
    let mut all = Vec::new();
    for writer in writers {
        all.extend(writer.await.unwrap());
    }
    assert_eq!(all.len(), 1280);
    for id in all {
        assert!(store.get(id).await.unwrap().is_some());
    }
}

async fn insert_absent_stores_a_job_once(store: Arc<dyn JobStore>) {
    let job = Job::new(spec(0), Timestamp::now());
    let racers = (0..8).map(|_| {
        let (store, job) = (Arc::clone(&store), job.clone());
        tokio::spawn(async move { store.insert_absent(job).await.unwrap() })
    });
    let won: Vec<bool> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    let placed = schedule_on_w(store.as_ref(), job.id).await;
    // A late insert of the same job changes nothing.
    assert!(!store.insert_absent(job.clone()).await.unwrap());
    assert_eq!(store.get(job.id).await.unwrap(), Some(placed));
    succeed(store.as_ref(), job.id).await;
}
