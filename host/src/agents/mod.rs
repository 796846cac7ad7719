//! The agent gateway: the tonic service agents dial into.
//!
//! Owns authentication (a bearer token, checked before any message is read:
//! the shared agent token, a provisioned worker's registration token, or a
//! bootstrap token that binds the agent's id, see `auth::agents`; which are
//! accepted is `--agent-auth`),
//! the agent's identity (an id proved by its secret), the limits of what an
//! agent may send (`limits`), who may speak for a job (only the current
//! session of the worker holding its attempt), registration and
//! reconciliation of what a reconnecting agent still runs,
//! and one session task per agent that takes its messages in order: log
//! batches before results, as the agent sent them (batches already waiting
//! are stored in one append, see `coalesce`); and, beside the session,
//! the transfer of pipeline artifacts (`artifacts`). Protocol rules are at
//! the top of `proto/hodei/agent/v1/agent.proto`.

mod artifacts;
mod coalesce;
mod limits;
mod link;
mod session;
mod wire;

pub use artifacts::grant_subject;
pub use limits::{AgentLimits, LimitArgs};
pub use link::{AgentLink, ArtifactGrant, CANCELLED_BY_USER, LinkClosed};

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use hodei_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use hodei_proto::v1::{
    AgentMessage, ArtifactChunk, ArtifactRequest, ArtifactStored, ServerMessage,
};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::agents::{AgentAuthMode, AgentTokens};
use crate::jobs::JobService;
use crate::masking::Masking;
use crate::providers::tokens::{TOKEN_PREFIX, token_hash};
use crate::store::WorkerLedger;
use crate::usage::UsageBoard;

/// Settings of the gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The token agents must present.
    pub token: String,
    /// How often agents should heartbeat.
    pub heartbeat_interval: Duration,
    /// Where heartbeats put each job's CPU and memory.
    pub usage: Arc<UsageBoard>,
    /// What one agent may send.
    pub limits: Arc<AgentLimits>,
    /// Provisioned workers, whose one-time tokens are checked here.
    pub ledger: Arc<dyn WorkerLedger>,
    /// The masker chain every log batch and error string passes through
    /// before the host keeps it.
    pub masking: Arc<Masking>,
    /// Bootstrap tokens and the credentials they bound.
    pub agent_tokens: Arc<AgentTokens>,
    /// Which tokens are accepted.
    pub agent_auth: AgentAuthMode,
    /// Where pipeline steps' outputs are kept.
    pub artifacts: Arc<crate::artifacts::Artifacts>,
}

/// What an agent authenticated with.
#[derive(Debug, Clone)]
pub(crate) enum Credential {
    /// The shared agent token: any worker.
    Shared,
    /// A provisioned worker's registration token, by its hash: that
    /// worker only (checked against the ledger at `Register`).
    Worker(String),
    /// A bootstrap token (`hodei_…`): redeemed by, or bound to, the agent
    /// id of `Register`.
    Bootstrap(String),
}

/// The `AgentService` implementation.
#[derive(Debug, Clone)]
pub struct AgentGateway {
    jobs: Arc<JobService>,
    config: Arc<GatewayConfig>,
}

impl AgentGateway {
    /// A gateway feeding `jobs`.
    pub fn new(jobs: Arc<JobService>, config: GatewayConfig) -> Self {
        Self {
            jobs,
            config: Arc::new(config),
        }
    }

    /// The tonic service to mount, refusing messages over the size limit
    /// before decoding them.
    pub fn into_service(self) -> AgentServiceServer<Self> {
        let limit = self.config.limits.max_message_bytes;
        AgentServiceServer::new(self).max_decoding_message_size(limit)
    }

    fn authenticate<T>(&self, request: &Request<T>) -> Result<Credential, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let shared_allowed = self.config.agent_auth == AgentAuthMode::Shared;
        match presented {
            Some(token)
                if shared_allowed
                    && constant_time_eq::constant_time_eq(
                        token.as_bytes(),
                        self.config.token.as_bytes(),
                    ) =>
            {
                Ok(Credential::Shared)
            }
            Some(token) if token.starts_with(TOKEN_PREFIX) => {
                Ok(Credential::Worker(token_hash(token)))
            }
            Some(token) if token.starts_with(crate::auth::tokens::TOKEN_PREFIX) => {
                Ok(Credential::Bootstrap(token.to_owned()))
            }
            _ => {
                let peer = request
                    .remote_addr()
                    .map_or_else(|| "unknown".to_owned(), |a: SocketAddr| a.to_string());
                tracing::warn!(%peer, presented = presented.is_some(), "agent rejected: bad or missing token");
                Err(Status::unauthenticated("invalid agent token"))
            }
        }
    }
}

type ServerStream = Pin<Box<dyn Stream<Item = Result<ServerMessage, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AgentService for AgentGateway {
    type ConnectStream = ServerStream;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let credential = self.authenticate(&request)?;
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a: SocketAddr| a.to_string());
        let inbound = request.into_inner();
        let outbound = session::open(
            Arc::clone(&self.jobs),
            &self.config,
            credential,
            peer,
            inbound,
        )
        .await?;
        Ok(Response::new(outbound))
    }

    type DownloadArtifactStream = artifacts::DownloadStream;

    async fn upload_artifact(
        &self,
        request: Request<Streaming<ArtifactChunk>>,
    ) -> Result<Response<ArtifactStored>, Status> {
        self.upload(request).await
    }

    async fn download_artifact(
        &self,
        request: Request<ArtifactRequest>,
    ) -> Result<Response<Self::DownloadArtifactStream>, Status> {
        self.download(request).await
    }
}
