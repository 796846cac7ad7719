//! One agent's session: registration, then its messages in order.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hodei_proto::v1::{
    Ack, AgentMessage, KeepAlive, Register, RegisterAck, RunningJob, ServerMessage, agent_message,
    server_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::{GatewayConfig, ServerStream, coalesce, wire};
use crate::bus::Event;
use crate::domain::{JobId, WorkerId, WorkerInfo, WorkerMetrics};
use crate::jobs::{JobService, ResultTaken, cancel_message};
use crate::store::StoreError;
use crate::usage::UsageBoard;

/// How long an agent has to send `Register` after opening the stream.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued down one agent's stream before senders wait.
const OUTBOUND_CAPACITY: usize = 1024;
/// How often the host proves it is alive on an otherwise quiet stream.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(5);

fn msg(m: server_message::Msg) -> ServerMessage {
    ServerMessage { msg: Some(m) }
}

/// Reads `Register`, registers the worker and starts the session task.
/// Returns the stream of messages to the agent.
pub(super) async fn open(
    jobs: Arc<JobService>,
    config: &GatewayConfig,
    mut inbound: Streaming<AgentMessage>,
) -> Result<ServerStream, Status> {
    let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.message())
        .await
        .map_err(|_| Status::deadline_exceeded("no Register within 10s"))??;
    let Some(AgentMessage {
        msg: Some(agent_message::Msg::Register(register)),
    }) = first
    else {
        return Err(Status::failed_precondition(
            "the first message must be Register",
        ));
    };
    validate(&register)?;

    let worker = WorkerId(register.agent_id.clone());
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
        labels: register.labels.clone().into_iter().collect(),
        slots: register.slots,
        capacity: wire::capacity(&register),
    };
    let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
    let (confirmed, abandon) = jobs.reconcile(&worker, &running).await;
    let reconciled = jobs.cluster().connect(info, tx.clone(), &confirmed);
    if register.draining {
        jobs.cluster().heartbeat(
            &worker,
            WorkerMetrics {
                draining: true,
                ..WorkerMetrics::default()
            },
        );
    }
    tracing::info!(
        %worker, name = %register.name, slots = register.slots,
        reattached = confirmed.len(), abandoned = abandon.len(),
        lost = reconciled.lost.len(), "agent registered"
    );
    for (id, attempt) in &reconciled.lost {
        jobs.attempt_lost(*id, *attempt, "agent no longer runs it")
            .await;
    }
    let ack = RegisterAck {
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
    };
    // The channel is fresh and large: these cannot block.
    let _ = tx.try_send(msg(server_message::Msg::RegisterAck(ack)));
    for (id, attempt) in &reconciled.cancels {
        let _ = tx.try_send(cancel_message(*id, *attempt, "cancelled by user"));
    }
    jobs.bus().publish(Event::WorkerConnected(worker.clone()));
    jobs.scheduler().wake();

    let usage = Arc::clone(&config.usage);
    tokio::spawn(run(jobs, usage, worker, reconciled.session, inbound, tx));
    Ok(ReceiverStream::new(rx).map(Ok).boxed())
}

fn validate(register: &Register) -> Result<(), Status> {
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
    if register.slots == 0 {
        return Err(Status::invalid_argument("slots must be at least 1"));
    }
    Ok(())
}

/// Takes the agent's messages in order until its stream ends.
async fn run(
    jobs: Arc<JobService>,
    usage: Arc<UsageBoard>,
    worker: WorkerId,
    session: u64,
    mut inbound: Streaming<AgentMessage>,
    tx: mpsc::Sender<ServerMessage>,
) {
    let mut keepalive = tokio::time::interval(KEEPALIVE_EVERY);
    keepalive.tick().await;
    // A message read while coalescing log batches, handled next.
    let mut held = None;
    loop {
        let next = match held.take() {
            Some(next) => next,
            None => tokio::select! {
                next = inbound.message() => next,
                _ = keepalive.tick() => {
                    let _ = tx.try_send(msg(server_message::Msg::KeepAlive(KeepAlive {})));
                    continue;
                }
            },
        };
        match next {
            Ok(Some(AgentMessage { msg: Some(m) })) => {
                jobs.cluster().touch(&worker);
                let m = match m {
                    agent_message::Msg::LogBatch(mut batch) => {
                        held = coalesce::take_ready(&mut batch, &mut inbound);
                        agent_message::Msg::LogBatch(batch)
                    }
                    other => other,
                };
                handle(&jobs, &usage, &worker, &tx, m).await;
            }
            Ok(Some(AgentMessage { msg: None })) => {}
            Ok(None) => break,
            Err(status) => {
                tracing::info!(%worker, %status, "agent stream failed");
                break;
            }
        }
    }
    if jobs.cluster().disconnect(&worker, session) {
        usage.forget(&worker);
        tracing::info!(%worker, "agent disconnected; its jobs wait for it within the lease");
        jobs.bus().publish(Event::WorkerDisconnected(worker));
    }
}

async fn handle(
    jobs: &JobService,
    usage: &UsageBoard,
    worker: &WorkerId,
    tx: &mpsc::Sender<ServerMessage>,
    message: agent_message::Msg,
) {
    match message {
        agent_message::Msg::Register(_) => {
            tracing::warn!(%worker, "duplicate Register ignored");
        }
        agent_message::Msg::Heartbeat(hb) => {
            jobs.cluster().heartbeat(
                worker,
                WorkerMetrics {
                    cpu_percent: hb.cpu_percent,
                    memory_used_bytes: hb.memory_used_bytes,
                    memory_total_bytes: hb.memory_total_bytes,
                    draining: hb.draining,
                },
            );
            usage.report(worker, hb.jobs.into_iter().map(wire::job_usage).collect());
        }
        agent_message::Msg::JobStarted(started) => {
            if let Ok(id) = JobId::parse(&started.job_id) {
                jobs.started(id, started.attempt).await;
            }
        }
        agent_message::Msg::LogBatch(batch) => {
            let Ok(id) = JobId::parse(&batch.job_id) else {
                return;
            };
            let last = batch.entries.iter().map(|e| e.sequence).max().unwrap_or(0);
            let lines = batch.entries.into_iter().map(wire::log_record).collect();
            let stored = match jobs.append_logs(id, batch.attempt, lines).await {
                Ok(head) => head,
                // Lines of an attempt the host no longer wants: acknowledge
                // them so the agent lets go of them.
                Err(err @ (StoreError::Domain(_) | StoreError::NotFound(_))) => {
                    tracing::debug!(job = %id, attempt = batch.attempt, %err, "log batch refused");
                    last
                }
                Err(err) => {
                    tracing::error!(job = %id, %err, "cannot store log batch; the agent will resend it");
                    return;
                }
            };
            let ack = Ack {
                job_id: batch.job_id,
                attempt: batch.attempt,
                log_sequence: stored,
                result_stored: false,
            };
            let _ = tx.send(msg(server_message::Msg::Ack(ack))).await;
        }
        agent_message::Msg::JobResult(result) => {
            let Ok(id) = JobId::parse(&result.job_id) else {
                return;
            };
            let outcome = wire::outcome(&result);
            let error = (!result.error.is_empty()).then(|| result.error.clone());
            let taken = jobs
                .finished(worker, id, result.attempt, outcome, error)
                .await;
            if taken == ResultTaken::Done {
                let head = jobs.store().log_head(id).await.unwrap_or(0);
                let ack = Ack {
                    job_id: result.job_id,
                    attempt: result.attempt,
                    log_sequence: head,
                    result_stored: true,
                };
                let _ = tx.send(msg(server_message::Msg::Ack(ack))).await;
            }
        }
    }
}
