//! The contract's event-log part: every job change is one event, read
//! back in order by paging.

use super::*;

/// Every event after `from`, read in pages of 2 (so paging is exercised),
/// waiting until `done` holds: on PostgreSQL an event shows only once the
/// transactions older than its own have ended, which other tests on the
/// same server can delay.
pub(super) async fn events_until(
    store: &dyn JobStore,
    from: Option<EventId>,
    done: impl Fn(&[(EventId, EventRecord)]) -> bool,
) -> Vec<(EventId, EventRecord)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen = Vec::new();
    let mut cursor = from;
    loop {
        let page = store.events_after(cursor, 2).await.unwrap();
        for event in &page {
            assert!(Some(event.id) > cursor, "ids increase");
            cursor = Some(event.id);
            seen.push((event.id, event.event.clone()));
        }
        if page.is_empty() {
            if done(&seen) {
                return seen;
            }
            assert!(std::time::Instant::now() < deadline, "events: {seen:?}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

pub(super) async fn events_follow_every_transition_once(store: &dyn JobStore) {
    let start = events_until(store, None, |_| true)
        .await
        .last()
        .map(|e| e.0);
    let job = Job::new(spec(0), Timestamp::now());
    store.insert(job.clone()).await.unwrap();
    let now = Timestamp::now();
    let steps: [crate::store::Transition; 3] = [
        Box::new(move |j| j.schedule(WorkerId("w-events".into()), now).map(|_| ())),
        Box::new(move |j| j.start(1, now)),
        Box::new(move |j| j.finish(1, Outcome::Exited(0), None, now)),
    ];
    for step in steps {
        store.update(job.id, step).await.unwrap();
    }
    // A refused change writes no event.
    let refused = store
        .update(job.id, Box::new(move |j| j.start(1, now)))
        .await;
    assert!(refused.is_err());
    store
        .append_event(EventRecord::of_worker(
            EventKind::WorkerLost,
            "w-events",
            BTreeMap::new(),
        ))
        .await
        .unwrap();
    let of_job = |events: &[(EventId, EventRecord)]| -> Vec<(EventKind, Option<JobState>)> {
        events
            .iter()
            .filter(|(_, e)| e.job_id == Some(job.id))
            .map(|(_, e)| (e.kind, e.state))
            .collect()
    };
    let worker_done = |events: &[(EventId, EventRecord)]| {
        events.iter().any(|(_, e)| e.kind == EventKind::WorkerLost)
    };
    let all = events_until(store, start, |seen| worker_done(seen)).await;
    assert_eq!(
        of_job(&all),
        vec![
            (EventKind::JobCreated, Some(JobState::Pending)),
            (EventKind::JobStateChanged, Some(JobState::Scheduled)),
            (EventKind::JobStateChanged, Some(JobState::Running)),
            (EventKind::JobFinished, Some(JobState::Succeeded)),
        ]
    );
    let created = all
        .iter()
        .find(|(_, e)| e.kind == EventKind::JobCreated && e.job_id == Some(job.id))
        .unwrap();
    assert_eq!(created.1.previous_state, None);
    // Resuming from the second event gives the rest, once each.
    let second = all
        .iter()
        .filter(|(_, e)| e.job_id == Some(job.id))
        .nth(1)
        .unwrap()
        .0;
    let rest = events_until(store, Some(second), |seen| worker_done(seen)).await;
    assert_eq!(of_job(&rest).len(), 2);
    assert_eq!(
        rest.iter()
            .filter(|(_, e)| worker_done(&[(EventId::default(), e.clone())]))
            .count(),
        1
    );
}
