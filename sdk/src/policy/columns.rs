//! Between the WIT shapes (columns in, verdict table out) and the per-worker
//! [`Job`] / [`Worker`] / [`Reject`] an author sees. The export glue and
//! [`super::testing`] both go through here, so native tests exercise the
//! same conversion the component runs.

use super::bindings::{Demand, Verdicts, Workers};
use super::{Job, Policy, Reject, Worker};

/// `policy.filter_all` over the WIT inputs, packed as WIT `verdicts`.
pub(crate) fn filter<P: Policy>(policy: &P, demand: Demand, candidates: &Workers) -> Verdicts {
    let job = Job::from(demand);
    let workers = workers(&job, candidates);
    verdicts(&policy.filter_all(&job, &workers))
}

/// `policy.score_all` over the WIT inputs. The length is passed through
/// unchecked: the host validates it.
pub(crate) fn score<P: Policy>(policy: &P, demand: Demand, candidates: &Workers) -> Vec<i64> {
    let job = Job::from(demand);
    let workers = workers(&job, candidates);
    policy.score_all(&job, &workers)
}

/// One [`Worker`] per index of the columns.
///
/// # Panics
/// When the columns differ in length or a label value id is out of range (a
/// host bug): the call traps and the host falls back, which beats scoring
/// misaligned data.
pub(crate) fn workers<'a>(job: &'a Job, c: &'a Workers) -> Vec<Worker<'a>> {
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
    (0..n)
        .map(|i| Worker {
            index: i,
            labels: job.labels(),
            label_columns: &c.labels_by_key,
            label_mask: c.label_mask[i],
            cpu_total_millis: c.cpu_total[i],
            cpu_free_millis: c.cpu_free[i],
            memory_total_mb: c.memory_total[i],
            memory_free_mb: c.memory_free[i],
            slots_total: c.slots_total[i],
            slots_free: c.slots_free[i],
            cpu_used_percent: c.cpu_used_percent[i],
            memory_used_mb: c.memory_used_mb[i],
        })
        .collect()
}

/// Per-worker results as WIT `verdicts`: 0 for accepted, `k` for rejected
/// because of `reasons[k - 1]`; each distinct reason appears once, in order
/// of first use.
pub(crate) fn verdicts(results: &[Result<(), Reject>]) -> Verdicts {
    // A policy gives few distinct reasons: a linear scan of them beats any
    // map, and a reason string is copied once, not once per worker.
    let mut reasons: Vec<String> = Vec::new();
    let verdicts = results
        .iter()
        .map(|result| match result {
            Ok(()) => 0,
            Err(reject) => {
                let reason = reject.reason();
                let index = reasons.iter().position(|r| r == reason).unwrap_or_else(|| {
                    reasons.push(reason.to_owned());
                    reasons.len() - 1
                });
                u32::try_from(index + 1).expect("fewer than 2^32 distinct reasons")
            }
        })
        .collect();
    Verdicts { verdicts, reasons }
}

#[cfg(test)]
mod tests {
    use super::super::bindings::LabelColumn;
    use super::*;

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

    #[test]
    fn verdicts_dedupe_reasons_in_order_of_first_use() {
        let v = verdicts(&[
            Err(Reject::new("no free slot")),
            Ok(()),
            Err(Reject::new("missing label gpu=true")),
            Err(Reject::new("no free slot")),
            Ok(()),
            Err(Reject::new("missing label gpu=true")),
        ]);
        assert_eq!(v.verdicts, [1, 0, 2, 1, 0, 2]);
        assert_eq!(v.reasons, ["no free slot", "missing label gpu=true"]);
    }

    #[test]
    fn all_accepted_means_no_reasons() {
        let v = verdicts(&[Ok(()), Ok(())]);
        assert_eq!(v.verdicts, [0, 0]);
        assert!(v.reasons.is_empty());
    }

    #[test]
    fn default_filter_over_columns() {
        // Job wants gpu=true and zone=a (bits 0 and 1) and 1000 millicores.
        let c = columns(
            &[0b11, 0b01, 0b11, 0b11],
            &[1, 1, 0, 1],
            &[4000, 4000, 4000, 500],
        );
        let v = filter(&Defaults, demand(&["gpu=true", "zone=a"], 1000), &c);
        assert_eq!(v.verdicts, [0, 1, 2, 3]);
        assert_eq!(
            v.reasons,
            ["missing label zone=a", "no free slot", "not enough cpu"]
        );
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
    fn score_is_one_per_worker_in_order() {
        let c = columns(&[0, 0, 0], &[3, 1, 2], &[0, 0, 0]);
        assert_eq!(score(&Defaults, demand(&[], 0), &c), [3, 1, 2]);
    }

    #[test]
    fn empty_candidate_list() {
        let c = columns(&[], &[], &[]);
        let v = filter(&Defaults, demand(&["gpu=true"], 0), &c);
        assert!(v.verdicts.is_empty() && v.reasons.is_empty());
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
