//! `zone-spread`: spread jobs across zones. Prefer the workers whose `zone`
//! label has the fewest running jobs; between those, the one with the most
//! free slots. Workers without a `zone` label come last.
//!
//! This is the policy the SDK tutorial (sdk/README.md) writes step by step.
//!
//! Filter: the hard constraints the SDK keeps (labels, slot, cpu, memory).
//! Score: `score_all` totals running jobs per zone over the workers it is
//! given, which are the ones that passed the filter: a worker with no free
//! slot does not count towards its zone's total.
//!
//! Configuration: none; whatever is given is ignored.

use std::collections::BTreeMap;

use hodei_plugin_sdk::policy::{Job, Policy, Worker};

struct ZoneSpread;

impl Policy for ZoneSpread {
    const NAME: &'static str = "zone-spread";
    const LABEL_KEYS: &'static [&'static str] = &["zone"];

    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    /// Between workers of equally loaded zones: most free slots.
    fn score(&self, _job: &Job, worker: &Worker<'_>) -> i64 {
        i64::from(worker.slots_free())
    }

    fn score_all(&self, job: &Job, workers: &[Worker<'_>]) -> Vec<i64> {
        // Running jobs per zone. No zone counts as 2^30 jobs: those come last.
        let mut running = BTreeMap::from([(None, 1 << 30)]);
        for w in workers {
            *running.entry(w.label("zone")).or_default() += i64::from(w.running_jobs());
        }
        // One job more in the zone outweighs any free slots (fewer than 2^32).
        let score = |w: &Worker<'_>| self.score(job, w) - (running[&w.label("zone")] << 32);
        workers.iter().map(score).collect()
    }
}

hodei_plugin_sdk::export_policy!(ZoneSpread);

#[cfg(test)]
mod tests {
    use super::*;
    use hodei_plugin_sdk::policy::testing::{decide, filter, job, score, worker};

    #[test]
    fn the_zone_with_the_fewest_running_jobs_wins() {
        // Zone a runs 3 jobs (2 + 1), zone b runs 2 (on one worker).
        let workers = [
            worker().label("zone=a").slots(4, 2),
            worker().label("zone=a").slots(4, 3),
            worker().label("zone=b").slots(4, 2),
        ];
        assert_eq!(decide(&ZoneSpread, &job(), &workers), Some(2));
    }

    #[test]
    fn within_equally_loaded_zones_the_most_free_slots_win() {
        let workers = [
            worker().label("zone=a").slots(4, 3),
            worker().label("zone=b").slots(8, 7),
            worker().label("zone=a").slots(2, 2),
        ];
        assert_eq!(decide(&ZoneSpread, &job(), &workers), Some(1));
        // Scores are ordered by zone load, then free slots.
        let scores = score(&ZoneSpread, &job(), &workers);
        assert!(scores[1] > scores[0] && scores[0] > scores[2], "{scores:?}");
    }

    #[test]
    fn workers_without_a_zone_come_last() {
        let busy_zone = worker().label("zone=a").slots(64, 1);
        let workers = [worker().slots(64, 64), busy_zone.clone()];
        assert_eq!(decide(&ZoneSpread, &job(), &workers), Some(1));
        // ...but still take the job when no zoned worker can.
        let workers = [worker().slots(64, 64), busy_zone.slots(64, 0)];
        assert_eq!(decide(&ZoneSpread, &job(), &workers), Some(0));
    }

    #[test]
    fn full_workers_are_filtered_and_do_not_count() {
        // Zone a's only free worker is idle; its full worker is not a
        // candidate for scoring, so zone a looks idle.
        let workers = [
            worker().label("zone=a").slots(2, 0),
            worker().label("zone=a").slots(2, 2),
            worker().label("zone=b").slots(2, 1),
        ];
        assert_eq!(
            filter(&ZoneSpread, &job(), &workers)[0],
            Err("no free slot".into())
        );
        assert_eq!(decide(&ZoneSpread, &job(), &workers), Some(1));
    }

    #[test]
    fn the_default_filter_still_applies() {
        let workers = [
            worker().label("zone=a"),
            worker().label("zone=b").label("gpu=true").slots(4, 1),
        ];
        let gpu_job = job().label("gpu=true");
        assert_eq!(decide(&ZoneSpread, &gpu_job, &workers), Some(1));
    }

    #[test]
    fn a_key_the_policy_did_not_ask_for_is_not_a_zone() {
        // `region` is not in LABEL_KEYS: both workers are zone-less, so the
        // free slots decide.
        let workers = [
            worker().label("region=eu").slots(4, 1),
            worker().label("region=us").slots(4, 2),
        ];
        assert_eq!(decide(&ZoneSpread, &job(), &workers), Some(1));
    }
}
