//! The state index: `jobs_by_state` (u8 state, u128 id) → () holds one row
//! per job, so listing the jobs in one state (newest first, paged by id)
//! reads only the rows it returns, however long the history is; and the
//! lease monitor reads only the jobs on workers.
//!
//! Every write of a job's state goes through [`StateIndex::moved`] in the
//! same transaction as the job itself. A file written before the index
//! existed gets it built at open ([`build_if_missing`]), one pass over the
//! jobs.

use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use super::{JOBS, key};
use crate::domain::{JobId, JobState};
use crate::store::StoreError;
use crate::store::codec::decode_job;

/// The index table.
pub(super) const BY_STATE: TableDefinition<'_, (u8, u128), ()> =
    TableDefinition::new("jobs_by_state");

/// The state's byte in the index. Stored on disk: never renumber.
pub(super) fn code(state: JobState) -> u8 {
    match state {
        JobState::Pending => 1,
        JobState::Scheduled => 2,
        JobState::Running => 3,
        JobState::Succeeded => 4,
        JobState::Failed => 5,
        JobState::Cancelled => 6,
        JobState::TimedOut => 7,
    }
}

/// The index rows of `state` with ids below `before` (all when `None`), as
/// a key range.
pub(super) fn range(state: JobState, before: Option<JobId>) -> std::ops::Range<(u8, u128)> {
    let code = code(state);
    (code, 0)..(code, before.map_or(u128::MAX, key))
}

/// The index inside one write transaction.
pub(super) struct StateIndex<'txn>(redb::Table<'txn, (u8, u128), ()>);

impl<'txn> StateIndex<'txn> {
    /// Opens the index in `txn`.
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        txn.open_table(BY_STATE)
            .map(Self)
            .map_err(StoreError::backend)
    }

    /// Records that job `id` moved `from` a state (`None`: a new job) `to`
    /// another.
    pub(super) fn moved(
        &mut self,
        id: JobId,
        from: Option<JobState>,
        to: JobState,
    ) -> Result<(), StoreError> {
        if from == Some(to) {
            return Ok(());
        }
        if let Some(from) = from {
            self.0
                .remove((code(from), key(id)))
                .map_err(StoreError::backend)?;
        }
        self.0
            .insert((code(to), key(id)), ())
            .map_err(StoreError::backend)?;
        Ok(())
    }
}

/// Builds the index from the jobs when the file has none yet (written by
/// a build without it).
pub(super) fn build_if_missing(txn: &WriteTransaction) -> Result<(), StoreError> {
    let exists = txn
        .list_tables()
        .map_err(StoreError::backend)?
        .any(|table| table.name() == BY_STATE.name());
    if exists {
        return Ok(());
    }
    let jobs = txn.open_table(JOBS).map_err(StoreError::backend)?;
    let mut index = StateIndex::open(txn)?;
    let mut indexed = 0_u64;
    for entry in jobs.iter().map_err(StoreError::backend)? {
        let (_, value) = entry.map_err(StoreError::backend)?;
        let job = decode_job(value.value())?;
        index.moved(job.id, None, job.state)?;
        indexed += 1;
    }
    if indexed > 0 {
        tracing::info!(jobs = indexed, "state index built");
    }
    Ok(())
}
