//! Killing what a job left behind outside its process group.
//!
//! Every job process gets `HODEI_JOB_ID=<id>` and `HODEI_ATTEMPT=<n>` in its
//! environment (see [`crate::executor`]), and its descendants inherit them.
//! Once a job is over and its group has been SIGKILLed, [`reap_job`] scans
//! `/proc` and SIGKILLs every other process whose environment holds exactly
//! both entries. The attempt is part of the mark so that a later attempt of
//! the same job, run by another agent on the same machine, is left alone.
//!
//! # Reach
//! This catches what the group kill cannot: a descendant that left the group
//! or the session (a double fork, `setsid`, `setpgid`), whether or not it
//! was reparented to init. The scan is repeated a few times, since a process
//! may fork while the previous pass runs.
//!
//! # One scan for many jobs
//! A scan reads the environment of every process on the machine; for an
//! agent running short jobs back to back, a scan per job was a large share
//! of its CPU (`hodei bench spine`: 32–35 % more `true` jobs/s once
//! shared). So the jobs of an agent share scans: [`request`] hands a finished job to one reaper thread,
//! which waits [`GATHER`] for others to end too, then scans once for all
//! of them. Nothing waits for it (the job's result and its slot are
//! already given back); what escaped is killed moments later. [`drain`]
//! lets the agent finish what is queued before it exits.
//!
//! # Limits
//! `/proc/<pid>/environ` is the environment the process was started with (as
//! the kernel laid it out). A process that rewrites that memory, or execs
//! with a clean environment (`env -i`), escapes; so does one the agent may
//! not read (another user). A cgroup per job would be the stronger fence.
//! Unreadable and vanished pids are skipped silently.

use std::fs;
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tracing::{debug, warn};

/// How many `/proc` scans at most, and the pause between two.
const PASSES: usize = 3;
const PAUSE: Duration = Duration::from_millis(20);

/// How long the reaper waits after a request for more jobs to end, so
/// that they share one scan.
const GATHER: Duration = Duration::from_millis(10);

/// Whether the NUL-separated `environ` holds exactly the entry `wanted`.
pub fn environ_has(environ: &[u8], wanted: &[u8]) -> bool {
    !wanted.is_empty() && environ.split(|b| *b == 0).any(|entry| entry == wanted)
}

/// The two environment entries that mark an attempt's processes.
#[derive(Debug)]
struct Mark {
    job_id: String,
    id: Vec<u8>,
    attempt: Vec<u8>,
}

impl Mark {
    fn new(job_id: &str, attempt: u32) -> Self {
        Self {
            job_id: job_id.to_owned(),
            id: format!("HODEI_JOB_ID={job_id}").into_bytes(),
            attempt: format!("HODEI_ATTEMPT={attempt}").into_bytes(),
        }
    }

    fn on(&self, environ: &[u8]) -> bool {
        environ_has(environ, &self.id) && environ_has(environ, &self.attempt)
    }
}

/// The pids under `proc_root` (not `me`) carrying one of `marks`, each
/// with the index of its mark. One read of each process's environment,
/// however many marks.
fn marked(proc_root: &Path, marks: &[Mark], me: u32) -> Vec<(i32, usize)> {
    let Ok(dir) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| u32::try_from(*pid).is_ok_and(|p| p != me))
        .filter_map(|pid| {
            let environ = fs::read(proc_root.join(pid.to_string()).join("environ")).ok()?;
            Some((pid, marks.iter().position(|mark| mark.on(&environ))?))
        })
        .collect()
}

/// SIGKILLs every process (other than the agent) carrying one of `marks`,
/// in up to [`PASSES`] scans; a mark no scan finds anything of drops out,
/// and the scans stop once none is left. Returns how many signals were
/// sent. Blocking (reads `/proc`).
fn reap_marks(mut marks: Vec<Mark>) -> usize {
    marks.retain(|mark| !mark.job_id.is_empty());
    let me = std::process::id();
    let mut sent = 0;
    for pass in 0..PASSES {
        if marks.is_empty() {
            break;
        }
        if pass > 0 {
            std::thread::sleep(PAUSE);
        }
        let found = marked(Path::new("/proc"), &marks, me);
        let mut hit = vec![false; marks.len()];
        for (pid, index) in found {
            hit[index] = true;
            let job_id = &marks[index].job_id;
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) => {
                    sent += 1;
                    debug!(pid, job_id, "killed a process the job left behind");
                }
                Err(Errno::ESRCH | Errno::EPERM) => {}
                Err(error) => warn!(pid, job_id, %error, "cannot kill a leftover process"),
            }
        }
        let mut index = 0;
        marks.retain(|_| {
            index += 1;
            hit[index - 1]
        });
    }
    sent
}

/// SIGKILLs every process (other than the agent) marked with
/// `HODEI_JOB_ID=<job_id>` and `HODEI_ATTEMPT=<attempt>`, in up to
/// [`PASSES`] scans, stopping early once a scan finds nothing. Returns how
/// many signals were sent. Blocking (reads `/proc`).
#[cfg(test)]
fn reap_job(job_id: &str, attempt: u32) -> usize {
    reap_marks(vec![Mark::new(job_id, attempt)])
}

/// The agent's one reaper thread and its queue.
struct Reaper {
    queue: Mutex<Sender<Mark>>,
    /// Requests not yet scanned for.
    pending: Mutex<usize>,
    idle: Condvar,
}

/// Started by the first request.
static REAPER: OnceLock<Reaper> = OnceLock::new();

fn reaper() -> &'static Reaper {
    REAPER.get_or_init(|| {
        let (queue, requests) = channel();
        let spawned = std::thread::Builder::new()
            .name("hodei-reaper".into())
            .spawn(move || run(&requests));
        if let Err(error) = spawned {
            // The queue then has no reader: `request` finds it closed and
            // nothing waits for a scan that will not happen.
            warn!(%error, "cannot start the reaper thread; escaped processes are not killed");
        }
        Reaper {
            queue: Mutex::new(queue),
            pending: Mutex::new(0),
            idle: Condvar::new(),
        }
    })
}

/// The reaper thread: waits for a request, lets [`GATHER`] pass, then
/// scans once for everything requested by then.
fn run(requests: &Receiver<Mark>) {
    while let Ok(first) = requests.recv() {
        std::thread::sleep(GATHER);
        let mut marks = vec![first];
        marks.extend(requests.try_iter());
        let count = marks.len();
        let killed = reap_marks(marks);
        if killed > 0 {
            debug!(
                killed,
                jobs = count,
                "killed processes outside the jobs' groups"
            );
        }
        let reaper = reaper();
        let mut pending = reaper
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *pending = pending.saturating_sub(count);
        if *pending == 0 {
            reaper.idle.notify_all();
        }
    }
}

/// Queues the scan for what the attempt left behind (see the module
/// docs). Returns at once.
pub fn request(job_id: &str, attempt: u32) {
    let reaper = reaper();
    *reaper
        .pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner) += 1;
    let sent = reaper
        .queue
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send(Mark::new(job_id, attempt));
    if sent.is_err() {
        *reaper
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner) -= 1;
    }
}

/// Waits, at most `bound`, until every requested scan is done. Returns
/// whether they all are.
pub fn drain(bound: Duration) -> bool {
    // No request yet: nothing to wait for, and no thread to start.
    let Some(reaper) = REAPER.get() else {
        return true;
    };
    let deadline = Instant::now() + bound;
    let mut pending = reaper
        .pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    while *pending > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        pending = reaper
            .idle
            .wait_timeout(pending, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::Instant;

    #[test]
    fn environ_entries_match_exactly() {
        let env = b"PATH=/bin\0HODEI_JOB_ID=j1\0HODEI_ATTEMPT=2\0";
        assert!(environ_has(env, b"HODEI_JOB_ID=j1"));
        assert!(environ_has(env, b"PATH=/bin"));
        assert!(!environ_has(env, b"HODEI_JOB_ID=j"));
        assert!(!environ_has(env, b"HODEI_JOB_ID=j12"));
        assert!(!environ_has(env, b"JOB_ID=j1"));
        assert!(!environ_has(env, b""));
        assert!(!environ_has(b"", b"HODEI_JOB_ID=j1"));
        // No trailing NUL.
        assert!(environ_has(b"A=1\0HODEI_JOB_ID=j1", b"HODEI_JOB_ID=j1"));
    }

    #[test]
    fn empty_job_id_reaps_nothing() {
        assert_eq!(reap_job("", 1), 0);
    }

    fn gone(pid: i32) -> bool {
        match kill(Pid::from_raw(pid), None) {
            Err(Errno::ESRCH) => true,
            _ => fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            }),
        }
    }

    /// Starts `sleep 1000` in a session of its own, marked as attempt
    /// `attempt` of `id`, its parent gone; returns its pid once it runs.
    fn escapee(id: &str, attempt: u32) -> i32 {
        let mut child = Command::new("bash")
            .args([
                "-c",
                "setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!",
            ])
            .env("HODEI_JOB_ID", id)
            .env("HODEI_ATTEMPT", attempt.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("bash");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        child.wait().unwrap();
        let pid: i32 = line.trim().parse().expect("pid");
        // Wait for the exec, so the marker is in the new image's environ.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0")) {
            assert!(Instant::now() < deadline, "sleep never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!gone(pid));
        pid
    }

    fn wait_gone(pid: i32) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gone(pid) {
            assert!(Instant::now() < deadline, "pid {pid} survived the reap");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn kills_a_setsid_escapee_by_its_marker() {
        let id = format!("reap-test-{}", uuid::Uuid::new_v4());
        let pid = escapee(&id, 2);
        // Another attempt of the same job is not this one.
        assert_eq!(reap_job(&id, 1), 0);
        assert!(!gone(pid));
        assert!(reap_job(&id, 2) >= 1);
        wait_gone(pid);
        // Nothing marked is left: another reap sends nothing.
        assert_eq!(reap_job(&id, 2), 0);
    }

    #[test]
    fn queued_requests_share_the_reaper_and_drain_waits_for_them() {
        let (a, b) = (
            format!("reap-test-{}", uuid::Uuid::new_v4()),
            format!("reap-test-{}", uuid::Uuid::new_v4()),
        );
        let (pid_a, pid_b) = (escapee(&a, 1), escapee(&b, 3));
        request(&a, 1);
        request(&b, 3);
        assert!(drain(Duration::from_secs(10)), "the queue never emptied");
        wait_gone(pid_a);
        wait_gone(pid_b);
        // An empty queue drains at once.
        assert!(drain(Duration::ZERO));
    }

    #[test]
    fn leaves_unmarked_processes_alone() {
        let mut child = Command::new("sleep")
            .arg("1000")
            .env("HODEI_JOB_ID", "some-other-job")
            .env("HODEI_ATTEMPT", "1")
            .spawn()
            .expect("sleep");
        let pid = i32::try_from(child.id()).unwrap();
        assert_eq!(reap_job("not-that-job", 1), 0);
        assert!(!gone(pid));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
