//! `hodei serve --local-agents N`: agent processes on this machine.
//!
//! Each agent is a real `hodei-agent` process dialling the host's gRPC port,
//! exactly like a remote one; the host only supervises it (restart with a
//! pause if it dies, SIGINT on shutdown: cancel, not drain). Agents get
//! `--exit-with-parent` so a host killed with SIGKILL does not leave them
//! behind, and the token through the environment so it never shows in `ps`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Pause before restarting an agent that exited.
const RESTART_PAUSE: Duration = Duration::from_secs(1);
/// How long an agent may take to stop after SIGINT before SIGKILL. The
/// agent spends up to its cancel grace (10 s) plus a few seconds delivering
/// results; killing it sooner would leave its jobs (each in its own session)
/// running.
const STOP_GRACE: Duration = Duration::from_secs(20);
/// `hodei-agent` exits with this when the host refused its token:
/// restarting it cannot help.
const EXIT_TOKEN_REJECTED: i32 = 2;

/// The supervised local agents.
#[derive(Debug)]
pub struct LocalAgents {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// The `hodei-agent` binary: `HODEI_AGENT_BIN`, else next to this
/// executable, else from `PATH`.
pub fn agent_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HODEI_AGENT_BIN") {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("hodei-agent")))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("hodei-agent"))
}

impl LocalAgents {
    /// Starts `count` agents dialling `server_url`.
    pub fn start(
        count: u32,
        slots: Option<u32>,
        server_url: &str,
        token: &str,
    ) -> anyhow::Result<Self> {
        let binary = agent_binary();
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for index in 1..=count {
            let mut command = Command::new(&binary);
            command
                .arg("--server-url")
                .arg(server_url)
                .arg("--name")
                .arg(format!("local-{index}"))
                .arg("--exit-with-parent")
                .env("HODEI_TOKEN", token)
                .stdin(Stdio::null())
                .kill_on_drop(true);
            if let Some(slots) = slots {
                command.arg("--slots").arg(slots.to_string());
            }
            let child = command
                .spawn()
                .with_context(|| format!("cannot start {}", binary.display()))?;
            tasks.spawn(supervise(index, command, child, stop_rx.clone()));
        }
        tracing::info!(count, binary = %binary.display(), "local agents started");
        Ok(Self { stop, tasks })
    }

    /// SIGINT to every agent; waits for them to exit.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn supervise(
    index: u32,
    mut command: Command,
    mut child: Child,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let status = tokio::select! {
            status = child.wait() => status,
            () = stopped(&mut stop) => {
                terminate(&mut child).await;
                return;
            }
        };
        if status
            .as_ref()
            .ok()
            .and_then(std::process::ExitStatus::code)
            == Some(EXIT_TOKEN_REJECTED)
        {
            tracing::error!(
                agent = index,
                "local agent was refused by this host; not restarting it"
            );
            return;
        }
        tracing::warn!(agent = index, ?status, "local agent exited; restarting");
        tokio::select! {
            () = tokio::time::sleep(RESTART_PAUSE) => {}
            () = stopped(&mut stop) => return,
        }
        match command.spawn() {
            Ok(next) => child = next,
            Err(err) => {
                tracing::error!(agent = index, %err, "cannot restart local agent");
                return;
            }
        }
    }
}

/// Resolves once stop is asked (or the sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// SIGINT (the agent cancels its jobs, delivers their results and exits;
/// SIGTERM would make it drain, i.e. wait for its jobs to finish), SIGKILL
/// if it lingers.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}
