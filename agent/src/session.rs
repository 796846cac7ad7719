//! The session with the host: dial, `Register`, `RegisterAck`, then one
//! loop that dispatches the host's messages while the outbox pump and the
//! heartbeat feed the request stream.
//!
//! A connection is dead when the response stream errors or ends, or when
//! the request stream can no longer be fed; the agent then dials again with
//! exponential backoff and jitter (100 ms doubling to 5 s, reset by every
//! `RegisterAck`). Jobs keep running meanwhile, and the outbox resends what
//! the host has not acknowledged. Given several hosts (sharing one store),
//! each new dial goes to the next one in the list, so an agent whose host
//! died is back on a live one after one backoff step. Only a rejected
//! token ends the session: retrying with the same token cannot help.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hodei_proto::PROTOCOL_VERSION;
use hodei_proto::v1::agent_service_client::AgentServiceClient;
use hodei_proto::v1::{
    AgentMessage, Heartbeat, Register, ServerMessage, agent_message, server_message,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, interval_at, sleep, timeout};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Endpoint;
use tonic::{Code, Request, Status};
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::jobs::JobTable;
use crate::metrics::MachineSampler;
use crate::outbox::{Outbox, SharedOutbox};

/// How long the host has to answer `Register`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Used if the host asks for a heartbeat interval of 0.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// Capacity of the request channel. One: a full channel is what "a send is
/// in flight" means to the outbox pump, so output batches up meanwhile.
const REQUEST_QUEUE: usize = 1;

/// The host answered UNAUTHENTICATED: the token is wrong.
#[derive(Debug, thiserror::Error)]
#[error("the host rejected our token (UNAUTHENTICATED)")]
pub struct TokenRejected;

/// Why one connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("cannot reach the host")]
    Dial(#[from] tonic::transport::Error),
    #[error("the host rejected our token")]
    Rejected,
    #[error("the host answered {code:?}: {message}", code = .0.code(), message = .0.message())]
    Status(Status),
    #[error("the host did not answer Register within {REGISTER_TIMEOUT:?}")]
    RegisterTimeout,
    #[error("the host's first message was not RegisterAck")]
    NoRegisterAck,
    #[error("the host closed the stream")]
    Closed,
    #[error("the request stream closed")]
    SendFailed,
}

impl From<Status> for ConnectionError {
    fn from(status: Status) -> Self {
        if status.code() == Code::Unauthenticated {
            Self::Rejected
        } else {
            Self::Status(status)
        }
    }
}

/// Everything a session needs, shared by the connection tasks.
pub struct Agent {
    /// `Register` as sent on every connection, minus `running`.
    pub identity: Register,
    /// Where and how to dial: one host, or several sharing a store, tried
    /// in turn.
    pub endpoints: Vec<Endpoint>,
    /// `Bearer <token>`, for the `authorization` metadata.
    pub authorization: MetadataValue<Ascii>,
    /// What is owed to the host.
    pub outbox: Arc<SharedOutbox>,
    /// The running jobs.
    pub jobs: Arc<JobTable>,
    /// Kept across heartbeats: CPU use is a difference of two readings.
    pub sampler: Mutex<MachineSampler>,
}

/// Keeps a session with the host until the host rejects the token.
pub async fn run(agent: Arc<Agent>) -> TokenRejected {
    let mut backoff = Backoff::default();
    let mut current = 0;
    loop {
        let mut registered = false;
        let endpoint = &agent.endpoints[current % agent.endpoints.len()];
        match connection(&agent, endpoint, &mut registered).await {
            Err(ConnectionError::Rejected) => {
                error!("host rejected our token (UNAUTHENTICATED); check HODEI_TOKEN");
                return TokenRejected;
            }
            Err(error) => {
                // With its sources: "transport error" alone says little.
                let error = format!("{:#}", anyhow::Error::new(error));
                let host = endpoint.uri();
                if registered {
                    warn!(%error, %host, "connection to the host lost");
                } else {
                    warn!(%error, %host, "cannot connect to the host");
                }
            }
            Ok(never) => match never {},
        }
        // Fail over: the next attempt dials the next host in the list.
        current = (current + 1) % agent.endpoints.len();
        if registered {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        debug!(?delay, "reconnecting after backoff");
        sleep(delay).await;
    }
}

/// One connection, from dialling to its death. `registered` is set once the
/// host acknowledged `Register`.
async fn connection(
    agent: &Arc<Agent>,
    endpoint: &Endpoint,
    registered: &mut bool,
) -> Result<Infallible, ConnectionError> {
    let channel = endpoint.connect().await?;
    let mut client = AgentServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
    let register = Register {
        running: agent.outbox.read(Outbox::held),
        draining: agent.jobs.is_draining(),
        ..agent.identity.clone()
    };
    tx.send(message(agent_message::Msg::Register(register)))
        .await
        .map_err(|_| ConnectionError::SendFailed)?;
    let mut request = Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", agent.authorization.clone());

    let (mut inbound, first) = timeout(REGISTER_TIMEOUT, async {
        let mut inbound = client.connect(request).await?.into_inner();
        let first = inbound.message().await?;
        Ok::<_, ConnectionError>((inbound, first))
    })
    .await
    .map_err(|_| ConnectionError::RegisterTimeout)??;
    let Some(server_message::Msg::RegisterAck(ack)) = first.and_then(|m| m.msg) else {
        return Err(ConnectionError::NoRegisterAck);
    };
    *registered = true;
    info!(
        worker_id = %ack.worker_id,
        protocol_version = ack.protocol_version,
        heartbeat_ms = ack.heartbeat_interval_ms,
        abandon = ack.abandon.len(),
        "registered with the host"
    );
    if ack.protocol_version != PROTOCOL_VERSION {
        warn!(
            ours = PROTOCOL_VERSION,
            theirs = ack.protocol_version,
            "protocol version differs"
        );
    }
    for job in &ack.abandon {
        agent.jobs.abandon(&job.job_id, job.attempt);
    }
    // Anything handed to the previous connection may be lost with it.
    agent.outbox.update(Outbox::rewind);

    let period = match ack.heartbeat_interval_ms {
        0 => DEFAULT_HEARTBEAT,
        ms => Duration::from_millis(ms.into()),
    };
    // Dropping the set aborts both tasks, whichever way this function ends.
    let mut feeders = JoinSet::new();
    let outbox = Arc::clone(&agent.outbox);
    let pump_tx = tx.clone();
    feeders.spawn(async move { outbox.pump(pump_tx).await });
    feeders.spawn(heartbeat(Arc::clone(agent), tx, period));
    loop {
        tokio::select! {
            inbound = inbound.message() => match inbound? {
                Some(msg) => dispatch(agent, msg),
                None => return Err(ConnectionError::Closed),
            },
            _ = feeders.join_next() => return Err(ConnectionError::SendFailed),
        }
    }
}

fn dispatch(agent: &Arc<Agent>, msg: ServerMessage) {
    match msg.msg {
        Some(server_message::Msg::AssignJob(job)) => {
            debug!(?job, "AssignJob");
            agent.jobs.start(job);
        }
        Some(server_message::Msg::CancelJob(cancel)) => {
            agent
                .jobs
                .cancel(&cancel.job_id, cancel.attempt, &cancel.reason);
        }
        Some(server_message::Msg::Ack(ack)) => agent.outbox.update(|outbox| outbox.ack(&ack)),
        Some(server_message::Msg::KeepAlive(_)) => {}
        Some(server_message::Msg::Refused(refused)) => warn!(
            job_id = %refused.job_id,
            attempt = refused.attempt,
            reason = %refused.reason,
            "the host refused a message"
        ),
        Some(server_message::Msg::RegisterAck(_)) => warn!("second RegisterAck ignored"),
        None => debug!("empty or unknown host message ignored"),
    }
}

/// Sends a heartbeat every `period`, and one at once when the agent starts
/// draining, so the host stops placing jobs here without waiting.
async fn heartbeat(agent: Arc<Agent>, tx: mpsc::Sender<AgentMessage>, period: Duration) {
    let mut ticks = interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut draining = agent.jobs.draining();
    draining.mark_unchanged();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            Ok(()) = draining.changed() => {}
        }
        let roots = agent.jobs.roots();
        let (load, jobs) = {
            let mut sampler = agent.sampler.lock().unwrap_or_else(PoisonError::into_inner);
            (sampler.sample(), sampler.job_usage(&roots))
        };
        let beat = Heartbeat {
            cpu_percent: load.cpu_percent,
            memory_used_bytes: load.memory_used_bytes,
            memory_total_bytes: load.memory_total_bytes,
            running_job_ids: agent.outbox.read(Outbox::running_job_ids),
            jobs,
            draining: agent.jobs.is_draining(),
        };
        if tx
            .send(message(agent_message::Msg::Heartbeat(beat)))
            .await
            .is_err()
        {
            return;
        }
    }
}

fn message(msg: agent_message::Msg) -> AgentMessage {
    AgentMessage { msg: Some(msg) }
}
