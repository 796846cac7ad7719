//! The agent gateway: the tonic service agents dial into.
//!
//! Owns authentication (a bearer token, checked before any message is read),
//! registration and reconciliation of what a reconnecting agent still runs,
//! and one session task per agent that takes its messages in order: log
//! batches before results, as the agent sent them (batches already waiting
//! are stored in one append, see `coalesce`). Protocol rules are at
//! the top of `proto/hodei/agent/v1/agent.proto`.

mod coalesce;
mod session;
pub mod wire;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use hodei_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use hodei_proto::v1::{AgentMessage, ServerMessage};
use tonic::{Request, Response, Status, Streaming};

use crate::jobs::JobService;
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

    /// The tonic service to mount.
    pub fn into_service(self) -> AgentServiceServer<Self> {
        AgentServiceServer::new(self)
    }

    fn authenticate<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = presented.is_some_and(|token| {
            constant_time_eq::constant_time_eq(token.as_bytes(), self.config.token.as_bytes())
        });
        if ok {
            Ok(())
        } else {
            let peer = request
                .remote_addr()
                .map_or_else(|| "unknown".to_owned(), |a: SocketAddr| a.to_string());
            tracing::warn!(%peer, presented = presented.is_some(), "agent rejected: bad or missing token");
            Err(Status::unauthenticated("invalid agent token"))
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
        self.authenticate(&request)?;
        let inbound = request.into_inner();
        let outbound = session::open(Arc::clone(&self.jobs), &self.config, inbound).await?;
        Ok(Response::new(outbound))
    }
}
