//! The `process` capability: `hodei-agent` processes on this machine.
//!
//! What a provider may do is narrow on purpose: the program is always the
//! host's own `hodei-agent` (a provider picks arguments and environment,
//! never what runs), the environment may not set the dynamic loader's
//! variables, and a provider can only signal processes this capability
//! started.
//!
//! One supervisor thread owns every child: it spawns them, answers state
//! and list requests, reaps them, and turns a stop into SIGINT (the agent
//! cancels its jobs, delivers their results and exits) followed by SIGKILL
//! after the grace period. A dedicated thread, not whichever thread made
//! the call, because the agents' `--exit-with-parent` (set here, always)
//! is tied to the thread that forked them: spawned from a short-lived
//! blocking thread, an agent would be told to exit when that thread ends.
//! When the last handle is dropped the thread kills what is left, and when
//! the host dies the agents follow it.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use wasmtime::component::{HasData, Linker};

use crate::plugins::provider::bindings::hodei::provider::process::{
    self as wit, ProcessInfo, ProcessState, SpawnRequest,
};
use crate::plugins::provider::bindings::hodei::provider::types::CapabilityError;

/// A `(key, value)` label.
type Label = (String, String);

/// Between supervisor sweeps (reaping, SIGKILL after the grace period).
const SWEEP: Duration = Duration::from_millis(50);

/// Local agent processes; clones share one supervisor.
#[derive(Clone)]
pub struct ProcessCapability {
    requests: mpsc::Sender<Request>,
    binary: PathBuf,
}

impl std::fmt::Debug for ProcessCapability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessCapability")
            .field("binary", &self.binary)
            .finish_non_exhaustive()
    }
}

enum Request {
    Spawn(SpawnRequest, mpsc::Sender<Result<u32, CapabilityError>>),
    Stop(u32, mpsc::Sender<Result<(), CapabilityError>>),
    State(u32, mpsc::Sender<Result<ProcessState, CapabilityError>>),
    List(Vec<Label>, mpsc::Sender<Vec<ProcessInfo>>),
}

impl ProcessCapability {
    /// Starts the supervisor. `binary` is the `hodei-agent` to run
    /// (`local_agents::agent_binary()` in `hodei serve`); `grace` is how
    /// long a stopped agent gets after SIGINT before SIGKILL.
    pub fn new(binary: PathBuf, grace: Duration) -> std::io::Result<Self> {
        let (requests, inbox) = mpsc::channel();
        let supervisor = Supervisor {
            binary: binary.clone(),
            grace,
            children: BTreeMap::new(),
        };
        std::thread::Builder::new()
            .name("hodei-provider-processes".into())
            .spawn(move || supervisor.run(&inbox))?;
        Ok(Self { requests, binary })
    }

    /// Starts `hodei-agent` with `request`; returns its pid.
    pub fn spawn(&self, request: SpawnRequest) -> Result<u32, CapabilityError> {
        self.ask(|reply| Request::Spawn(request, reply))?
    }

    /// SIGINT now, SIGKILL after the grace period; returns at once.
    pub fn stop(&self, pid: u32) -> Result<(), CapabilityError> {
        self.ask(|reply| Request::Stop(pid, reply))?
    }

    /// One process's state.
    pub fn state(&self, pid: u32) -> Result<ProcessState, CapabilityError> {
        self.ask(|reply| Request::State(pid, reply))?
    }

    /// The processes carrying every label of `selector`.
    pub fn list(&self, selector: Vec<Label>) -> Vec<ProcessInfo> {
        self.ask(|reply| Request::List(selector, reply))
            .unwrap_or_default()
    }

    fn ask<R>(
        &self,
        request: impl FnOnce(mpsc::Sender<R>) -> Request,
    ) -> Result<R, CapabilityError> {
        let gone = || CapabilityError::Unavailable("the process supervisor has stopped".into());
        let (reply, answer) = mpsc::channel();
        self.requests.send(request(reply)).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())
    }
}

/// One child and what the host knows about it.
struct Entry {
    child: Child,
    labels: Vec<Label>,
    /// When a stop was asked.
    stopping: Option<Instant>,
    /// Set once reaped.
    exit_code: Option<i32>,
}

impl Entry {
    fn state(&self) -> ProcessState {
        match (self.exit_code, self.stopping) {
            (Some(code), _) => ProcessState::Exited(code),
            (None, Some(_)) => ProcessState::Stopping,
            (None, None) => ProcessState::Running,
        }
    }
}

struct Supervisor {
    binary: PathBuf,
    grace: Duration,
    children: BTreeMap<u32, Entry>,
}

impl Supervisor {
    fn run(mut self, inbox: &mpsc::Receiver<Request>) {
        loop {
            match inbox.recv_timeout(SWEEP) {
                Ok(request) => {
                    self.sweep();
                    self.handle(request);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => self.sweep(),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        // Nobody can stop them any more: do it now.
        for (pid, mut entry) in std::mem::take(&mut self.children) {
            if entry.exit_code.is_none() {
                tracing::info!(pid, "provider capability dropped: killing agent");
                let _ = entry.child.kill();
                let _ = entry.child.wait();
            }
        }
    }

    fn handle(&mut self, request: Request) {
        // A caller that gave up is no reason to stop supervising.
        match request {
            Request::Spawn(spawn, reply) => {
                let _ = reply.send(self.spawn(spawn));
            }
            Request::Stop(pid, reply) => {
                let _ = reply.send(self.stop(pid));
            }
            Request::State(pid, reply) => {
                let _ = reply.send(
                    self.children
                        .get(&pid)
                        .map(Entry::state)
                        .ok_or_else(|| not_found(pid)),
                );
            }
            Request::List(selector, reply) => {
                let _ = reply.send(
                    self.children
                        .iter()
                        .filter(|(_, e)| selector.iter().all(|s| e.labels.contains(s)))
                        .map(|(&pid, e)| ProcessInfo {
                            pid,
                            labels: e.labels.clone(),
                            state: e.state(),
                        })
                        .collect(),
                );
            }
        }
    }

    fn spawn(&mut self, request: SpawnRequest) -> Result<u32, CapabilityError> {
        for (name, _) in &request.env {
            check_env_name(name)?;
        }
        let mut command = Command::new(&self.binary);
        command.args(&request.args);
        // The host's own settings are not the agent's.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("HODEI_") {
                command.env_remove(name);
            }
        }
        command
            .envs(request.env.iter().map(|(k, v)| (k, v)))
            .env("HODEI_EXIT_WITH_PARENT", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = command.spawn().map_err(|e| {
            let message = format!("cannot start {}: {e}", self.binary.display());
            match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    CapabilityError::Invalid(message)
                }
                _ => CapabilityError::Unavailable(message),
            }
        })?;
        let pid = child.id();
        tracing::info!(pid, labels = ?request.labels, "provider started an agent");
        self.children.insert(
            pid,
            Entry {
                child,
                labels: request.labels,
                stopping: None,
                exit_code: None,
            },
        );
        Ok(pid)
    }

    fn stop(&mut self, pid: u32) -> Result<(), CapabilityError> {
        let entry = self.children.get_mut(&pid).ok_or_else(|| not_found(pid))?;
        if entry.exit_code.is_some() {
            // Exited by itself and now acknowledged: forget it.
            self.children.remove(&pid);
            return Ok(());
        }
        if entry.stopping.is_none() {
            entry.stopping = Some(Instant::now());
            signal(pid, Signal::SIGINT);
        }
        Ok(())
    }

    /// Reaps what exited (a stopped process is then forgotten, a crashed
    /// one kept as exited until stopped), SIGKILLs what outstayed its grace.
    fn sweep(&mut self) {
        let mut forget = Vec::new();
        for (&pid, entry) in &mut self.children {
            if entry.exit_code.is_none()
                && let Ok(Some(status)) = entry.child.try_wait()
            {
                let code = status
                    .code()
                    .or_else(|| status.signal().map(|s| 128 + s))
                    .unwrap_or(-1);
                entry.exit_code = Some(code);
                if entry.stopping.is_some() {
                    forget.push(pid);
                } else {
                    tracing::warn!(pid, code, labels = ?entry.labels, "provider agent exited");
                }
            }
            if entry.exit_code.is_none()
                && entry
                    .stopping
                    .is_some_and(|since| since.elapsed() > self.grace)
            {
                signal(pid, Signal::SIGKILL);
            }
        }
        for pid in forget {
            self.children.remove(&pid);
        }
    }
}

fn signal(pid: u32, signal: Signal) {
    // Our own unreaped child: the pid cannot have been reused.
    if let Ok(raw) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(raw), signal);
    }
}

fn not_found(pid: u32) -> CapabilityError {
    CapabilityError::NotFound(format!("no agent process {pid} started by this host"))
}

/// Environment names a provider may set: `[A-Za-z_][A-Za-z0-9_]*`, none
/// of the dynamic loader's (`LD_*`), which would run code of the
/// provider's choosing inside the agent.
fn check_env_name(name: &str) -> Result<(), CapabilityError> {
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid || name.starts_with("LD_") {
        return Err(CapabilityError::Denied(format!(
            "environment variable {name:?} may not be set by a provider"
        )));
    }
    Ok(())
}

/// The `process` imports of one store: the granted capability (if any)
/// and the store's host clock.
pub struct ProcessView<'a> {
    capability: Option<&'a ProcessCapability>,
    clock: &'a mut Duration,
}

impl std::fmt::Debug for ProcessView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessView").finish_non_exhaustive()
    }
}

impl<'a> ProcessView<'a> {
    /// A view over `capability`, adding time spent to `clock`.
    pub fn new(capability: Option<&'a ProcessCapability>, clock: &'a mut Duration) -> Self {
        Self { capability, clock }
    }

    fn with<R>(
        &mut self,
        f: impl FnOnce(&ProcessCapability) -> Result<R, CapabilityError>,
    ) -> Result<R, CapabilityError> {
        let capability = self.capability.ok_or_else(|| {
            CapabilityError::Denied("the process capability is not granted".into())
        })?;
        super::timed(self.clock, || f(capability))
    }
}

impl wit::Host for ProcessView<'_> {
    fn spawn(&mut self, request: SpawnRequest) -> Result<u32, CapabilityError> {
        self.with(|c| c.spawn(request))
    }

    fn stop(&mut self, pid: u32) -> Result<(), CapabilityError> {
        self.with(|c| c.stop(pid))
    }

    fn state(&mut self, pid: u32) -> Result<ProcessState, CapabilityError> {
        self.with(|c| c.state(pid))
    }

    fn list(&mut self, selector: Vec<Label>) -> Vec<ProcessInfo> {
        self.with(|c| Ok(c.list(selector))).unwrap_or_default()
    }
}

struct HasProcess;

impl HasData for HasProcess {
    type Data<'a> = ProcessView<'a>;
}

/// Adds the `hodei:provider/process` imports to `linker`; `get` projects
/// the store's state into a [`ProcessView`].
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> ProcessView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasProcess>(linker, get)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(args: &[&str], labels: &[(&str, &str)]) -> SpawnRequest {
        SpawnRequest {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: vec![("HODEI_TEST_MARK".into(), "1".into())],
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // `sleep` stands in for the agent: the supervisor does not care what
    // the binary is, only the provider cannot choose it.
    fn capability(grace: Duration) -> ProcessCapability {
        ProcessCapability::new(PathBuf::from("/bin/sleep"), grace).unwrap()
    }

    #[test]
    fn spawn_list_stop_and_reap() {
        let processes = capability(Duration::from_secs(5));
        let a = processes
            .spawn(request(
                &["30"],
                &[("hodei.worker", "a"), ("hodei.pool", "p")],
            ))
            .unwrap();
        let b = processes
            .spawn(request(
                &["30"],
                &[("hodei.worker", "b"), ("hodei.pool", "p")],
            ))
            .unwrap();
        assert_eq!(processes.state(a).unwrap(), ProcessState::Running);
        let only_a = vec![("hodei.worker".to_owned(), "a".to_owned())];
        let listed = processes.list(only_a);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].pid, a);
        assert_eq!(
            processes
                .list(vec![("hodei.pool".into(), "p".into())])
                .len(),
            2
        );
        // sleep dies of SIGINT at once: stopped, reaped, forgotten.
        processes.stop(a).unwrap();
        wait_for("a to be forgotten", || processes.state(a).is_err());
        assert!(std::fs::metadata(format!("/proc/{a}")).is_err());
        assert_eq!(processes.state(b).unwrap(), ProcessState::Running);
        assert!(matches!(
            processes.stop(999_999),
            Err(CapabilityError::NotFound(_))
        ));
        drop(processes);
        // The last handle gone, the supervisor kills the rest.
        wait_for("b to be killed", || {
            std::fs::read_to_string(format!("/proc/{b}/stat"))
                .map_or(true, |stat| stat.contains(") Z"))
        });
    }

    #[test]
    fn a_crashed_process_stays_exited_until_stopped() {
        let processes =
            ProcessCapability::new(PathBuf::from("/bin/false"), Duration::from_secs(1)).unwrap();
        let pid = processes.spawn(request(&[], &[])).unwrap();
        wait_for("false to exit", || {
            processes.state(pid) == Ok(ProcessState::Exited(1))
        });
        processes.stop(pid).unwrap();
        assert!(processes.state(pid).is_err());
    }

    #[test]
    fn sigkill_after_the_grace_period() {
        // A process that ignores SIGINT (the ignored disposition survives
        // exec); it says when it is ready.
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let processes =
            ProcessCapability::new(PathBuf::from("/bin/sh"), Duration::from_millis(300)).unwrap();
        let script = format!("trap '' INT; touch {}; exec sleep 30", ready.display());
        let pid = processes.spawn(request(&["-c", &script], &[])).unwrap();
        wait_for("the shell to be ready", || ready.exists());
        let started = Instant::now();
        processes.stop(pid).unwrap();
        assert_eq!(processes.state(pid).unwrap(), ProcessState::Stopping);
        wait_for("the process to be killed", || processes.state(pid).is_err());
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn providers_cannot_set_loader_variables_or_run_missing_binaries() {
        let processes = capability(Duration::from_secs(1));
        let mut bad = request(&["1"], &[]);
        bad.env.push(("LD_PRELOAD".into(), "/tmp/x.so".into()));
        assert!(matches!(
            processes.spawn(bad),
            Err(CapabilityError::Denied(_))
        ));
        let mut bad = request(&["1"], &[]);
        bad.env.push(("A=B".into(), "x".into()));
        assert!(matches!(
            processes.spawn(bad),
            Err(CapabilityError::Denied(_))
        ));
        let missing =
            ProcessCapability::new(PathBuf::from("/nonexistent/hodei-agent"), Duration::ZERO)
                .unwrap();
        assert!(matches!(
            missing.spawn(request(&[], &[])),
            Err(CapabilityError::Invalid(m)) if m.contains("/nonexistent/hodei-agent")
        ));
    }
}
