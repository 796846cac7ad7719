//! [`Worker`]: one candidate, read from the WIT columns.

use std::fmt;

use super::Job;
use super::bindings::Workers;
use super::columns::WantedLabels;

/// One candidate worker, as the host reported it for this decision.
///
/// A policy sees a worker's labels two ways: for each label the job asks
/// for, whether the worker carries it ([`Worker::has_label`]); and for each
/// key the policy itself asks for in [`Policy::LABEL_KEYS`], the worker's
/// value ([`Worker::label`]). Other labels are never visible to a policy.
///
/// A view of one index of the host's columns, three words wide: making one
/// per candidate, and copying the accepted ones for scoring, costs next to
/// nothing whatever the cluster's size.
///
/// [`Policy::LABEL_KEYS`]: super::Policy::LABEL_KEYS
#[derive(Clone, Copy)]
pub struct Worker<'a> {
    /// Position in this call's candidate list.
    pub(crate) index: usize,
    /// The job's label table (`Job::labels`), which the label mask indexes.
    pub(crate) labels: &'a [String],
    /// The decision's columns, checked to be of one length when the
    /// workers were made.
    pub(crate) columns: &'a Workers,
}

impl fmt::Debug for Worker<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.index)
            .field("label_mask", &self.label_mask())
            .field("cpu", &(self.cpu_total_millis(), self.cpu_free_millis()))
            .field("memory", &(self.memory_total_mb(), self.memory_free_mb()))
            .field("slots", &(self.slots_total(), self.slots_free()))
            .field("cpu_used_percent", &self.cpu_used_percent())
            .field("memory_used_mb", &self.memory_used_mb())
            .finish_non_exhaustive()
    }
}

/// Two workers are equal when they are the same index with the same
/// figures and label values.
impl PartialEq for Worker<'_> {
    fn eq(&self, other: &Self) -> bool {
        let values = |w: &Self| -> Vec<Option<&str>> {
            w.columns
                .labels_by_key
                .iter()
                .map(|c| w.label(&c.key))
                .collect()
        };
        self.index == other.index
            && self.labels == other.labels
            && self.label_mask() == other.label_mask()
            && self.cpu_total_millis() == other.cpu_total_millis()
            && self.cpu_free_millis() == other.cpu_free_millis()
            && self.memory_total_mb() == other.memory_total_mb()
            && self.memory_free_mb() == other.memory_free_mb()
            && self.slots_total() == other.slots_total()
            && self.slots_free() == other.slots_free()
            && self.cpu_used_percent() == other.cpu_used_percent()
            && self.memory_used_mb() == other.memory_used_mb()
            && values(self) == values(other)
    }
}

impl<'a> Worker<'a> {
    /// Position of this worker in the list the host passed to this call.
    #[inline]
    pub fn index(&self) -> usize {
        self.index
    }

    /// Whether the worker carries `label` (`key=value`). Always `false` for
    /// a label the job does not ask for: the host only reports those.
    #[inline]
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
    #[inline]
    pub fn label(&self, key: &str) -> Option<&'a str> {
        let column = self.columns.labels_by_key.iter().find(|c| c.key == key)?;
        // Ids were checked against `values` when the columns were read.
        let id = usize::try_from(*column.value_ids.get(self.index)?).ok()?;
        column.values.get(id.checked_sub(1)?).map(String::as_str)
    }

    /// Whether the worker carries every label the job asks for.
    #[inline]
    pub fn has_all_labels(&self) -> bool {
        self.missing_label().is_none()
    }

    /// Index (in the job's labels) of the first label the worker lacks.
    #[inline]
    pub(crate) fn missing_label_index(&self) -> Option<usize> {
        // Bit arithmetic, not a loop: this runs for every candidate.
        WantedLabels::new(self.labels.len()).missing(self.label_mask())
    }

    /// The first label the job asks for that the worker lacks.
    #[inline]
    pub fn missing_label(&self) -> Option<&'a str> {
        self.labels
            .iter()
            .enumerate()
            .find(|(bit, _)| !self.has_bit(*bit))
            .map(|(_, label)| label.as_str())
    }

    /// Whether the worker has a free slot and enough unreserved cpu and
    /// memory for `job` (labels not included).
    #[inline]
    pub fn fits(&self, job: &Job) -> bool {
        self.slots_free() > 0
            && self.cpu_free_millis() >= job.cpu_millis()
            && self.memory_free_mb() >= job.memory_mb()
    }

    /// CPU capacity, millicores.
    #[inline]
    pub fn cpu_total_millis(&self) -> u64 {
        self.columns.cpu_total[self.index]
    }

    /// CPU not reserved by jobs, millicores.
    #[inline]
    pub fn cpu_free_millis(&self) -> u64 {
        self.columns.cpu_free[self.index]
    }

    /// Memory capacity, MiB.
    #[inline]
    pub fn memory_total_mb(&self) -> u64 {
        self.columns.memory_total[self.index]
    }

    /// Memory not reserved by jobs, MiB.
    #[inline]
    pub fn memory_free_mb(&self) -> u64 {
        self.columns.memory_free[self.index]
    }

    /// Job slots in total.
    #[inline]
    pub fn slots_total(&self) -> u32 {
        self.columns.slots_total[self.index]
    }

    /// Job slots free.
    #[inline]
    pub fn slots_free(&self) -> u32 {
        self.columns.slots_free[self.index]
    }

    /// Jobs on the worker now (running, or placed earlier in this round):
    /// slots taken.
    #[inline]
    pub fn running_jobs(&self) -> u32 {
        self.slots_total().saturating_sub(self.slots_free())
    }

    /// Real whole-machine CPU use from the latest heartbeat, 0..100.
    #[inline]
    pub fn cpu_used_percent(&self) -> f32 {
        self.columns.cpu_used_percent[self.index]
    }

    /// Real memory in use from the latest heartbeat, MiB.
    #[inline]
    pub fn memory_used_mb(&self) -> u64 {
        self.columns.memory_used_mb[self.index]
    }

    /// The mask has 64 bits: a job asking for more labels than that can
    /// never be satisfied by labels past the 64th.
    #[inline]
    fn has_bit(&self, bit: usize) -> bool {
        bit < 64 && self.label_mask() & (1 << bit) != 0
    }

    /// Bit `i` set when the worker carries the job's `labels[i]`.
    #[inline]
    fn label_mask(&self) -> u64 {
        self.columns.label_mask[self.index]
    }
}
