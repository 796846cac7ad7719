//! Runs one job: a private directory, the process on a PTY, the output
//! readers, and the end of the job (exit, cancel, timeout).
//!
//! # The terminal, and why the job does not own it
//! Jobs run on a terminal so that they behave as they do for a person:
//! `test -t 1` is true, tools keep their colours and line buffering. The
//! agent opens a PTY pair (`openpty`, the slave with `O_NOCTTY`) and hands
//! the slave to the job as stdin and stdout. It does *not* make the PTY the
//! job's controlling terminal: that takes `setsid` + `TIOCSCTTY` in the
//! child between fork and exec, and any such `pre_exec` step makes std
//! `fork()` the whole multi-threaded agent (copying its page tables) instead
//! of using `posix_spawn` (vfork-like, much cheaper per job). So the job
//! stays in the agent's session: `isatty(0/1)` holds but `/dev/tty` is not
//! the PTY (it cannot be opened, or is the agent's own terminal if it has
//! one), the job gets no SIGHUP or SIGWINCH from the PTY, and it inherits
//! the agent's signal mask and ignored signals. The slave is opened with
//! `O_NOCTTY` so it never becomes the agent's controlling terminal either.
//!
//! # stdout and stderr
//! A PTY has one output channel, so stderr is an ordinary pipe instead,
//! read by the runtime as a separate stream; stdout stays on the terminal.
//! Both are masked with the job's secrets ([`crate::mask`]) as they are
//! read, before anything reaches the sink.
//!
//! # Commands
//! An argv vector is executed directly (no shell, so no quoting and no
//! bash start-up); a program that cannot be executed fails the job with
//! `OUTCOME_FAILED_TO_START`. A script is written to `job.sh` (see
//! [`crate::script`]) and run as `bash job.sh`. A job env that sets `PATH`
//! makes std fall back to fork/exec for that job (it must search the new
//! `PATH`), which is correct, only slower.
//!
//! # Process groups
//! The job's process starts in a new process group whose id is its pid.
//! Cancel and timeout signal the whole group (`killpg`), and once the job is
//! over the group is SIGKILLed. Then, in the background (the result does
//! not wait for it), [`crate::reap`] SIGKILLs whatever still carries the
//! job's `HODEI_JOB_ID` (and attempt) in its environment, which reaches
//! descendants that left the group (double fork, `setsid`).
//!
//! # Exit status
//! A normal exit gives `exit_code` = the code and `signal` = 0; death by
//! signal N gives `signal` = N and `exit_code` = 128 + N, the shell's
//! convention, so `exit_code` alone still reads as a failure.
//!
//! # Artifacts
//! A pipeline step's inputs are fetched into its directory before the
//! process starts (failing that, the job fails to start, saying which
//! input); once it exits 0 its outputs are sent from the directory before
//! the directory goes, and a missing or oversized output turns the result
//! into `OUTCOME_OUTPUTS_FAILED` with the reason ([`crate::artifacts`]).
//!
//! # The end of output
//! The PTY reader sees EOF (EIO) once every process has closed the
//! terminal, the stderr reader once every process has closed the pipe.
//! Background processes may hold either open, so output is read for at
//! most [`DRAIN_BOUND`] after the exit; then the group is killed.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hodei_proto::v1::{AssignJob, JobResult, Outcome, Stream};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::pty::{Winsize, openpty};
use nix::sys::signal::{Signal, killpg};
use nix::sys::termios;
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout_at};
use tracing::{debug, warn};

use crate::artifacts::ArtifactClient;
use crate::mask::{MaskerError, SecretMasker};
use crate::output::{read_stderr, spawn_pty_reader};
use crate::script::{self, Launch, ScriptError};

/// The job's terminal: 50 rows of 160 columns.
const PTY_SIZE: Winsize = Winsize {
    ws_row: 50,
    ws_col: 160,
    ws_xpixel: 0,
    ws_ypixel: 0,
};
/// How long output is still read after the job's process exited.
pub const DRAIN_BOUND: Duration = Duration::from_secs(2);

/// Where a job's events go. Called from a reader thread as well as from
/// the runtime, so implementations must not block for long.
pub trait JobSink: Send + Sync + 'static {
    /// The job's process runs; its pid is also its process group id.
    fn started(&self, pid: u32);
    /// Lines of output (or pieces of long ones), without terminators, in
    /// order: all those one read produced, so that a chatty job costs one
    /// call per read rather than one per line.
    fn output(&self, stream: Stream, lines: Vec<Vec<u8>>);
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
    /// Transfers a job's inputs and outputs (`None`: jobs that have any
    /// fail, saying so).
    pub artifacts: Option<ArtifactClient>,
}

/// Why a job could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The private directory could not be created.
    #[error("cannot create a job directory in {dir}: {source}")]
    Dir { dir: PathBuf, source: io::Error },
    /// The command cannot be run at all.
    #[error(transparent)]
    Script(#[from] ScriptError),
    /// job.sh, the terminal or a reader could not be set up.
    #[error("cannot prepare {what}: {source}")]
    Prepare {
        what: &'static str,
        source: io::Error,
    },
    /// The job's secrets cannot be masked, so its output cannot be read.
    #[error(transparent)]
    Masker(#[from] MaskerError),
    /// The PTY could not be opened.
    #[error("cannot open a PTY: {0:#}")]
    Pty(anyhow::Error),
    /// The program could not be executed (not found, not executable...).
    #[error("cannot start `{program}`: {source}")]
    Spawn { program: String, source: io::Error },
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
    let failed_to_start = |mut result: JobResult, error: String| {
        result.exit_code = -1;
        result.outcome = Outcome::FailedToStart.into();
        result.error = error;
        result.duration_ms = millis(begun.elapsed());
        result
    };
    let dir = match job_dir(config) {
        Ok(dir) => dir,
        Err(error) => return failed_to_start(result, error.to_string()),
    };
    if !job.inputs.is_empty() {
        let fetched = tokio::select! {
            fetched = fetch_inputs(config, job, dir.path()) => fetched,
            _ = stop.wait_for(Option::is_some) => Err("cancelled while its inputs were fetched".into()),
        };
        if let Err(error) = fetched {
            return failed_to_start(result, format!("cannot fetch its inputs: {error}"));
        }
    }
    let mut running = match start(job, &sink, dir) {
        Ok(running) => running,
        Err(error) => return failed_to_start(result, error.to_string()),
    };
    let (mut exit, mut outcome) = running
        .supervise(config.cancel_grace, job.timeout_secs, &mut stop)
        .await;
    if outcome == Outcome::Exited
        && exit.exit_code == 0
        && exit.signal == 0
        && !job.outputs.is_empty()
    {
        match send_outputs(config, job, running.dir.path()).await {
            Ok(sent) => result.outputs = sent,
            Err(error) => {
                outcome = Outcome::OutputsFailed;
                exit.error = Some(error);
            }
        }
    }
    result.duration_ms = millis(begun.elapsed());
    running.clean_up().await;
    result.exit_code = exit.exit_code;
    result.signal = exit.signal;
    result.outcome = outcome.into();
    result.error = exit.error.unwrap_or_default();
    result
}

async fn fetch_inputs(config: &ExecConfig, job: &AssignJob, dir: &Path) -> Result<(), String> {
    match &config.artifacts {
        Some(client) => client.fetch_inputs(job, dir).await,
        None => Err("this agent does not transfer artifacts".into()),
    }
}

async fn send_outputs(
    config: &ExecConfig,
    job: &AssignJob,
    dir: &Path,
) -> Result<Vec<String>, String> {
    match &config.artifacts {
        Some(client) => client.send_outputs(job, dir).await,
        None => Err("this agent does not transfer artifacts".into()),
    }
}

/// The job's private directory (0700) under the work directory.
fn job_dir(config: &ExecConfig) -> Result<tempfile::TempDir, StartError> {
    tempfile::Builder::new()
        .prefix("hodei-job-")
        .permissions(Permissions::from_mode(0o700))
        .tempdir_in(&config.work_dir)
        .map_err(|source| StartError::Dir {
            dir: config.work_dir.clone(),
            source,
        })
}

/// A started job and everything needed to end it cleanly.
struct Running {
    pgid: Pid,
    /// The `HODEI_JOB_ID` and `HODEI_ATTEMPT` of the job's processes, for
    /// [`crate::reap`].
    job_id: String,
    attempt: u32,
    dir: tempfile::TempDir,
    /// Kept open until the end: closing the master hangs up the terminal.
    master: OwnedFd,
    child: Child,
    stdout_done: oneshot::Receiver<()>,
    stderr_task: JoinHandle<()>,
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
    job: &AssignJob,
    sink: &Arc<dyn JobSink>,
    dir: tempfile::TempDir,
) -> Result<Running, StartError> {
    let (program, mut cmd) = match script::launch(job.command.as_ref())? {
        Launch::Argv { program, args } => {
            let mut cmd = Command::new(program);
            cmd.args(args);
            (program, cmd)
        }
        Launch::Script(text) => {
            let script_path = dir.path().join("job.sh");
            write_private(&script_path, &text).map_err(|source| StartError::Prepare {
                what: "job.sh",
                source,
            })?;
            let mut cmd = Command::new("bash");
            cmd.arg(script_path);
            ("bash", cmd)
        }
    };
    configure(&mut cmd, job, dir.path());
    let masker = SecretMasker::new(job.secrets.values())?.map(Arc::new);

    let terminal = open_terminal()?;
    let stopped = Arc::new(AtomicBool::new(false));
    // Started before the child so that failing to start it leaves nothing
    // to clean up: once the slave is closed the reader sees EOF and ends.
    let stdout_done = spawn_pty_reader(
        terminal.reader,
        Arc::clone(sink),
        Arc::clone(&stopped),
        masker.clone(),
    )
    .map_err(|source| StartError::Prepare {
        what: "the PTY reader thread",
        source,
    })?;
    let stdout = terminal
        .slave
        .try_clone()
        .map_err(|source| StartError::Prepare {
            what: "the PTY's terminal",
            source,
        })?;
    cmd.stdin(terminal.slave)
        .stdout(stdout)
        .stderr(Stdio::piped());
    let spawned = cmd.spawn();
    // The command holds the agent's copies of the slave: only the job may
    // keep the terminal open, so that the master sees EOF once it is gone.
    drop(cmd);
    let mut child = spawned.map_err(|source| StartError::Spawn {
        program: program.to_owned(),
        source,
    })?;
    // A pid of 0 would make every signal below hit the agent's own group.
    let pgid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .filter(|&pid| pid > 0)
        .map(Pid::from_raw);
    let (Some(pgid), Some(stderr)) = (pgid, child.stderr.take()) else {
        let _ = child.start_kill();
        return Err(StartError::Spawn {
            program: program.to_owned(),
            source: io::Error::other("no pid or no stderr pipe after spawning"),
        });
    };
    sink.started(pgid.as_raw().unsigned_abs());
    let stderr_task = tokio::spawn(read_stderr(
        stderr,
        Arc::clone(sink),
        Arc::clone(&stopped),
        masker,
    ));
    Ok(Running {
        pgid,
        job_id: job.job_id.clone(),
        attempt: job.attempt,
        dir,
        master: terminal.master,
        child,
        stdout_done,
        stderr_task,
        stopped,
    })
}

/// A fresh PTY: the master, a reader of it (its own descriptor), and the
/// slave as a file.
struct Terminal {
    master: OwnedFd,
    reader: File,
    slave: File,
}

fn open_terminal() -> Result<Terminal, StartError> {
    let pty = openpty(&PTY_SIZE, None).map_err(|errno| StartError::Pty(errno.into()))?;
    // glibc opens the slave with O_NOCTTY, so it never becomes the
    // controlling terminal of an agent that leads a session without one.
    // Neither end may leak into a job (the one being started or any other
    // started meanwhile): close both on exec. The job gets the slave as
    // its stdin and stdout, which exec keeps.
    for fd in [&pty.master, &pty.slave] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|errno| StartError::Prepare {
            what: "the PTY's descriptors",
            source: errno.into(),
        })?;
    }
    let slave = File::from(pty.slave);
    raw_output(&slave).map_err(|source| StartError::Prepare {
        what: "the PTY's output mode",
        source,
    })?;
    let reader = pty
        .master
        .try_clone()
        .map(File::from)
        .map_err(|source| StartError::Prepare {
            what: "the PTY's reader",
            source,
        })?;
    Ok(Terminal {
        master: pty.master,
        reader,
        slave,
    })
}

/// Turns the terminal's output processing off (`OPOST`, hence `ONLCR`).
/// With it, the kernel turns each `\n` into `\r\n` byte by byte as the job
/// writes, which caps a chatty job at a few tens of MB/s (more CPU than
/// everything the agent does to a line); without it, the job's bytes pass
/// through as written. Line cutting strips a trailing `\r` either way, so
/// a job that turns it back on (`stty onlcr`) logs the same lines.
fn raw_output(slave: &File) -> io::Result<()> {
    let mut mode = termios::tcgetattr(slave).map_err(io::Error::from)?;
    mode.output_flags.remove(termios::OutputFlags::OPOST);
    termios::tcsetattr(slave, termios::SetArg::TCSANOW, &mode).map_err(io::Error::from)
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
            status = self.child.wait() => (exit_info(status), Outcome::Exited),
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
                status = self.child.wait() => return exit_info(status),
                () = sleep(grace) => debug!(pgid = %self.pgid, "grace period over"),
                _ = requested(stop, true) => {}
            }
        }
        signal_group(self.pgid, Signal::SIGKILL);
        exit_info(self.child.wait().await)
    }

    /// Reads the rest of the output (bounded), kills what is left of the
    /// group, removes the job's directory, and starts the scan for
    /// escaped processes ([`crate::reap`]).
    ///
    /// The scan reads the environment of every process on the machine, so
    /// it runs on the reaper's thread, shared with the other jobs that end
    /// about then: the job's result does not wait for it, and neither does
    /// its slot. Whatever escaped is killed moments later either way.
    async fn clean_up(mut self) {
        let deadline = Instant::now() + DRAIN_BOUND;
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
        crate::reap::request(&self.job_id, self.attempt);
        drop(self.master);
        let dir = self.dir.path().to_path_buf();
        if let Err(error) = self.dir.close() {
            warn!(dir = %dir.display(), %error, "cannot remove the job directory");
        }
    }
}

/// Everything but the program, its arguments and its stdio. Nothing here
/// may stop std from using `posix_spawn` (see the module docs).
fn configure(cmd: &mut Command, job: &AssignJob, dir: &Path) {
    cmd.current_dir(dir).process_group(0).kill_on_drop(false);
    // The agent's own settings, its token above all, are not the job's.
    for (key, _) in std::env::vars_os() {
        if key.as_bytes().starts_with(b"HODEI_") {
            cmd.env_remove(key);
        }
    }
    // A daemonised agent may have no TERM; a terminal without one makes
    // many tools drop colours, which is what the PTY is for.
    if std::env::var_os("TERM").is_none() {
        cmd.env("TERM", "xterm-256color");
    }
    for (key, value) in job.env.iter().chain(&job.secrets) {
        cmd.env(key, value);
    }
    cmd.env("HODEI_JOB_ID", &job.job_id);
    cmd.env("HODEI_ATTEMPT", job.attempt.to_string());
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

fn exit_info(status: io::Result<ExitStatus>) -> ExitInfo {
    let ended = |exit_code, signal| ExitInfo {
        exit_code,
        signal,
        error: None,
    };
    let failed = |error: String| ExitInfo {
        exit_code: -1,
        signal: 0,
        error: Some(error),
    };
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => ended(code, 0),
            (None, Some(signal)) => ended(128 + signal, signal),
            (None, None) => failed(format!("the job's process ended oddly: {status}")),
        },
        Err(error) => failed(format!("cannot wait for the job's process: {error}")),
    }
}

fn millis(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[path = "executor_tests.rs"]
mod tests;
