//! Per-job resource use, as the agents report it in their heartbeats: the
//! latest figures only, in memory, for the API (`usage` of a running job,
//! `job_usage` of a worker). Nothing here is durable or used to schedule:
//! a heartbeat replaces everything its worker said before, and a worker
//! that reconnects starts from an empty list.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::Serialize;

use crate::domain::{JobId, WorkerId};

/// What one running job uses: its whole process tree on the agent.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JobUsage {
    /// The job.
    pub job_id: String,
    /// The attempt measured.
    pub attempt: u32,
    /// CPU since the agent's previous heartbeat, percent of one core (two
    /// busy cores read 200).
    pub cpu_percent: f32,
    /// Resident memory, bytes, summed over the processes.
    pub memory_bytes: u64,
    /// Processes counted.
    pub processes: u32,
}

/// The latest per-job figures of every worker.
#[derive(Debug, Default)]
pub struct UsageBoard {
    /// A std Mutex: no critical section awaits.
    workers: Mutex<HashMap<WorkerId, Vec<JobUsage>>>,
}

impl UsageBoard {
    /// Replaces what `worker` reported before.
    pub fn report(&self, worker: &WorkerId, jobs: Vec<JobUsage>) {
        self.lock().insert(worker.clone(), jobs);
    }

    /// Forgets a worker (its session ended).
    pub fn forget(&self, worker: &WorkerId) {
        self.lock().remove(worker);
    }

    /// The latest figures of `job`'s `attempt`, from whichever worker runs it.
    pub fn of_job(&self, job: JobId, attempt: u32) -> Option<JobUsage> {
        let id = job.to_string();
        self.lock()
            .values()
            .flatten()
            .find(|usage| usage.job_id == id && usage.attempt == attempt)
            .cloned()
    }

    /// The latest figures of every job `worker` runs.
    pub fn of_worker(&self, worker: &WorkerId) -> Vec<JobUsage> {
        self.lock().get(worker).cloned().unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<WorkerId, Vec<JobUsage>>> {
        self.workers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(job: JobId, attempt: u32, cpu: f32) -> JobUsage {
        JobUsage {
            job_id: job.to_string(),
            attempt,
            cpu_percent: cpu,
            memory_bytes: 1,
            processes: 1,
        }
    }

    #[test]
    fn a_report_replaces_the_previous_one() {
        let board = UsageBoard::default();
        let (w1, w2) = (WorkerId("w1".into()), WorkerId("w2".into()));
        let (a, b) = (JobId::new(), JobId::new());
        board.report(&w1, vec![usage(a, 1, 10.0)]);
        board.report(&w2, vec![usage(b, 2, 20.0)]);
        assert_eq!(board.of_job(a, 1), Some(usage(a, 1, 10.0)));
        assert_eq!(board.of_job(a, 2), None, "another attempt");
        board.report(&w1, vec![]);
        assert_eq!(board.of_job(a, 1), None);
        assert_eq!(board.of_worker(&w2), vec![usage(b, 2, 20.0)]);
        board.forget(&w2);
        assert!(board.of_worker(&w2).is_empty());
    }
}
