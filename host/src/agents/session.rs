//! One agent's session: registration, then its messages in order.
//!
//! Registration checks that the agent's id is proved by its secret and that
//! what it declares is within [`AgentLimits`]. After that every job-scoped
//! message is checked against the cluster's record of who holds the job's
//! attempt ([`Ownership`]): only the holder's current session is heard.
//! Refusals are logged with the sender, counted on the worker, answered
//! with `Refused`, and a session that keeps sending refused messages is
//! closed. A session ends with a status saying why, never silently.

mod ingest;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hodei_proto::v1::{
    Ack, AgentMessage, JobResult, Refused, Register, RegisterAck, RunningJob, agent_message,
};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use super::limits::AgentLimits;
use super::link::AgentLink;
use super::{Credential, GatewayConfig, ServerStream, coalesce, wire};
use crate::auth::agents::{AgentTokens, Claim};
use crate::domain::{JobId, Timestamp, WorkerId, WorkerInfo, WorkerMetrics};
use crate::jobs::{JobService, ResultTaken};
use crate::masking::Masking;
use crate::scheduler::cluster::Ownership;
use crate::usage::UsageBoard;

/// How long an agent has to send `Register` after opening the stream.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued down one agent's stream before senders wait.
const OUTBOUND_CAPACITY: usize = 1024;
/// How often the host proves it is alive on an otherwise quiet stream.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(5);

/// Reads `Register`, registers the worker and starts the session task.
/// Returns the stream of messages to the agent, which ends with the status
/// that closed the session.
pub(super) async fn open(
    jobs: Arc<JobService>,
    config: &GatewayConfig,
    credential: Credential,
    peer: String,
    mut inbound: Streaming<AgentMessage>,
) -> Result<ServerStream, Status> {
    let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.message())
        .await
        .map_err(|_| Status::deadline_exceeded("no Register within 10s"))?
        .map_err(|status| message_status(status, &config.limits))?;
    let Some(AgentMessage {
        msg: Some(agent_message::Msg::Register(register)),
    }) = first
    else {
        return Err(Status::failed_precondition(
            "the first message must be Register",
        ));
    };
    if let Err(status) = validate(&register, &config.limits) {
        tracing::warn!(%peer, agent_id = %register.agent_id, %status, "agent registration refused");
        return Err(status);
    }

    // A provisioned worker is known by the id its pool gave it, and only
    // the agent that first redeemed its token may register as it.
    let mut labels: std::collections::BTreeMap<String, String> =
        register.labels.clone().into_iter().collect();
    let mut bound = false;
    let provisioned = match credential {
        Credential::Shared => None,
        Credential::Bootstrap(token) => {
            let claim = Claim {
                agent_id: &register.agent_id,
                name: &register.name,
                pool: register.labels.get("pool").map(String::as_str),
            };
            match config
                .agent_tokens
                .admit(&token, claim, Timestamp::now())
                .await
            {
                Ok(Ok(admitted)) => {
                    if let Some(pool) = admitted.pool {
                        labels.insert("pool".into(), pool);
                    }
                    tracing::info!(target: "hodei::audit", event = "agent_admitted", %peer,
                        agent_id = %register.agent_id, token = %admitted.token_id, "agent admitted by a bootstrap token");
                    bound = true;
                    None
                }
                Ok(Err(refusal)) => {
                    tracing::warn!(target: "hodei::audit", event = "agent_refused", %peer,
                        agent_id = %register.agent_id, %refusal, "agent rejected: bootstrap token refused");
                    return Err(Status::unauthenticated(refusal.to_string()));
                }
                Err(err) => {
                    tracing::error!(%err, "cannot check a bootstrap token");
                    return Err(Status::unavailable("cannot check the agent token now"));
                }
            }
        }
        Credential::Worker(hash) => {
            match config
                .ledger
                .redeem(&hash, &register.agent_id, Timestamp::now())
                .await
            {
                Ok(Ok(row)) => Some(row),
                Ok(Err(refusal)) => {
                    tracing::warn!(%peer, agent_id = %register.agent_id, %refusal, "agent rejected: registration token refused");
                    return Err(Status::unauthenticated(refusal.to_string()));
                }
                Err(err) => {
                    tracing::error!(%err, "cannot check a registration token");
                    return Err(Status::unavailable(
                        "cannot check the registration token now",
                    ));
                }
            }
        }
    };
    let worker = WorkerId(
        provisioned
            .as_ref()
            .map_or_else(|| register.agent_id.clone(), |row| row.id.clone()),
    );
    let running: Vec<(JobId, u32)> = register
        .running
        .iter()
        .filter_map(|r| JobId::parse(&r.job_id).ok().map(|id| (id, r.attempt)))
        .collect();
    let info = WorkerInfo {
        id: worker.clone(),
        name: register.name.clone(),
        version: register.version.clone(),
        os: register.os.clone(),
        arch: register.arch.clone(),
        labels: labels.into_iter().collect(),
        slots: register.slots,
        capacity: wire::capacity(&register),
        pool: provisioned.as_ref().map(|row| row.pool.clone()),
        ephemeral: provisioned.as_ref().is_some_and(|row| row.ephemeral),
    };
    let (link, rx) = AgentLink::channel(OUTBOUND_CAPACITY);
    let (confirmed, abandon) = jobs.reconcile(&worker, &running).await;
    // RegisterAck goes first on the stream: before the worker is a
    // candidate for placements, and with what the agent must abandon.
    link.try_register_ack(RegisterAck {
        protocol_version: hodei_proto::PROTOCOL_VERSION,
        worker_id: worker.0.clone(),
        heartbeat_interval_ms: u32::try_from(config.heartbeat_interval.as_millis())
            .unwrap_or(u32::MAX),
        abandon: abandon
            .iter()
            .map(|(id, attempt)| RunningJob {
                job_id: id.to_string(),
                attempt: *attempt,
            })
            .collect(),
    });
    let reconciled = jobs
        .agent_connected(info, link.clone(), &confirmed, &abandon, register.draining)
        .await;
    tracing::info!(
        %worker, %peer, name = %register.name, slots = register.slots,
        reattached = confirmed.len(), abandoned = abandon.len(),
        lost = reconciled.lost.len(), replaced_session = ?reconciled.replaced,
        "agent registered"
    );

    let (closed_tx, closed_rx) = oneshot::channel();
    let session = Session {
        jobs,
        usage: Arc::clone(&config.usage),
        limits: Arc::clone(&config.limits),
        masking: Arc::clone(&config.masking),
        worker,
        id: reconciled.session,
        peer,
        link,
        refusals: 0,
        starting: HashMap::new(),
        storing: None,
        revocation: bound.then(|| {
            (
                Arc::clone(&config.agent_tokens),
                register.agent_id.clone(),
                config.agent_tokens.watch(),
            )
        }),
    };
    tokio::spawn(async move {
        if let Err(status) = session.run(inbound).await {
            let _ = closed_tx.send(status);
        }
    });
    // The closing status follows the last message, once every sender of the
    // session (the task's and the cluster's) is gone.
    let closing = futures::stream::once(closed_rx).filter_map(|r| async move { r.ok().map(Err) });
    Ok(ReceiverStream::new(rx).map(Ok).chain(closing).boxed())
}

/// Resolves when the session's credential is revoked; never for a session
/// without one.
async fn revoked(revocation: &mut Option<(Arc<AgentTokens>, String, watch::Receiver<u64>)>) {
    let Some((tokens, agent, changes)) = revocation else {
        return std::future::pending().await;
    };
    loop {
        if tokens.is_revoked(agent) {
            return;
        }
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

fn validate(register: &Register, limits: &AgentLimits) -> Result<(), Status> {
    if register.protocol_version != hodei_proto::PROTOCOL_VERSION {
        return Err(Status::failed_precondition(format!(
            "protocol version {} is not supported (this host speaks {})",
            register.protocol_version,
            hodei_proto::PROTOCOL_VERSION
        )));
    }
    if register.agent_id.trim().is_empty() {
        return Err(Status::invalid_argument("agent_id must not be empty"));
    }
    if register.agent_secret.is_empty()
        || hodei_proto::agent_id_for_secret(&register.agent_secret) != register.agent_id
    {
        return Err(Status::permission_denied(
            "agent_id is not the one agent_secret proves (see agent.proto: Identity)",
        ));
    }
    limits.check_register(register)
}

/// A failed read of the agent's stream, as the status that closes the
/// session: a message over the size limit says which limit.
fn message_status(status: Status, limits: &AgentLimits) -> Status {
    match status.code() {
        Code::OutOfRange | Code::ResourceExhausted => Status::resource_exhausted(format!(
            "message larger than this host's limit of {} bytes (agent_max_message_bytes): {}",
            limits.max_message_bytes,
            status.message()
        )),
        _ => status,
    }
}

/// One open session and what it needs to hear its agent.
struct Session {
    jobs: Arc<JobService>,
    usage: Arc<UsageBoard>,
    limits: Arc<AgentLimits>,
    masking: Arc<Masking>,
    worker: WorkerId,
    id: u64,
    peer: String,
    link: AgentLink,
    refusals: u32,
    /// Starts being stored, by job: a job's result is stored after its
    /// start, while other jobs' messages go on meanwhile.
    starting: HashMap<JobId, JoinHandle<()>>,
    /// The last log batch's store, in flight while the next is masked.
    storing: Option<ingest::Storing>,
    /// For an agent admitted by a bootstrap token: where its credential's
    /// revocation shows, its id, and the wake-up when revocations change.
    revocation: Option<(Arc<AgentTokens>, String, watch::Receiver<u64>)>,
}

impl Session {
    /// Takes the agent's messages in order until its stream ends (`Ok`) or
    /// the host closes the session (`Err`, the status for the agent).
    async fn run(mut self, mut inbound: Streaming<AgentMessage>) -> Result<(), Status> {
        let mut ended = self.take_messages(&mut inbound).await;
        // The last batch's lines are stored before the agent counts as gone.
        let settled = self.settle_logs().await;
        if ended.is_ok() {
            ended = settled;
        }
        let (jobs, worker) = (&self.jobs, &self.worker);
        if let Err(status) = &ended {
            tracing::warn!(%worker, peer = %self.peer, session = self.id, %status, "agent session closed by the host");
        }
        if jobs.agent_disconnected(worker, self.id) {
            self.usage.forget(worker);
            tracing::info!(%worker, "agent disconnected; its jobs wait for it within the lease");
        }
        ended
    }

    async fn take_messages(&mut self, inbound: &mut Streaming<AgentMessage>) -> Result<(), Status> {
        let mut keepalive = tokio::time::interval(KEEPALIVE_EVERY);
        keepalive.tick().await;
        // A message read while coalescing log batches, handled next.
        let mut held = None;
        loop {
            let next = match held.take() {
                Some(next) => next,
                None => tokio::select! {
                    next = inbound.message() => next,
                    outcome = futures::future::OptionFuture::from(self.storing.as_mut()),
                        if self.storing.is_some() => {
                        self.storing = None;
                        if let Some(outcome) = outcome {
                            self.stored(outcome)?;
                        }
                        continue;
                    }
                    _ = keepalive.tick() => {
                        self.still_current()?;
                        self.link.try_keepalive();
                        continue;
                    }
                    () = revoked(&mut self.revocation) => {
                        return Err(Status::unauthenticated("this agent's credential was revoked"));
                    }
                },
            };
            match next {
                Ok(Some(AgentMessage { msg: Some(m) })) => {
                    self.still_current()?;
                    self.jobs.cluster().handling(&self.worker, true);
                    let m = match m {
                        agent_message::Msg::LogBatch(mut batch) => {
                            held = coalesce::take_ready(&mut batch, inbound);
                            agent_message::Msg::LogBatch(batch)
                        }
                        other => other,
                    };
                    // An error ends the session, and its disconnect clears
                    // the mark.
                    self.handle(m).await?;
                    self.jobs.cluster().handling(&self.worker, false);
                }
                Ok(Some(AgentMessage { msg: None })) => {}
                Ok(None) => return Ok(()),
                Err(status) => {
                    let status = message_status(status, &self.limits);
                    if status.code() == Code::ResourceExhausted {
                        self.jobs.cluster().count_refusal(&self.worker);
                        return Err(status);
                    }
                    tracing::info!(worker = %self.worker, %status, "agent stream failed");
                    return Ok(());
                }
            }
        }
    }

    /// A newer session of the same agent replaced this one: close it.
    /// (Revocation is checked here too, so a busy stream notices it.)
    fn still_current(&self) -> Result<(), Status> {
        if let Some((tokens, agent, _)) = &self.revocation
            && tokens.is_revoked(agent)
        {
            return Err(Status::unauthenticated(
                "this agent's credential was revoked",
            ));
        }
        if self.jobs.cluster().is_current(&self.worker, self.id) {
            Ok(())
        } else {
            Err(Status::aborted("replaced by a newer session of this agent"))
        }
    }

    /// Whose the message about `job_id`'s `attempt` is; a superseded
    /// session is closed.
    fn ownership(&self, job_id: &str, attempt: u32) -> Result<Owned, Status> {
        let Ok(id) = JobId::parse(job_id) else {
            return Ok(Owned::Foreign);
        };
        match self
            .jobs
            .cluster()
            .ownership(&self.worker, self.id, id, attempt)
        {
            Ownership::Holds => Ok(Owned::Holds(id)),
            Ownership::Settled => Ok(Owned::Settled),
            Ownership::Foreign => Ok(Owned::Foreign),
            Ownership::Superseded => {
                Err(Status::aborted("replaced by a newer session of this agent"))
            }
        }
    }

    /// Refuses a message: logged with the sender, counted, answered with
    /// `Refused`; past the limit the session is closed.
    fn refuse(&mut self, job_id: &str, attempt: u32, reason: &str) -> Result<(), Status> {
        self.refusals += 1;
        self.jobs.cluster().count_refusal(&self.worker);
        tracing::warn!(
            worker = %self.worker, peer = %self.peer, session = self.id,
            job = job_id, attempt, reason, "agent message refused"
        );
        self.notify(job_id, attempt, reason);
        if self.refusals >= self.limits.max_refusals {
            return Err(Status::permission_denied(format!(
                "{} refused messages (agent_max_refusals); the last: {reason}",
                self.refusals
            )));
        }
        Ok(())
    }

    /// Tells the agent about a refusal or a limit; dropped when its queue is
    /// full (informative only).
    fn notify(&self, job_id: &str, attempt: u32, reason: &str) {
        self.link.try_refused(Refused {
            job_id: job_id.to_owned(),
            attempt,
            reason: reason.to_owned(),
        });
    }

    async fn handle(&mut self, message: agent_message::Msg) -> Result<(), Status> {
        if !matches!(message, agent_message::Msg::LogBatch(_)) {
            // In the agent's order: its lines before whatever follows them.
            self.settle_logs().await?;
        }
        match message {
            agent_message::Msg::Register(_) => self.refuse("", 0, "Register after registration"),
            agent_message::Msg::Heartbeat(hb) => self.heartbeat(hb),
            agent_message::Msg::JobStarted(started) => {
                match self.ownership(&started.job_id, started.attempt)? {
                    Owned::Holds(id) => {
                        // Stored in the background (each store write waits
                        // for a durable commit): the agent's next messages,
                        // other jobs' starts and results, share that commit
                        // instead of queueing behind it.
                        let jobs = Arc::clone(&self.jobs);
                        let attempt = started.attempt;
                        let task = tokio::spawn(async move { jobs.started(id, attempt).await });
                        self.starting.retain(|_, task| !task.is_finished());
                        self.starting.insert(id, task);
                    }
                    Owned::Foreign => {
                        return self.refuse(&started.job_id, started.attempt, NOT_YOURS);
                    }
                    Owned::Settled => {}
                }
                Ok(())
            }
            agent_message::Msg::LogBatch(batch) => self.log_batch(batch).await,
            agent_message::Msg::JobResult(result) => self.result(result).await,
        }
    }

    fn heartbeat(&mut self, hb: hodei_proto::v1::Heartbeat) -> Result<(), Status> {
        self.jobs.heartbeat(
            &self.worker,
            WorkerMetrics {
                cpu_percent: hb.cpu_percent,
                memory_used_bytes: hb.memory_used_bytes,
                memory_total_bytes: hb.memory_total_bytes,
                draining: hb.draining,
            },
        );
        let mut kept = Vec::with_capacity(hb.jobs.len());
        for usage in hb.jobs {
            match self.ownership(&usage.job_id, usage.attempt)? {
                Owned::Holds(_) => kept.push(wire::job_usage(usage)),
                Owned::Foreign => self.refuse(&usage.job_id, usage.attempt, NOT_YOURS)?,
                Owned::Settled => {}
            }
        }
        self.usage.report(&self.worker, kept);
        Ok(())
    }

    async fn result(&mut self, result: JobResult) -> Result<(), Status> {
        let id = match self.ownership(&result.job_id, result.attempt)? {
            Owned::Holds(id) => id,
            Owned::Settled => {
                result_stored(&self.jobs, &self.link, &result).await;
                return Ok(());
            }
            Owned::Foreign => return self.refuse(&result.job_id, result.attempt, NOT_YOURS),
        };
        let outcome = wire::outcome(&result);
        let error = match result.error.as_str() {
            "" => None,
            error => Some(self.masking.mask_text(id, result.attempt, error).await),
        };
        // Stored in the background like a start (after it, for the same
        // job); the agent hears `result_stored` once it is durable.
        self.jobs.result_received(&self.worker, id, result.attempt);
        let started = self.starting.remove(&id);
        let (jobs, worker, link, masking) = (
            Arc::clone(&self.jobs),
            self.worker.clone(),
            self.link.clone(),
            Arc::clone(&self.masking),
        );
        tokio::spawn(async move {
            if let Some(started) = started {
                let _ = started.await;
            }
            let taken = jobs
                .finished(
                    &worker,
                    id,
                    result.attempt,
                    outcome,
                    error,
                    result.outputs.clone(),
                )
                .await;
            masking.end(id, result.attempt);
            if taken == ResultTaken::Done {
                result_stored(&jobs, &link, &result).await;
            }
        });
        Ok(())
    }
}

/// Tells the agent its result is stored (with the job's log head).
async fn result_stored(jobs: &JobService, link: &AgentLink, result: &JobResult) {
    let head = match JobId::parse(&result.job_id) {
        Ok(id) => jobs.store().log_head(id).await.unwrap_or(0),
        Err(_) => 0,
    };
    let _ = link
        .ack(Ack {
            job_id: result.job_id.clone(),
            attempt: result.attempt,
            log_sequence: head,
            result_stored: true,
        })
        .await;
}

/// [`Ownership`] as a session acts on it.
enum Owned {
    Holds(JobId),
    Settled,
    Foreign,
}

/// The reason for a job-scoped message from a session that does not hold
/// the job's attempt.
const NOT_YOURS: &str = "job attempt is not assigned to this worker's session";

#[cfg(test)]
#[path = "decode_fuzz.rs"]
mod decode_fuzz;
