//! The columns one decision sends to a policy component (the WIT
//! `demand` and `workers`): filled per decision from the scheduler's
//! candidates into buffers each instance keeps, so a warm decision
//! allocates nothing.
//!
//! They are the cost of a Wasm decision that is not the policy's own
//! work. Numbers are copied a tight pass per column; label masks are kept
//! per worker and label set ([`MaskCache`]), since a worker's labels
//! change only when it registers again.

use std::collections::BTreeMap;

use super::bindings::hodei::scheduler::types::{
    Demand as WitDemand, LabelColumn, Workers as WitWorkers,
};
use crate::scheduler::policy::{Candidate, Demand};

/// One decision's inputs as WIT values, kept between decisions so that
/// their buffers are reused.
pub struct Columns {
    demand: WitDemand,
    workers: WitWorkers,
    masks: MaskCache,
}

impl std::fmt::Debug for Columns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Columns")
            .field("workers", &self.workers.slots_free.len())
            .finish_non_exhaustive()
    }
}

impl Default for Columns {
    fn default() -> Self {
        Self {
            demand: WitDemand {
                labels: Vec::new(),
                cpu_millis: 0,
                memory_mb: 0,
                priority: 0,
                queue: String::new(),
            },
            workers: WitWorkers {
                label_mask: Vec::new(),
                cpu_total: Vec::new(),
                cpu_free: Vec::new(),
                memory_total: Vec::new(),
                memory_free: Vec::new(),
                slots_total: Vec::new(),
                slots_free: Vec::new(),
                cpu_used_percent: Vec::new(),
                memory_used_mb: Vec::new(),
                labels_by_key: Vec::new(),
            },
            masks: MaskCache::default(),
        }
    }
}

impl Columns {
    /// Refills the columns for `demand` over `candidates`: numbers per
    /// worker, plus one id column per label key the policy asked for.
    pub fn fill(&mut self, demand: &Demand<'_>, candidates: &[Candidate], label_keys: &[String]) {
        let d = &mut self.demand;
        d.labels.clear();
        d.labels
            .extend(demand.labels.iter().map(|(k, v)| format!("{k}={v}")));
        d.cpu_millis = demand.resources.cpu_millis;
        d.memory_mb = demand.resources.memory_mb;
        d.priority = demand.priority;
        d.queue.clear();
        d.queue.push_str(demand.queue);

        // One tight pass per column (an `extend` of a slice's map knows its
        // length: no capacity check per element, and it vectorizes where
        // it can), not one pass pushing to every column.
        let w = &mut self.workers;
        refill(&mut w.cpu_total, candidates, |c| c.capacity.cpu_millis);
        refill(&mut w.cpu_free, candidates, |c| c.free.cpu_millis);
        refill(&mut w.memory_total, candidates, |c| c.capacity.memory_mb);
        refill(&mut w.memory_free, candidates, |c| c.free.memory_mb);
        refill(&mut w.slots_total, candidates, |c| c.slots);
        refill(&mut w.slots_free, candidates, |c| c.free_slots);
        refill(&mut w.cpu_used_percent, candidates, |c| {
            c.metrics.cpu_percent
        });
        refill(&mut w.memory_used_mb, candidates, |c| {
            c.metrics.memory_used_bytes / (1024 * 1024)
        });
        self.masks
            .fill(&mut w.label_mask, demand.labels, candidates);
        w.labels_by_key
            .resize_with(label_keys.len(), || LabelColumn {
                key: String::new(),
                values: Vec::new(),
                value_ids: Vec::new(),
            });
        for (column, key) in w.labels_by_key.iter_mut().zip(label_keys) {
            fill_label_column(column, key, candidates);
        }
    }

    /// The demand as last filled.
    pub fn demand(&self) -> &WitDemand {
        &self.demand
    }

    /// The worker columns as last filled.
    pub fn workers(&self) -> &WitWorkers {
        &self.workers
    }
}

/// Interns the values of `key` across `candidates`: a few strings per
/// decision, a u32 per worker.
fn fill_label_column(column: &mut LabelColumn, key: &str, candidates: &[Candidate]) {
    if column.key != key {
        column.key.clear();
        column.key.push_str(key);
    }
    column.values.clear();
    column.value_ids.clear();
    let LabelColumn {
        values, value_ids, ..
    } = column;
    value_ids.extend(candidates.iter().map(|c| match c.labels.get(key) {
        None => 0,
        Some(value) => {
            let index = values.iter().position(|v| v == value).unwrap_or_else(|| {
                values.push(value.clone());
                values.len() - 1
            });
            u32::try_from(index + 1).unwrap_or(u32::MAX)
        }
    }));
}

/// Clears `column` and refills it with `value` of each candidate.
#[inline]
fn refill<T>(column: &mut Vec<T>, candidates: &[Candidate], value: impl Fn(&Candidate) -> T) {
    column.clear();
    column.extend(candidates.iter().map(value));
}

/// Label masks already worked out, per set of labels a job asked for.
///
/// A worker's mask (bit `i` set when it carries the job's `i`-th label)
/// depends only on its labels, and those change only when it registers
/// again, under a new
/// [`WorkerLabels::id`](crate::scheduler::policy::WorkerLabels::id). So a
/// decision reads each worker's mask from the row of its position, and
/// looks the labels up only for a worker that is new there: a `BTreeMap`
/// lookup (string compares) per worker and label is what made the masks
/// the dearest column. The built-in policy still looks the labels up per
/// decision.
#[derive(Default)]
struct MaskCache {
    /// Least recently used first; at most [`MASK_SETS`].
    sets: Vec<MaskSet>,
}

/// Label sets whose masks are kept: a round tries each distinct demand
/// once, and jobs usually ask for a handful of label sets.
const MASK_SETS: usize = 16;

/// The masks kept for one label set.
struct MaskSet {
    /// The labels a job asked for.
    wanted: BTreeMap<String, String>,
    /// Per candidate position: the labels' id and their mask.
    rows: Vec<(u64, u64)>,
}

impl MaskCache {
    /// Refills `masks`, one per candidate, for a job asking `wanted`.
    fn fill(
        &mut self,
        masks: &mut Vec<u64>,
        wanted: &BTreeMap<String, String>,
        candidates: &[Candidate],
    ) {
        masks.clear();
        if wanted.is_empty() {
            masks.resize(candidates.len(), 0);
            return;
        }
        let set = self.set(wanted);
        let rows = &mut set.rows;
        rows.truncate(candidates.len());
        masks.extend(candidates.iter().enumerate().map(|(i, c)| {
            let id = c.labels.id();
            match rows.get_mut(i) {
                Some(&mut (known, mask)) if known == id => mask,
                row => {
                    let mask = mask_of(wanted, &c.labels);
                    match row {
                        Some(row) => *row = (id, mask),
                        // Rows are in position order: `i == rows.len()`.
                        None => rows.push((id, mask)),
                    }
                    mask
                }
            }
        }));
    }

    /// The set for `wanted`, made most recently used (the least recently
    /// used one is reused when all are taken).
    fn set(&mut self, wanted: &BTreeMap<String, String>) -> &mut MaskSet {
        let set = match self.sets.iter().position(|s| s.wanted == *wanted) {
            Some(i) => self.sets.remove(i),
            None if self.sets.len() < MASK_SETS => MaskSet {
                wanted: wanted.clone(),
                rows: Vec::new(),
            },
            None => {
                let mut set = self.sets.remove(0);
                set.wanted.clone_from(wanted);
                set.rows.clear();
                set
            }
        };
        self.sets.push(set);
        self.sets.last_mut().expect("just pushed")
    }
}

/// Bit `i` set when `labels` carry `wanted`'s `i`-th label (the first 64:
/// a job asking for more can never be placed by a plugin that keeps the
/// default constraints, which the SDK documents).
fn mask_of(wanted: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> u64 {
    wanted
        .iter()
        .take(64)
        .enumerate()
        .filter(|(_, (k, v))| labels.get(*k) == Some(*v))
        .fold(0, |mask, (i, _)| mask | (1 << i))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::Columns;
    use crate::plugins::policy::tests::{demand, worker};

    #[test]
    fn the_demand_carries_the_jobs_priority_and_queue() {
        let labels = BTreeMap::new();
        let mut columns = Columns::default();
        columns.fill(&demand(&labels, 42, "batch"), &[], &[]);
        let wit = columns.demand();
        assert_eq!((wit.priority, wit.queue.as_str()), (42, "batch"));
        columns.fill(&demand(&labels, -3, "default"), &[], &[]);
        let wit = columns.demand();
        assert_eq!((wit.priority, wit.queue.as_str()), (-3, "default"));
    }

    /// Refilled buffers hold this decision's workers only, label columns
    /// included, whatever the previous decision held.
    #[test]
    fn refilled_columns_hold_only_this_decisions_workers() {
        let labels: BTreeMap<String, String> = [("tier".to_owned(), "fast".to_owned())].into();
        let keys = ["tier".to_owned()];
        let mut columns = Columns::default();
        let three = [
            worker("a", "fast"),
            worker("b", "slow"),
            worker("c", "fast"),
        ];
        columns.fill(&demand(&labels, 0, "default"), &three, &keys);
        assert_eq!(columns.workers().label_mask, [1, 0, 1]);
        assert_eq!(columns.workers().labels_by_key[0].value_ids, [1, 2, 1]);
        let one = [worker("b", "slow")];
        columns.fill(&demand(&BTreeMap::new(), 0, "default"), &one, &keys);
        let w = columns.workers();
        assert_eq!(columns.demand().labels, Vec::<String>::new());
        assert_eq!(
            (w.label_mask.as_slice(), w.slots_free.as_slice()),
            (&[0][..], &[4][..])
        );
        assert_eq!(w.labels_by_key[0].key, "tier");
        assert_eq!(w.labels_by_key[0].values, ["slow"]);
        assert_eq!(w.labels_by_key[0].value_ids, [1]);
    }

    /// A cached mask is used only for the same labels at the same
    /// position: a worker that registers again (new labels), one that
    /// moves (another joined before it), and another label set asked are
    /// each worked out afresh.
    #[test]
    fn cached_label_masks_follow_workers_and_label_sets() {
        let fast: BTreeMap<String, String> = [("tier".to_owned(), "fast".to_owned())].into();
        let slow: BTreeMap<String, String> = [("tier".to_owned(), "slow".to_owned())].into();
        let mut columns = Columns::default();
        let mut masks = |wanted: &BTreeMap<String, String>, workers: &[_]| {
            columns.fill(&demand(wanted, 0, "default"), workers, &[]);
            columns.workers().label_mask.clone()
        };
        let a = worker("a", "fast");
        let b = worker("b", "slow");
        assert_eq!(masks(&fast, &[a.clone(), b.clone()]), [1, 0]);
        assert_eq!(masks(&fast, &[a.clone(), b.clone()]), [1, 0]);
        assert_eq!(masks(&slow, &[a.clone(), b.clone()]), [0, 1]);
        // `b` registers again, now fast: same position, labels under a new id.
        let b_again = worker("b", "fast");
        assert_eq!(masks(&fast, &[a.clone(), b_again.clone()]), [1, 1]);
        // A worker joins in front: every position moves.
        let first = worker("0", "slow");
        assert_eq!(
            masks(&fast, &[first.clone(), a.clone(), b_again.clone()]),
            [0, 1, 1]
        );
        assert_eq!(masks(&slow, &[first, a, b]), [1, 0, 1]);
    }

    /// More label sets than are kept: each is still right when it comes
    /// back after being evicted.
    #[test]
    fn evicted_label_sets_are_worked_out_again() {
        let mut columns = Columns::default();
        let workers: Vec<_> = (0..4)
            .map(|i| worker(&format!("w{i}"), &format!("t{i}")))
            .collect();
        for _ in 0..2 {
            for i in 0..super::MASK_SETS + 3 {
                let wanted: BTreeMap<String, String> =
                    [("tier".to_owned(), format!("t{}", i % 5))].into();
                columns.fill(&demand(&wanted, 0, "default"), &workers, &[]);
                let expected: Vec<u64> = (0..4).map(|w| u64::from(w == i % 5)).collect();
                assert_eq!(columns.workers().label_mask, expected, "label set {i}");
            }
        }
        assert!(columns.masks.sets.len() <= super::MASK_SETS);
    }
}
