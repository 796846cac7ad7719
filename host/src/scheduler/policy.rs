//! Placement policy: the filter/score shape every policy has, and the
//! host's built-in default.
//!
//! The shape mirrors the Wasm scheduling world: `filter` and `score` are
//! each called once per decision over the whole candidate list (not once per
//! worker), `filter` gives a reason for every rejection, and the host picks
//! the highest score. The built-in policy is written against the same trait
//! so it can stay as the fallback when a plugin fails.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::domain::{Resources, WorkerId, WorkerMetrics};

/// A worker as a policy sees it at decision time.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Identity.
    pub worker: WorkerId,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
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

/// A filter's answer for one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The job may run there.
    Accept,
    /// It may not, and why (short, stable text: it is aggregated). Shared,
    /// because many workers are usually rejected for the same reason.
    Reject(Arc<str>),
}

/// A scheduling policy: feasibility, then ranking.
pub trait PlacementPolicy: Send + Sync + std::fmt::Debug {
    /// Name shown in the API.
    fn name(&self) -> &str;
    /// One verdict per candidate, in order.
    fn filter(&self, demand: &Demand<'_>, candidates: &[Candidate]) -> Vec<Verdict>;
    /// One score per feasible candidate, in order; highest wins.
    fn score(&self, demand: &Demand<'_>, feasible: &[&Candidate]) -> Vec<i64>;
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

/// Runs `policy` over `candidates` for one job.
pub fn decide(
    policy: &dyn PlacementPolicy,
    demand: &Demand<'_>,
    candidates: &[Candidate],
) -> Decision {
    if candidates.is_empty() {
        return Decision::Wait("no workers connected".to_owned());
    }
    let verdicts = policy.filter(demand, candidates);
    let feasible: Vec<&Candidate> = candidates
        .iter()
        .zip(&verdicts)
        .filter(|(_, verdict)| **verdict == Verdict::Accept)
        .map(|(candidate, _)| candidate)
        .collect();
    if feasible.is_empty() {
        // Reasons are only worth counting when they are the answer.
        let mut reasons: HashMap<&str, usize> = HashMap::new();
        for verdict in &verdicts {
            if let Verdict::Reject(reason) = verdict {
                *reasons.entry(reason).or_default() += 1;
            }
        }
        return Decision::Wait(summarize(reasons));
    }
    let scores = policy.score(demand, &feasible);
    let best = feasible
        .iter()
        .zip(scores)
        .max_by(|(a, sa), (b, sb)| sa.cmp(sb).then_with(|| b.worker.cmp(&a.worker)));
    match best {
        Some((candidate, _)) => Decision::Place(candidate.worker.clone()),
        None => Decision::Wait("policy returned no scores".to_owned()),
    }
}

/// `2 workers: missing label gpu=true; 1 worker: not enough memory`, most
/// common reason first.
fn summarize(reasons: HashMap<&str, usize>) -> String {
    let mut reasons: Vec<(&str, usize)> = reasons.into_iter().collect();
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

impl PlacementPolicy for BuiltinPolicy {
    fn name(&self) -> &str {
        "builtin"
    }

    fn filter(&self, demand: &Demand<'_>, candidates: &[Candidate]) -> Vec<Verdict> {
        // One shared reason per distinct cause, made once per call.
        let missing: Vec<Arc<str>> = demand
            .labels
            .iter()
            .map(|(k, v)| Arc::from(format!("missing label {k}={v}")))
            .collect();
        let (no_slot, no_cpu, no_memory): (Arc<str>, Arc<str>, Arc<str>) = (
            Arc::from("no free slot"),
            Arc::from("not enough cpu"),
            Arc::from("not enough memory"),
        );
        candidates
            .iter()
            .map(|c| {
                if let Some(i) = demand
                    .labels
                    .iter()
                    .position(|(k, v)| c.labels.get(k) != Some(v))
                {
                    Verdict::Reject(Arc::clone(&missing[i]))
                } else if c.free_slots == 0 {
                    Verdict::Reject(Arc::clone(&no_slot))
                } else if c.free.cpu_millis < demand.resources.cpu_millis {
                    Verdict::Reject(Arc::clone(&no_cpu))
                } else if c.free.memory_mb < demand.resources.memory_mb {
                    Verdict::Reject(Arc::clone(&no_memory))
                } else {
                    Verdict::Accept
                }
            })
            .collect()
    }

    fn score(&self, _demand: &Demand<'_>, feasible: &[&Candidate]) -> Vec<i64> {
        fn share(free: u64, total: u64) -> i64 {
            free.saturating_mul(1000)
                .checked_div(total)
                .map_or(0, |share| i64::try_from(share).unwrap_or(1000))
        }
        feasible
            .iter()
            .map(|c| {
                share(u64::from(c.free_slots), u64::from(c.slots))
                    + share(c.free.cpu_millis, c.capacity.cpu_millis)
                    + share(c.free.memory_mb, c.capacity.memory_mb)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(id: &str, labels: &[(&str, &str)], free_slots: u32, free_mem: u64) -> Candidate {
        Candidate {
            worker: WorkerId(id.into()),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
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
