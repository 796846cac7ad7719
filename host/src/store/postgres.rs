//! The shared store: PostgreSQL through sqlx, for one host or several.
//!
//! PostgreSQL holds the truth and its transactions and row locks do all the
//! coordination between hosts; nothing here is a home-made consensus:
//! - [`JobStore::update`] reads the job `FOR UPDATE`, applies the domain's
//!   transition and writes it back in one transaction. Two hosts placing
//!   the same pending job serialize on the row lock; the second sees it is
//!   no longer pending and its `schedule` transition fails, so a job is
//!   claimed once (a compare-and-set on state and attempt, under a lock).
//! - Leases are a column (`lease_seen`) renewed in one statement for all of
//!   a host's attempts; [`JobStore::expired_leases`] is a plain query, and
//!   losing an attempt goes through `update`, so two hosts reaping the same
//!   attempt cannot both requeue it.
//! - Submits are group-committed: concurrent inserts are queued to a writer
//!   task that turns whatever accumulated while its previous statement was
//!   in flight into one multi-row `INSERT … SELECT FROM UNNEST(…)`. A caller
//!   is answered after that transaction commits.
//!
//! - Events (`GET /api/v1/events`) are rows written by the same statement
//!   as the job change they describe. Sequences are handed out before
//!   commit, so commit order is not sequence order; each row carries its
//!   transaction id and readers take only rows of transactions older than
//!   every running one (`pg_snapshot_xmin`), in (xid, seq) order. A row
//!   committed later than a reader's page can only sort after it, so a
//!   reader resuming from its last id misses nothing, on any host.
//!
//! The schema is in `host/migrations/`, embedded in the binary and applied
//! at connect.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Row};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::codec::{decode_job, encode_job};
use super::ledger::PgLedger;
use super::records::PgRecords;
use super::{
    Appended, AttemptRef, JobStore, ListQuery, Renewal, StoreError, Transition, WorkerLedger,
};
use crate::domain::{
    DomainError, EventId, EventRecord, Job, JobId, JobState, LogRecord, LogStream, StoredEvent,
    Timestamp, admit,
};

/// Most submits one multi-row insert takes.
const MAX_GROUP: usize = 1000;
/// States of an attempt on a worker, as stored.
const ON_WORKER: [&str; 2] = ["SCHEDULED", "RUNNING"];

/// Connection settings of the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/database`.
    pub url: Option<String>,
    /// Most connections this host opens.
    pub max_connections: u32,
    /// How long a query waits for a free connection.
    pub acquire_timeout: Duration,
    /// Server-side limit on one statement.
    pub statement_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

/// The PostgreSQL adapter of [`JobStore`].
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    inserts: mpsc::Sender<(Job, oneshot::Sender<Result<(), StoreError>>)>,
}

fn backend(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("postgres: {err}"))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Connects, applies the migrations and starts the insert writer.
    pub async fn connect(options: &PgOptions) -> Result<Self, StoreError> {
        let url = options.url.as_deref().ok_or_else(|| {
            StoreError::Backend(
                "storage is postgres but no database URL is set (--database-url / HODEI_DATABASE_URL)"
                    .into(),
            )
        })?;
        let statement_ms = options.statement_timeout.as_millis().to_string();
        let connect = PgConnectOptions::from_str(url)
            .map_err(backend)?
            .options([("statement_timeout", statement_ms.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(backend)?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(backend)?;
        let (inserts, queue) = mpsc::channel(MAX_GROUP * 4);
        tokio::spawn(insert_writer(pool.clone(), queue));
        Ok(Self { pool, inserts })
    }

    /// Creates an empty database named `<prefix>_<random>` on the server of
    /// `admin_url` (whose role may create databases) and returns its URL.
    /// Tests and benchmarks use one each, so runs never share state.
    pub async fn scratch_database(admin_url: &str, prefix: &str) -> Result<String, StoreError> {
        let options = PgConnectOptions::from_str(admin_url).map_err(backend)?;
        let mut conn = sqlx::PgConnection::connect_with(&options)
            .await
            .map_err(backend)?;
        let name = format!("{prefix}_{}", Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .map_err(backend)?;
        conn.close().await.map_err(backend)?;
        let mut url = url_without_database(admin_url);
        url.push('/');
        url.push_str(&name);
        Ok(url)
    }

    /// Drops a database made by [`PgStore::scratch_database`], closing any
    /// connection still open to it.
    pub async fn drop_database(admin_url: &str, url: &str) -> Result<(), StoreError> {
        let name = url.rsplit('/').next().unwrap_or_default().to_owned();
        let options = PgConnectOptions::from_str(admin_url).map_err(backend)?;
        let mut conn = sqlx::PgConnection::connect_with(&options)
            .await
            .map_err(backend)?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .map_err(backend)?;
        conn.close().await.map_err(backend)
    }
}

fn url_without_database(url: &str) -> String {
    let (base, _) = url.split_once('?').unwrap_or((url, ""));
    match base.rfind('/') {
        Some(i) if i > "postgres://".len() => base[..i].to_owned(),
        _ => base.to_owned(),
    }
}

/// The columns written beside a job's document.
struct Columns {
    id: Uuid,
    state: &'static str,
    priority: i32,
    attempt: i32,
    worker: Option<String>,
    cancel_requested: bool,
    scheduled_at: Option<i64>,
    doc: String,
}

impl Columns {
    fn of(job: &Job) -> Result<Self, StoreError> {
        let doc = String::from_utf8(encode_job(job)?).map_err(backend)?;
        Ok(Self {
            id: job.id.0,
            state: job.state.as_str(),
            priority: job.spec.priority,
            attempt: i32::try_from(job.attempt).map_err(backend)?,
            worker: job.worker_id.as_ref().map(|w| w.0.clone()),
            cancel_requested: job.cancel_requested,
            scheduled_at: job.scheduled_at.map(|t| t.0),
            doc,
        })
    }
}

type InsertQueue = mpsc::Receiver<(Job, oneshot::Sender<Result<(), StoreError>>)>;

/// Turns concurrent submits into multi-row inserts (see the module docs).
async fn insert_writer(pool: PgPool, mut queue: InsertQueue) {
    let mut batch = Vec::with_capacity(MAX_GROUP);
    while queue.recv_many(&mut batch, MAX_GROUP).await > 0 {
        let result = insert_rows(&pool, batch.iter().map(|(job, _)| job)).await;
        for (_, reply) in batch.drain(..) {
            let _ = reply.send(match &result {
                Ok(()) => Ok(()),
                Err(StoreError::Backend(message)) => Err(StoreError::Backend(message.clone())),
                Err(other) => Err(StoreError::Backend(other.to_string())),
            });
        }
    }
}

/// Inserts jobs with one statement: all of them or none.
async fn insert_rows<'a>(
    pool: &PgPool,
    jobs: impl ExactSizeIterator<Item = &'a Job>,
) -> Result<(), StoreError> {
    let mut ids = Vec::with_capacity(jobs.len());
    let mut states = Vec::with_capacity(jobs.len());
    let mut priorities = Vec::with_capacity(jobs.len());
    let mut attempts = Vec::with_capacity(jobs.len());
    let mut docs = Vec::with_capacity(jobs.len());
    let mut events = Vec::with_capacity(jobs.len());
    for job in jobs {
        if let Some(event) = EventRecord::of_job(job, None) {
            events.push(serde_json::to_string(&event).map_err(backend)?);
        }
        let c = Columns::of(job)?;
        ids.push(c.id);
        states.push(c.state.to_owned());
        priorities.push(c.priority);
        attempts.push(c.attempt);
        docs.push(c.doc);
    }
    sqlx::query(
        "WITH inserted AS (INSERT INTO jobs (id, state, priority, attempt, doc) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int4[], $4::int4[], $5::text[]::jsonb[])) \
         INSERT INTO events (doc) SELECT * FROM UNNEST($6::text[]::jsonb[])",
    )
    .bind(&ids)
    .bind(&states)
    .bind(&priorities)
    .bind(&attempts)
    .bind(&docs)
    .bind(&events)
    .execute(pool)
    .await
    .map_err(backend)?;
    Ok(())
}

fn decode_row(row: &sqlx::postgres::PgRow) -> Result<Job, StoreError> {
    let doc: String = row.try_get("doc").map_err(backend)?;
    decode_job(doc.as_bytes())
}

fn decode_line(row: &sqlx::postgres::PgRow) -> Result<LogRecord, StoreError> {
    let seq: i64 = row.try_get("seq").map_err(backend)?;
    let stream: i16 = row.try_get("stream").map_err(backend)?;
    Ok(LogRecord {
        sequence: u64::try_from(seq).map_err(backend)?,
        stream: if stream == 2 {
            LogStream::Stderr
        } else {
            LogStream::Stdout
        },
        data: row.try_get("data").map_err(backend)?,
        timestamp: Timestamp(row.try_get("ts").map_err(backend)?),
    })
}

#[async_trait]
impl JobStore for PgStore {
    async fn insert(&self, job: Job) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inserts
            .send((job, tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn insert_absent(&self, job: Job) -> Result<bool, StoreError> {
        let event = EventRecord::of_job(&job, None)
            .map(|event| serde_json::to_string(&event))
            .transpose()
            .map_err(backend)?;
        let c = Columns::of(&job)?;
        // The event row is written only when the job row was.
        let inserted = sqlx::query(
            "WITH inserted AS (INSERT INTO jobs (id, state, priority, attempt, doc) \
             VALUES ($1, $2, $3, $4, $5::text::jsonb) ON CONFLICT (id) DO NOTHING RETURNING id), \
             logged AS (INSERT INTO events (doc) SELECT $6::text::jsonb FROM inserted \
             WHERE $6::text IS NOT NULL) \
             SELECT count(*) AS n FROM inserted",
        )
        .bind(c.id)
        .bind(c.state)
        .bind(c.priority)
        .bind(c.attempt)
        .bind(c.doc)
        .bind(event)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?
        .try_get::<i64, _>("n")
        .map_err(backend)?;
        Ok(inserted > 0)
    }

    async fn insert_many(&self, jobs: Vec<Job>) -> Result<(), StoreError> {
        insert_rows(&self.pool, jobs.iter()).await
    }

    async fn append_event(&self, event: EventRecord) -> Result<(), StoreError> {
        let doc = serde_json::to_string(&event).map_err(backend)?;
        sqlx::query("INSERT INTO events (doc) VALUES ($1::text::jsonb)")
            .bind(doc)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn events_after(
        &self,
        after: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let EventId(xid, seq) = after.unwrap_or_default();
        let rows = sqlx::query(
            "SELECT xid::text AS xid, seq, doc::text AS doc FROM events \
             WHERE (xid, seq) > ($1::text::xid8, $2) \
             AND xid < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY xid, seq LIMIT $3",
        )
        .bind(xid.to_string())
        .bind(to_i64(seq))
        .bind(to_i64(limit as u64))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let xid: String = row.try_get("xid").map_err(backend)?;
                let seq: i64 = row.try_get("seq").map_err(backend)?;
                let doc: String = row.try_get("doc").map_err(backend)?;
                Ok(StoredEvent {
                    id: EventId(
                        xid.parse().map_err(backend)?,
                        u64::try_from(seq).map_err(backend)?,
                    ),
                    event: serde_json::from_str(&doc).map_err(backend)?,
                })
            })
            .collect()
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        sqlx::query("SELECT doc::text AS doc FROM jobs WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(decode_row)
            .transpose()
    }

    async fn list(&self, query: ListQuery) -> Result<Vec<Job>, StoreError> {
        // No `$1 IS NULL OR …` in these: a prepared statement's generic
        // plan could then not seek the `jobs_state` index or the key.
        let sql = match query.state {
            Some(_) => {
                "SELECT doc::text AS doc FROM jobs WHERE state = $1 AND id < $2 \
                        ORDER BY state, id DESC LIMIT $3"
            }
            None => {
                "SELECT doc::text AS doc FROM jobs WHERE $1::text IS NULL AND id < $2 \
                     ORDER BY id DESC LIMIT $3"
            }
        };
        let rows = sqlx::query(sql)
            .bind(query.state.map(JobState::as_str))
            .bind(query.before.map_or(uuid::Uuid::max(), |id| id.0))
            .bind(to_i64(query.limit as u64))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(decode_row).collect()
    }

    async fn list_active(&self) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(
            "SELECT doc::text AS doc FROM jobs \
             WHERE state IN ('PENDING', 'SCHEDULED', 'RUNNING') ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(decode_row).collect()
    }

    async fn pending(&self, limit: usize) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(
            "SELECT doc::text AS doc FROM jobs WHERE state = 'PENDING' \
             ORDER BY priority DESC, id LIMIT $1",
        )
        .bind(to_i64(limit as u64))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(decode_row).collect()
    }

    async fn pending_since(&self, since: Timestamp, limit: usize) -> Result<Vec<Job>, StoreError> {
        // Two index range scans: the newest ids (jobs_pending is ordered by
        // priority first, so the id range uses the primary key), and the
        // few pending jobs that ran before (jobs_requeued, 0007).
        let rows = sqlx::query(
            "(SELECT doc::text AS doc FROM jobs WHERE id >= $1 AND state = 'PENDING' \
              ORDER BY id LIMIT $2) \
             UNION ALL \
             (SELECT doc::text AS doc FROM jobs WHERE state = 'PENDING' AND attempt > 0 \
              AND id < $1 LIMIT $2)",
        )
        .bind(JobId::first_at(since).0)
        .bind(to_i64(limit as u64))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(decode_row).collect()
    }

    async fn update(&self, id: JobId, change: Transition) -> Result<Job, StoreError> {
        let started = std::time::Instant::now();
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let row = sqlx::query("SELECT doc::text AS doc FROM jobs WHERE id = $1 FOR UPDATE")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .ok_or(StoreError::NotFound(id))?;
        let mut job = decode_row(&row)?;
        // A refused transition drops `tx`, which rolls back and unlocks.
        let before = job.state;
        change(&mut job)?;
        let c = Columns::of(&job)?;
        let event = EventRecord::of_job(&job, Some(before))
            .map(|event| serde_json::to_string(&event))
            .transpose()
            .map_err(backend)?;
        sqlx::query(
            "WITH updated AS (UPDATE jobs SET state = $2, priority = $3, attempt = $4, \
             worker_id = $5, cancel_requested = $6, scheduled_at = $7, doc = $8::jsonb \
             WHERE id = $1) \
             INSERT INTO events (doc) SELECT $9::text::jsonb WHERE $9::text IS NOT NULL",
        )
        .bind(c.id)
        .bind(c.state)
        .bind(c.priority)
        .bind(c.attempt)
        .bind(c.worker)
        .bind(c.cancel_requested)
        .bind(c.scheduled_at)
        .bind(c.doc)
        .bind(event)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        crate::metrics::instruments().store_commit(started.elapsed());
        Ok(job)
    }

    async fn append_logs(
        &self,
        id: JobId,
        attempt: u32,
        lines: Vec<LogRecord>,
        quota: u64,
    ) -> Result<Appended, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // The row lock orders concurrent appends to one job (a resend racing
        // its original) and keeps the attempt check true until commit.
        let row = sqlx::query(
            "SELECT state, attempt, log_head, log_bytes FROM jobs WHERE id = $1 FOR NO KEY UPDATE",
        )
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound(id))?;
        let state: String = row.try_get("state").map_err(backend)?;
        let current: i32 = row.try_get("attempt").map_err(backend)?;
        let current = u32::try_from(current).map_err(backend)?;
        let head: i64 = row.try_get("log_head").map_err(backend)?;
        let head = u64::try_from(head).map_err(backend)?;
        let bytes: i64 = row.try_get("log_bytes").map_err(backend)?;
        let bytes = u64::try_from(bytes).map_err(backend)?;
        if current != attempt || state == JobState::Pending.as_str() {
            return Err(DomainError::StaleAttempt {
                current,
                got: attempt,
            }
            .into());
        }
        let admission = admit(head, bytes, quota, &lines)?;
        let appended = Appended {
            head: admission.head,
            quota_reached: admission.marker.is_some(),
        };
        if admission.head == head {
            return Ok(appended);
        }
        let mut rows = admission.kept;
        rows.extend(admission.marker.as_ref());
        if !rows.is_empty() {
            let seqs: Vec<i64> = rows.iter().map(|l| to_i64(l.sequence)).collect();
            let streams: Vec<i16> = rows
                .iter()
                .map(|l| match l.stream {
                    LogStream::Stdout => 1,
                    LogStream::Stderr => 2,
                })
                .collect();
            let stamps: Vec<i64> = rows.iter().map(|l| l.timestamp.0).collect();
            let data: Vec<&[u8]> = rows.iter().map(|l| l.data.as_slice()).collect();
            sqlx::query(
                "INSERT INTO job_logs (job_id, seq, stream, ts, data) \
                 SELECT $1, * FROM UNNEST($2::int8[], $3::int2[], $4::int8[], $5::bytea[]) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(id.0)
            .bind(&seqs)
            .bind(&streams)
            .bind(&stamps)
            .bind(&data)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        sqlx::query("UPDATE jobs SET log_head = $2, log_bytes = $3 WHERE id = $1")
            .bind(id.0)
            .bind(to_i64(admission.head))
            .bind(to_i64(admission.bytes))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(appended)
    }

    async fn read_logs(
        &self,
        id: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, stream, ts, data FROM job_logs \
             WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(id.0)
        .bind(to_i64(after))
        .bind(to_i64(limit as u64))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(decode_line).collect()
    }

    async fn log_head(&self, id: JobId) -> Result<u64, StoreError> {
        let head: Option<i64> = sqlx::query_scalar("SELECT log_head FROM jobs WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        u64::try_from(head.unwrap_or(0)).map_err(backend)
    }

    async fn renew_leases(
        &self,
        attempts: Vec<AttemptRef>,
        seen: Timestamp,
    ) -> Result<Renewal, StoreError> {
        if attempts.is_empty() {
            return Ok(Renewal::default());
        }
        let ids: Vec<Uuid> = attempts.iter().map(|(id, _)| id.0).collect();
        let numbers: Vec<i32> = attempts
            .iter()
            .map(|(_, a)| i32::try_from(*a).unwrap_or(i32::MAX))
            .collect();
        let rows = sqlx::query(
            "UPDATE jobs j SET lease_seen = GREATEST(COALESCE(j.lease_seen, 0), $3) \
             FROM UNNEST($1::uuid[], $2::int4[]) AS a(id, attempt) \
             WHERE j.id = a.id AND j.attempt = a.attempt AND j.state = ANY($4) \
             RETURNING j.id, j.attempt, j.cancel_requested",
        )
        .bind(&ids)
        .bind(&numbers)
        .bind(seen.0)
        .bind(&ON_WORKER[..])
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut renewal = Renewal::default();
        let mut renewed = HashSet::new();
        for row in &rows {
            let id = JobId(row.try_get("id").map_err(backend)?);
            let attempt: i32 = row.try_get("attempt").map_err(backend)?;
            let attempt = u32::try_from(attempt).map_err(backend)?;
            renewed.insert((id, attempt));
            if row.try_get("cancel_requested").map_err(backend)? {
                renewal.cancel_requested.push((id, attempt));
            }
        }
        renewal.gone = attempts
            .into_iter()
            .filter(|a| !renewed.contains(a))
            .collect();
        Ok(renewal)
    }

    async fn expired_leases(&self, cutoff: Timestamp) -> Result<Vec<AttemptRef>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, attempt FROM jobs WHERE state = ANY($2) \
             AND GREATEST(COALESCE(lease_seen, 0), COALESCE(scheduled_at, 0)) < $1 ORDER BY id",
        )
        .bind(cutoff.0)
        .bind(&ON_WORKER[..])
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let attempt: i32 = row.try_get("attempt").map_err(backend)?;
                Ok((
                    JobId(row.try_get("id").map_err(backend)?),
                    u32::try_from(attempt).map_err(backend)?,
                ))
            })
            .collect()
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn put_plugin(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO plugins (name, bytes) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET bytes = EXCLUDED.bytes",
        )
        .bind(name)
        .bind(bytes)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn delete_plugin(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM plugins WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn plugins(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        sqlx::query_as("SELECT name, bytes FROM plugins ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(backend)
    }

    async fn put_setting(&self, key: &str, value: String) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    fn records(&self) -> Arc<dyn super::RecordStore> {
        Arc::new(PgRecords::new(self.pool.clone()))
    }

    fn blobs(&self) -> Arc<dyn super::BlobStore> {
        Arc::new(super::blobs::PgBlobs::new(self.pool.clone()))
    }

    fn ledger(&self) -> Arc<dyn WorkerLedger> {
        Arc::new(PgLedger::new(self.pool.clone()))
    }

    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    use crate::store::test_database_url as admin_url;

    #[test]
    fn the_database_name_is_replaced_not_appended() {
        assert_eq!(
            url_without_database("postgres://u:p@127.0.0.1:5432/hodei?sslmode=disable"),
            "postgres://u:p@127.0.0.1:5432"
        );
        assert_eq!(
            url_without_database("postgres://u:p@127.0.0.1:5432"),
            "postgres://u:p@127.0.0.1:5432"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_honours_the_store_contract() {
        let Some(admin) = admin_url() else { return };
        let url = PgStore::scratch_database(&admin, "hodei_contract")
            .await
            .unwrap();
        let store = PgStore::connect(&PgOptions {
            url: Some(url.clone()),
            ..PgOptions::default()
        })
        .await
        .unwrap();
        super::super::ledger::contract(store.ledger().as_ref()).await;
        super::super::records::contract(store.records().as_ref()).await;
        super::super::blobs::contract(store.blobs().as_ref()).await;
        super::super::contract::run_all(Arc::new(store)).await;
        PgStore::drop_database(&admin, &url).await.unwrap();
    }

    #[tokio::test]
    async fn a_missing_url_or_server_is_a_clear_error() {
        let err = PgStore::connect(&PgOptions::default()).await.unwrap_err();
        assert!(err.to_string().contains("HODEI_DATABASE_URL"), "{err}");
        let err = PgStore::connect(&PgOptions {
            url: Some("postgres://nobody:x@127.0.0.1:1/none".into()),
            acquire_timeout: Duration::from_secs(2),
            ..PgOptions::default()
        })
        .await
        .unwrap_err();
        assert!(
            err.to_string().starts_with("storage error: postgres:"),
            "{err}"
        );
    }
}
