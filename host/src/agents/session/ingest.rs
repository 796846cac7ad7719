//! A session's log ingest: a batch is cut to the line limit, masked by the
//! host's chain, then stored and acknowledged.
//!
//! Masking and storing are pipelined: the session masks batch N+1 while
//! batch N is being stored (its append waits for a durable commit on the
//! store's writer), so the chain's CPU time overlaps the store's instead of
//! adding to it. At most one store is in flight per session and stores
//! still happen in batch order: the next one starts only after the previous
//! one is settled, and every other message of the agent (a result above
//! all) settles it first, so a job's lines are stored before its result,
//! as the agent sent them. Nothing is stored before it is masked.

use std::sync::Arc;

use hodei_proto::v1::{Ack, LogBatch, Refused};
use tokio::task::JoinHandle;
use tonic::Status;

use super::{NOT_YOURS, Owned, Session};
use crate::agents::limits::AgentLimits;
use crate::agents::link::AgentLink;
use crate::agents::wire;
use crate::domain::{DomainError, JobId, LogRecord, WorkerId};
use crate::jobs::JobService;
use crate::store::StoreError;

/// A batch's store, running while the session masks the next one.
pub(super) type Storing = JoinHandle<Stored>;

/// What storing one batch came to, for the session to act on.
pub(super) enum Stored {
    /// Stored (or let go of) and acknowledged.
    Done,
    /// The batch would leave a gap in the job's log: refuse it.
    Gap {
        job_id: String,
        attempt: u32,
        reason: String,
    },
    /// The store cannot take logs now: the agent must reconnect and
    /// resend what is unacknowledged.
    Unavailable,
}

/// One batch, masked, on its way to the store.
struct Masked {
    id: JobId,
    job_id: String,
    attempt: u32,
    /// The highest sequence in the batch.
    last: u64,
    lines: Vec<LogRecord>,
}

/// What a store task needs of its session.
#[derive(Clone)]
struct Sink {
    jobs: Arc<JobService>,
    limits: Arc<AgentLimits>,
    link: AgentLink,
    worker: WorkerId,
}

impl Session {
    pub(super) async fn log_batch(&mut self, mut batch: LogBatch) -> Result<(), Status> {
        let last = batch.entries.iter().map(|e| e.sequence).max().unwrap_or(0);
        let id = match self.ownership(&batch.job_id, batch.attempt)? {
            Owned::Holds(id) => id,
            // Lines of an attempt the host let go of: acknowledge them so
            // the agent lets go of them too (after what is in flight).
            Owned::Settled => {
                self.settle_logs().await?;
                ack(&self.link, &batch.job_id, batch.attempt, last).await;
                return Ok(());
            }
            Owned::Foreign => return self.refuse(&batch.job_id, batch.attempt, NOT_YOURS),
        };
        let cut: usize = batch
            .entries
            .iter_mut()
            .map(|e| usize::from(self.limits.cut_line(&mut e.data) > 0))
            .sum();
        if cut > 0 {
            let reason = format!(
                "{cut} log line(s) longer than {} bytes (agent_max_line_bytes) were cut",
                self.limits.max_line_bytes
            );
            tracing::warn!(worker = %self.worker, job = %id, "{reason}");
            self.notify(&batch.job_id, batch.attempt, &reason);
        }
        let mut lines: Vec<_> = batch.entries.into_iter().map(wire::log_record).collect();
        // The one choke point: nothing of a batch is stored, fanned out or
        // counted before the masker chain has seen it. The previous batch
        // is being stored meanwhile.
        self.masking.mask_lines(id, batch.attempt, &mut lines).await;
        self.settle_logs().await?;
        let sink = Sink {
            jobs: Arc::clone(&self.jobs),
            limits: Arc::clone(&self.limits),
            link: self.link.clone(),
            worker: self.worker.clone(),
        };
        let masked = Masked {
            id,
            job_id: batch.job_id,
            attempt: batch.attempt,
            last,
            lines,
        };
        self.storing = Some(tokio::spawn(sink.store(masked)));
        Ok(())
    }

    /// Waits for the batch in flight (if any) to be stored and acts on how
    /// it went. Every message but a log batch calls this first.
    pub(super) async fn settle_logs(&mut self) -> Result<(), Status> {
        let Some(storing) = self.storing.take() else {
            return Ok(());
        };
        let outcome = storing.await;
        self.stored(outcome)
    }

    /// Acts on how the batch in flight went. The session's loop also
    /// awaits the store beside the agent's next message and calls this, so
    /// a refusal (a gap found while storing) is not held back until the
    /// agent speaks again: an agent waits for its answer.
    pub(super) fn stored(
        &mut self,
        outcome: Result<Stored, tokio::task::JoinError>,
    ) -> Result<(), Status> {
        match outcome {
            Ok(Stored::Done) => Ok(()),
            Ok(Stored::Gap {
                job_id,
                attempt,
                reason,
            }) => self.refuse(&job_id, attempt, &reason),
            Ok(Stored::Unavailable) => Err(Status::unavailable(
                "the host cannot store logs right now; reconnect and resend",
            )),
            Err(err) => {
                tracing::error!(worker = %self.worker, %err, "a log store task failed");
                Err(Status::internal("a log batch could not be stored; resend"))
            }
        }
    }
}

impl Sink {
    async fn store(self, batch: Masked) -> Stored {
        let Masked {
            id,
            job_id,
            attempt,
            last,
            lines,
        } = batch;
        let quota = self.limits.log_quota_bytes;
        let (count, bytes) = (
            lines.len() as u64,
            lines.iter().map(|l| l.data.len() as u64).sum::<u64>(),
        );
        match self.jobs.append_logs(id, attempt, lines, quota).await {
            Ok(appended) => {
                self.jobs.metrics().logs_stored(count, bytes);
                if appended.quota_reached {
                    self.quota_reached(id, &job_id, attempt).await;
                }
                ack(&self.link, &job_id, attempt, appended.head).await;
                Stored::Done
            }
            Err(StoreError::Domain(gap @ DomainError::LogGap { .. })) => Stored::Gap {
                job_id,
                attempt,
                reason: gap.to_string(),
            },
            // The store moved the job on (another host settled the attempt).
            Err(err @ (StoreError::Domain(_) | StoreError::NotFound(_))) => {
                tracing::debug!(job = %id, attempt, %err, "log batch refused");
                ack(&self.link, &job_id, attempt, last).await;
                Stored::Done
            }
            // The agent resends everything unacknowledged after a reconnect;
            // carrying on would only make the next batch a gap.
            Err(err) => {
                tracing::error!(job = %id, %err, "cannot store log batch");
                Stored::Unavailable
            }
        }
    }

    async fn quota_reached(&self, id: JobId, job_id: &str, attempt: u32) {
        let quota = self.limits.log_quota_bytes;
        let cancels = self.limits.log_quota_cancels;
        tracing::warn!(job = %id, worker = %self.worker, quota, cancels, "job's log reached its quota; further output is dropped");
        self.link.try_refused(Refused {
            job_id: job_id.to_owned(),
            attempt,
            reason: format!(
                "log quota of {quota} bytes reached (job_log_quota_bytes); further output is dropped"
            ),
        });
        if cancels && let Err(err) = self.jobs.cancel(id).await {
            tracing::warn!(job = %id, %err, "cannot cancel a job over its log quota");
        }
    }
}

/// Tells the agent its lines up to `log_sequence` are kept (or let go of).
async fn ack(link: &AgentLink, job_id: &str, attempt: u32, log_sequence: u64) {
    let _ = link
        .ack(Ack {
            job_id: job_id.to_owned(),
            attempt,
            log_sequence,
            result_stored: false,
        })
        .await;
}
