//! Agent shutdown with real processes: SIGTERM drains (running jobs finish,
//! the host places nothing more on the agent, the agent exits 0 once their
//! results are stored); a second SIGTERM cancels what still runs. And a
//! host stopping its local agents does not wait for their jobs to finish.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use common::{Agent, Host, lines, script};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

fn signal(child: &Child, signal: Signal) {
    kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), signal).unwrap();
}

fn exit_within(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The worker named `name` in `GET /api/v1/workers`.
fn worker(host: &Host, name: &str) -> Value {
    let (_, body) = host.get("/api/v1/workers");
    body["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == json!(name))
        .cloned()
        .unwrap_or(Value::Null)
}

fn wait_draining(host: &Host, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while worker(host, name)["metrics"]["draining"] != json!(true) {
        assert!(Instant::now() < deadline, "{name} never reported draining");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_drains_running_jobs_takes_no_new_one_and_exits_zero() {
    let host = Host::start();
    let mut draining = Agent::start(&host, "draining", "", 2);
    host.wait_workers(1);
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let running = host.submit_ok(&script(&format!(
        "echo started; while [ ! -e {release} ]; do sleep 0.05; done; echo finished",
        release = release.display()
    )));
    host.wait_state(&running, &["RUNNING"], Duration::from_secs(20));

    signal(&draining.child, Signal::SIGTERM);
    wait_draining(&host, "draining");
    // A free slot, but a draining worker: the new job waits.
    let waiting = host.submit_ok(&json!({ "args": ["echo", "elsewhere"] }));
    host.wait_state(&waiting, &["PENDING"], Duration::from_secs(5));
    assert!(
        draining.child.try_wait().unwrap().is_none(),
        "the agent exited with a job running"
    );

    // The running job finishes on its own and its output is complete.
    std::fs::write(&release, "").unwrap();
    let job = host.wait_state(
        &running,
        &["SUCCEEDED", "FAILED", "CANCELLED"],
        Duration::from_secs(20),
    );
    assert_eq!(job["state"], json!("SUCCEEDED"), "{job}");
    assert_eq!(lines(&host.sse(&running, "")), vec!["started", "finished"]);
    let status = exit_within(&mut draining.child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    let job = host.job(&waiting);
    assert_eq!(
        job["state"],
        json!("PENDING"),
        "placed on a draining agent: {job}"
    );

    // Another agent takes the waiting job.
    let _other = Agent::start(&host, "other", "", 1);
    let job = host.wait_state(&waiting, &["SUCCEEDED"], Duration::from_secs(20));
    assert_ne!(job["worker_id"], json!(null));
}

#[test]
fn a_second_sigterm_cancels_what_still_runs() {
    let host = Host::start();
    let mut agent = Agent::start(&host, "twice", "", 1);
    host.wait_workers(1);
    let id = host.submit_ok(&json!({ "args": ["sleep", "60"] }));
    host.wait_state(&id, &["RUNNING"], Duration::from_secs(20));

    signal(&agent.child, Signal::SIGTERM);
    wait_draining(&host, "twice");
    assert_eq!(host.job(&id)["state"], json!("RUNNING"));
    signal(&agent.child, Signal::SIGTERM);
    let job = host.wait_state(
        &id,
        &["CANCELLED", "FAILED", "SUCCEEDED"],
        Duration::from_secs(10),
    );
    assert_eq!(job["state"], json!("CANCELLED"), "{job}");
    let status = exit_within(&mut agent.child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_host_stops_its_local_agents_without_waiting_for_their_jobs() {
    let mut host = Host::start_with(&["--local-agents", "1"]);
    host.wait_workers(1);
    let id = host.submit_ok(&json!({ "args": ["sleep", "60"] }));
    host.wait_state(&id, &["RUNNING"], Duration::from_secs(20));
    host.signal(Signal::SIGTERM);
    // Well under the job's 60 s (and the 20 s after which the host would
    // SIGKILL its agents): the agent cancelled rather than drained.
    let status = host.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
}
