//! Restarts and log streaming: nothing acknowledged is lost, every line is
//! delivered exactly once and in order.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::{Agent, Host, lines, script};
use nix::sys::signal::Signal;
use serde_json::json;

fn numbers(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("line {i}")).collect()
}

fn restart_keeps_every_acknowledged_job(signal: Signal) {
    let mut host = Host::start();
    let agent = Agent::start(&host, "a1", "", 4);
    host.wait_workers(1);
    let finished = host.submit_ok(&script("for i in $(seq 1 50); do echo line $i; done"));
    host.wait_state(&finished, &["SUCCEEDED"], Duration::from_secs(20));
    drop(agent);
    // Pending jobs: no agent now, so they wait in the store.
    let pending: Vec<String> = (0..20)
        .map(|i| host.submit_ok(&script(&format!("echo job {i}"))))
        .collect();
    let cancelled = host.submit_ok(&script("true"));
    host.cancel(&cancelled);
    let before = host.job(&finished);

    host.restart(signal);

    assert_eq!(host.job(&finished), before, "finished job unchanged");
    assert_eq!(
        lines(&host.sse(&finished, "")),
        numbers(50),
        "its logs survive"
    );
    assert_eq!(host.job(&cancelled)["state"], json!("CANCELLED"));
    for id in &pending {
        assert_eq!(host.job(id)["state"], json!("PENDING"));
    }
    // The rebuilt queue runs them once an agent arrives.
    let _agent = Agent::start(&host, "a2", "", 4);
    for (i, id) in pending.iter().enumerate() {
        host.wait_state(id, &["SUCCEEDED"], Duration::from_secs(30));
        assert_eq!(lines(&host.sse(id, "")), vec![format!("job {i}")]);
    }
}

#[test]
fn sigterm_restart_keeps_every_acknowledged_job_with_its_logs() {
    restart_keeps_every_acknowledged_job(Signal::SIGTERM);
}

#[test]
fn sigkill_restart_keeps_every_acknowledged_job_with_its_logs() {
    restart_keeps_every_acknowledged_job(Signal::SIGKILL);
}

#[test]
fn a_job_running_across_a_host_restart_is_reattached_not_rerun() {
    // The agent must find the restarted host: pin the gRPC port.
    let grpc = common::free_local_addr();
    let mut host = Host::start_with(&["--grpc-addr", &grpc]);
    let _agent = Agent::start(&host, "a1", "", 2);
    host.wait_workers(1);
    let id = host.submit_ok(&script("echo start; sleep 3; echo end"));
    host.wait_state(&id, &["RUNNING"], Duration::from_secs(20));
    host.restart(Signal::SIGKILL);
    let job = host.wait_state(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(30));
    assert_eq!(job["state"], json!("SUCCEEDED"), "{job}");
    assert_eq!(job["attempt"], json!(1), "reattached, not rerun");
    assert_eq!(lines(&host.sse(&id, "")), vec!["start", "end"]);
}

#[test]
fn a_job_killed_with_its_host_right_after_it_started_is_reattached_and_started() {
    // The agent must find the restarted host: pin the gRPC port.
    let grpc = common::free_local_addr();
    let mut host = Host::start_with(&["--grpc-addr", &grpc]);
    let _agent = Agent::start(&host, "a1", "", 2);
    host.wait_workers(1);
    // It prints nothing: its start is the last write before the kill, and
    // a start is written without a flush of its own (the next durable
    // write carries it), so the restarted host may find it `SCHEDULED`
    // (unless a lease renewal came between).
    let id = host.submit_ok(&json!({ "args": ["sleep", "3"] }));
    host.wait_state(&id, &["RUNNING"], Duration::from_secs(20));
    host.restart(Signal::SIGKILL);
    let job = host.wait_state(&id, &["RUNNING"], Duration::from_secs(30));
    assert_eq!(job["attempt"], json!(1), "{job}");
    assert!(job["started_at"].is_string(), "{job}");
    let job = host.wait_state(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(30));
    assert_eq!(job["state"], json!("SUCCEEDED"), "{job}");
    assert_eq!(job["attempt"], json!(1), "reattached, not rerun");
    eprintln!(
        "start recorded at reattach: {}",
        host.logs().contains("recorded its start at reattach")
    );
}

#[test]
fn follow_delivers_every_line_once_in_order_and_ends_with_done() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 1);
    host.wait_workers(1);
    let id = host.submit_ok(&script(
        "for i in $(seq 1 300); do echo line $i; if [ $((i % 50)) -eq 0 ]; then sleep 0.1; fi; done",
    ));
    // Follow from before the job starts, through its run, to its end.
    let events = host.sse(&id, "?follow=true");
    assert_eq!(lines(&events), numbers(300));
    let sequences: Vec<u64> = events
        .iter()
        .filter(|e| e.event == "message")
        .map(|e| e.data["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=300).collect::<Vec<u64>>());
    let done = events.last().unwrap();
    assert_eq!(done.event, "done");
    assert_eq!(done.data["state"], json!("SUCCEEDED"));
    assert!(
        events
            .iter()
            .all(|e| e.event != "message" || e.data["timestamp"].is_string())
    );
}

#[test]
fn tail_gives_the_last_lines_and_follow_with_tail_continues_live() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 1);
    let id = host.submit_ok(&script("for i in $(seq 1 100); do echo line $i; done"));
    host.wait_state(&id, &["SUCCEEDED"], Duration::from_secs(20));
    assert_eq!(
        lines(&host.sse(&id, "?tail=10")),
        numbers(100)[90..].to_vec()
    );
    assert_eq!(lines(&host.sse(&id, "?tail=1000")), numbers(100));

    // A live job: tail=2 then everything after, once each.
    let id = host.submit_ok(&script(
        "for i in $(seq 1 5); do echo line $i; done; sleep 1; for i in $(seq 6 10); do echo line $i; done",
    ));
    std::thread::sleep(Duration::from_millis(600));
    let events = host.sse(&id, "?follow=true&tail=2");
    assert_eq!(lines(&events), numbers(10)[3..].to_vec());
    assert_eq!(events.last().unwrap().event, "done");
}

#[test]
fn last_event_id_resumes_after_that_line() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 1);
    let id = host.submit_ok(&script("for i in $(seq 1 20); do echo line $i; done"));
    host.wait_state(&id, &["SUCCEEDED"], Duration::from_secs(20));
    let response = ureq::get(&host.url(&format!("/api/v1/jobs/{id}/logs")))
        .header("Last-Event-ID", "15")
        .call()
        .unwrap();
    let events = common::parse_sse(response.into_body().into_reader());
    assert_eq!(lines(&events), numbers(20)[15..].to_vec());
}

#[test]
fn cli_logs_follow_prints_the_whole_log() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 1);
    let id = host.submit_ok(&script("echo one; sleep 0.3; echo two >&2; echo three"));
    let out = host.cli(&["logs", "-f", &id]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\nthree\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("two"));
    let out = host.cli(&["jobs", "get", &id]);
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["state"], json!("SUCCEEDED"));
    let out = host.cli(&["jobs", "ls"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains(&id) && listing.contains("SUCCEEDED"),
        "{listing}"
    );
    let out = host.cli(&["workers"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("a1"));
    // A reader of stdout sees lines as they come, not only at the end.
    let mut child = std::process::Command::new(common::hodei_bin())
        .args(["run", "--script", "echo first; sleep 5; echo second"])
        .env("HODEI_SERVER", &host.http)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = std::time::Instant::now();
    assert_eq!(out.next().unwrap().unwrap(), "first");
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "first line arrived live"
    );
    assert_eq!(out.next().unwrap().unwrap(), "second");
    assert!(child.wait().unwrap().success());
}
