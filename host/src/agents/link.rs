//! The link to one agent: the only code that builds messages to an agent.
//!
//! Use cases and the scheduler hold an [`AgentLink`] and call its verbs
//! (`assign`, `cancel`), as a mini-redis command owns its frames; none of
//! them sees a protocol type. The session task owns the other messages
//! (acknowledgements, refusals, keep-alives) through the crate-private
//! part of the same handle.

use hodei_proto::v1::{
    Ack, CancelJob, KeepAlive, Refused, RegisterAck, ServerMessage, server_message,
};
use tokio::sync::mpsc;

use super::wire;
pub use super::wire::ArtifactGrant;
use crate::domain::{Job, JobId};

/// Why a job is being stopped on its agent, as the agent is told.
pub const CANCELLED_BY_USER: &str = "cancelled by user";

/// The agent's stream closed: the message was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the agent's stream is closed")]
pub struct LinkClosed;

/// A handle on one session's outbound stream. Cheap to clone; the stream
/// ends once the session and every clone are gone.
#[derive(Debug, Clone)]
pub struct AgentLink {
    tx: mpsc::Sender<ServerMessage>,
}

fn msg(m: server_message::Msg) -> ServerMessage {
    ServerMessage { msg: Some(m) }
}

impl AgentLink {
    /// A link and the stream of messages it feeds, `capacity` deep.
    pub(crate) fn channel(capacity: usize) -> (Self, mpsc::Receiver<ServerMessage>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Self { tx }, rx)
    }

    /// Sends the job's current attempt, its log starting at `first_sequence`.
    /// `grant` goes with a job that has outputs or inputs.
    pub async fn assign(
        &self,
        job: &Job,
        first_sequence: u64,
        grant: Option<ArtifactGrant>,
    ) -> Result<(), LinkClosed> {
        self.send(wire::assign_job(job, first_sequence, grant))
            .await
    }

    /// Tells the agent to stop `job`'s `attempt`, saying `reason`.
    pub async fn cancel(&self, job: JobId, attempt: u32, reason: &str) -> Result<(), LinkClosed> {
        self.send(cancel_job(job, attempt, reason)).await
    }

    pub(super) fn try_register_ack(&self, ack: RegisterAck) {
        let _ = self.tx.try_send(msg(server_message::Msg::RegisterAck(ack)));
    }

    pub(super) fn try_keepalive(&self) {
        let _ = self
            .tx
            .try_send(msg(server_message::Msg::KeepAlive(KeepAlive {})));
    }

    /// Informative: dropped when the agent's queue is full.
    pub(super) fn try_refused(&self, refused: Refused) {
        let _ = self.tx.try_send(msg(server_message::Msg::Refused(refused)));
    }

    pub(super) async fn ack(&self, ack: Ack) -> Result<(), LinkClosed> {
        self.send(msg(server_message::Msg::Ack(ack))).await
    }

    async fn send(&self, message: ServerMessage) -> Result<(), LinkClosed> {
        self.tx.send(message).await.map_err(|_| LinkClosed)
    }
}

fn cancel_job(job: JobId, attempt: u32, reason: &str) -> ServerMessage {
    msg(server_message::Msg::CancelJob(CancelJob {
        job_id: job.to_string(),
        attempt,
        reason: reason.to_owned(),
    }))
}
