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

use super::bindings::{Demand, LabelColumn, Workers};
use super::{Job, Policy, columns};

/// A job with no labels and no reservations, priority 0, in queue
/// `default`; chain setters to shape it.
pub fn job() -> JobSpec {
    JobSpec {
        labels: Vec::new(),
        cpu_millis: 0,
        memory_mb: 0,
        priority: 0,
        queue: "default".to_owned(),
    }
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
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Labels the worker must carry, `key=value`.
    labels: Vec<String>,
    /// Millicores to reserve.
    cpu_millis: u64,
    /// MiB to reserve.
    memory_mb: u64,
    /// Priority.
    priority: i32,
    /// Fair-share queue.
    queue: String,
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

    /// Charges the job to fair-share queue `queue`.
    pub fn queue(mut self, queue: &str) -> Self {
        self.queue = queue.to_owned();
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
            queue: self.queue.clone(),
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
    /// Gives the worker `label` (`key=value`). A policy sees it through
    /// [`Worker::has_label`] when the job asks for it, and through
    /// [`Worker::label`] when `key` is in the policy's
    /// [`Policy::LABEL_KEYS`].
    ///
    /// [`Worker::has_label`]: super::Worker::has_label
    /// [`Worker::label`]: super::Worker::label
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

    /// This worker's value for label `key`, if it has one.
    fn label_value(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find_map(|label| label.strip_prefix(key)?.strip_prefix('='))
    }
}

/// What the host would learn from `decide` about feasibility: per worker,
/// `Ok` or the reason.
pub fn filter<P: Policy>(
    policy: &P,
    job: &JobSpec,
    workers: &[WorkerSpec],
) -> Vec<Result<(), String>> {
    let columns = columns_of(&job.labels, P::LABEL_KEYS, workers);
    let answer = columns::decide(policy, job.demand(), &columns);
    answer
        .verdicts
        .iter()
        .map(|&v| match v {
            0 => Ok(()),
            k => Err(answer.reasons[k as usize - 1].clone()),
        })
        .collect()
}

/// The policy's scores for exactly these workers, whatever its filter says
/// of them.
pub fn score<P: Policy>(policy: &P, job: &JobSpec, workers: &[WorkerSpec]) -> Vec<i64> {
    let columns = columns_of(&job.labels, P::LABEL_KEYS, workers);
    columns::score(policy, job.demand(), &columns)
}

/// Where the host would place `job`: one `decide` over all workers, then
/// the accepted worker with the highest score, ties to the earlier worker.
/// `None` when no worker passed.
///
/// # Panics
/// When the policy answers with the wrong number of verdicts or scores (the
/// host treats that as a plugin fault).
pub fn decide<P: Policy>(policy: &P, job: &JobSpec, workers: &[WorkerSpec]) -> Option<usize> {
    let columns = columns_of(&job.labels, P::LABEL_KEYS, workers);
    let answer = columns::decide(policy, job.demand(), &columns);
    assert_eq!(
        answer.verdicts.len(),
        workers.len(),
        "one verdict per worker"
    );
    let accepted: Vec<usize> = (0..workers.len())
        .filter(|&i| answer.verdicts[i] == 0)
        .collect();
    assert_eq!(
        answer.scores.len(),
        accepted.len(),
        "one score per accepted worker"
    );
    let mut best: Option<(usize, i64)> = None;
    for (&worker, &score) in accepted.iter().zip(&answer.scores) {
        if best.is_none_or(|(_, top)| score > top) {
            best = Some((worker, score));
        }
    }
    best.map(|(worker, _)| worker)
}

/// The host's column layout for `workers`: label masks relative to the
/// job's `labels`, and one value column per key in `label_keys`.
fn columns_of(labels: &[String], label_keys: &[&str], workers: &[WorkerSpec]) -> Workers {
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
        labels_by_key: label_keys
            .iter()
            .map(|key| label_column(key, workers))
            .collect(),
    }
}

/// The values of `key` across `workers`, interned in order of first use as
/// the host does.
fn label_column(key: &str, workers: &[WorkerSpec]) -> LabelColumn {
    let mut values: Vec<String> = Vec::new();
    let value_ids = workers
        .iter()
        .map(|w| match w.label_value(key) {
            None => 0,
            Some(value) => {
                let index = values.iter().position(|v| v == value).unwrap_or_else(|| {
                    values.push(value.to_owned());
                    values.len() - 1
                });
                u32::try_from(index + 1).expect("fewer than 2^32 workers")
            }
        })
        .collect();
    LabelColumn {
        key: key.to_owned(),
        values,
        value_ids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Worker;

    /// Scores each worker by the `zone` it is in, as the host would show it.
    struct ByZone;

    impl Policy for ByZone {
        const NAME: &'static str = "by-zone";
        const LABEL_KEYS: &'static [&'static str] = &["zone", "rack"];

        fn configure(_: &str) -> Result<Self, String> {
            Ok(Self)
        }

        fn score(&self, _: &Job, worker: &Worker<'_>) -> i64 {
            match (worker.label("zone"), worker.label("rack")) {
                (Some("a"), _) => 1,
                (Some("b"), Some("r2")) => 2,
                (Some(_), _) => 3,
                (None, _) => 0,
            }
        }
    }

    #[test]
    fn workers_see_the_values_of_the_keys_the_policy_asked_for() {
        let workers = [
            worker().label("zone=a").label("rack=r1"),
            worker().label("zone=b").label("rack=r2"),
            worker().label("rack=r2"),
            worker().label("zone=b"),
            worker().label("zone=c").label("other=x"),
        ];
        assert_eq!(score(&ByZone, &job(), &workers), [1, 2, 0, 3, 3]);
    }

    #[test]
    fn label_columns_intern_values_in_order_of_first_use() {
        let workers = [
            worker().label("zone=b"),
            worker(),
            worker().label("zone=a").label("zoned=x"),
            worker().label("zone=b"),
        ];
        let columns = columns_of(&[], &["zone", "rack"], &workers);
        let zone = &columns.labels_by_key[0];
        assert_eq!(zone.key, "zone");
        assert_eq!(zone.values, ["b", "a"]);
        assert_eq!(zone.value_ids, [1, 0, 2, 1]);
        let rack = &columns.labels_by_key[1];
        assert!(rack.values.is_empty());
        assert_eq!(rack.value_ids, [0, 0, 0, 0]);
    }

    #[test]
    fn the_job_carries_its_priority_and_queue_to_the_policy() {
        let default = job().build();
        assert_eq!((default.priority(), default.queue()), (0, "default"));
        let built = job().priority(7).queue("batch").build();
        assert_eq!((built.priority(), built.queue()), (7, "batch"));
    }

    #[test]
    fn keys_not_asked_for_are_invisible() {
        let workers = [worker().label("zone=a").label("disk=ssd")];
        let columns = columns_of(&[], &["zone"], &workers);
        let job = job().build();
        let seen = columns::workers(&job, &columns);
        assert_eq!(seen[0].label("zone"), Some("a"));
        assert_eq!(seen[0].label("disk"), None);
        assert_eq!(seen[0].label("zon"), None);
    }
}
