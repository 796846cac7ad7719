//! Unit tests of the cluster state.

use super::*;

fn info(id: &str, slots: u32) -> WorkerInfo {
    WorkerInfo {
        id: WorkerId(id.into()),
        name: id.into(),
        version: "test".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        labels: BTreeMap::new(),
        slots,
        capacity: Resources {
            cpu_millis: 2000,
            memory_mb: 1024,
        },
        pool: None,
        ephemeral: false,
    }
}

fn assignment(attempt: u32, memory_mb: u64) -> Assignment {
    Assignment {
        attempt,
        resources: Resources {
            cpu_millis: 0,
            memory_mb,
        },
        queue: Default::default(),
        cancel_requested: false,
        placed: true,
        exited: false,
    }
}

#[test]
fn reservation_never_overcommits() {
    let cluster = Cluster::default();
    let (tx, _rx) = AgentLink::channel(1);
    let w = WorkerId("w".into());
    cluster.connect(info("w", 2), tx, &[], &[]);
    assert!(
        cluster
            .reserve(&w, JobId::new(), assignment(1, 600))
            .is_ok()
    );
    assert!(matches!(
        cluster.reserve(&w, JobId::new(), assignment(1, 600)),
        Err(ReserveError::NoRoom(_))
    ));
    let small = JobId::new();
    assert!(cluster.reserve(&w, small, assignment(1, 100)).is_ok());
    assert!(matches!(
        cluster.reserve(&w, JobId::new(), assignment(1, 0)),
        Err(ReserveError::NoRoom(_))
    ));
    assert!(cluster.release(&w, small, 1));
    assert!(!cluster.release(&w, small, 1));
    assert!(cluster.reserve(&w, JobId::new(), assignment(1, 0)).is_ok());
}

#[test]
fn an_exited_attempt_frees_its_slot_but_stays_held_until_released() {
    let cluster = Cluster::default();
    let (tx, _rx) = AgentLink::channel(1);
    let w = WorkerId("w".into());
    let session = cluster.connect(info("w", 1), tx, &[], &[]).session;
    let (done, next) = (JobId::new(), JobId::new());
    assert!(cluster.reserve(&w, done, assignment(1, 1000)).is_ok());
    assert!(cluster.reserve(&w, next, assignment(1, 0)).is_err());
    assert!(!cluster.exited(&w, done, 2), "another attempt");
    assert!(cluster.exited(&w, done, 1));
    assert!(!cluster.exited(&w, done, 1), "once");
    assert_eq!(cluster.candidates()[0].free_slots, 1);
    assert_eq!(
        cluster.ownership(&w, session, done, 1),
        Ownership::Holds,
        "its result is still to be stored"
    );
    assert!(cluster.reserve(&w, next, assignment(1, 1000)).is_ok());
    assert!(cluster.release(&w, done, 1));
    assert_eq!(cluster.candidates()[0].free_slots, 0);
}

#[test]
fn reconnect_reattaches_confirmed_jobs_and_loses_the_rest() {
    let cluster = Cluster::default();
    let w = WorkerId("w".into());
    let (kept, gone, adopted) = (JobId::new(), JobId::new(), JobId::new());
    let (tx, _rx) = AgentLink::channel(1);
    let first = cluster.connect(info("w", 4), tx, &[], &[]);
    cluster.reserve(&w, kept, assignment(1, 0)).unwrap();
    cluster.reserve(&w, gone, assignment(2, 0)).unwrap();
    assert!(cluster.disconnect(&w, first.session));
    assert!(
        cluster.candidates().is_empty(),
        "disconnected workers get no jobs"
    );

    let (tx, _rx) = AgentLink::channel(1);
    let mut cancelled = assignment(5, 0);
    cancelled.cancel_requested = true;
    let second = cluster.connect(
        info("w", 4),
        tx,
        &[(kept, assignment(1, 0)), (adopted, cancelled)],
        &[],
    );
    assert_eq!(second.replaced, None, "the first session had ended");
    assert_eq!(second.lost, vec![(gone, 2)]);
    assert_eq!(second.cancels, vec![(adopted, 5)]);
    assert_eq!(cluster.candidates()[0].free_slots, 2);
    // The old session ending late must not disconnect the new one.
    assert!(!cluster.disconnect(&w, first.session));
}

#[test]
fn silent_workers_are_forgotten_and_only_placed_attempts_are_held() {
    let cluster = Cluster::default();
    let w = WorkerId("w".into());
    let (job, unplaced) = (JobId::new(), JobId::new());
    cluster.restore_assignment(&w, job, assignment(3, 0));
    let mut reserving = assignment(1, 0);
    reserving.placed = false;
    cluster.restore_assignment(&w, unplaced, reserving);
    let held = cluster.held();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].attempts, vec![(job, 3)]);
    assert!(held[0].seen <= Timestamp::now());
    cluster.confirm(&w, unplaced, 1);
    assert_eq!(cluster.held()[0].attempts.len(), 2);
    assert!(cluster.expire(Duration::from_secs(60)).is_empty());
    std::thread::sleep(Duration::from_millis(5));
    let expired: Vec<WorkerId> = cluster
        .expire(Duration::from_millis(1))
        .into_iter()
        .map(|info| info.id)
        .collect();
    assert_eq!(expired, vec![w]);
    assert!(cluster.held().is_empty());
}

#[test]
fn a_cancel_is_marked_once_and_release_finds_the_worker() {
    let cluster = Cluster::default();
    let w = WorkerId("w".into());
    let job = JobId::new();
    let (tx, _rx) = AgentLink::channel(1);
    cluster.connect(info("w", 1), tx, &[(job, assignment(2, 0))], &[]);
    let cancel = |attempt, when| cluster.cancel(&w, job, attempt, when).is_some();
    assert!(!cancel(1, CancelSend::Always), "wrong attempt");
    assert!(!cancel(2, CancelSend::IfMarked), "not marked yet");
    assert!(cancel(2, CancelSend::IfNew));
    assert!(!cancel(2, CancelSend::IfNew), "already marked");
    assert!(cancel(2, CancelSend::IfMarked), "marked: resent");
    assert!(cancel(2, CancelSend::Always));
    assert!(matches!(cluster.release_anywhere(job, 2), Some(Some(_))));
    assert!(cluster.release_anywhere(job, 2).is_none());
}

#[test]
fn only_the_current_session_of_the_holding_worker_owns_an_attempt() {
    let cluster = Cluster::default();
    let (a, b) = (WorkerId("a".into()), WorkerId("b".into()));
    let (job, dropped, abandoned) = (JobId::new(), JobId::new(), JobId::new());
    let (tx, _rx) = AgentLink::channel(1);
    let sa = cluster.connect(info("a", 2), tx, &[], &[]).session;
    let (tx, _rx) = AgentLink::channel(1);
    let sb = cluster
        .connect(info("b", 2), tx, &[], &[(abandoned, 1)])
        .session;
    cluster.reserve(&a, job, assignment(3, 0)).unwrap();
    cluster.reserve(&a, dropped, assignment(1, 0)).unwrap();

    assert_eq!(cluster.ownership(&a, sa, job, 3), Ownership::Holds);
    assert_eq!(
        cluster.ownership(&a, sa, job, 2),
        Ownership::Foreign,
        "old attempt"
    );
    assert_eq!(
        cluster.ownership(&b, sb, job, 3),
        Ownership::Foreign,
        "another worker's"
    );
    assert_eq!(cluster.ownership(&b, sb, abandoned, 1), Ownership::Settled);
    assert!(cluster.release(&a, dropped, 1));
    assert_eq!(cluster.ownership(&a, sa, dropped, 1), Ownership::Settled);
    assert!(cluster.release_anywhere(job, 3).is_some());
    assert_eq!(cluster.ownership(&a, sa, job, 3), Ownership::Settled);

    // A newer session of `a` replaces the open one, which loses everything.
    let (tx, _rx) = AgentLink::channel(1);
    let newer = cluster.connect(info("a", 2), tx, &[], &[]);
    assert_eq!(newer.replaced, Some(sa));
    assert!(!cluster.is_current(&a, sa));
    assert!(cluster.is_current(&a, newer.session));
    assert_eq!(cluster.ownership(&a, sa, dropped, 1), Ownership::Superseded);
    assert_eq!(
        cluster.ownership(&a, newer.session, dropped, 1),
        Ownership::Settled
    );

    cluster.count_refusal(&b);
    let views = cluster.views();
    let refused: Vec<u64> = views.iter().map(|v| v.refused_messages).collect();
    assert_eq!(refused, vec![0, 1]);
}

#[test]
fn a_pool_retires_only_idle_workers_and_ephemeral_ones_after_one_job() {
    let cluster = Cluster::default();
    let (busy, eph) = (WorkerId("busy".into()), WorkerId("eph".into()));
    let (tx, _rx) = AgentLink::channel(1);
    cluster.connect(info("busy", 2), tx, &[], &[]);
    let (tx, _rx) = AgentLink::channel(1);
    let mut one_job = info("eph", 1);
    one_job.ephemeral = true;
    cluster.connect(one_job, tx, &[], &[]);

    let job = JobId::new();
    cluster.reserve(&busy, job, assignment(1, 0)).unwrap();
    assert!(
        !cluster.retire_if_idle(&busy),
        "a busy worker is not retired"
    );
    assert!(
        cluster
            .reserve(&busy, JobId::new(), assignment(1, 0))
            .is_ok()
    );
    assert!(cluster.release(&busy, job, 1));

    let first = JobId::new();
    cluster.reserve(&eph, first, assignment(1, 0)).unwrap();
    assert!(
        cluster
            .views()
            .iter()
            .any(|v| v.info.id == eph && v.retiring)
    );
    assert!(
        matches!(
            cluster.reserve(&eph, JobId::new(), assignment(1, 0)),
            Err(ReserveError::NoRoom(_))
        ),
        "an ephemeral worker takes one job"
    );
    assert!(!cluster.retire_if_idle(&eph), "still running its job");
    assert!(cluster.release(&eph, first, 1));
    assert!(cluster.retire_if_idle(&eph));
    assert!(cluster.candidates().iter().all(|c| c.worker != eph));
}

#[test]
fn a_job_held_by_a_worker_is_not_reserved_again_anywhere() {
    let cluster = Cluster::default();
    let (tx1, _rx1) = AgentLink::channel(1);
    let (tx2, _rx2) = AgentLink::channel(1);
    let (w1, w2) = (WorkerId("w1".into()), WorkerId("w2".into()));
    let session = cluster.connect(info("w1", 4), tx1, &[], &[]).session;
    cluster.connect(info("w2", 4), tx2, &[], &[]);
    let job = JobId::new();
    assert!(cluster.reserve(&w1, job, assignment(1, 0)).is_ok());
    for worker in [&w1, &w2] {
        assert!(matches!(
            cluster.reserve(worker, job, assignment(1, 0)),
            Err(ReserveError::Held(held)) if held == job
        ));
    }
    // The live assignment is untouched: the agent's messages about it are
    // still its own, and its release is the first.
    assert_eq!(cluster.ownership(&w1, session, job, 1), Ownership::Holds);
    assert!(cluster.release(&w1, job, 1));
    assert!(cluster.reserve(&w2, job, assignment(2, 0)).is_ok());
}

/// A stale copy of a placed job (a shared store's refresh read it pending
/// just before its placement was stored) is dropped from the queue, not
/// placed a second time.
#[test]
fn a_stale_queued_copy_of_a_placed_job_is_dropped_not_placed() {
    use crate::scheduler::Scheduler;
    use crate::scheduler::policy::BuiltinPolicy;
    use crate::scheduler::queue::QueuedJob;
    let cluster = std::sync::Arc::new(Cluster::default());
    let (tx, _rx) = AgentLink::channel(1);
    cluster.connect(info("w", 4), tx, &[], &[]);
    let scheduler = Scheduler::new(
        std::sync::Arc::clone(&cluster),
        std::sync::Arc::new(BuiltinPolicy),
    );
    let queued = |id| QueuedJob {
        id,
        priority: 0,
        labels: std::sync::Arc::new(BTreeMap::new()),
        resources: Resources::default(),
        attempt: 0,
        not_before: None,
        queue: Default::default(),
        since: crate::domain::Timestamp::now(),
    };
    let job = JobId::new();
    scheduler.enqueue_queued(queued(job));
    let first = scheduler.round();
    assert_eq!(first.iter().map(|p| p.job).collect::<Vec<_>>(), vec![job]);
    scheduler.enqueue_queued(queued(job));
    let other = JobId::new();
    scheduler.enqueue_queued(queued(other));
    let second = scheduler.round();
    assert_eq!(
        second.iter().map(|p| p.job).collect::<Vec<_>>(),
        vec![other]
    );
    assert_eq!(scheduler.queued(), 0);
}
