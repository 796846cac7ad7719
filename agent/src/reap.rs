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
//! # Limits
//! `/proc/<pid>/environ` is the environment the process was started with (as
//! the kernel laid it out). A process that rewrites that memory, or execs
//! with a clean environment (`env -i`), escapes; so does one the agent may
//! not read (another user). A cgroup per job would be the stronger fence.
//! Unreadable and vanished pids are skipped silently.

use std::fs;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tracing::{debug, warn};

/// How many `/proc` scans at most, and the pause between two.
const PASSES: usize = 3;
const PAUSE: Duration = Duration::from_millis(20);

/// Whether the NUL-separated `environ` holds exactly the entry `wanted`.
pub fn environ_has(environ: &[u8], wanted: &[u8]) -> bool {
    !wanted.is_empty() && environ.split(|b| *b == 0).any(|entry| entry == wanted)
}

/// The pids under `proc_root` (not `me`) whose environment holds every
/// one of `entries`.
fn marked(proc_root: &Path, entries: &[&[u8]], me: u32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| u32::try_from(*pid).is_ok_and(|p| p != me))
        .filter(|pid| {
            fs::read(proc_root.join(pid.to_string()).join("environ"))
                .is_ok_and(|environ| entries.iter().all(|e| environ_has(&environ, e)))
        })
        .collect()
}

/// SIGKILLs every process (other than the agent) marked with
/// `HODEI_JOB_ID=<job_id>` and `HODEI_ATTEMPT=<attempt>`, in up to
/// [`PASSES`] scans, stopping early once a scan finds nothing. Returns how
/// many signals were sent. Blocking (reads `/proc`).
pub fn reap_job(job_id: &str, attempt: u32) -> usize {
    if job_id.is_empty() {
        return 0;
    }
    let id = format!("HODEI_JOB_ID={job_id}");
    let attempt = format!("HODEI_ATTEMPT={attempt}");
    let me = std::process::id();
    let mut sent = 0;
    for pass in 0..PASSES {
        if pass > 0 {
            std::thread::sleep(PAUSE);
        }
        let pids = marked(Path::new("/proc"), &[id.as_bytes(), attempt.as_bytes()], me);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) => {
                    sent += 1;
                    debug!(pid, job_id, %attempt, "killed a process the job left behind");
                }
                Err(Errno::ESRCH | Errno::EPERM) => {}
                Err(error) => warn!(pid, job_id, %error, "cannot kill a leftover process"),
            }
        }
    }
    sent
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

    #[test]
    fn kills_a_setsid_escapee_by_its_marker() {
        let id = format!("reap-test-{}", uuid::Uuid::new_v4());
        let mut child = Command::new("bash")
            .args([
                "-c",
                "setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!",
            ])
            .env("HODEI_JOB_ID", &id)
            .env("HODEI_ATTEMPT", "2")
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
        let deadline = Instant::now() + Duration::from_secs(2);
        while !fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0")) {
            assert!(Instant::now() < deadline, "sleep never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!gone(pid));
        // Another attempt of the same job is not this one.
        assert_eq!(reap_job(&id, 1), 0);
        assert!(!gone(pid));
        assert!(reap_job(&id, 2) >= 1);
        let deadline = Instant::now() + Duration::from_secs(1);
        while !gone(pid) {
            assert!(Instant::now() < deadline, "pid {pid} survived the reap");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Nothing marked is left: another reap sends nothing.
        assert_eq!(reap_job(&id, 2), 0);
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
