//! `binpack`: fill the fullest worker that still fits, so whole workers stay
//! free for big jobs and idle ones can be scaled down.
//!
//! Filter: the hard constraints the SDK keeps (labels, slot, cpu, memory).
//! Score: how little would be left free on the worker after placing the job,
//! summed over slots, cpu and memory (each as a share of the worker's
//! capacity). Placing always takes a slot, so slots still tell workers apart
//! when the job reserves no cpu or memory.
//!
//! Configuration: `""` for equal weights, or `weights=<slots>,<cpu>,<memory>`
//! (non-negative integers), e.g. `weights=1,2,2`.

use hodei_plugin_sdk::policy::{self, Job, Policy, Worker};

/// Bin packing with one weight per resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binpack {
    /// Weights of the (slots, cpu, memory) terms.
    weights: [i64; 3],
}

impl Policy for Binpack {
    const NAME: &'static str = "binpack";

    fn configure(config: &str) -> Result<Self, String> {
        let weights = policy::weights(Self::NAME, config, ["slots", "cpu", "memory"], [1, 1, 1])?;
        Ok(Self { weights })
    }

    fn score(&self, job: &Job, worker: &Worker<'_>) -> i64 {
        let left = [
            free_share(worker.slots_free().into(), 1, worker.slots_total().into()),
            free_share(
                worker.cpu_free_millis(),
                job.cpu_millis(),
                worker.cpu_total_millis(),
            ),
            free_share(
                worker.memory_free_mb(),
                job.memory_mb(),
                worker.memory_total_mb(),
            ),
        ];
        -left
            .iter()
            .zip(self.weights)
            .map(|(share, weight)| share * weight)
            .sum::<i64>()
    }
}

/// Per-mille of `total` still free after taking `take` out of `free`.
fn free_share(free: u64, take: u64, total: u64) -> i64 {
    policy::per_mille(free.saturating_sub(take), total)
}

hodei_plugin_sdk::export_policy!(Binpack);

#[cfg(test)]
mod tests {
    use super::*;
    use hodei_plugin_sdk::policy::testing::{decide, filter, job, worker};

    fn policy() -> Binpack {
        Binpack::configure("").unwrap()
    }

    #[test]
    fn picks_the_fullest_worker_that_fits() {
        let workers = [
            worker().cpu(4000, 3000).memory(8192, 6000).slots(4, 3),
            worker().cpu(4000, 1000).memory(8192, 2048).slots(4, 1),
            worker().cpu(4000, 2000).memory(8192, 4096).slots(4, 2),
        ];
        assert_eq!(
            decide(&policy(), &job().cpu(500).memory(512), &workers),
            Some(1)
        );
        // Too big for the fullest: the next fullest that fits wins.
        assert_eq!(
            decide(&policy(), &job().cpu(1500).memory(512), &workers),
            Some(2)
        );
    }

    #[test]
    fn slots_decide_when_the_job_reserves_nothing() {
        let workers = [
            worker().slots(4, 4),
            worker().slots(4, 2),
            worker().slots(4, 3),
        ];
        assert_eq!(decide(&policy(), &job(), &workers), Some(1));
    }

    #[test]
    fn infeasible_workers_get_the_standard_reasons() {
        let gpu_job = job().label("gpu=true").cpu(1000).memory(1024);
        let workers = [
            worker(),
            worker().label("gpu=true").slots(4, 0),
            worker().label("gpu=true").cpu_free(500),
            worker().label("gpu=true").memory_free(512),
            worker().label("gpu=true"),
        ];
        let verdicts = filter(&policy(), &gpu_job, &workers);
        let expected: [Result<(), String>; 5] = [
            Err("missing label gpu=true".into()),
            Err("no free slot".into()),
            Err("not enough cpu".into()),
            Err("not enough memory".into()),
            Ok(()),
        ];
        assert_eq!(verdicts, expected);
        assert_eq!(decide(&policy(), &gpu_job, &workers), Some(4));
        assert_eq!(decide(&policy(), &gpu_job, &workers[..4]), None);
    }

    #[test]
    fn configuration() {
        assert_eq!(
            Binpack::configure("weights=1, 2,3").unwrap().weights,
            [1, 2, 3]
        );
        let err = Binpack::configure("{\"spread\":true}").unwrap_err();
        assert!(err.contains("expected \"\" or \"weights="), "{err}");
        assert!(Binpack::configure("weights=1,2").is_err());
        assert!(Binpack::configure("weights=1,2,-3").is_err());
    }
}
