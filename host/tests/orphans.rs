//! Processes a job started outside its process group (double fork,
//! `setsid`) do not outlive the job: the agent kills them by the
//! `HODEI_JOB_ID` in their environment.

mod common;

use std::time::{Duration, Instant};

use common::{Agent, Host, processes_with, script};

/// A marker no other test (or run) uses: a fraction of a second to sleep.
fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{}{:09}", std::process::id(), nanos % 1_000_000_000)
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what} after {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `prefix` plus two double-forked, marked sleeps, cancels the job
/// once both sleeps are up, and checks that none survives. Returns how long
/// the cancel took to land.
fn cancel_and_check(host: &Host, prefix: &str, cancelled_within: Duration) -> Duration {
    let n = unique();
    let (a, b) = (format!("1000.{n}"), format!("1001.{n}"));
    let id = host.submit_ok(&script(&format!(
        "{prefix}setsid sleep {a} & (setsid sleep {b} &) ; sleep 1000"
    )));
    host.wait_state(&id, &["RUNNING"], Duration::from_secs(20));
    wait_until(
        "the marked sleeps did not start",
        Duration::from_secs(5),
        || !processes_with(&a).is_empty() && !processes_with(&b).is_empty(),
    );
    let asked = Instant::now();
    let (status, body) = host.cancel(&id);
    assert!((200..300).contains(&status), "{status} {body}");
    host.wait_state(&id, &["CANCELLED"], cancelled_within);
    let took = asked.elapsed();
    wait_until(
        "marked sleeps survived the job",
        Duration::from_secs(3),
        || processes_with(&n).is_empty(),
    );
    took
}

#[test]
fn cancel_kills_double_forked_and_setsid_descendants() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 2);
    host.wait_workers(1);
    cancel_and_check(&host, "", Duration::from_secs(5));
}

#[test]
fn a_job_that_ignores_sigterm_is_killed_with_its_escapees() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 2);
    host.wait_workers(1);
    // The agent's grace is 2 s; then SIGKILL, then output drains (bounded).
    let took = cancel_and_check(&host, "trap '' TERM; ", Duration::from_secs(10));
    assert!(
        took >= Duration::from_millis(1500),
        "cancelled before the grace period: {took:?}"
    );
}
