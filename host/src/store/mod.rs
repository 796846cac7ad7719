//! The `JobStore` port: the one durable truth about jobs and their logs.
//!
//! Adapters live beside this file (`redb`, embedded, one host; `postgres`,
//! shared by several hosts) and are chosen by one config key in [`open`].
//! The port is shaped so that both implement it with real transactions:
//! - [`JobStore::update`] takes the state change as a closure and runs it
//!   inside the store's own write transaction, so a read-modify-write of one
//!   job is atomic without compare-and-swap retry loops in callers, and the
//!   domain's transition methods decide what is legal.
//! - Writes are acknowledged only once durable. Adapters batch concurrent
//!   writers into shared transactions (group commit) to make that cheap.
//! - Each attempt on a worker holds a lease kept in the store
//!   ([`JobStore::renew_leases`]): the host that talks to the agent renews
//!   it, and any host finds the ones that ran out
//!   ([`JobStore::expired_leases`]). With several hosts on one database
//!   that is how the jobs of a host that died are found and retried.

mod blobs;
mod codec;
#[cfg(test)]
pub(crate) mod contract;
mod ledger;
mod postgres;
mod records;
mod redb;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

pub use self::blobs::{BLOB_CHUNK, BlobStore, BlobWriter};
pub use self::ledger::WorkerLedger;
pub use self::postgres::{PgOptions, PgStore};
pub use self::records::{LoggedChange, RecordChange, RecordStore, RecordUpdate};
pub use self::redb::{DEFAULT_CACHE_BYTES, RedbStore};
use crate::domain::{
    DomainError, EventId, EventRecord, Job, JobId, JobState, LogRecord, StoredEvent, Timestamp,
};

/// A state change to apply to a job inside the store's transaction.
pub type Transition = Box<dyn FnOnce(&mut Job) -> Result<(), DomainError> + Send>;

/// What can go wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No job with this id.
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The change broke a rule of the model; nothing was written.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The storage engine failed.
    #[error("storage error: {0}")]
    Backend(String),
    /// The store is shutting down.
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    /// Wraps any engine error.
    pub fn backend(err: impl std::fmt::Display) -> Self {
        Self::Backend(err.to_string())
    }
}

/// A page request for [`JobStore::list`].
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs older than this one (the previous page's last id).
    pub before: Option<JobId>,
    /// Page size.
    pub limit: usize,
}

/// An attempt: a job and the attempt number that fences it.
pub type AttemptRef = (JobId, u32);

/// What [`JobStore::append_logs`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The job's log head afterwards (see [`JobStore::log_head`]).
    pub head: u64,
    /// This append crossed the job's log quota and stored its marker line.
    pub quota_reached: bool,
}

/// What [`JobStore::renew_leases`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Renewal {
    /// Renewed attempts whose job has a cancel request (its agent must be
    /// told, wherever the request was made).
    pub cancel_requested: Vec<AttemptRef>,
    /// Attempts that are no longer their job's current one on a worker
    /// (lost, finished, or unknown): nothing was renewed for them.
    pub gone: Vec<AttemptRef>,
}

/// The port every storage adapter implements.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Stores a new job durably.
    async fn insert(&self, job: Job) -> Result<(), StoreError>;

    /// Stores a new job durably unless a job with its id exists; answers
    /// whether it was stored. A job whose id was decided (and recorded)
    /// before it was inserted is inserted once however often this is
    /// called, by however many hosts: pipelines create their steps' jobs
    /// this way.
    async fn insert_absent(&self, job: Job) -> Result<bool, StoreError>;

    /// Stores new jobs durably in one transaction: all of them or none.
    async fn insert_many(&self, jobs: Vec<Job>) -> Result<(), StoreError>;

    /// Appends an event that is not part of a job change (a worker's).
    /// Job events need no call: every adapter writes them in the same
    /// transaction as the change they describe.
    async fn append_event(&self, event: EventRecord) -> Result<(), StoreError>;

    /// Up to `limit` events after `after` (from the oldest kept when
    /// `None`), in log order. An event appears here only once every event
    /// before it does, so a reader resuming from the last id it saw misses
    /// none.
    async fn events_after(
        &self,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// One job.
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError>;

    /// Jobs newest first, filtered and paged by `query`.
    async fn list(&self, query: ListQuery) -> Result<Vec<Job>, StoreError>;

    /// Every job not in a terminal state, oldest first (start-up rebuild).
    async fn list_active(&self) -> Result<Vec<Job>, StoreError>;

    /// Up to `limit` pending jobs in queue order: higher priority first,
    /// then oldest first.
    async fn pending(&self, limit: usize) -> Result<Vec<Job>, StoreError>;

    /// What another host sharing the store may have queued since `since`:
    /// up to `limit` pending jobs created at or after it, and every
    /// pending job that ran before (a lost attempt queued again), whenever
    /// it was created. A shared store's hosts read this every refresh, so
    /// a deep backlog they know already is not read again. The default is
    /// the head of the queue ([`Self::pending`]).
    async fn pending_since(&self, since: Timestamp, limit: usize) -> Result<Vec<Job>, StoreError> {
        let _ = since;
        self.pending(limit).await
    }

    /// Records that the agent holding each attempt was heard from at
    /// `seen` (a lease never moves backwards). Attempts that are not their
    /// job's current one on a worker are reported as gone.
    async fn renew_leases(
        &self,
        attempts: Vec<AttemptRef>,
        seen: Timestamp,
    ) -> Result<Renewal, StoreError>;

    /// Attempts on a worker whose lease (last renewal, or the scheduling
    /// when never renewed) is older than `cutoff`.
    async fn expired_leases(&self, cutoff: Timestamp) -> Result<Vec<AttemptRef>, StoreError>;

    /// True when other hosts may write the same store, so what memory
    /// knows (queue, followers) must be refreshed from it.
    fn is_shared(&self) -> bool {
        false
    }

    /// Applies `change` to the job atomically and durably; returns the job
    /// as stored. When `change` fails nothing is written.
    async fn update(&self, id: JobId, change: Transition) -> Result<Job, StoreError>;

    /// [`update`](Self::update) for a change a crash may lose: it is
    /// atomic and visible at once, and durable with the store's next
    /// durable write rather than with a flush of its own. Only for a job's
    /// start (`JobService::started`). A host that comes back without it
    /// still has the job `Scheduled` on that worker with that attempt, and
    /// learns the start again: the agent resends `JobStarted` on reconnect
    /// until the host acknowledged something of the job (every
    /// acknowledgement follows a durable write), and `JobService::reconcile`
    /// records the start of a job the agent reports running. While the job
    /// runs, the next durable write is at most a lease renewal away (one
    /// per agent heartbeat). Default: as `update`.
    async fn update_deferred(&self, id: JobId, change: Transition) -> Result<Job, StoreError> {
        self.update(id, change).await
    }

    /// Appends log lines of `attempt`, by the rules of
    /// [`crate::domain::admit`]: sequences already taken are skipped
    /// (resends are idempotent), a gap refuses the batch with
    /// [`DomainError::LogGap`], and past `quota` bytes of output the log
    /// ends with a marker line. Lines of an attempt that is not the job's
    /// current one are refused with [`DomainError::StaleAttempt`].
    async fn append_logs(
        &self,
        id: JobId,
        attempt: u32,
        lines: Vec<LogRecord>,
        quota: u64,
    ) -> Result<Appended, StoreError>;

    /// Up to `limit` lines with sequence greater than `after`, in order.
    async fn read_logs(
        &self,
        id: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, StoreError>;

    /// Highest log sequence the job's log has taken (0 when none): stored,
    /// or dropped past the job's log quota.
    async fn log_head(&self, id: JobId) -> Result<u64, StoreError>;

    /// Stores (or replaces) an uploaded plugin's bytes under `name`.
    async fn put_plugin(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError>;

    /// Forgets a plugin; removing an unknown name is not an error.
    async fn delete_plugin(&self, name: &str) -> Result<(), StoreError>;

    /// Every stored plugin, by name.
    async fn plugins(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Stores a host setting (e.g. the active policy).
    async fn put_setting(&self, key: &str, value: String) -> Result<(), StoreError>;

    /// A host setting.
    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// The ledger of provisioned workers, in the same database.
    fn ledger(&self) -> Arc<dyn WorkerLedger>;

    /// Small keyed records (API tokens), in the same database.
    fn records(&self) -> Arc<dyn RecordStore>;

    /// Large immutable blobs (pipeline artifacts): files beside the redb
    /// file, or rows of the same PostgreSQL database.
    fn blobs(&self) -> Arc<dyn BlobStore>;
}

/// Adapters hold engine handles that say nothing useful when printed.
impl std::fmt::Debug for dyn JobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobStore")
    }
}

/// Which adapter to use (the `storage` config key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// Embedded redb file in the data directory.
    Redb,
    /// A PostgreSQL database, which several hosts may share.
    Postgres,
}

/// Opens the configured adapter. The one place backends are registered.
/// `cache_bytes` bounds the embedded store's page cache.
pub async fn open(
    kind: StorageKind,
    data_dir: &Path,
    cache_bytes: usize,
    postgres: &PgOptions,
) -> Result<Arc<dyn JobStore>, StoreError> {
    match kind {
        StorageKind::Redb => Ok(Arc::new(RedbStore::open_with_cache(
            &data_dir.join("hodei.redb"),
            cache_bytes,
        )?)),
        StorageKind::Postgres => Ok(Arc::new(PgStore::connect(postgres).await?)),
    }
}

#[cfg(test)]
/// The admin URL of the test server (`scripts/postgres.sh` prints it).
/// Without one the test is skipped, unless `CI=true`: CI must run it.
pub(crate) fn test_database_url() -> Option<String> {
    match std::env::var("HODEI_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but HODEI_TEST_DATABASE_URL is not set: run scripts/postgres.sh")
        }
        _ => {
            eprintln!("skipped: HODEI_TEST_DATABASE_URL is not set (scripts/postgres.sh)");
            None
        }
    }
}
