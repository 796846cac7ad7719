//! Runs one job: a private directory, `job.sh`, bash in a PTY, the output
//! readers, and the end of the job (exit, cancel, timeout).
//!
//! # Why a PTY, and why stderr is a FIFO
//! Jobs run on a terminal so that they behave as they do for a person:
//! `test -t 1` is true, tools keep their colours and line buffering. But a
//! PTY has one output channel, so stdout and stderr would arrive merged.
//! `job.sh` therefore starts with `exec 2>stderr.fifo`: stderr goes to a
//! named pipe in the job's directory that the agent reads separately, while
//! stdin and stdout stay on the terminal. The agent opens the FIFO
//! read-write, so it holds a writer itself and never sees a premature EOF
//! (nor blocks bash's `open` for writing); the flip side is that the FIFO
//! never reports EOF, so after the job exits it is read until it is empty.
//! It is read through tokio's `net::unix::pipe::Receiver`, which opens a
//! FIFO read-write and non-blocking without unsafe code (`AsyncFd::new` is
//! deprecated as unsound).
//!
//! # Process groups
//! portable-pty starts bash with `setsid`, so bash leads a new session and
//! process group whose id is its pid. Cancel and timeout signal the whole
//! group (`killpg`), and once the job is over the group is SIGKILLed, so
//! nothing the job started outlives it (short of leaving the group itself).
//!
//! # Exit status
//! portable-pty reports a death by signal only as `strsignal` text, so the
//! agent reaps the child itself with `waitpid`. A normal exit gives
//! `exit_code` = the code and `signal` = 0; death by signal N gives
//! `signal` = N and `exit_code` = 128 + N, the shell's convention, so
//! `exit_code` alone still reads as a failure.
//!
//! # The end of output
//! The PTY reader sees EOF (EIO) once every process has closed the
//! terminal; the FIFO is read until empty after the exit. Background
//! processes may hold either open, so output is read for at most
//! [`DRAIN_BOUND`] after the exit; then the group is killed.

use std::fs::{OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hodei_proto::v1::{AssignJob, JobResult, Outcome, Stream};
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use portable_pty::{CommandBuilder, MasterPty, PtySize, native_pty_system};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout_at};
use tracing::{debug, warn};

use crate::output::{open_fifo, read_stderr, spawn_pty_reader};
use crate::script::{self, ScriptError};

/// The job's terminal: 50 rows of 160 columns.
const PTY_SIZE: PtySize = PtySize {
    rows: 50,
    cols: 160,
    pixel_width: 0,
    pixel_height: 0,
};
/// How long output is still read after the job's process exited.
pub const DRAIN_BOUND: Duration = Duration::from_secs(2);

/// Where a job's events go. Called from a reader thread as well as from
/// the runtime, so implementations must not block for long.
pub trait JobSink: Send + Sync + 'static {
    /// The job's process runs; its pid is also its process group id.
    fn started(&self, pid: u32);
    /// One line of output (or a piece of a long one), without terminator.
    fn line(&self, stream: Stream, data: Vec<u8>);
}

/// A request to end a running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM to the group, SIGKILL after the grace period.
    Cancel,
    /// SIGKILL to the group now.
    Kill,
}

/// Settings shared by every job of this agent.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Where each job's private directory is created.
    pub work_dir: PathBuf,
    /// Time between SIGTERM and SIGKILL on cancel and timeout.
    pub cancel_grace: Duration,
}

/// Why a job could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The private directory could not be created.
    #[error("cannot create a job directory in {dir}: {source}")]
    Dir { dir: PathBuf, source: io::Error },
    /// The command cannot be turned into a script.
    #[error(transparent)]
    Script(#[from] ScriptError),
    /// job.sh or the stderr FIFO could not be created.
    #[error("cannot prepare {what}: {source}")]
    Prepare {
        what: &'static str,
        source: io::Error,
    },
    /// The PTY could not be opened or the process could not be spawned.
    #[error("cannot start bash in a PTY: {0:#}")]
    Spawn(anyhow::Error),
}

/// Runs `job` to its end and returns its result (`last_sequence` is left
/// for the outbox to fill). Never fails: a job that cannot start yields
/// `OUTCOME_FAILED_TO_START`.
pub async fn run_job(
    config: &ExecConfig,
    job: &AssignJob,
    sink: Arc<dyn JobSink>,
    mut stop: watch::Receiver<Option<Stop>>,
) -> JobResult {
    let begun = Instant::now();
    let mut result = JobResult {
        job_id: job.job_id.clone(),
        attempt: job.attempt,
        ..Default::default()
    };
    let mut running = match start(config, job, &sink) {
        Ok(running) => running,
        Err(error) => {
            result.exit_code = -1;
            result.outcome = Outcome::FailedToStart.into();
            result.error = error.to_string();
            result.duration_ms = millis(begun.elapsed());
            return result;
        }
    };
    let (exit, outcome) = running
        .supervise(config.cancel_grace, job.timeout_secs, &mut stop)
        .await;
    result.duration_ms = millis(begun.elapsed());
    running.clean_up().await;
    result.exit_code = exit.exit_code;
    result.signal = exit.signal;
    result.outcome = outcome.into();
    result.error = exit.error.unwrap_or_default();
    result
}

/// A started job and everything needed to end it cleanly.
struct Running {
    pgid: Pid,
    dir: tempfile::TempDir,
    /// Kept open until the end: closing the master hangs up the terminal.
    master: Box<dyn MasterPty + Send>,
    exit: JoinHandle<ExitInfo>,
    stdout_done: oneshot::Receiver<()>,
    stderr_task: JoinHandle<()>,
    /// Tells the stderr reader that the job exited, so it drains and ends.
    exited: oneshot::Sender<()>,
    /// Set when reading stops, so that late output is dropped.
    stopped: Arc<AtomicBool>,
}

/// How the job's process ended.
struct ExitInfo {
    exit_code: i32,
    signal: i32,
    error: Option<String>,
}

fn start(
    config: &ExecConfig,
    job: &AssignJob,
    sink: &Arc<dyn JobSink>,
) -> Result<Running, StartError> {
    let dir = tempfile::Builder::new()
        .prefix("hodei-job-")
        .permissions(Permissions::from_mode(0o700))
        .tempdir_in(&config.work_dir)
        .map_err(|source| StartError::Dir {
            dir: config.work_dir.clone(),
            source,
        })?;
    let fifo_path = dir.path().join("stderr.fifo");
    let script_path = dir.path().join("job.sh");
    let text = script::render(&fifo_path, job.command.as_ref())?;
    write_private(&script_path, &text).map_err(|source| StartError::Prepare {
        what: "job.sh",
        source,
    })?;
    let fifo = open_fifo(&fifo_path).map_err(|source| StartError::Prepare {
        what: "the stderr FIFO",
        source,
    })?;

    let pair = native_pty_system()
        .openpty(PTY_SIZE)
        .map_err(StartError::Spawn)?;
    let pty_reader = pair.master.try_clone_reader().map_err(StartError::Spawn)?;
    let stopped = Arc::new(AtomicBool::new(false));
    // Started before the child so that failing to start it leaves nothing
    // to clean up: without a slave open the reader sees EOF and ends.
    let stdout_done = spawn_pty_reader(pty_reader, Arc::clone(sink), Arc::clone(&stopped))
        .map_err(|source| StartError::Prepare {
            what: "the PTY reader thread",
            source,
        })?;
    let mut child = pair
        .slave
        .spawn_command(command(job, dir.path(), &script_path))
        .map_err(StartError::Spawn)?;
    // Only the job may hold the terminal's slave side, so that the master
    // sees EOF once the job's processes are gone.
    drop(pair.slave);
    // A pid of 0 would make every signal below hit the agent's own group.
    let Some(pgid) = child
        .process_id()
        .and_then(|pid| i32::try_from(pid).ok())
        .filter(|&pid| pid > 0)
        .map(Pid::from_raw)
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(StartError::Spawn(anyhow::anyhow!("the PTY gave no pid")));
    };
    // Reaped by pid below; dropping a std Child neither kills nor waits.
    drop(child);
    let pid = pgid.as_raw().unsigned_abs();
    sink.started(pid);

    let (exited, exited_rx) = oneshot::channel();
    let stderr_task = tokio::spawn(read_stderr(
        fifo,
        Arc::clone(sink),
        Arc::clone(&stopped),
        exited_rx,
    ));
    Ok(Running {
        pgid,
        dir,
        master: pair.master,
        exit: tokio::task::spawn_blocking(move || wait_for_exit(pgid)),
        stdout_done,
        stderr_task,
        exited,
        stopped,
    })
}

impl Running {
    /// Waits for the job to exit, ending it on a stop request or timeout.
    async fn supervise(
        &mut self,
        grace: Duration,
        timeout_secs: u64,
        stop: &mut watch::Receiver<Option<Stop>>,
    ) -> (ExitInfo, Outcome) {
        let deadline = async {
            if timeout_secs == 0 {
                std::future::pending::<()>().await;
            }
            sleep(Duration::from_secs(timeout_secs)).await;
        };
        tokio::select! {
            exit = &mut self.exit => (joined(exit), Outcome::Exited),
            how = requested(stop, false) => (self.terminate(how, grace, stop).await, Outcome::Cancelled),
            () = deadline => (self.terminate(Stop::Cancel, grace, stop).await, Outcome::TimedOut),
        }
    }

    async fn terminate(
        &mut self,
        how: Stop,
        grace: Duration,
        stop: &mut watch::Receiver<Option<Stop>>,
    ) -> ExitInfo {
        if how == Stop::Cancel {
            signal_group(self.pgid, Signal::SIGTERM);
            tokio::select! {
                exit = &mut self.exit => return joined(exit),
                () = sleep(grace) => debug!(pgid = %self.pgid, "grace period over"),
                _ = requested(stop, true) => {}
            }
        }
        signal_group(self.pgid, Signal::SIGKILL);
        joined((&mut self.exit).await)
    }

    /// Reads the rest of the output (bounded), kills what is left of the
    /// group and removes the job's directory.
    async fn clean_up(mut self) {
        let deadline = Instant::now() + DRAIN_BOUND;
        // The reader may already have ended; then nobody needs telling.
        let _ = self.exited.send(());
        let drained = timeout_at(deadline, async {
            let _ = (&mut self.stdout_done).await;
            let _ = (&mut self.stderr_task).await;
        })
        .await;
        if drained.is_err() {
            debug!(pgid = %self.pgid, "output still open after the exit; stopped reading");
            self.stderr_task.abort();
        }
        self.stopped.store(true, Ordering::SeqCst);
        signal_group(self.pgid, Signal::SIGKILL);
        drop(self.master);
        let dir = self.dir.path().to_path_buf();
        if let Err(error) = self.dir.close() {
            warn!(dir = %dir.display(), %error, "cannot remove the job directory");
        }
    }
}

fn command(job: &AssignJob, dir: &Path, script_path: &Path) -> CommandBuilder {
    let mut cmd = CommandBuilder::new("bash");
    cmd.arg(script_path);
    cmd.cwd(dir);
    // The agent's own settings, its token above all, are not the job's.
    for (key, _) in std::env::vars_os() {
        if key.as_bytes().starts_with(b"HODEI_") {
            cmd.env_remove(key);
        }
    }
    // A daemonised agent may have no TERM; a terminal without one makes
    // many tools drop colours, which is what the PTY is for.
    if cmd.get_env("TERM").is_none() {
        cmd.env("TERM", "xterm-256color");
    }
    for (key, value) in job.env.iter().chain(&job.secrets) {
        cmd.env(key, value);
    }
    cmd.env("HODEI_JOB_ID", &job.job_id);
    cmd.env("HODEI_ATTEMPT", job.attempt.to_string());
    cmd
}

fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(path)?
        .write_all(contents)
}

/// Resolves once a stop is requested (only a kill, when `kill_only`). A
/// dropped sender means nobody can ask any more: never resolves.
async fn requested(stop: &mut watch::Receiver<Option<Stop>>, kill_only: bool) -> Stop {
    let wanted = |request: &Option<Stop>| match request {
        Some(Stop::Kill) => true,
        Some(Stop::Cancel) => !kill_only,
        None => false,
    };
    let request = stop.wait_for(wanted).await.map(|request| *request);
    match request {
        Ok(request) => request.unwrap_or(Stop::Kill),
        Err(_) => std::future::pending().await,
    }
}

fn signal_group(pgid: Pid, signal: Signal) {
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(error) => warn!(%pgid, %signal, %error, "cannot signal the job's process group"),
    }
}

fn wait_for_exit(pid: Pid) -> ExitInfo {
    let ended = |exit_code, signal| ExitInfo {
        exit_code,
        signal,
        error: None,
    };
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return ended(code, 0),
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                return ended(128 + signal as i32, signal as i32);
            }
            // Stops and continues are only reported when asked for.
            Ok(_) | Err(Errno::EINTR) => {}
            Err(error) => {
                return ExitInfo {
                    exit_code: -1,
                    signal: 0,
                    error: Some(format!("cannot wait for the job's process: {error}")),
                };
            }
        }
    }
}

fn joined(exit: Result<ExitInfo, tokio::task::JoinError>) -> ExitInfo {
    exit.unwrap_or_else(|error| ExitInfo {
        exit_code: -1,
        signal: 0,
        error: Some(format!("the process waiter failed: {error}")),
    })
}

fn millis(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[path = "executor_tests.rs"]
mod tests;
