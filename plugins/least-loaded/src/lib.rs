//! `least-loaded`: place the job on the emptiest worker by what the
//! machines really report, not by what jobs reserved.
//!
//! Filter: the hard constraints the SDK keeps (labels, slot, cpu, memory).
//! Score: idle cpu (`100 - cpu_used_percent`) and idle memory
//! (`1 - memory_used_mb / memory_total`), then, as a secondary term, the
//! share of free slots. Workers on one machine report the same machine
//! figures, so between them the free slots decide; the slot term also
//! covers jobs placed since the last heartbeat, which real use does not
//! show yet.
//!
//! Configuration: `""` for weights 2,2,1, or
//! `weights=<cpu>,<memory>,<slots>` (non-negative integers).

use hodei_plugin_sdk::policy::{self, Job, Policy, Worker, per_mille};

/// Least real load first, with one weight per term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeastLoaded {
    /// Weights of the (idle cpu, idle memory, free slots) terms.
    weights: [i64; 3],
}

impl Policy for LeastLoaded {
    const NAME: &'static str = "least-loaded";

    fn configure(config: &str) -> Result<Self, String> {
        let weights = policy::weights(Self::NAME, config, ["cpu", "memory", "slots"], [2, 2, 1])?;
        Ok(Self { weights })
    }

    fn score(&self, _job: &Job, worker: &Worker<'_>) -> i64 {
        let used_cpu = f64::from(worker.cpu_used_percent()).clamp(0.0, 100.0) * 10.0;
        let idle = [
            1000 - used_cpu.round() as i64,
            1000 - per_mille(worker.memory_used_mb(), worker.memory_total_mb()),
            per_mille(worker.slots_free().into(), worker.slots_total().into()),
        ];
        idle.iter()
            .zip(self.weights)
            .map(|(term, weight)| term * weight)
            .sum()
    }
}

hodei_plugin_sdk::export_policy!(LeastLoaded);

#[cfg(test)]
mod tests {
    use super::*;
    use hodei_plugin_sdk::policy::testing::{decide, filter, job, worker};

    fn policy() -> LeastLoaded {
        LeastLoaded::configure("").unwrap()
    }

    #[test]
    fn picks_the_emptiest_worker() {
        let workers = [
            worker()
                .cpu_used_percent(60.0)
                .memory_used_mb(5000)
                .slots(4, 2),
            worker()
                .cpu_used_percent(10.0)
                .memory_used_mb(1000)
                .slots(4, 4),
            worker()
                .cpu_used_percent(85.0)
                .memory_used_mb(7000)
                .slots(4, 1),
        ];
        assert_eq!(decide(&policy(), &job().cpu(500), &workers), Some(1));
    }

    #[test]
    fn free_slots_decide_between_workers_of_one_machine() {
        let same_machine = || worker().cpu_used_percent(40.0).memory_used_mb(4096);
        let workers = [
            same_machine().slots(4, 1),
            same_machine().slots(4, 3),
            same_machine().slots(4, 2),
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
            worker().label("gpu=true").cpu_used_percent(90.0),
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
        // The idle ones cannot take it: the busy one that can is chosen.
        assert_eq!(decide(&policy(), &gpu_job, &workers), Some(4));
    }

    #[test]
    fn configuration() {
        assert_eq!(
            LeastLoaded::configure(" weights=1,1,0 ").unwrap().weights,
            [1, 1, 0]
        );
        let err = LeastLoaded::configure("spread").unwrap_err();
        assert!(err.contains("expected \"\" or \"weights="), "{err}");
    }
}
