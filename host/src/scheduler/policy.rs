//! Placement policy: the shape every policy has, and the host's built-in
//! default.
//!
//! The shape mirrors the Wasm scheduling world: a policy is asked once per
//! decision over the whole candidate list (not once per worker) which
//! workers may take the job, why the others may not, and how much it wants
//! each that may; the host picks the highest score. The built-in policy is
//! written against the same trait so it can stay as the fallback when a
//! plugin fails.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::domain::{Resources, WorkerId, WorkerMetrics};

/// A worker as a policy sees it at decision time.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Identity.
    pub worker: WorkerId,
    /// Its labels, shared with the cluster's entry (a round's candidates
    /// copy a pointer, not the map).
    pub labels: Arc<WorkerLabels>,
    /// Total capacity.
    pub capacity: Resources,
    /// Capacity not reserved by jobs it holds.
    pub free: Resources,
    /// Slots in total.
    pub slots: u32,
    /// Slots not taken.
    pub free_slots: u32,
    /// Latest heartbeat figures (real use, not reservations).
    pub metrics: WorkerMetrics,
}

/// A worker's labels as one registration gave them, with an id no other
/// label set of this process has: what a cache of per-worker answers (the
/// Wasm policies' label masks) is keyed by, since a worker's labels change
/// only when it registers again.
#[derive(Debug)]
pub struct WorkerLabels {
    id: u64,
    labels: BTreeMap<String, String>,
}

impl WorkerLabels {
    /// `labels` under a new id.
    pub fn new(labels: BTreeMap<String, String>) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            labels,
        }
    }

    /// Unique in this process: equal ids mean the same labels.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl std::ops::Deref for WorkerLabels {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.labels
    }
}

/// What a job asks of a worker.
#[derive(Debug, Clone, Copy)]
pub struct Demand<'a> {
    /// Labels the worker must carry with these values.
    pub labels: &'a BTreeMap<String, String>,
    /// Capacity to reserve.
    pub resources: Resources,
    /// The job's priority as the queue orders it now (with aging).
    pub priority: i32,
    /// The fair-share queue it is charged to.
    pub queue: &'a str,
}

/// A policy's answer for one decision, in the Wasm world's layout (`ranking`
/// in wit/scheduler.wit): which candidates may take the job, why the others
/// may not, and a score for each that may.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranking {
    /// Per candidate, in order: 0 when it may take the job, `k` when it may
    /// not because of `reasons[k - 1]`.
    pub verdicts: Vec<u32>,
    /// Rejection reasons (short, stable text: they are counted across
    /// workers). A reason no verdict names is allowed and ignored.
    pub reasons: Vec<String>,
    /// One per candidate whose verdict is 0, in order; the highest wins.
    pub scores: Vec<i64>,
}

/// A scheduling policy.
pub trait PlacementPolicy: Send + Sync + std::fmt::Debug {
    /// Name shown in the API.
    fn name(&self) -> &str;
    /// Feasibility and ranking of `candidates` for one job: one verdict per
    /// candidate, one score per accepted candidate.
    fn rank(&self, demand: &Demand<'_>, candidates: &[Candidate]) -> Ranking;
}

/// Where the scheduler gets the policy for its next decisions. A snapshot
/// is taken per round, so a swap takes effect for the next round and a round
/// in flight finishes on the policy it started with.
pub trait PolicySource: Send + Sync + std::fmt::Debug {
    /// The policy to decide with now.
    fn current(&self) -> Arc<dyn PlacementPolicy>;
}

impl PolicySource for BuiltinPolicy {
    fn current(&self) -> Arc<dyn PlacementPolicy> {
        Arc::new(BuiltinPolicy)
    }
}

/// The outcome of one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run it there.
    Place(WorkerId),
    /// Not now, and why (e.g. `2 workers: missing label gpu=true`).
    Wait(String),
}

/// Runs `policy` over `candidates` for one job: the accepted candidate with
/// the highest score, ties to the lowest worker id.
pub fn decide(
    policy: &dyn PlacementPolicy,
    demand: &Demand<'_>,
    candidates: &[Candidate],
) -> Decision {
    if candidates.is_empty() {
        return Decision::Wait("no workers connected".to_owned());
    }
    let ranking = policy.rank(demand, candidates);
    let accepted = candidates
        .iter()
        .zip(&ranking.verdicts)
        .filter(|(_, verdict)| **verdict == 0)
        .map(|(candidate, _)| candidate);
    let best = accepted
        .zip(&ranking.scores)
        .max_by(|(a, sa), (b, sb)| sa.cmp(sb).then_with(|| b.worker.cmp(&a.worker)));
    match best {
        Some((candidate, _)) => Decision::Place(candidate.worker.clone()),
        None if ranking.verdicts.contains(&0) => {
            Decision::Wait("policy returned no scores".to_owned())
        }
        // Reasons are only worth counting when they are the answer.
        None => Decision::Wait(summarize(&ranking)),
    }
}

/// `2 workers: missing label gpu=true; 1 worker: not enough memory`, most
/// common reason first.
fn summarize(ranking: &Ranking) -> String {
    let mut counts = vec![0usize; ranking.reasons.len()];
    for &verdict in &ranking.verdicts {
        if let Some(count) = (verdict as usize)
            .checked_sub(1)
            .and_then(|i| counts.get_mut(i))
        {
            *count += 1;
        }
    }
    let mut reasons: Vec<(&str, usize)> = ranking
        .reasons
        .iter()
        .map(String::as_str)
        .zip(counts)
        .filter(|(_, count)| *count > 0)
        .collect();
    reasons.sort_by(|(ra, ca), (rb, cb)| cb.cmp(ca).then_with(|| ra.cmp(rb)));
    reasons
        .iter()
        .map(|(reason, count)| {
            let noun = if *count == 1 { "worker" } else { "workers" };
            format!("{count} {noun}: {reason}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The built-in default: hard constraints (labels, slots, cpu, memory), then
/// spread (prefer the worker with the largest free share).
#[derive(Debug, Default, Clone, Copy)]
pub struct BuiltinPolicy;

impl BuiltinPolicy {
    /// The first hard constraint `c` breaks, as an index into the reasons
    /// [`Self::rank`] lists: the job's labels in order, then slot, cpu,
    /// memory.
    fn broken(demand: &Demand<'_>, c: &Candidate) -> Option<usize> {
        let labels = demand.labels.len();
        if let Some(i) = demand
            .labels
            .iter()
            .position(|(k, v)| c.labels.get(k) != Some(v))
        {
            Some(i)
        } else if c.free_slots == 0 {
            Some(labels)
        } else if c.free.cpu_millis < demand.resources.cpu_millis {
            Some(labels + 1)
        } else if c.free.memory_mb < demand.resources.memory_mb {
            Some(labels + 2)
        } else {
            None
        }
    }

    /// Spread: the free shares of slots, cpu and memory, summed.
    fn score(c: &Candidate) -> i64 {
        fn share(free: u64, total: u64) -> i64 {
            free.saturating_mul(1000)
                .checked_div(total)
                .map_or(0, |share| i64::try_from(share).unwrap_or(1000))
        }
        share(u64::from(c.free_slots), u64::from(c.slots))
            + share(c.free.cpu_millis, c.capacity.cpu_millis)
            + share(c.free.memory_mb, c.capacity.memory_mb)
    }
}

impl PlacementPolicy for BuiltinPolicy {
    fn name(&self) -> &str {
        "builtin"
    }

    fn rank(&self, demand: &Demand<'_>, candidates: &[Candidate]) -> Ranking {
        let mut ranking = Ranking {
            verdicts: Vec::with_capacity(candidates.len()),
            reasons: Vec::new(),
            scores: Vec::with_capacity(candidates.len()),
        };
        let mut any_rejected = false;
        for c in candidates {
            match Self::broken(demand, c) {
                None => {
                    ranking.verdicts.push(0);
                    ranking.scores.push(Self::score(c));
                }
                Some(reason) => {
                    any_rejected = true;
                    // Bounded by the job's label count plus three.
                    ranking
                        .verdicts
                        .push(u32::try_from(reason + 1).unwrap_or(u32::MAX));
                }
            }
        }
        if any_rejected {
            // Every reason the verdicts can name, made once per decision.
            ranking.reasons = demand
                .labels
                .iter()
                .map(|(k, v)| format!("missing label {k}={v}"))
                .chain(["no free slot", "not enough cpu", "not enough memory"].map(String::from))
                .collect();
        }
        ranking
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(id: &str, labels: &[(&str, &str)], free_slots: u32, free_mem: u64) -> Candidate {
        Candidate {
            worker: WorkerId(id.into()),
            labels: Arc::new(WorkerLabels::new(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )),
            capacity: Resources {
                cpu_millis: 4000,
                memory_mb: 8192,
            },
            free: Resources {
                cpu_millis: 4000,
                memory_mb: free_mem,
            },
            slots: 4,
            free_slots,
            metrics: WorkerMetrics::default(),
        }
    }

    #[test]
    fn rejections_are_aggregated_with_counts() {
        let labels: BTreeMap<String, String> = [("gpu".to_string(), "true".to_string())].into();
        let demand = Demand {
            labels: &labels,
            resources: Resources {
                cpu_millis: 0,
                memory_mb: 4096,
            },
            priority: 0,
            queue: "default",
        };
        let candidates = [
            candidate("a", &[], 4, 8192),
            candidate("b", &[("gpu", "false")], 4, 8192),
            candidate("c", &[("gpu", "true")], 4, 1024),
        ];
        assert_eq!(
            decide(&BuiltinPolicy, &demand, &candidates),
            Decision::Wait("2 workers: missing label gpu=true; 1 worker: not enough memory".into())
        );
    }

    #[test]
    fn places_on_a_worker_with_the_labels_and_prefers_the_emptiest() {
        let labels: BTreeMap<String, String> = [("gpu".to_string(), "true".to_string())].into();
        let demand = Demand {
            labels: &labels,
            resources: Resources::default(),
            priority: 0,
            queue: "default",
        };
        let candidates = [
            candidate("a", &[], 4, 8192),
            candidate("b", &[("gpu", "true")], 1, 8192),
            candidate("c", &[("gpu", "true")], 3, 8192),
        ];
        assert_eq!(
            decide(&BuiltinPolicy, &demand, &candidates),
            Decision::Place(WorkerId("c".into()))
        );
    }

    #[test]
    fn no_workers_says_so() {
        let labels = BTreeMap::new();
        let demand = Demand {
            labels: &labels,
            resources: Resources::default(),
            priority: 0,
            queue: "default",
        };
        assert_eq!(
            decide(&BuiltinPolicy, &demand, &[]),
            Decision::Wait("no workers connected".into())
        );
    }
}
