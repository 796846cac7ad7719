//! Between the WIT shapes (columns in, a ranking out) and the per-worker
//! [`Job`] / [`Worker`] / [`Reject`] an author sees. The export glue and
//! [`super::testing`] both go through here, so native tests exercise the
//! same conversion the component runs.

use super::bindings::{Demand, Ranking, Workers};
use super::{Job, Policy, Verdicts, Worker};

/// One decision: `policy.filter_all` over the WIT inputs, then
/// `policy.score_all` over the workers it accepted (not called when none
/// was), packed as WIT `ranking`. Lengths are passed through unchecked: the
/// host validates them.
pub(crate) fn decide<P: Policy>(policy: &P, demand: Demand, candidates: &Workers) -> Ranking {
    let job = Job::from(demand);
    let workers = workers(&job, candidates);
    let mut verdicts = Verdicts::new(&workers);
    policy.filter_all(&job, &workers, &mut verdicts);
    let (verdicts, reasons, accepted) = verdicts.finish();
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
        .map(|index| Worker {
            index,
            labels: job.labels(),
            columns: c,
        })
        .collect()
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
        let (verdicts, reasons, accepted) = verdicts.finish();
        let indexes: Vec<usize> = accepted.iter().map(Worker::index).collect();
        let expected: Vec<usize> = (0..n).filter(|&i| results[i].is_ok()).collect();
        assert_eq!(indexes, expected, "the accepted workers, in order");
        (verdicts, reasons)
    }

    /// Admits the first worker only, whatever the default would say.
    struct FirstOnly;

    impl Policy for FirstOnly {
        const NAME: &'static str = "first-only";

        fn configure(_: &str) -> Result<Self, String> {
            Ok(Self)
        }

        fn filter_all<'a>(&self, _: &Job, workers: &[Worker<'a>], verdicts: &mut Verdicts<'_, 'a>) {
            for worker in workers {
                if worker.index() == 0 {
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
        let c = columns(&[0, 0, 0], &[0, 5, 6], &[0, 0, 0]);
        let r = decide(&FirstOnly, demand(&[], 0), &c);
        assert_eq!(r.verdicts, [0, 1, 1]);
        assert_eq!(r.reasons, ["not first"]);
        assert_eq!(r.scores, [0]);
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

    #[test]
    fn default_filter_over_columns() {
        // Job wants gpu=true and zone=a (bits 0 and 1) and 1000 millicores.
        let c = columns(
            &[0b11, 0b01, 0b11, 0b11],
            &[1, 1, 0, 1],
            &[4000, 4000, 4000, 500],
        );
        let r = decide(&Defaults, demand(&["gpu=true", "zone=a"], 1000), &c);
        assert_eq!(r.verdicts, [0, 1, 2, 3]);
        assert_eq!(
            r.reasons,
            ["missing label zone=a", "no free slot", "not enough cpu"]
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
        assert_eq!(r.reasons, ["no free slot"]);
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
