//! The event log: `events` u64 sequence → JSON [`EventRecord`].
//!
//! Job events are appended by the writer in the same transaction as the
//! job change they describe ([`EventLog::job`]), so a transition is in the
//! log exactly once, and only if it committed. Event ids are the sequence
//! (`EventId(seq, 0)`), dense and increasing in commit order: redb has one
//! write transaction at a time, and each reads the last sequence it
//! continues (the writer's, and the records' pipeline events).

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use crate::domain::{EventId, EventRecord, Job, JobState, StoredEvent};
use crate::store::StoreError;

/// The log's table.
pub(super) const EVENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");

/// The log inside one write transaction.
pub(in crate::store) struct EventLog<'txn> {
    table: redb::Table<'txn, u64, &'static [u8]>,
    /// The next sequence, read from the table at the first append.
    next: Option<u64>,
}

impl<'txn> EventLog<'txn> {
    /// Opens the log in `txn`.
    pub(in crate::store) fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        let table = txn.open_table(EVENTS).map_err(StoreError::backend)?;
        Ok(Self { table, next: None })
    }

    /// Appends one event.
    pub(in crate::store) fn append(&mut self, event: &EventRecord) -> Result<(), StoreError> {
        let seq = match self.next {
            Some(seq) => seq,
            None => self
                .table
                .last()
                .map_err(StoreError::backend)?
                .map_or(1, |(seq, _)| seq.value() + 1),
        };
        let bytes = serde_json::to_vec(event).map_err(StoreError::backend)?;
        self.table
            .insert(seq, bytes.as_slice())
            .map_err(StoreError::backend)?;
        self.next = Some(seq + 1);
        Ok(())
    }

    /// Appends the event of `job` having been created (`previous` is
    /// `None`) or moved from `previous`; nothing when its state is the same.
    pub(super) fn job(&mut self, job: &Job, previous: Option<JobState>) -> Result<(), StoreError> {
        match EventRecord::of_job(job, previous) {
            Some(event) => self.append(&event),
            None => Ok(()),
        }
    }
}

/// Up to `limit` events after `after` (from the first when `None`).
pub(super) fn after(
    db: &Database,
    after: Option<EventId>,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let txn = db.begin_read().map_err(StoreError::backend)?;
    let table = match txn.open_table(EVENTS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(err) => return Err(StoreError::backend(err)),
    };
    // A redb id has no second part; a position between two of them
    // (`7-3`, from another adapter) resumes after 7.
    let start = after.map_or(0, |id| id.0.saturating_add(1));
    let mut out = Vec::new();
    for row in table.range(start..).map_err(StoreError::backend)? {
        if out.len() >= limit {
            break;
        }
        let (seq, bytes) = row.map_err(StoreError::backend)?;
        out.push(StoredEvent {
            id: EventId(seq.value(), 0),
            event: serde_json::from_slice(bytes.value()).map_err(StoreError::backend)?,
        });
    }
    Ok(out)
}
