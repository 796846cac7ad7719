//! Native test helpers: build a job and workers, then run a [`Policy`] the
//! way the host does (through the same WIT column conversion), with plain
//! `cargo test` and no Wasm runtime.
//!
//! ```
//! use hodei_plugin_sdk::policy::testing::{decide, filter, job, worker};
//! # use hodei_plugin_sdk::policy::{Job, Policy, Worker};
//! # struct MostSlots;
//! # impl Policy for MostSlots {
//! #     const NAME: &'static str = "most-slots";
//! #     fn configure(_: &str) -> Result<Self, String> { Ok(Self) }
//! #     fn score(&self, _: &Job, w: &Worker<'_>) -> i64 { i64::from(w.slots_free()) }
//! # }
//! let policy = MostSlots;
//! let gpu_job = job().label("gpu=true").cpu(500);
//! let workers = [
//!     worker().label("gpu=true").slots(4, 1),
//!     worker().slots(4, 4),
//!     worker().label("gpu=true").slots(4, 3),
//! ];
//! assert_eq!(decide(&policy, &gpu_job, &workers), Some(2));
//! assert_eq!(filter(&policy, &gpu_job, &workers)[1], Err("missing label gpu=true".into()));
//! ```

use super::bindings::{Demand, Workers};
use super::{Job, Policy, Worker, columns};

/// A job with no labels and no reservations; chain setters to shape it.
pub fn job() -> JobSpec {
    JobSpec::default()
}

/// An idle worker with no labels, 4000 millicores, 8192 MiB and 4 slots,
/// all free; chain setters to shape it.
pub fn worker() -> WorkerSpec {
    WorkerSpec {
        labels: Vec::new(),
        cpu: (4000, 4000),
        memory: (8192, 8192),
        slots: (4, 4),
        cpu_used_percent: 0.0,
        memory_used_mb: 0,
    }
}

/// A job under construction; see [`job`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobSpec {
    /// Labels the worker must carry, `key=value`.
    labels: Vec<String>,
    /// Millicores to reserve.
    cpu_millis: u64,
    /// MiB to reserve.
    memory_mb: u64,
    /// Priority.
    priority: i32,
}

impl JobSpec {
    /// Requires the worker to carry `label` (`key=value`).
    pub fn label(mut self, label: &str) -> Self {
        self.labels.push(label.to_owned());
        self
    }

    /// Reserves `millis` thousandths of a core.
    pub fn cpu(mut self, millis: u64) -> Self {
        self.cpu_millis = millis;
        self
    }

    /// Reserves `mb` MiB of memory.
    pub fn memory(mut self, mb: u64) -> Self {
        self.memory_mb = mb;
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// The [`Job`] a policy sees, for calling trait methods directly.
    pub fn build(&self) -> Job {
        Job::from(self.demand())
    }

    /// The host's `demand` record for this job.
    fn demand(&self) -> Demand {
        Demand {
            labels: self.labels.clone(),
            cpu_millis: self.cpu_millis,
            memory_mb: self.memory_mb,
            priority: self.priority,
        }
    }
}

/// A worker under construction; see [`worker`].
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSpec {
    /// Labels it carries, `key=value`.
    labels: Vec<String>,
    /// CPU (total, free), millicores.
    cpu: (u64, u64),
    /// Memory (total, free), MiB.
    memory: (u64, u64),
    /// Slots (total, free).
    slots: (u32, u32),
    /// Real CPU use, 0..100.
    cpu_used_percent: f32,
    /// Real memory use, MiB.
    memory_used_mb: u64,
}

impl WorkerSpec {
    /// Gives the worker `label` (`key=value`).
    pub fn label(mut self, label: &str) -> Self {
        self.labels.push(label.to_owned());
        self
    }

    /// CPU capacity and unreserved part, millicores.
    pub fn cpu(mut self, total: u64, free: u64) -> Self {
        self.cpu = (total, free);
        self
    }

    /// Unreserved CPU, millicores (capacity unchanged).
    pub fn cpu_free(mut self, free: u64) -> Self {
        self.cpu.1 = free;
        self
    }

    /// Memory capacity and unreserved part, MiB.
    pub fn memory(mut self, total: u64, free: u64) -> Self {
        self.memory = (total, free);
        self
    }

    /// Unreserved memory, MiB (capacity unchanged).
    pub fn memory_free(mut self, free: u64) -> Self {
        self.memory.1 = free;
        self
    }

    /// Job slots, total and free.
    pub fn slots(mut self, total: u32, free: u32) -> Self {
        self.slots = (total, free);
        self
    }

    /// Real machine CPU use, 0..100.
    pub fn cpu_used_percent(mut self, percent: f32) -> Self {
        self.cpu_used_percent = percent;
        self
    }

    /// Real machine memory use, MiB.
    pub fn memory_used_mb(mut self, mb: u64) -> Self {
        self.memory_used_mb = mb;
        self
    }

    /// The [`Worker`] a policy sees for `job`, as candidate 0, for calling
    /// trait methods directly.
    pub fn build<'a>(&self, job: &'a Job) -> Worker<'a> {
        let columns = columns_of(job.labels(), std::slice::from_ref(self));
        let mut workers = columns::workers(job, &columns);
        workers.remove(0)
    }
}

/// What the host would learn from `filter`: per worker, `Ok` or the reason.
pub fn filter<P: Policy>(
    policy: &P,
    job: &JobSpec,
    workers: &[WorkerSpec],
) -> Vec<Result<(), String>> {
    let columns = columns_of(&job.labels, workers);
    let answer = columns::filter(policy, job.demand(), &columns);
    answer
        .verdicts
        .iter()
        .map(|&v| match v {
            0 => Ok(()),
            k => Err(answer.reasons[k as usize - 1].clone()),
        })
        .collect()
}

/// What the host would get from `score` over exactly these workers.
pub fn score<P: Policy>(policy: &P, job: &JobSpec, workers: &[WorkerSpec]) -> Vec<i64> {
    let columns = columns_of(&job.labels, workers);
    columns::score(policy, job.demand(), &columns)
}

/// Where the host would place `job`: `filter` over all workers, `score` over
/// those that passed, the highest score, ties to the earlier worker. `None`
/// when no worker passed.
///
/// # Panics
/// When the policy answers with the wrong number of verdicts or scores (the
/// host treats that as a plugin fault).
pub fn decide<P: Policy>(policy: &P, job: &JobSpec, workers: &[WorkerSpec]) -> Option<usize> {
    let verdicts = filter(policy, job, workers);
    assert_eq!(verdicts.len(), workers.len(), "one verdict per worker");
    let feasible: Vec<usize> = (0..workers.len())
        .filter(|&i| verdicts[i].is_ok())
        .collect();
    let passed: Vec<WorkerSpec> = feasible.iter().map(|&i| workers[i].clone()).collect();
    let scores = score(policy, job, &passed);
    assert_eq!(scores.len(), passed.len(), "one score per feasible worker");
    let mut best: Option<(usize, i64)> = None;
    for (&worker, &score) in feasible.iter().zip(&scores) {
        if best.is_none_or(|(_, top)| score > top) {
            best = Some((worker, score));
        }
    }
    best.map(|(worker, _)| worker)
}

/// The host's column layout for `workers`, label masks relative to `labels`.
fn columns_of(labels: &[String], workers: &[WorkerSpec]) -> Workers {
    let mask = |w: &WorkerSpec| {
        labels
            .iter()
            .take(64)
            .enumerate()
            .filter(|(_, label)| w.labels.contains(label))
            .fold(0u64, |mask, (bit, _)| mask | 1 << bit)
    };
    Workers {
        label_mask: workers.iter().map(mask).collect(),
        cpu_total: workers.iter().map(|w| w.cpu.0).collect(),
        cpu_free: workers.iter().map(|w| w.cpu.1).collect(),
        memory_total: workers.iter().map(|w| w.memory.0).collect(),
        memory_free: workers.iter().map(|w| w.memory.1).collect(),
        slots_total: workers.iter().map(|w| w.slots.0).collect(),
        slots_free: workers.iter().map(|w| w.slots.1).collect(),
        cpu_used_percent: workers.iter().map(|w| w.cpu_used_percent).collect(),
        memory_used_mb: workers.iter().map(|w| w.memory_used_mb).collect(),
    }
}
