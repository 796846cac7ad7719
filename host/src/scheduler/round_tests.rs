//! Unit tests of a round's order: deep backlogs, fair share, aging,
//! backfill. Real cluster, real queue, the built-in policy (wrapped to
//! count its calls); only the agents are channels nobody reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::cluster::Cluster;
use super::fairness::{Fairness, QueueId};
use super::policy::{BuiltinPolicy, Candidate, Demand, PlacementPolicy, Ranking};
use super::queue::QueuedJob;
use super::{Placement, Scheduler};
use crate::agents::AgentLink;
use crate::domain::{JobId, Resources, Timestamp, WorkerId, WorkerInfo};
use hodei_proto::v1::ServerMessage;

/// The built-in policy, counting its decisions.
#[derive(Debug, Default)]
struct Counting {
    decisions: AtomicUsize,
}

impl PlacementPolicy for Counting {
    fn name(&self) -> &str {
        "counting"
    }
    fn rank(&self, demand: &Demand<'_>, candidates: &[Candidate]) -> Ranking {
        self.decisions.fetch_add(1, Ordering::Relaxed);
        BuiltinPolicy.rank(demand, candidates)
    }
}

#[derive(Debug, Default)]
struct Source(Arc<Counting>);

impl super::policy::PolicySource for Source {
    fn current(&self) -> Arc<dyn PlacementPolicy> {
        Arc::clone(&self.0) as Arc<dyn PlacementPolicy>
    }
}

struct Fixture {
    cluster: Arc<Cluster>,
    scheduler: Scheduler,
    policy: Arc<Counting>,
    /// Kept so that the links stay open.
    _links: Vec<tokio::sync::mpsc::Receiver<ServerMessage>>,
}

fn worker(id: &str, slots: u32, cpu_millis: u64) -> WorkerInfo {
    WorkerInfo {
        id: WorkerId(id.into()),
        name: id.into(),
        version: "test".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        labels: BTreeMap::new(),
        slots,
        capacity: Resources {
            cpu_millis,
            memory_mb: 1024,
        },
        pool: None,
        ephemeral: false,
    }
}

fn fixture(workers: &[WorkerInfo], fairness: Fairness) -> Fixture {
    let cluster = Arc::new(Cluster::default());
    let mut links = Vec::new();
    for info in workers {
        let (tx, rx) = AgentLink::channel(1);
        cluster.connect(info.clone(), tx, &[], &[]);
        links.push(rx);
    }
    let policy = Arc::new(Counting::default());
    let scheduler = Scheduler::new(Arc::clone(&cluster), Arc::new(Source(Arc::clone(&policy))))
        .with_fairness(fairness);
    Fixture {
        cluster,
        scheduler,
        policy,
        _links: links,
    }
}

fn job(queue: u16, priority: i32, since: Timestamp) -> QueuedJob {
    QueuedJob {
        id: JobId::new(),
        priority,
        queue: QueueId(queue),
        labels: Arc::default(),
        resources: Resources::default(),
        attempt: 0,
        not_before: None,
        since,
    }
}

fn ago(secs: f64) -> Timestamp {
    Timestamp(Timestamp::now().0 - (secs * 1e6) as i64)
}

fn fairness(weights: &[(&str, u32)], aging_per_minute: u32, backfill_after: Duration) -> Fairness {
    let weights: BTreeMap<String, u32> = weights
        .iter()
        .map(|(name, weight)| ((*name).to_owned(), *weight))
        .collect();
    Fairness::new(&weights, aging_per_minute, 1000, backfill_after).unwrap()
}

fn ended(f: &Fixture, placement: &Placement) {
    assert!(
        f.cluster
            .release(&placement.worker, placement.job, placement.attempt)
    );
}

#[test]
fn a_deep_backlog_that_fits_nowhere_costs_one_decision_per_round() {
    let f = fixture(&[worker("w", 4, 4000)], Fairness::default());
    let nowhere: Arc<BTreeMap<String, String>> =
        Arc::new([("pool".to_owned(), "nowhere".to_owned())].into());
    let since = ago(1.0);
    for _ in 0..100_000 {
        f.scheduler.enqueue_queued(QueuedJob {
            labels: Arc::clone(&nowhere),
            ..job(0, 5, since)
        });
    }
    let placeable = job(0, 0, Timestamp::now());
    f.scheduler.enqueue_queued(placeable.clone());
    let placed = f.scheduler.round();
    assert_eq!(
        placed.iter().map(|p| p.job).collect::<Vec<_>>(),
        [placeable.id]
    );
    // One decision for the backlog's bucket head, one for the job placed.
    assert_eq!(f.policy.decisions.load(Ordering::Relaxed), 2);
    for _ in 0..10 {
        assert!(f.scheduler.round().is_empty());
    }
    assert_eq!(f.policy.decisions.load(Ordering::Relaxed), 12);
    assert_eq!(f.scheduler.queued(), 100_000);
}

#[test]
fn two_saturating_queues_weighted_3_to_1_hold_75_and_25_percent_of_the_slots() {
    let f = fixture(
        &[worker("a", 6, 64_000), worker("b", 10, 64_000)],
        fairness(&[("batch", 3), ("web", 1)], 0, Duration::from_secs(3600)),
    );
    let (batch, web) = (
        f.scheduler.fairness().id("batch").unwrap(),
        f.scheduler.fairness().id("web").unwrap(),
    );
    let since = ago(1.0);
    let mut queue_of: HashMap<JobId, QueueId> = HashMap::new();
    for _ in 0..2_000 {
        for queue in [batch, web] {
            let queued = job(queue.0, 0, since);
            queue_of.insert(queued.id, queue);
            f.scheduler.enqueue_queued(queued);
        }
    }
    let mut running: Vec<Placement> = f.scheduler.round();
    let held = || {
        let queues = f.scheduler.queues();
        let of = |name: &str| queues.iter().find(|q| q.name == name).unwrap().slots_held;
        (of("batch"), of("web"))
    };
    assert_eq!(held(), (12, 4));
    // Jobs end in a scrambled order; every freed slot goes to whichever
    // queue is furthest below its share, so the shares never drift.
    let mut starts: HashMap<QueueId, usize> = HashMap::new();
    let mut seed = 7u64;
    for _ in 0..1_000 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let done = running.swap_remove((seed >> 33) as usize % running.len());
        ended(&f, &done);
        for placement in f.scheduler.round() {
            *starts.entry(queue_of[&placement.job]).or_default() += 1;
            running.push(placement);
        }
        assert_eq!(held(), (12, 4), "shares drifted");
    }
    let share = starts[&batch] as f64 / (starts[&batch] + starts[&web]) as f64;
    assert!(
        (0.70..=0.80).contains(&share),
        "batch got {share:.3} of the starts"
    );
}

#[test]
fn a_queue_alone_takes_every_slot() {
    let f = fixture(
        &[worker("a", 8, 64_000)],
        fairness(&[("batch", 3), ("web", 1)], 0, Duration::from_secs(3600)),
    );
    let web = f.scheduler.fairness().id("web").unwrap();
    for _ in 0..20 {
        f.scheduler.enqueue_queued(job(web.0, 0, ago(1.0)));
    }
    assert_eq!(f.scheduler.round().len(), 8);
}

#[test]
fn aging_puts_a_long_waiting_low_priority_job_ahead_of_newer_high_priority_ones() {
    // 600 points a minute: 10 points a second.
    let f = fixture(
        &[worker("w", 1, 64_000)],
        fairness(&[], 600, Duration::from_secs(3600)),
    );
    let low = job(0, 0, ago(2.0)); // rank 20 now
    let early = job(0, 10, ago(1.5)); // 10 + 15 = 25: ahead
    let late = job(0, 10, ago(0.5)); // 10 + 5 = 15: behind
    for queued in [&late, &low, &early] {
        f.scheduler.enqueue_queued(queued.clone());
    }
    let mut order = Vec::new();
    for _ in 0..3 {
        let placed = f.scheduler.round();
        assert_eq!(placed.len(), 1);
        ended(&f, &placed[0]);
        order.push(placed[0].job);
    }
    assert_eq!(order, [early.id, low.id, late.id]);
    // Without aging, priority alone.
    let f = fixture(
        &[worker("w", 1, 64_000)],
        fairness(&[], 0, Duration::from_secs(3600)),
    );
    for queued in [&late, &low, &early] {
        f.scheduler.enqueue_queued(queued.clone());
    }
    let first = f.scheduler.round();
    ended(&f, &first[0]);
    let second = f.scheduler.round();
    assert_eq!([first[0].job, second[0].job], [early.id, late.id]);
}

#[test]
fn a_whole_worker_job_gets_a_held_worker_while_small_jobs_fill_the_others() {
    let f = fixture(
        &[worker("a", 4, 2000), worker("b", 4, 2000)],
        // The big job has waited past it; the queued small ones have not.
        fairness(&[], 0, Duration::from_secs(3)),
    );
    let small = |since| QueuedJob {
        resources: Resources {
            cpu_millis: 500,
            memory_mb: 0,
        },
        ..job(0, 0, since)
    };
    // Both workers busy with one small job each: the big one fits nowhere.
    f.scheduler.enqueue_queued(small(ago(10.0)));
    f.scheduler.enqueue_queued(small(ago(10.0)));
    let mut running = f.scheduler.round();
    assert_eq!(running.len(), 2);
    let big = QueuedJob {
        resources: Resources {
            cpu_millis: 2000,
            memory_mb: 0,
        },
        ..job(0, 0, ago(5.0))
    };
    f.scheduler.enqueue_queued(big.clone());
    for _ in 0..20 {
        f.scheduler.enqueue_queued(small(ago(1.0)));
    }
    let placed = f.scheduler.round();
    // One worker is held: the small jobs fill the other one only.
    let held = running
        .iter()
        .map(|p| p.worker.clone())
        .find(|w| placed.iter().all(|p| p.worker != *w))
        .expect("one worker took no small job");
    assert_eq!(placed.len(), 3, "the other worker's three free slots");
    assert!(
        f.scheduler
            .explain(big.id, &demand_of(&big))
            .contains("held for it")
    );
    running.extend(placed);
    // More rounds while the held worker's job runs: nothing lands there.
    for _ in 0..3 {
        assert!(f.scheduler.round().is_empty());
    }
    // Its job ends: the big job takes the whole worker.
    let on_held = running.iter().position(|p| p.worker == held).unwrap();
    ended(&f, &running.remove(on_held));
    let placed = f.scheduler.round();
    assert_eq!(placed.len(), 1);
    assert_eq!((placed[0].job, &placed[0].worker), (big.id, &held));
    // Served: the reservation is gone.
    assert!(super::lock(&f.scheduler.state).reservation.is_none());
}

fn demand_of(job: &QueuedJob) -> Demand<'_> {
    Demand {
        labels: &job.labels,
        resources: job.resources,
        priority: job.priority,
        queue: "default",
    }
}
