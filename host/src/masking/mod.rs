//! Masking at the host: the one choke point every text the host keeps from
//! a job passes through before it is stored, streamed or counted.
//!
//! Agents mask a job's declared secrets themselves, but the host cannot
//! rely on that: an older agent, or one written from agent.proto by
//! someone else, forwards output untouched, and tokens a job prints that
//! were never declared (a `ghp_…` token, a private key) reach no agent's
//! list. So the host runs the active chain of masker components
//! ([`registry`]) over every log batch after ingest, and over a job's
//! failure reason and an agent's error string.
//!
//! # Failing closed
//! A masker that traps, runs past its deadline, runs out of memory or
//! answers the wrong number of lines does not get to decide what is
//! stored: its part of the batch is masked by the host's native literal
//! masker (`hodei_mask`, the job's declared secrets and their encodings)
//! instead, the failure is counted and kept for the API, and a masker that
//! keeps failing is left out (its place taken by the native masker) for a
//! backoff, like a policy. Unmasked text is never stored because a plugin
//! failed; when even the native masker cannot be built, the line is
//! withheld.
//!
//! # Sessions
//! Each job attempt has one [`JobMask`]: the job's secret values (read from
//! the store once, while the job still holds them) and, per link of the
//! chain, the session opened in that link's lane. A session is opened on
//! the attempt's first batch, closed when the attempt ends, and dropped
//! with its state after [`IDLE_SESSION`] without a batch.

pub mod catalog;
pub mod registry;
mod session;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use catalog::MaskerCatalog;
pub use registry::{ChainEntry, MaskerRegistry, MaskerView};
pub use session::JobMask;

use crate::domain::{JobId, LogRecord};
use crate::plugins::masker::Origin;
use crate::sealing::Sealer;
use crate::store::JobStore;

/// A session with no batch for this long is dropped (its attempt ended in
/// a way the ingest path did not see: lost, cancelled, taken over).
pub const IDLE_SESSION: Duration = Duration::from_secs(600);

/// Counters of the choke point, for the API.
#[derive(Debug, Default, serde::Serialize, utoipa::ToSchema)]
pub struct MaskingStats {
    /// Batches masked.
    pub batches: u64,
    /// Lines masked.
    pub lines: u64,
    /// Times a masker's part was done by the native literal masker
    /// instead (failure or backoff).
    pub fallbacks: u64,
    /// Lines withheld because not even the native masker could run.
    pub withheld: u64,
    /// Open job sessions.
    pub sessions: usize,
}

type Key = (JobId, u32);

/// The host's masking service (see the module docs).
#[derive(Debug)]
pub struct Masking {
    registry: Arc<MaskerRegistry>,
    store: Arc<dyn JobStore>,
    sealer: Arc<Sealer>,
    sessions: Mutex<HashMap<Key, Arc<Mutex<JobMask>>>>,
    batches: AtomicU64,
    lines: AtomicU64,
    fallbacks: AtomicU64,
    withheld: AtomicU64,
}

impl Masking {
    /// The service over `registry`'s active chain, reading secrets from
    /// `store` and opening them with `sealer`.
    pub fn new(
        registry: Arc<MaskerRegistry>,
        store: Arc<dyn JobStore>,
        sealer: Arc<Sealer>,
    ) -> Self {
        Self {
            registry,
            store,
            sealer,
            sessions: Mutex::default(),
            batches: AtomicU64::new(0),
            lines: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            withheld: AtomicU64::new(0),
        }
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<MaskerRegistry> {
        &self.registry
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Mutex<JobMask>>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The attempt's session, opened (with the job's secrets from the
    /// store) when it has none.
    async fn job_mask(&self, job: JobId, attempt: u32) -> Arc<Mutex<JobMask>> {
        if let Some(found) = self.sessions().get(&(job, attempt)) {
            return Arc::clone(found);
        }
        let secrets: Vec<String> = match self.store.get(job).await {
            Ok(Some(stored)) => match self.sealer.open_all(&stored.spec.secrets) {
                Ok(opened) => opened.into_values().collect(),
                Err(err) => {
                    tracing::error!(job = %job, %err, "cannot open the job's secrets to mask its output");
                    return Arc::new(Mutex::new(JobMask::withholding(job, attempt)));
                }
            },
            Ok(None) => Vec::new(),
            Err(err) => {
                // Without the secrets only undeclared patterns could be
                // masked: fail closed rather than store clear text.
                tracing::error!(job = %job, %err, "cannot read the job's secrets to mask its output");
                return Arc::new(Mutex::new(JobMask::withholding(job, attempt)));
            }
        };
        let now = Instant::now();
        let (found, expired) = {
            let mut sessions = self.sessions();
            let idle: Vec<Key> = sessions
                .iter()
                .filter(|(_, mask)| match mask.try_lock() {
                    Ok(mask) => now.duration_since(mask.last_used) >= IDLE_SESSION,
                    Err(_) => false,
                })
                .map(|(key, _)| *key)
                .collect();
            let expired: Vec<_> = idle.iter().filter_map(|key| sessions.remove(key)).collect();
            let found = Arc::clone(
                sessions
                    .entry((job, attempt))
                    .or_insert_with(|| Arc::new(Mutex::new(JobMask::new(job, attempt, secrets)))),
            );
            (found, expired)
        };
        // Closing sessions calls into their instances: outside the map's lock.
        crate::plugins::blocking_allowed(|| drop(expired));
        found
    }

    /// Masks a batch of the attempt's lines in place, through the active
    /// chain (see the module docs for what happens when a masker fails).
    pub async fn mask_lines(&self, job: JobId, attempt: u32, lines: &mut [LogRecord]) {
        if lines.is_empty() {
            return;
        }
        let chain = self.registry.chain();
        let mask = self.job_mask(job, attempt).await;
        let outcome = crate::plugins::blocking_allowed(|| {
            let mut mask = mask.lock().unwrap_or_else(PoisonError::into_inner);
            mask.run(self.registry.engine(), &chain, lines)
        });
        self.count(lines.len(), outcome);
    }

    /// Masks a text the host keeps from the attempt (a failure reason, an
    /// agent's error string), line by line, as `system` lines.
    pub async fn mask_text(&self, job: JobId, attempt: u32, text: &str) -> String {
        let mut lines: Vec<LogRecord> = text
            .split('\n')
            .map(|line| LogRecord {
                sequence: 0,
                stream: crate::domain::LogStream::Stdout,
                data: line.as_bytes().to_vec(),
                timestamp: crate::domain::Timestamp::now(),
            })
            .collect();
        let chain = self.registry.chain();
        let mask = self.job_mask(job, attempt).await;
        let outcome = crate::plugins::blocking_allowed(|| {
            let mut mask = mask.lock().unwrap_or_else(PoisonError::into_inner);
            mask.run_as(self.registry.engine(), &chain, &mut lines, Origin::System)
        });
        self.count(lines.len(), outcome);
        let texts: Vec<String> = lines
            .into_iter()
            .map(|l| String::from_utf8_lossy(&l.data).into_owned())
            .collect();
        texts.join("\n")
    }

    fn count(&self, lines: usize, outcome: session::Outcome) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.lines.fetch_add(lines as u64, Ordering::Relaxed);
        self.fallbacks
            .fetch_add(outcome.fallbacks, Ordering::Relaxed);
        self.withheld.fetch_add(outcome.withheld, Ordering::Relaxed);
    }

    /// The attempt ended: its sessions are closed and its secrets dropped.
    pub fn end(&self, job: JobId, attempt: u32) {
        let removed = self.sessions().remove(&(job, attempt));
        if let Some(mask) = removed {
            crate::plugins::blocking_allowed(|| drop(mask));
        }
    }

    /// Counters for the API.
    pub fn stats(&self) -> MaskingStats {
        MaskingStats {
            batches: self.batches.load(Ordering::Relaxed),
            lines: self.lines.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            withheld: self.withheld.load(Ordering::Relaxed),
            sessions: self.sessions().len(),
        }
    }
}
