//! [`Worker`]: one candidate, read from the WIT columns.

use super::Job;
use super::bindings::LabelColumn;

/// One candidate worker, as the host reported it for this decision.
///
/// A policy sees a worker's labels two ways: for each label the job asks
/// for, whether the worker carries it ([`Worker::has_label`]); and for each
/// key the policy itself asks for in [`Policy::LABEL_KEYS`], the worker's
/// value ([`Worker::label`]). Other labels are never visible to a policy.
///
/// [`Policy::LABEL_KEYS`]: super::Policy::LABEL_KEYS
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Worker<'a> {
    /// Position in this call's candidate list.
    pub(crate) index: usize,
    /// The job's label table (`Job::labels`), which `label_mask` indexes.
    pub(crate) labels: &'a [String],
    /// The values of the keys the policy asked for, one column per key.
    pub(crate) label_columns: &'a [LabelColumn],
    /// Bit `i` set when the worker carries `labels[i]`.
    pub(crate) label_mask: u64,
    /// CPU capacity, millicores.
    pub(crate) cpu_total_millis: u64,
    /// CPU not reserved by jobs, millicores.
    pub(crate) cpu_free_millis: u64,
    /// Memory capacity, MiB.
    pub(crate) memory_total_mb: u64,
    /// Memory not reserved by jobs, MiB.
    pub(crate) memory_free_mb: u64,
    /// Job slots in total.
    pub(crate) slots_total: u32,
    /// Job slots free.
    pub(crate) slots_free: u32,
    /// Real whole-machine CPU use, 0..100.
    pub(crate) cpu_used_percent: f32,
    /// Real memory in use, MiB.
    pub(crate) memory_used_mb: u64,
}

impl<'a> Worker<'a> {
    /// Position of this worker in the list the host passed to this call.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Whether the worker carries `label` (`key=value`). Always `false` for
    /// a label the job does not ask for: the host only reports those.
    pub fn has_label(&self, label: &str) -> bool {
        self.labels
            .iter()
            .position(|l| l == label)
            .is_some_and(|bit| self.has_bit(bit))
    }

    /// The worker's value for label `key`, e.g. `Some("eu-1a")` for
    /// `"zone"`; `None` when the worker lacks the label, or when `key` is
    /// not in the policy's [`Policy::LABEL_KEYS`] (the host only sends
    /// those).
    ///
    /// [`Policy::LABEL_KEYS`]: super::Policy::LABEL_KEYS
    pub fn label(&self, key: &str) -> Option<&'a str> {
        let column = self.label_columns.iter().find(|c| c.key == key)?;
        // Ids were checked against `values` when the columns were read.
        let id = usize::try_from(*column.value_ids.get(self.index)?).ok()?;
        column.values.get(id.checked_sub(1)?).map(String::as_str)
    }

    /// Whether the worker carries every label the job asks for.
    pub fn has_all_labels(&self) -> bool {
        self.missing_label().is_none()
    }

    /// Index (in the job's labels) of the first label the worker lacks.
    pub(crate) fn missing_label_index(&self) -> Option<usize> {
        (0..self.labels.len()).find(|bit| !self.has_bit(*bit))
    }

    /// The first label the job asks for that the worker lacks.
    pub fn missing_label(&self) -> Option<&'a str> {
        self.labels
            .iter()
            .enumerate()
            .find(|(bit, _)| !self.has_bit(*bit))
            .map(|(_, label)| label.as_str())
    }

    /// Whether the worker has a free slot and enough unreserved cpu and
    /// memory for `job` (labels not included).
    pub fn fits(&self, job: &Job) -> bool {
        self.slots_free > 0
            && self.cpu_free_millis >= job.cpu_millis()
            && self.memory_free_mb >= job.memory_mb()
    }

    /// CPU capacity, millicores.
    pub fn cpu_total_millis(&self) -> u64 {
        self.cpu_total_millis
    }

    /// CPU not reserved by jobs, millicores.
    pub fn cpu_free_millis(&self) -> u64 {
        self.cpu_free_millis
    }

    /// Memory capacity, MiB.
    pub fn memory_total_mb(&self) -> u64 {
        self.memory_total_mb
    }

    /// Memory not reserved by jobs, MiB.
    pub fn memory_free_mb(&self) -> u64 {
        self.memory_free_mb
    }

    /// Job slots in total.
    pub fn slots_total(&self) -> u32 {
        self.slots_total
    }

    /// Job slots free.
    pub fn slots_free(&self) -> u32 {
        self.slots_free
    }

    /// Jobs on the worker now (running, or placed earlier in this round):
    /// slots taken.
    pub fn running_jobs(&self) -> u32 {
        self.slots_total.saturating_sub(self.slots_free)
    }

    /// Real whole-machine CPU use from the latest heartbeat, 0..100.
    pub fn cpu_used_percent(&self) -> f32 {
        self.cpu_used_percent
    }

    /// Real memory in use from the latest heartbeat, MiB.
    pub fn memory_used_mb(&self) -> u64 {
        self.memory_used_mb
    }

    /// The mask has 64 bits: a job asking for more labels than that can
    /// never be satisfied by labels past the 64th.
    fn has_bit(&self, bit: usize) -> bool {
        bit < 64 && self.label_mask & (1 << bit) != 0
    }
}
