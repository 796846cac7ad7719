//! Black-box tests: the real `hodei-agent` binary against a scripted fake
//! host on `127.0.0.1:0`, speaking the Hodei Worker Protocol over the wire.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use hodei_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use hodei_proto::v1::{
    Ack, AgentMessage, ArtifactChunk, ArtifactRequest, ArtifactStored, AssignJob, CancelJob,
    Heartbeat, JobResult, LogEntry, Outcome, Register, RegisterAck, RunningJob, ServerMessage,
    Stream, agent_message::Msg, assign_job::Command, server_message::Msg as HostMsg,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::net::TcpListener;
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

const TOKEN: &str = "test-token";
const WAIT: Duration = Duration::from_secs(5);

/// One accepted Connect call.
struct Session {
    inbound: Streaming<AgentMessage>,
    outbound: mpsc::UnboundedSender<Result<ServerMessage, Status>>,
}

impl Session {
    /// The next agent message that is not a heartbeat.
    async fn recv(&mut self) -> Msg {
        loop {
            let msg = self.recv_any().await;
            if !matches!(msg, Msg::Heartbeat(_)) {
                return msg;
            }
        }
    }

    /// The next agent message.
    async fn recv_any(&mut self) -> Msg {
        timeout(WAIT, self.inbound.message())
            .await
            .expect("agent went quiet")
            .expect("stream error")
            .expect("stream ended")
            .msg
            .expect("empty message")
    }

    /// Skips messages until a heartbeat that passes `test`.
    async fn heartbeat_where(&mut self, test: impl Fn(&Heartbeat) -> bool) -> Heartbeat {
        loop {
            if let Msg::Heartbeat(beat) = self.recv_any().await
                && test(&beat)
            {
                return beat;
            }
        }
    }

    fn send(&self, msg: HostMsg) {
        self.outbound
            .send(Ok(ServerMessage { msg: Some(msg) }))
            .expect("session open");
    }

    async fn register(&mut self, abandon: Vec<RunningJob>) -> Register {
        let Msg::Register(register) = self.recv().await else {
            panic!("first message is not Register");
        };
        self.send(HostMsg::RegisterAck(RegisterAck {
            protocol_version: 1,
            worker_id: register.agent_id.clone(),
            heartbeat_interval_ms: 100,
            abandon,
        }));
        register
    }

    /// Collects log entries until the job's result arrives.
    async fn until_result(&mut self, job_id: &str) -> (Vec<LogEntry>, JobResult) {
        let mut entries = Vec::new();
        loop {
            match self.recv().await {
                Msg::LogBatch(batch) if batch.job_id == job_id => entries.extend(batch.entries),
                Msg::JobResult(result) if result.job_id == job_id => return (entries, result),
                _ => {}
            }
        }
    }
}

struct FakeHost {
    sessions: mpsc::UnboundedSender<Session>,
}

#[tonic::async_trait]
impl AgentService for FakeHost {
    type ConnectStream = UnboundedReceiverStream<Result<ServerMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let token = request.metadata().get("authorization");
        if token.and_then(|t| t.to_str().ok()) != Some(&format!("Bearer {TOKEN}")) {
            return Err(Status::unauthenticated("bad token"));
        }
        let (outbound, rx) = mpsc::unbounded_channel();
        let inbound = request.into_inner();
        let _ = self.sessions.send(Session { inbound, outbound });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    type DownloadArtifactStream = UnboundedReceiverStream<Result<ArtifactChunk, Status>>;

    async fn upload_artifact(
        &self,
        _request: Request<Streaming<ArtifactChunk>>,
    ) -> Result<Response<ArtifactStored>, Status> {
        Err(Status::unimplemented("the fake host keeps no artifacts"))
    }

    async fn download_artifact(
        &self,
        _request: Request<ArtifactRequest>,
    ) -> Result<Response<Self::DownloadArtifactStream>, Status> {
        Err(Status::unimplemented("the fake host keeps no artifacts"))
    }
}

/// Serves a fake host; returns its URL and the stream of sessions.
async fn fake_host() -> (String, mpsc::UnboundedReceiver<Session>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (sessions, rx) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentServiceServer::new(FakeHost { sessions }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (url, rx)
}

fn agent(url: &str, token: &str, work_dir: &std::path::Path) -> Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_hodei-agent"))
        .args([
            "--slots",
            "2",
            "--cancel-grace-secs",
            "1",
            "--labels",
            "zone=test",
        ])
        .arg("--work-dir")
        .arg(work_dir)
        .env("HODEI_SERVER_URL", url)
        .env("HODEI_TOKEN", token)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start hodei-agent")
}

fn assign(job_id: &str, script: &str, first_sequence: u64) -> HostMsg {
    HostMsg::AssignJob(AssignJob {
        job_id: job_id.into(),
        attempt: 1,
        command: Some(Command::Script(script.into())),
        first_sequence,
        ..Default::default()
    })
}

fn ack(job_id: &str, log_sequence: u64) -> HostMsg {
    HostMsg::Ack(Ack {
        job_id: job_id.into(),
        attempt: 1,
        log_sequence,
        result_stored: true,
    })
}

async fn next_session(sessions: &mut mpsc::UnboundedReceiver<Session>) -> Session {
    timeout(WAIT, sessions.recv())
        .await
        .expect("agent did not connect")
        .expect("host gone")
}

async fn exit_of(child: &mut Child) -> ExitStatus {
    timeout(WAIT, child.wait())
        .await
        .expect("agent did not exit")
        .expect("wait")
}

#[tokio::test]
async fn jobs_run_logs_survive_a_reconnect_and_a_second_sigterm_cancels() {
    let (url, mut sessions) = fake_host().await;
    let work_dir = tempfile::tempdir().expect("tempdir");
    let mut child = agent(&url, TOKEN, work_dir.path());

    let mut session = next_session(&mut sessions).await;
    let register = session.register(vec![]).await;
    assert_eq!(register.protocol_version, 1);
    assert_eq!(register.slots, 2);
    assert_eq!(
        register.labels.get("zone").map(String::as_str),
        Some("test")
    );
    assert!(register.running.is_empty() && register.memory_bytes > 0);

    // A job: start, both streams, dense sequences, result.
    session.send(assign(
        "j1",
        "echo hello\necho oops >&2\necho \"${HODEI_TOKEN:-unset}\"",
        10,
    ));
    assert!(matches!(session.recv().await, Msg::JobStarted(s) if s.job_id == "j1"));
    let (entries, result) = session.until_result("j1").await;
    let lines: Vec<(i32, &[u8])> = entries.iter().map(|e| (e.stream, &e.data[..])).collect();
    assert!(
        lines.contains(&(Stream::Stdout.into(), b"hello")),
        "{lines:?}"
    );
    assert!(
        lines.contains(&(Stream::Stderr.into(), b"oops")),
        "{lines:?}"
    );
    assert!(
        lines.contains(&(Stream::Stdout.into(), b"unset")),
        "token leaked: {lines:?}"
    );
    let sequences: Vec<u64> = entries.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, vec![10, 11, 12]);
    assert_eq!((result.exit_code, result.last_sequence), (0, 12));
    assert_eq!(result.outcome, i32::from(Outcome::Exited));

    // Nothing acknowledged, then the connection drops: the agent reports
    // the job on Register and resends everything.
    drop(session);
    let mut session = next_session(&mut sessions).await;
    let register = session.register(vec![]).await;
    assert_eq!(
        register.running,
        vec![RunningJob {
            job_id: "j1".into(),
            attempt: 1
        }]
    );
    let (entries, resent) = session.until_result("j1").await;
    assert_eq!(
        entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        sequences
    );
    assert_eq!(resent, result);
    session.send(ack("j1", 12));

    // A running job the host abandons on reconnect is killed and forgotten.
    session.send(assign("j2", "sleep 100", 1));
    assert!(matches!(session.recv().await, Msg::JobStarted(s) if s.job_id == "j2"));
    drop(session);
    let mut session = next_session(&mut sessions).await;
    let abandon = vec![RunningJob {
        job_id: "j2".into(),
        attempt: 1,
    }];
    let register = session.register(abandon.clone()).await;
    assert_eq!(
        register.running, abandon,
        "j1 was forgotten after result_stored"
    );

    // CancelJob ends a job with OUTCOME_CANCELLED.
    session.send(assign("j3", "sleep 100", 1));
    assert!(matches!(session.recv().await, Msg::JobStarted(s) if s.job_id == "j3"));
    session.send(HostMsg::CancelJob(CancelJob {
        job_id: "j3".into(),
        attempt: 1,
        reason: "test".into(),
    }));
    let (_, result) = session.until_result("j3").await;
    assert_eq!(result.outcome, i32::from(Outcome::Cancelled));
    session.send(ack("j3", 0));

    // Heartbeats carry the running job's usage.
    session.send(assign("j4", "sleep 100", 1));
    assert!(matches!(session.recv().await, Msg::JobStarted(s) if s.job_id == "j4"));
    let beat = session
        .heartbeat_where(|beat| beat.jobs.iter().any(|job| job.job_id == "j4"))
        .await;
    let usage = beat.jobs.iter().find(|job| job.job_id == "j4").expect("j4");
    assert!(usage.processes >= 1 && usage.memory_bytes > 0, "{usage:?}");
    assert!(!beat.draining);

    // SIGTERM drains: the host hears it at once, a new job is refused, the
    // running one runs on. A second SIGTERM cancels it; then exit 0.
    let pid = Pid::from_raw(i32::try_from(child.id().expect("pid")).expect("pid"));
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    session.heartbeat_where(|beat| beat.draining).await;
    session.send(assign("j5", "echo never", 1));
    let (entries, refused) = session.until_result("j5").await;
    assert!(entries.is_empty());
    assert_eq!(refused.outcome, i32::from(Outcome::FailedToStart));
    session.send(ack("j5", 0));
    kill(pid, Signal::SIGTERM).expect("second SIGTERM");
    let (_, result) = session.until_result("j4").await;
    assert_eq!(result.outcome, i32::from(Outcome::Cancelled));
    session.send(ack("j4", 0));
    assert_eq!(exit_of(&mut child).await.code(), Some(0));
    let leftovers: Vec<_> = std::fs::read_dir(work_dir.path()).expect("ls").collect();
    assert!(leftovers.is_empty(), "job directories left: {leftovers:?}");
}

#[tokio::test]
async fn a_rejected_token_exits_with_code_2() {
    let (url, _sessions) = fake_host().await;
    let work_dir = tempfile::tempdir().expect("tempdir");
    let mut child = agent(&url, "wrong", work_dir.path());
    assert_eq!(exit_of(&mut child).await.code(), Some(2));
}

#[tokio::test]
async fn sigterm_lets_a_running_job_finish_and_exits_once_its_result_is_stored() {
    let (url, mut sessions) = fake_host().await;
    let work_dir = tempfile::tempdir().expect("tempdir");
    let mut child = agent(&url, TOKEN, work_dir.path());
    let mut session = next_session(&mut sessions).await;
    session.register(vec![]).await;
    let release = work_dir.path().join("release");
    session.send(assign(
        "d1",
        &format!(
            "while [ ! -e {} ]; do sleep 0.05; done; echo done",
            release.display()
        ),
        1,
    ));
    assert!(matches!(session.recv().await, Msg::JobStarted(s) if s.job_id == "d1"));
    let pid = Pid::from_raw(i32::try_from(child.id().expect("pid")).expect("pid"));
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    session.heartbeat_where(|beat| beat.draining).await;
    assert!(
        child.try_wait().expect("wait").is_none(),
        "exited while draining"
    );

    std::fs::write(&release, "").expect("release");
    let (entries, result) = session.until_result("d1").await;
    assert_eq!(result.outcome, i32::from(Outcome::Exited));
    assert_eq!(result.exit_code, 0);
    let lines: Vec<&[u8]> = entries.iter().map(|e| &e.data[..]).collect();
    assert_eq!(lines, vec![&b"done"[..]]);
    // Not stored yet: the agent waits (it resends after a reconnect).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.try_wait().expect("wait").is_none(),
        "exited before the ack"
    );
    session.send(ack("d1", result.last_sequence));
    assert_eq!(exit_of(&mut child).await.code(), Some(0));
}
