//! `tier-fixture`: a scheduling policy whose placement depends on the job's
//! priority and queue, for the host's tests only (that the host hands a
//! plugin both). Never deploy it.
//!
//! Each worker is labelled `tier=<fast|slow|standard>`; the job goes to the
//! tier its demand names:
//!
//! | job                         | tier       |
//! |-----------------------------|------------|
//! | in queue `batch`            | `slow`     |
//! | otherwise, priority >= 10   | `fast`     |
//! | otherwise                   | `standard` |
//!
//! Filter: the SDK's hard constraints. Score: 1 on a worker of the wanted
//! tier, 0 elsewhere (ties go to the earlier worker, by the host's rule).
//! Configuration: `""` only.

use hodei_plugin_sdk::policy::{Job, Policy, Worker};

/// The priority from which a job counts as urgent.
pub const URGENT: i32 = 10;

/// The policy: no state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierFixture;

/// The tier a job belongs on.
pub fn tier(job: &Job) -> &'static str {
    if job.queue() == "batch" {
        "slow"
    } else if job.priority() >= URGENT {
        "fast"
    } else {
        "standard"
    }
}

impl Policy for TierFixture {
    const NAME: &'static str = "tier-fixture";
    const LABEL_KEYS: &'static [&'static str] = &["tier"];

    fn configure(config: &str) -> Result<Self, String> {
        if config.trim().is_empty() {
            Ok(Self)
        } else {
            Err(format!(
                "tier-fixture: unknown configuration {config:?}; expected \"\""
            ))
        }
    }

    fn score(&self, job: &Job, worker: &Worker<'_>) -> i64 {
        i64::from(worker.label("tier") == Some(tier(job)))
    }
}

hodei_plugin_sdk::export_policy!(TierFixture);

#[cfg(test)]
mod tests {
    use super::*;
    use hodei_plugin_sdk::policy::testing::{decide, job, worker};

    fn tiers() -> [hodei_plugin_sdk::policy::testing::WorkerSpec; 3] {
        [
            worker().label("tier=standard"),
            worker().label("tier=slow"),
            worker().label("tier=fast"),
        ]
    }

    #[test]
    fn priority_and_queue_pick_the_tier() {
        let policy = TierFixture::configure("").unwrap();
        let workers = tiers();
        assert_eq!(decide(&policy, &job(), &workers), Some(0));
        assert_eq!(decide(&policy, &job().priority(9), &workers), Some(0));
        assert_eq!(decide(&policy, &job().priority(10), &workers), Some(2));
        assert_eq!(decide(&policy, &job().queue("batch"), &workers), Some(1));
        assert_eq!(
            decide(&policy, &job().queue("batch").priority(50), &workers),
            Some(1),
            "the queue wins over the priority"
        );
        assert_eq!(decide(&policy, &job().queue("web"), &workers), Some(0));
    }

    #[test]
    fn only_the_empty_configuration() {
        assert!(TierFixture::configure("fast=1").is_err());
    }
}
