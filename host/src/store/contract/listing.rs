//! The contract's listing part: pages newest first, filters, and the
//! state index kept true through batches and every transition.

use super::*;

pub(super) async fn listing_pages_newest_first_and_filters(store: &dyn JobStore) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        let job = Job::new(spec(0), Timestamp::now());
        ids.push(job.id);
        store.insert(job).await.unwrap();
    }
    let newest = store
        .list(ListQuery {
            state: None,
            before: None,
            limit: 2,
        })
        .await
        .unwrap();
    assert_eq!(
        newest.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[4], ids[3]]
    );
    let next = store
        .list(ListQuery {
            state: None,
            before: Some(ids[3]),
            limit: 2,
        })
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[2], ids[1]]
    );
    let succeeded = store
        .list(ListQuery {
            state: Some(JobState::Succeeded),
            before: None,
            limit: 100,
        })
        .await
        .unwrap();
    assert!(succeeded.iter().all(|j| j.state == JobState::Succeeded));
    assert!(!succeeded.is_empty());
}

/// The ids `list` returns for one state (newest first).
pub(super) async fn ids_in(
    store: &dyn JobStore,
    state: JobState,
    before: Option<crate::domain::JobId>,
    limit: usize,
) -> Vec<crate::domain::JobId> {
    let jobs = store
        .list(ListQuery {
            state: Some(state),
            before,
            limit,
        })
        .await
        .unwrap();
    assert!(jobs.iter().all(|j| j.state == state), "{state} list");
    jobs.iter().map(|j| j.id).collect()
}

pub(super) async fn listing_by_state_follows_every_transition(store: &dyn JobStore) {
    let waiting = Job::new(spec(0), Timestamp::now());
    store.insert(waiting.clone()).await.unwrap();
    let ran = scheduled(store).await;
    let cancelled = Job::new(spec(0), Timestamp::now());
    store.insert(cancelled.clone()).await.unwrap();
    assert!(
        ids_in(store, JobState::Scheduled, None, 1000)
            .await
            .contains(&ran.id)
    );
    store
        .update(ran.id, Box::new(|j| j.start(1, Timestamp::now())))
        .await
        .unwrap();
    assert!(
        !ids_in(store, JobState::Scheduled, None, 1000)
            .await
            .contains(&ran.id)
    );
    assert!(
        ids_in(store, JobState::Running, None, 1000)
            .await
            .contains(&ran.id)
    );
    succeed(store, ran.id).await;
    request_cancel(store, cancelled.id).await;
    // A refused change moves nothing.
    let refused = store
        .update(ran.id, Box::new(|j| j.start(1, Timestamp::now())))
        .await;
    assert!(refused.is_err());

    let pending = ids_in(store, JobState::Pending, None, 1000).await;
    assert!(pending.contains(&waiting.id));
    assert!(!pending.contains(&ran.id) && !pending.contains(&cancelled.id));
    assert!(
        !ids_in(store, JobState::Running, None, 1000)
            .await
            .contains(&ran.id)
    );
    assert_eq!(
        ids_in(store, JobState::Succeeded, None, 1).await,
        vec![ran.id]
    );
    assert_eq!(
        ids_in(store, JobState::Cancelled, None, 1).await,
        vec![cancelled.id]
    );

    // Pages within one state: newest first, continued by `before`.
    let mut newer = Vec::new();
    for _ in 0..3 {
        let job = Job::new(spec(0), Timestamp::now());
        newer.push(job.id);
        store.insert(job).await.unwrap();
    }
    assert_eq!(
        ids_in(store, JobState::Pending, None, 2).await,
        vec![newer[2], newer[1]]
    );
    assert_eq!(
        ids_in(store, JobState::Pending, Some(newer[1]), 2).await,
        vec![newer[0], waiting.id]
    );
}

pub(super) async fn a_batch_lands_whole_and_is_listed_by_state(store: &dyn JobStore) {
    store.insert_many(Vec::new()).await.unwrap();
    let batch: Vec<Job> = (0..300)
        .map(|i| Job::new(spec(i), Timestamp::now()))
        .collect();
    store.insert_many(batch.clone()).await.unwrap();
    for job in &batch {
        let stored = store.get(job.id).await.unwrap().expect("stored");
        assert_eq!(stored.spec.priority, job.spec.priority);
        assert_eq!(stored.state, JobState::Pending);
    }
    let active = store.list_active().await.unwrap();
    let pending = store
        .list(ListQuery {
            state: Some(JobState::Pending),
            before: None,
            limit: usize::MAX,
        })
        .await
        .unwrap();
    for job in &batch {
        assert!(active.iter().any(|j| j.id == job.id), "active");
        assert!(pending.iter().any(|j| j.id == job.id), "by state");
    }
    // Leave the queue as it was for the checks after this one.
    cancel_all(store, &batch).await;
}

/// Cancels pending jobs, so later checks see the queue as it was.
pub(super) async fn cancel_all(store: &dyn JobStore, jobs: &[Job]) {
    for job in jobs {
        request_cancel(store, job.id).await;
    }
}
