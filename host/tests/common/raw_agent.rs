//! A protocol-level agent for tests: speaks the Hodei Worker Protocol from
//! agent.proto directly, so a test can send what the real agent never
//! would (another agent's job, a sequence jump, an oversized message).

use std::time::Duration;

use hodei_proto::v1::agent_service_client::AgentServiceClient;
use hodei_proto::v1::{
    AgentMessage, AssignJob, JobResult, LogBatch, LogEntry, Register, RegisterAck, ServerMessage,
    Stream, agent_message, assign_job, server_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Status, Streaming};

use super::{Host, TOKEN};

/// How long a test waits for one answer of the host.
pub const ANSWER: Duration = Duration::from_secs(10);

/// One open session with the host.
pub struct RawAgent {
    /// The worker id the host registered.
    pub id: String,
    tx: mpsc::UnboundedSender<AgentMessage>,
    inbound: Streaming<ServerMessage>,
}

/// A valid `Register` for a fresh identity (its id proved by its secret).
pub fn register(name: &str, labels: &[(&str, &str)], slots: u32) -> Register {
    let (agent_secret, agent_id) = hodei_proto::new_agent_identity();
    Register {
        protocol_version: hodei_proto::PROTOCOL_VERSION,
        agent_id,
        agent_secret,
        name: name.to_owned(),
        version: "raw".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        cpu_count: 2,
        memory_bytes: 1 << 30,
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        slots,
        ..Register::default()
    }
}

/// Opens a session with `register`; the status when the host refuses it.
pub async fn connect(host: &Host, register: Register) -> Result<(RawAgent, RegisterAck), Status> {
    connect_with_token(host, register, TOKEN).await
}

/// The same, presenting `token` rather than the shared agent token.
pub async fn connect_with_token(
    host: &Host,
    register: Register,
    token: &str,
) -> Result<(RawAgent, RegisterAck), Status> {
    let channel = tonic::transport::Endpoint::from_shared(host.grpc.clone())
        .map_err(|e| Status::internal(e.to_string()))?
        .connect()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut client = AgentServiceClient::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    let (tx, rx) = mpsc::unbounded_channel();
    let id = register.agent_id.clone();
    tx.send(message(agent_message::Msg::Register(register)))
        .map_err(|_| Status::internal("closed"))?;
    let mut request = tonic::Request::new(UnboundedReceiverStream::new(rx));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    let mut inbound = client.connect(request).await?.into_inner();
    let first = tokio::time::timeout(ANSWER, inbound.message())
        .await
        .map_err(|_| Status::deadline_exceeded("no RegisterAck"))??;
    match first.and_then(|m| m.msg) {
        Some(server_message::Msg::RegisterAck(ack)) => Ok((RawAgent { id, tx, inbound }, ack)),
        other => Err(Status::internal(format!("not a RegisterAck: {other:?}"))),
    }
}

impl RawAgent {
    /// Sends one message (queued; the stream sends in order).
    pub fn send(&self, msg: agent_message::Msg) {
        let _ = self.tx.send(message(msg));
    }

    /// Sends an `AgentMessage` with no message in it.
    pub fn send_empty(&self) {
        let _ = self.tx.send(AgentMessage { msg: None });
    }

    /// Sends a log batch of `(sequence, text)` lines on stdout.
    pub fn send_logs(&self, job_id: &str, attempt: u32, lines: &[(u64, &[u8])]) {
        self.send(agent_message::Msg::LogBatch(LogBatch {
            job_id: job_id.to_owned(),
            attempt,
            entries: lines
                .iter()
                .map(|(sequence, data)| LogEntry {
                    sequence: *sequence,
                    stream: Stream::Stdout as i32,
                    data: data.to_vec(),
                    timestamp_us: 1,
                })
                .collect(),
        }));
    }

    /// Sends a result: exited with `exit_code`.
    pub fn send_result(&self, job_id: &str, attempt: u32, exit_code: i32, last_sequence: u64) {
        self.send(agent_message::Msg::JobResult(JobResult {
            job_id: job_id.to_owned(),
            attempt,
            exit_code,
            outcome: hodei_proto::v1::Outcome::Exited as i32,
            last_sequence,
            outputs: Vec::new(),
            ..JobResult::default()
        }));
    }

    /// The next message that is not a keep-alive; `Err` with the closing
    /// status when the host ended the session, `Ok(None)` on a clean end.
    /// Panics when nothing comes within [`ANSWER`].
    pub async fn next(&mut self) -> Result<Option<server_message::Msg>, Status> {
        loop {
            let next = tokio::time::timeout(ANSWER, self.inbound.message())
                .await
                .expect("the host answers");
            match next? {
                None => return Ok(None),
                Some(ServerMessage {
                    msg: Some(server_message::Msg::KeepAlive(_)),
                }) => {}
                Some(m) => return Ok(m.msg),
            }
        }
    }

    /// Waits for the first message `pick` accepts, skipping others.
    pub async fn expect<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&server_message::Msg) -> Option<T>,
    ) -> T {
        loop {
            match self.next().await {
                Ok(Some(m)) => {
                    if let Some(found) = pick(&m) {
                        return found;
                    }
                }
                other => panic!("waiting for {what}, the session ended: {other:?}"),
            }
        }
    }

    /// Waits for the next assignment, skipping other messages.
    pub async fn next_assignment(&mut self) -> AssignJob {
        self.expect("an assignment", |m| match m {
            server_message::Msg::AssignJob(assign) => Some(assign.clone()),
            _ => None,
        })
        .await
    }

    /// Runs `assign`'s script with bash like an agent that does NOT mask:
    /// its stdout is cut at `\n` and forwarded untouched, in `batches`
    /// log batches of about equal size (waiting for each one's ack), then
    /// the result. Answers the lines sent.
    pub async fn run_unmasked(&mut self, assign: &AssignJob, batches: usize) -> Vec<Vec<u8>> {
        let Some(assign_job::Command::Script(script)) = &assign.command else {
            panic!("the test jobs are scripts");
        };
        let output = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("set -euo pipefail\n{script}"))
            .envs(&assign.env)
            .envs(&assign.secrets)
            .output()
            .expect("run bash");
        let mut lines: Vec<Vec<u8>> = output
            .stdout
            .split(|b| *b == b'\n')
            .map(<[u8]>::to_vec)
            .collect();
        if lines.last().is_some_and(Vec::is_empty) {
            lines.pop();
        }
        let per_batch = lines.len().div_ceil(batches.max(1)).max(1);
        let mut sequence = assign.first_sequence;
        for chunk in lines.chunks(per_batch) {
            let numbered: Vec<(u64, &[u8])> = chunk
                .iter()
                .map(|line| {
                    let numbered = (sequence, line.as_slice());
                    sequence += 1;
                    numbered
                })
                .collect();
            self.send_logs(&assign.job_id, assign.attempt, &numbered);
            let last = sequence - 1;
            self.expect("the batch's ack", |m| match m {
                server_message::Msg::Ack(ack) if ack.log_sequence >= last => Some(()),
                _ => None,
            })
            .await;
        }
        self.send(agent_message::Msg::JobResult(JobResult {
            job_id: assign.job_id.clone(),
            attempt: assign.attempt,
            exit_code: output.status.code().unwrap_or(-1),
            outcome: hodei_proto::v1::Outcome::Exited as i32,
            last_sequence: sequence - 1,
            outputs: Vec::new(),
            ..JobResult::default()
        }));
        lines
    }

    /// Reports that `assign` could not start, with `error` as the agent's
    /// error string.
    pub fn fail_to_start(&self, assign: &AssignJob, error: &str) {
        self.send(agent_message::Msg::JobResult(JobResult {
            job_id: assign.job_id.clone(),
            attempt: assign.attempt,
            outcome: hodei_proto::v1::Outcome::FailedToStart as i32,
            last_sequence: assign.first_sequence.saturating_sub(1),
            outputs: Vec::new(),
            error: error.to_owned(),
            ..JobResult::default()
        }));
    }

    /// Reads until the host closes the session; returns its status.
    pub async fn closing_status(&mut self) -> Status {
        loop {
            match self.next().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the session ended without a status"),
                Err(status) => return status,
            }
        }
    }

    /// Every message until `quiet` passes with none, keep-alives aside.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<server_message::Msg> {
        let mut out = Vec::new();
        while let Ok(Ok(Some(m))) = tokio::time::timeout(quiet, self.inbound.message()).await {
            if let Some(msg) = m.msg
                && !matches!(msg, server_message::Msg::KeepAlive(_))
            {
                out.push(msg);
            }
        }
        out
    }
}

fn message(msg: agent_message::Msg) -> AgentMessage {
    AgentMessage { msg: Some(msg) }
}
