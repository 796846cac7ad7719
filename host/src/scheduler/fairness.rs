//! What orders contended capacity, as the operator configured it: the
//! fair-share queues with their weights, aging, and when a job that fits
//! nowhere gets capacity held for it (backfill).
//!
//! Queues are a closed set named in config (`default` always exists):
//! a job naming another is refused at submit with the list of known ones,
//! as a Slurm partition or a Kueue LocalQueue must exist. That keeps the
//! set bounded, so a queue is a small integer ([`QueueId`]) in the hot
//! paths (an assignment is `Copy`; usage is a vector), and it keeps
//! typos from creating a queue of their own with a share of the cluster.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::domain::{DEFAULT_QUEUE, Timestamp};

/// A configured queue, by position in [`Fairness::queues`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(pub u16);

/// One effective-priority unit, in the fixed point [`Fairness::rank`]
/// uses: a rank is `priority × SCALE` plus what waiting earned.
pub const SCALE: i64 = 1_000_000;

/// Queues, weights, aging and backfill.
#[derive(Debug, Clone)]
pub struct Fairness {
    names: Vec<Arc<str>>,
    weights: Vec<u32>,
    index: HashMap<Arc<str>, QueueId>,
    aging_per_minute: u32,
    aging_max: u32,
    backfill_after: Duration,
}

impl Default for Fairness {
    fn default() -> Self {
        Self::new(&BTreeMap::new(), 1, 1000, Duration::from_secs(60))
            .expect("the default queue alone is a valid configuration")
    }
}

/// Most queues a host may be configured with.
pub const MAX_QUEUES: usize = 1024;

impl Fairness {
    /// `weights` by queue name (`default` has weight 1 unless given).
    /// `aging_per_minute`: priority points a pending job gains per minute
    /// it has waited, up to `aging_max`. `backfill_after`: how long the
    /// first job that fits nowhere waits before capacity is held for it.
    pub fn new(
        weights: &BTreeMap<String, u32>,
        aging_per_minute: u32,
        aging_max: u32,
        backfill_after: Duration,
    ) -> Result<Self, String> {
        let mut names: Vec<Arc<str>> = vec![Arc::from(DEFAULT_QUEUE)];
        let mut list = vec![weights.get(DEFAULT_QUEUE).copied().unwrap_or(1)];
        for (name, weight) in weights {
            if name != DEFAULT_QUEUE {
                names.push(Arc::from(name.as_str()));
                list.push(*weight);
            }
        }
        if names.len() > MAX_QUEUES {
            return Err(format!("at most {MAX_QUEUES} queues"));
        }
        for (name, weight) in names.iter().zip(&list) {
            if !is_queue_name(name) {
                return Err(format!(
                    "queue name {name:?}: 1 to 64 of a-z 0-9 _ . - expected"
                ));
            }
            if *weight == 0 || *weight > 1_000_000 {
                return Err(format!("queue {name}: weight {weight} not in 1..=1000000"));
            }
        }
        let index = names
            .iter()
            .enumerate()
            .map(|(i, name)| (Arc::clone(name), QueueId(i as u16)))
            .collect();
        Ok(Self {
            names,
            weights: list,
            index,
            aging_per_minute,
            aging_max,
            backfill_after,
        })
    }

    /// The queue called `name`, if configured.
    pub fn id(&self, name: &str) -> Option<QueueId> {
        self.index.get(name).copied()
    }

    /// The queue a stored job is charged to: its own, or `default` when
    /// its queue is no longer configured.
    pub fn resolve(&self, name: &str) -> QueueId {
        self.id(name).unwrap_or_default()
    }

    /// A queue's name.
    pub fn name(&self, id: QueueId) -> &Arc<str> {
        &self.names[usize::from(id.0)]
    }

    /// A queue's weight.
    pub fn weight(&self, id: QueueId) -> u32 {
        self.weights[usize::from(id.0)]
    }

    /// Every queue with its weight, `default` first.
    pub fn queues(&self) -> impl Iterator<Item = (QueueId, &Arc<str>, u32)> {
        self.names
            .iter()
            .zip(&self.weights)
            .enumerate()
            .map(|(i, (name, weight))| (QueueId(i as u16), name, *weight))
    }

    /// How many queues there are.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Never true: `default` always exists.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// How long the first job that fits nowhere waits before capacity is
    /// held for it.
    pub fn backfill_after(&self) -> Duration {
        self.backfill_after
    }

    /// A pending job's rank at `now`: its priority plus what it earned
    /// by waiting since `since` (when it became eligible), in units of
    /// `1 / SCALE` priority points, so that ranks compare exactly.
    pub fn rank(&self, priority: i32, since: Timestamp, now: Timestamp) -> i64 {
        let waited_us = i128::from(now.0.saturating_sub(since.0).max(0));
        let earned = waited_us * i128::from(self.aging_per_minute) * i128::from(SCALE) / 60_000_000;
        let cap = i128::from(self.aging_max) * i128::from(SCALE);
        i64::from(priority) * SCALE + i64::try_from(earned.min(cap)).unwrap_or(i64::MAX)
    }

    /// The whole priority points of [`Self::rank`] (what the API shows).
    pub fn effective_priority(&self, priority: i32, since: Timestamp, now: Timestamp) -> i32 {
        let rank = self.rank(priority, since, now).div_euclid(SCALE);
        i32::try_from(rank).unwrap_or(i32::MAX)
    }
}

/// A queue name: 1 to 64 of `a-z 0-9 _ . -` (it appears in metric labels
/// and config keys, so nothing that needs quoting).
pub fn is_queue_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fairness(per_minute: u32, max: u32) -> Fairness {
        Fairness::new(&BTreeMap::new(), per_minute, max, Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn aging_adds_its_rate_per_minute_waited_up_to_its_cap() {
        let f = fairness(600, 25);
        let since = Timestamp(1_000_000_000);
        let at = |secs: i64| Timestamp(since.0 + secs * 1_000_000);
        assert_eq!(f.effective_priority(0, since, since), 0);
        assert_eq!(f.effective_priority(0, since, at(1)), 10);
        assert_eq!(f.effective_priority(-5, since, at(2)), 15);
        assert_eq!(f.effective_priority(0, since, at(3600)), 25);
        // Ranks are exact: a job that waited 1 s longer at 600/min is
        // worth exactly 10 points more.
        let f = fairness(600, 1000);
        assert_eq!(f.rank(0, since, at(5)), f.rank(10, at(1), at(5)));
        assert!(f.rank(0, since, at(5)) > f.rank(10, Timestamp(at(1).0 + 1), at(5)));
        // No aging: the priority alone.
        assert_eq!(fairness(0, 1000).effective_priority(3, since, at(99)), 3);
    }

    #[test]
    fn queues_are_the_configured_ones_plus_default() {
        let weights = [("batch".to_owned(), 3), ("web".to_owned(), 1)].into();
        let f = Fairness::new(&weights, 1, 10, Duration::from_secs(1)).unwrap();
        let names: Vec<&str> = f.queues().map(|(_, n, _)| &**n).collect();
        assert_eq!(names, ["default", "batch", "web"]);
        assert_eq!(f.weight(f.id("batch").unwrap()), 3);
        assert_eq!(f.resolve("gone"), QueueId(0));
        let bad = [("Batch".to_owned(), 1)].into();
        assert!(Fairness::new(&bad, 1, 10, Duration::ZERO).is_err());
        let zero = [("batch".to_owned(), 0)].into();
        assert!(Fairness::new(&zero, 1, 10, Duration::ZERO).is_err());
    }
}
