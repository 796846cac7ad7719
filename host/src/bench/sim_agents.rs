//! Simulated agents for `hodei bench scheduler`: many sessions in this
//! process, each speaking the real worker protocol over gRPC to a real
//! host, and "running" every job it is given at once (started, then a
//! result with exit code 0). What is left is what one host coordinates
//! per job: submit, placement, the agent messages, the store writes.

use std::time::Duration;

use anyhow::{Context, bail};
use hodei_proto::v1::agent_service_client::AgentServiceClient;
use hodei_proto::v1::{
    AgentMessage, Heartbeat, JobResult, JobStarted, Register, agent_message, server_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// The agent token the bench's host is started with.
pub(super) const TOKEN: &str = "bench-simulated-agent-token-0123456789";

fn message(msg: agent_message::Msg) -> AgentMessage {
    AgentMessage { msg: Some(msg) }
}

/// Connects `agents` sessions of `slots` slots each to `grpc` and keeps
/// them answering until the returned set is dropped or aborted.
pub(super) async fn start(
    grpc: &str,
    agents: usize,
    slots: u32,
) -> anyhow::Result<tokio::task::JoinSet<anyhow::Result<()>>> {
    let channel = tonic::transport::Endpoint::from_shared(grpc.to_owned())?
        .connect()
        .await
        .context("cannot reach the host's gRPC port")?;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..agents {
        let (tx, rx) = mpsc::channel(4096);
        let (agent_secret, agent_id) = hodei_proto::new_agent_identity();
        tx.send(message(agent_message::Msg::Register(Register {
            protocol_version: hodei_proto::PROTOCOL_VERSION,
            agent_id,
            agent_secret,
            name: format!("sim-{i}"),
            version: "sim".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            cpu_count: 64,
            memory_bytes: 256 << 30,
            slots,
            ..Register::default()
        })))
        .await?;
        let mut client = AgentServiceClient::new(channel.clone());
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse()?);
        let mut inbound = client.connect(request).await?.into_inner();
        set.spawn(async move {
            let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    next = inbound.message() => {
                        let Some(message_in) = next? else { return Ok(()) };
                        match message_in.msg {
                            Some(server_message::Msg::AssignJob(job)) => {
                                let (id, attempt) = (job.job_id, job.attempt);
                                tx.send(message(agent_message::Msg::JobStarted(JobStarted {
                                    job_id: id.clone(),
                                    attempt,
                                    pid: 1,
                                })))
                                .await?;
                                tx.send(message(agent_message::Msg::JobResult(JobResult {
                                    job_id: id,
                                    attempt,
                                    exit_code: 0,
                                    outcome: hodei_proto::v1::Outcome::Exited as i32,
                                    ..JobResult::default()
                                })))
                                .await?;
                            }
                            Some(server_message::Msg::Refused(refused)) => {
                                bail!("the host refused a simulated agent's message: {}", refused.reason);
                            }
                            _ => {}
                        }
                    }
                    _ = heartbeat.tick() => {
                        tx.send(message(agent_message::Msg::Heartbeat(Heartbeat {
                            cpu_percent: 1.0,
                            memory_used_bytes: 1 << 30,
                            memory_total_bytes: 256 << 30,
                            ..Heartbeat::default()
                        })))
                        .await?;
                    }
                }
            }
        });
    }
    Ok(set)
}
