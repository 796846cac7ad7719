//! Between the WIT shapes (columns in, a ranking out) and the per-worker
//! [`Job`] / [`Worker`] / [`Reject`] an author sees. The export glue and
//! [`super::testing`] both go through here, so native tests exercise the
//! same conversion the component runs.

use super::bindings::{Demand, Ranking, Workers};
use super::verdicts::Filtered;
use super::{Job, Policy, Verdicts, Worker};

/// One decision: the hard constraints over the columns, then
/// `policy.filter_all` over the workers that keep them, then
/// `policy.score_all` over the workers it accepted (not called when none
/// was), packed as WIT `ranking`. Lengths are passed through unchecked: the
/// host validates them.
///
/// Verdicts number the hard constraints' reasons first (the job's labels
/// in order, then slot, cpu, memory; all of them, listed only when a
/// worker broke one), then the filter's own.
pub(crate) fn decide<P: Policy>(policy: &P, demand: Demand, candidates: &Workers) -> Ranking {
    let job = Job::from(demand);
    check_columns(candidates);
    let mut feasible = Vec::new();
    let mut verdicts = hard_verdicts(&job, candidates, &mut feasible);
    let mut filtered = Verdicts::new(&feasible);
    policy.filter_all(&job, &feasible, &mut filtered);
    let mut reasons = if feasible.len() < verdicts.len() {
        hard_reasons(&job)
    } else {
        Vec::new()
    };
    let accepted = match filtered.finish() {
        Filtered::All => feasible,
        Filtered::Some {
            verdicts: filter_verdicts,
            reasons: filter_reasons,
            accepted,
        } => {
            let offset = u32::try_from(reasons.len()).expect("fewer than 2^32 reasons");
            let mut next = filter_verdicts.iter();
            for verdict in verdicts.iter_mut().filter(|verdict| **verdict == 0) {
                // `finish` checked there is one per feasible worker.
                match next.next().expect("a filter verdict per feasible worker") {
                    0 => {}
                    k => *verdict = k + offset,
                }
            }
            reasons.extend(filter_reasons);
            accepted
        }
    };
    let scores = if accepted.is_empty() {
        Vec::new()
    } else {
        policy.score_all(&job, &accepted)
    };
    Ranking {
        verdicts,
        reasons,
        scores,
    }
}

/// Per worker, which hard constraint it breaks, in one pass over the
/// columns (no rejection made per worker): 0 for none,
/// else 1 + the index of the first broken one in [`hard_reasons`], in the
/// order and with the meaning of [`super::hard_constraints`]. The workers
/// that break none are pushed to `feasible` in the same pass.
fn hard_verdicts<'a>(job: &'a Job, c: &'a Workers, feasible: &mut Vec<Worker<'a>>) -> Vec<u32> {
    let asked = job.labels().len();
    let wanted = WantedLabels::new(asked);
    let labels = u32::try_from(asked).expect("fewer than 2^32 labels");
    let (slot, cpu, memory) = (labels + 1, labels + 2, labels + 3);
    let (cpu_needed, memory_needed) = (job.cpu_millis(), job.memory_mb());
    feasible.reserve_exact(c.label_mask.len());
    c.label_mask
        .iter()
        .zip(&c.slots_free)
        .zip(&c.cpu_free)
        .zip(&c.memory_free)
        .enumerate()
        .map(
            |(index, (((&mask, &slots_free), &cpu_free), &memory_free))| {
                if let Some(label) = wanted.missing(mask) {
                    // At most 64: fits.
                    label as u32 + 1
                } else if slots_free == 0 {
                    slot
                } else if cpu_free < cpu_needed {
                    cpu
                } else if memory_free < memory_needed {
                    memory
                } else {
                    feasible.push(Worker {
                        index,
                        labels: job.labels(),
                        columns: c,
                    });
                    0
                }
            },
        )
        .collect()
}

/// The labels a job asks for, as the bits a worker's label mask must
/// carry: the one rule for which label is missing, shared by
/// [`Worker`]'s `missing_label_index` and [`hard_verdicts`].
#[derive(Clone, Copy)]
pub(crate) struct WantedLabels {
    bits: u64,
    /// Labels past the 64th are never reported as carried.
    beyond_mask: bool,
}

impl WantedLabels {
    #[inline]
    pub(crate) fn new(asked: usize) -> Self {
        let bits = match asked {
            0 => 0,
            1..64 => (1_u64 << asked) - 1,
            _ => u64::MAX,
        };
        Self {
            bits,
            beyond_mask: asked > 64,
        }
    }

    /// Index (in the job's labels) of the first label a worker with
    /// `mask` lacks; 64 when it carries the first 64 and more are asked.
    #[inline]
    pub(crate) fn missing(self, mask: u64) -> Option<usize> {
        match !mask & self.bits {
            0 if self.beyond_mask => Some(64),
            0 => None,
            missing => Some(missing.trailing_zeros() as usize),
        }
    }
}

/// The hard constraints' reasons, numbered as [`hard_verdicts`] numbers
/// them: `missing label k=v` per label of the job, then `no free slot`,
/// `not enough cpu`, `not enough memory` (the built-in policy's words).
fn hard_reasons(job: &Job) -> Vec<String> {
    (0..job.labels().len())
        .filter_map(|index| job.missing_reason(index))
        .map(|reason| reason.to_string())
        .chain(
            [HARD_SLOT, HARD_CPU, HARD_MEMORY]
                .into_iter()
                .map(str::to_owned),
        )
        .collect()
}

/// The resource reasons of the hard constraints.
pub(crate) const HARD_SLOT: &str = "no free slot";
/// See [`HARD_SLOT`].
pub(crate) const HARD_CPU: &str = "not enough cpu";
/// See [`HARD_SLOT`].
pub(crate) const HARD_MEMORY: &str = "not enough memory";

/// `policy.score_all` over every worker of the WIT inputs (for
/// [`super::testing::score`]).
pub(crate) fn score<P: Policy>(policy: &P, demand: Demand, candidates: &Workers) -> Vec<i64> {
    let job = Job::from(demand);
    let workers = workers(&job, candidates);
    policy.score_all(&job, &workers)
}

/// One [`Worker`] per index of the columns.
///
/// # Panics
/// When the columns are malformed (see [`check_columns`]).
pub(crate) fn workers<'a>(job: &'a Job, c: &'a Workers) -> Vec<Worker<'a>> {
    check_columns(c);
    (0..c.label_mask.len())
        .map(|index| Worker {
            index,
            labels: job.labels(),
            columns: c,
        })
        .collect()
}

/// That the columns are of one length and every label value id names a
/// value.
///
/// # Panics
/// When they are not (a host bug): the call traps and the host falls back,
/// which beats scoring misaligned data.
fn check_columns(c: &Workers) {
    let n = c.label_mask.len();
    let lengths = [
        c.cpu_total.len(),
        c.cpu_free.len(),
        c.memory_total.len(),
        c.memory_free.len(),
        c.slots_total.len(),
        c.slots_free.len(),
        c.cpu_used_percent.len(),
        c.memory_used_mb.len(),
    ];
    assert!(
        lengths.iter().all(|&len| len == n),
        "worker columns differ in length: label-mask {n}, others {lengths:?}"
    );
    for column in &c.labels_by_key {
        assert!(
            column.value_ids.len() == n,
            "label column {:?} has {} ids for {n} workers",
            column.key,
            column.value_ids.len()
        );
        assert!(
            column
                .value_ids
                .iter()
                .all(|&id| (id as usize) <= column.values.len()),
            "label column {:?} has an id past its {} values",
            column.key,
            column.values.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::bindings::LabelColumn;
    use super::*;
    use crate::policy::Reject;

    fn columns(masks: &[u64], slots_free: &[u32], cpu_free: &[u64]) -> Workers {
        let n = masks.len();
        Workers {
            label_mask: masks.to_vec(),
            cpu_total: vec![4000; n],
            cpu_free: cpu_free.to_vec(),
            memory_total: vec![8192; n],
            memory_free: vec![8192; n],
            slots_total: vec![4; n],
            slots_free: slots_free.to_vec(),
            cpu_used_percent: vec![0.0; n],
            memory_used_mb: vec![0; n],
            labels_by_key: Vec::new(),
        }
    }

    fn zone_column(values: &[&str], value_ids: &[u32]) -> LabelColumn {
        LabelColumn {
            key: "zone".to_owned(),
            values: values.iter().map(|v| (*v).to_owned()).collect(),
            value_ids: value_ids.to_vec(),
        }
    }

    fn demand(labels: &[&str], cpu_millis: u64) -> Demand {
        Demand {
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            cpu_millis,
            memory_mb: 0,
            priority: 0,
            queue: "default".to_owned(),
        }
    }

    struct Defaults;

    impl Policy for Defaults {
        const NAME: &'static str = "defaults";

        fn configure(_: &str) -> Result<Self, String> {
            Ok(Self)
        }

        fn score(&self, _: &Job, worker: &Worker<'_>) -> i64 {
            i64::from(worker.slots_free())
        }
    }

    /// `results` given one by one to [`Verdicts`] over as many workers:
    /// the verdicts and the reasons table.
    fn verdicts(results: &[Result<(), Reject>]) -> (Vec<u32>, Vec<String>) {
        let n = results.len();
        let c = columns(&vec![0; n], &vec![1; n], &vec![0; n]);
        let job = Job::from(demand(&[], 0));
        let ws = workers(&job, &c);
        let mut verdicts = Verdicts::new(&ws);
        for result in results {
            verdicts.push(result.clone());
        }
        let (verdicts, reasons, accepted) = match verdicts.finish() {
            Filtered::All => (vec![0; n], Vec::new(), ws.clone()),
            Filtered::Some {
                verdicts,
                reasons,
                accepted,
            } => (verdicts, reasons, accepted),
        };
        let indexes: Vec<usize> = accepted.iter().map(Worker::index).collect();
        let expected: Vec<usize> = (0..n).filter(|&i| results[i].is_ok()).collect();
        assert_eq!(indexes, expected, "the accepted workers, in order");
        (verdicts, reasons)
    }

    /// Admits the first worker it is asked about only.
    struct FirstOnly;

    impl Policy for FirstOnly {
        const NAME: &'static str = "first-only";

        fn configure(_: &str) -> Result<Self, String> {
            Ok(Self)
        }

        fn filter_all<'a>(&self, _: &Job, workers: &[Worker<'a>], verdicts: &mut Verdicts<'_, 'a>) {
            for (i, worker) in workers.iter().enumerate() {
                // Only workers that keep the hard constraints are asked.
                assert!(worker.slots_free() > 0, "asked about a full worker");
                if i == 0 {
                    verdicts.accept();
                } else {
                    verdicts.reject(Reject::fixed("not first"));
                }
            }
        }

        fn score(&self, _: &Job, worker: &Worker<'_>) -> i64 {
            i64::from(worker.slots_free())
        }
    }

    #[test]
    fn an_overridden_filter_all_decides_and_only_its_accepted_are_scored() {
        let c = columns(&[0, 0, 0], &[4, 5, 6], &[0, 0, 0]);
        let r = decide(&FirstOnly, demand(&[], 0), &c);
        assert_eq!(r.verdicts, [0, 1, 1]);
        assert_eq!(r.reasons, ["not first"]);
        assert_eq!(r.scores, [4]);
    }

    /// The filter sees only the workers that keep the hard constraints, and
    /// its reasons are numbered after theirs.
    #[test]
    fn hard_constraints_come_first_and_the_filters_reasons_after_them() {
        // Worker 0 is full, worker 2 lacks the label: the filter is asked
        // about 1 and 3 and accepts the first of them only.
        let c = columns(&[1, 1, 0, 1], &[0, 5, 6, 7], &[0, 0, 0, 0]);
        let r = decide(&FirstOnly, demand(&["gpu=true"], 0), &c);
        assert_eq!(
            r.reasons,
            [
                "missing label gpu=true",
                "no free slot",
                "not enough cpu",
                "not enough memory",
                "not first"
            ]
        );
        assert_eq!(r.verdicts, [2, 0, 1, 5]);
        assert_eq!(r.scores, [5]);
    }

    /// Every verdict the columnar pass gives is the one [`hard_constraints`]
    /// gives for that worker, over masks, slots, cpu and memory around
    /// their limits, with 0, 1, 2 and 65 labels asked.
    ///
    /// [`hard_constraints`]: super::super::hard_constraints
    #[test]
    fn the_columnar_hard_constraints_agree_with_hard_constraints() {
        let many: Vec<String> = (0..65).map(|i| format!("l{i}=x")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        for labels in [&[][..], &["a=1"][..], &["a=1", "b=2"][..], &many[..]] {
            let mut job = demand(labels, 1000);
            job.memory_mb = 512;
            let masks = [0, 1, 2, 3, u64::MAX, u64::MAX - 1];
            let mut c = columns(&[], &[], &[]);
            for &mask in &masks {
                for slots in [0, 1] {
                    for cpu in [999, 1000] {
                        for memory in [511, 512] {
                            c.label_mask.push(mask);
                            c.slots_free.push(slots);
                            c.cpu_free.push(cpu);
                            c.memory_free.push(memory);
                            c.cpu_total.push(4000);
                            c.memory_total.push(8192);
                            c.slots_total.push(4);
                            c.cpu_used_percent.push(0.0);
                            c.memory_used_mb.push(0);
                        }
                    }
                }
            }
            let r = decide(&Defaults, job.clone(), &c);
            let expected_job = Job::from(job);
            let expected: Vec<Option<String>> = workers(&expected_job, &c)
                .iter()
                .map(|w| {
                    crate::policy::hard_constraints(&expected_job, w)
                        .err()
                        .map(Reject::into_reason)
                })
                .collect();
            let got: Vec<Option<String>> = r
                .verdicts
                .iter()
                .map(|&k| (k > 0).then(|| r.reasons[k as usize - 1].clone()))
                .collect();
            assert_eq!(got, expected, "{} labels", labels.len());
            // Both outcomes occur (a job asking for 65 labels fits nowhere).
            assert!(got.iter().any(Option::is_some));
            assert_eq!(got.iter().any(Option::is_none), labels.len() <= 64);
        }
    }

    /// A filter that gives too few or too many verdicts fails the call (a
    /// trap in the component), rather than shifting every later worker.
    #[test]
    #[should_panic(expected = "filter_all gave 2 verdicts for 3 workers")]
    fn too_few_verdicts_panic() {
        let c = columns(&[0, 0, 0], &[1, 1, 1], &[0, 0, 0]);
        let job = Job::from(demand(&[], 0));
        let ws = workers(&job, &c);
        let mut verdicts = Verdicts::new(&ws);
        verdicts.accept();
        verdicts.reject(Reject::fixed("no"));
        let _ = verdicts.finish();
    }

    #[test]
    #[should_panic(expected = "filter_all gave more verdicts than the 1 workers")]
    fn too_many_verdicts_panic() {
        let c = columns(&[0], &[1], &[0]);
        let job = Job::from(demand(&[], 0));
        let ws = workers(&job, &c);
        let mut verdicts = Verdicts::new(&ws);
        verdicts.accept();
        verdicts.accept();
    }

    #[test]
    fn verdicts_dedupe_reasons_in_order_of_first_use() {
        let (verdicts, reasons) = verdicts(&[
            Err(Reject::new("no free slot")),
            Ok(()),
            Err(Reject::new("missing label gpu=true")),
            Err(Reject::new("no free slot")),
            Ok(()),
            Err(Reject::new("missing label gpu=true")),
        ]);
        assert_eq!(verdicts, [1, 0, 2, 1, 0, 2]);
        assert_eq!(reasons, ["no free slot", "missing label gpu=true"]);
    }

    #[test]
    fn all_accepted_means_no_reasons() {
        let (verdicts, reasons) = verdicts(&[Ok(()), Ok(())]);
        assert_eq!(verdicts, [0, 0]);
        assert!(reasons.is_empty());
    }

    /// Verdicts keeps nothing until the first rejection: the workers
    /// accepted before it are still counted, in order, and those after it.
    #[test]
    fn accepted_before_the_first_rejection_are_kept() {
        let (verdicts, reasons) = verdicts(&[
            Ok(()),
            Ok(()),
            Err(Reject::new("busy")),
            Ok(()),
            Err(Reject::new("busy")),
        ]);
        assert_eq!(verdicts, [0, 0, 1, 0, 1]);
        assert_eq!(reasons, ["busy"]);
    }

    #[test]
    fn default_filter_over_columns() {
        // Job wants gpu=true and zone=a (bits 0 and 1) and 1000 millicores.
        let c = columns(
            &[0b11, 0b01, 0b11, 0b11],
            &[1, 1, 0, 1],
            &[4000, 4000, 4000, 500],
        );
        let r = decide(&Defaults, demand(&["gpu=true", "zone=a"], 1000), &c);
        assert_eq!(r.verdicts, [0, 2, 3, 4]);
        assert_eq!(
            r.reasons,
            [
                "missing label gpu=true",
                "missing label zone=a",
                "no free slot",
                "not enough cpu",
                "not enough memory"
            ]
        );
        // Scored: the one accepted worker only.
        assert_eq!(r.scores, [1]);
    }

    #[test]
    fn the_first_missing_label_is_found_from_the_mask() {
        let labels: Vec<String> = (0..65).map(|i| format!("l{i}=x")).collect();
        let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        let job = Job::from(demand(&refs, 0));
        let c = columns(&[u64::MAX, u64::MAX - 1, 0b1011], &[1; 3], &[0; 3]);
        let ws = workers(&job, &c);
        // All 64 reported, and the 65th can never be.
        assert_eq!(ws[0].missing_label_index(), Some(64));
        assert_eq!(ws[1].missing_label_index(), Some(0));
        assert_eq!(ws[2].missing_label_index(), Some(2));
        let two = Job::from(demand(&["a=1", "b=2"], 0));
        let c = columns(&[0b11, 0b10, 0b111], &[1; 3], &[0; 3]);
        let ws = workers(&two, &c);
        let found: Vec<Option<usize>> = ws.iter().map(Worker::missing_label_index).collect();
        assert_eq!(found, [None, Some(0), None]);
        let none = Job::from(demand(&[], 0));
        assert_eq!(workers(&none, &c)[1].missing_label_index(), None);
    }

    #[test]
    fn workers_read_each_index_from_the_columns() {
        let job = Job::from(demand(&["gpu=true", "zone=a"], 0));
        let c = columns(&[0b10, 0b01], &[3, 2], &[100, 200]);
        let ws = workers(&job, &c);
        assert_eq!(ws.len(), 2);
        assert_eq!(
            (ws[0].index(), ws[0].slots_free(), ws[0].cpu_free_millis()),
            (0, 3, 100)
        );
        assert_eq!(
            (ws[1].index(), ws[1].slots_free(), ws[1].cpu_free_millis()),
            (1, 2, 200)
        );
        assert!(ws[0].has_label("zone=a") && !ws[0].has_label("gpu=true"));
        assert_eq!(ws[0].missing_label(), Some("gpu=true"));
        assert!(ws[1].has_label("gpu=true") && !ws[1].has_all_labels());
        assert!(!ws[1].has_label("unasked=label"));
    }

    #[test]
    fn workers_read_label_values_and_running_jobs_from_the_columns() {
        let job = Job::from(demand(&[], 0));
        let mut c = columns(&[0, 0, 0], &[4, 1, 0], &[0, 0, 0]);
        c.labels_by_key = vec![zone_column(&["eu-1b", "eu-1a"], &[2, 0, 1])];
        let ws = workers(&job, &c);
        assert_eq!(ws[0].label("zone"), Some("eu-1a"));
        assert_eq!(ws[1].label("zone"), None);
        assert_eq!(ws[2].label("zone"), Some("eu-1b"));
        assert_eq!(ws[2].label("rack"), None);
        let running: Vec<u32> = ws.iter().map(Worker::running_jobs).collect();
        assert_eq!(running, [0, 3, 4]);
    }

    #[test]
    #[should_panic(expected = "label column \"zone\" has 1 ids for 2 workers")]
    fn a_short_label_column_panics() {
        let mut c = columns(&[0, 0], &[1, 1], &[0, 0]);
        c.labels_by_key = vec![zone_column(&["a"], &[1])];
        let job = Job::from(demand(&[], 0));
        let _ = workers(&job, &c);
    }

    #[test]
    #[should_panic(expected = "label column \"zone\" has an id past its 1 values")]
    fn a_label_id_out_of_range_panics() {
        let mut c = columns(&[0, 0], &[1, 1], &[0, 0]);
        c.labels_by_key = vec![zone_column(&["a"], &[1, 2])];
        let job = Job::from(demand(&[], 0));
        let _ = workers(&job, &c);
    }

    #[test]
    fn decide_scores_the_accepted_workers_only_in_order() {
        let c = columns(&[0, 0, 0, 0], &[3, 0, 2, 4], &[0, 0, 0, 0]);
        let r = decide(&Defaults, demand(&[], 0), &c);
        assert_eq!(r.verdicts, [0, 1, 0, 0]);
        assert_eq!(
            r.reasons,
            ["no free slot", "not enough cpu", "not enough memory"]
        );
        assert_eq!(r.scores, [3, 2, 4]);
    }

    #[test]
    fn score_is_one_per_worker_in_order() {
        let c = columns(&[0, 0, 0], &[3, 1, 2], &[0, 0, 0]);
        assert_eq!(score(&Defaults, demand(&[], 0), &c), [3, 1, 2]);
    }

    #[test]
    fn empty_candidate_list() {
        let c = columns(&[], &[], &[]);
        let r = decide(&Defaults, demand(&["gpu=true"], 0), &c);
        assert!(r.verdicts.is_empty() && r.reasons.is_empty() && r.scores.is_empty());
        assert!(score(&Defaults, demand(&[], 0), &c).is_empty());
    }

    #[test]
    #[should_panic(expected = "worker columns differ in length")]
    fn misaligned_columns_panic() {
        let mut c = columns(&[0, 0], &[1, 1], &[0, 0]);
        c.memory_free.pop();
        let job = Job::from(demand(&[], 0));
        let _ = workers(&job, &c);
    }
}
