//! The spine end to end: real `hodei` and `hodei-agent` processes, a real
//! PTY, gRPC on 127.0.0.1, a real redb file.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::time::{Duration, Instant};

use common::{Agent, Host, lines, processes_with, script};
use serde_json::json;

#[test]
fn cli_run_prints_hello_and_exits_zero() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 2);
    host.wait_workers(1);
    let out = host.cli(&["run", "--", "echo", "hello"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cli_run_passes_stderr_and_the_exit_code_through() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 2);
    host.wait_workers(1);
    let out = host.cli(&["run", "--", "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("oops"));

    let out = host.cli(&["run", "--script", "echo to-out; echo to-err >&2; exit 0"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to-out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("to-err"));
}

#[test]
fn stdout_and_stderr_are_told_apart_and_exit_codes_recorded() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 2);
    let id = host.submit_ok(&script("echo out-line; echo err-line >&2; exit 7"));
    let job = host.wait_state(&id, &["FAILED"], Duration::from_secs(20));
    assert_eq!(job["exit_code"], json!(7));
    let events = host.sse(&id, "");
    let stream_of = |text: &str| {
        events
            .iter()
            .find(|e| e.data["line"] == json!(text))
            .map(|e| e.data["stream"].clone())
    };
    assert_eq!(stream_of("out-line"), Some(json!("stdout")));
    assert_eq!(stream_of("err-line"), Some(json!("stderr")));
    let done = events.last().unwrap();
    assert_eq!(done.event, "done");
    assert_eq!(done.data["state"], json!("FAILED"));
    assert_eq!(done.data["exit_code"], json!(7));
}

#[test]
fn a_job_sees_a_tty_and_colour_bytes_arrive_intact() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 2);
    let id = host.submit_ok(&script(
        r"test -t 1 && echo stdout-is-a-tty; printf '\033[31mred\033[0m plain\n'",
    ));
    host.wait_state(&id, &["SUCCEEDED"], Duration::from_secs(20));
    let got = lines(&host.sse(&id, ""));
    assert_eq!(got, vec!["stdout-is-a-tty", "\u{1b}[31mred\u{1b}[0m plain"]);
}

#[test]
fn cancel_of_a_sleep_ends_within_two_seconds_and_leaves_no_process() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 2);
    let marker = format!("1000.{}", std::process::id());
    let id = host.submit_ok(&json!({ "args": ["sleep", marker] }));
    host.wait_state(&id, &["RUNNING"], Duration::from_secs(20));
    // The process exists before the cancel...
    let deadline = Instant::now() + Duration::from_secs(5);
    while processes_with(&marker).is_empty() {
        assert!(Instant::now() < deadline, "sleep never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    let asked = Instant::now();
    let (status, body) = host.cancel(&id);
    assert_eq!(status, 200, "{body}");
    let job = host.wait_state(&id, &["CANCELLED"], Duration::from_secs(2));
    assert!(asked.elapsed() < Duration::from_secs(2));
    assert_eq!(job["state"], json!("CANCELLED"));
    // ...and none after.
    assert_eq!(processes_with(&marker), Vec::<u32>::new());
}

#[test]
fn timeout_secs_ends_in_timed_out() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 2);
    let id = host.submit_ok(&json!({ "command": "echo begin; sleep 30", "timeout_secs": 1 }));
    let job = host.wait_state(&id, &["TIMED_OUT"], Duration::from_secs(15));
    assert!(job["reason"].as_str().unwrap().contains("timeout"), "{job}");
    assert_eq!(lines(&host.sse(&id, "")), vec!["begin"]);
}

#[test]
fn labels_pick_the_worker_and_unplaceable_jobs_say_why() {
    let host = Host::start();
    let gpu = Agent::start(&host, "gpu-box", "gpu=true,zone=a", 2);
    let _plain = Agent::start(&host, "plain-box", "zone=a", 2);
    host.wait_workers(2);
    let gpu_id = gpu.worker_id(&host);
    for _ in 0..5 {
        let id = host.submit_ok(&json!({ "args": ["true"], "labels": { "gpu": "true" } }));
        let job = host.wait_state(&id, &["SUCCEEDED"], Duration::from_secs(20));
        assert_eq!(job["worker_id"], json!(gpu_id));
    }

    let id = host.submit_ok(&json!({ "args": ["true"], "labels": { "gpu": "true", "tpu": "v5" } }));
    let deadline = Instant::now() + Duration::from_secs(10);
    let job = loop {
        let job = host.job(&id);
        if job["pending_reason"].is_string() {
            break job;
        }
        assert!(Instant::now() < deadline, "no pending reason: {job}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(job["state"], json!("PENDING"));
    assert_eq!(
        job["pending_reason"],
        json!("1 worker: missing label gpu=true; 1 worker: missing label tpu=v5")
    );
}

#[test]
fn without_a_matching_worker_a_job_stays_pending_with_the_reason() {
    let host = Host::start();
    let _plain = Agent::start(&host, "plain", "", 1);
    host.wait_workers(1);
    let id = host.submit_ok(&json!({
        "args": ["true"],
        "labels": { "gpu": "true" },
        "resources": { "memory_mb": 1 }
    }));
    std::thread::sleep(Duration::from_millis(500));
    let job = host.job(&id);
    assert_eq!(job["state"], json!("PENDING"));
    assert_eq!(
        job["pending_reason"],
        json!("1 worker: missing label gpu=true")
    );
    let (_, workers) = host.get("/api/v1/workers");
    assert_eq!(workers["workers"][0]["used_slots"], json!(0));
}

#[test]
fn two_hundred_jobs_over_three_one_slot_agents_never_overlap() {
    let host = Host::start();
    let dir = tempfile::tempdir().unwrap();
    let markers: Vec<String> = (1..=3)
        .map(|i| dir.path().join(format!("agent-{i}")).display().to_string())
        .collect();
    let _agents: Vec<Agent> = markers
        .iter()
        .enumerate()
        .map(|(i, marker)| {
            Agent::start_env(&host, &format!("a{i}"), "", 1, &[("SLOT_MARKER", marker)])
        })
        .collect();
    host.wait_workers(3);
    // mkdir is atomic: a second job running on the same agent at the same
    // time fails it and exits 99.
    let body = script(
        r#"mkdir "$SLOT_MARKER.lock" || { echo OVERCOMMITTED; exit 99; }
sleep 0.02
rmdir "$SLOT_MARKER.lock""#,
    );
    let ids: Vec<String> = (0..200).map(|_| host.submit_ok(&body)).collect();
    let mut per_worker: std::collections::HashMap<String, Vec<(String, String)>> =
        std::collections::HashMap::new();
    for id in &ids {
        let job = host.wait_state(id, &["SUCCEEDED", "FAILED"], Duration::from_secs(120));
        assert_eq!(job["state"], json!("SUCCEEDED"), "{job}");
        per_worker
            .entry(job["worker_id"].as_str().unwrap().to_owned())
            .or_default()
            .push((
                job["started_at"].as_str().unwrap().to_owned(),
                job["finished_at"].as_str().unwrap().to_owned(),
            ));
    }
    assert_eq!(per_worker.len(), 3, "work was spread over all agents");
    // The host's own record agrees: per worker, intervals never overlap.
    for intervals in per_worker.values_mut() {
        intervals.sort();
        for pair in intervals.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "overlap on one worker: {pair:?}");
        }
    }
}

#[test]
fn listing_pages_newest_first_with_a_status_filter() {
    let host = Host::start();
    let ids: Vec<String> = (0..5).map(|_| host.submit_ok(&script("true"))).collect();
    let (status, page) = host.get("/api/v1/jobs?limit=2");
    assert_eq!(status, 200);
    let first: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(first, vec![ids[4].as_str(), ids[3].as_str()]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page) = host.get(&format!("/api/v1/jobs?limit=10&cursor={cursor}"));
    assert_eq!(page["jobs"].as_array().unwrap().len(), 3);
    assert!(page["next_cursor"].is_null());
    let (_, pending) = host.get("/api/v1/jobs?state=pending");
    assert_eq!(pending["jobs"].as_array().unwrap().len(), 5);
    let (_, none) = host.get("/api/v1/jobs?state=succeeded");
    assert_eq!(none["jobs"].as_array().unwrap().len(), 0);
}

#[test]
fn secrets_are_never_returned() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 1);
    let id = host.submit_ok(&json!({
        // The command must not spell the value out: check its shape only.
        "command": "test ${#API_KEY} -eq 14 && test \"${API_KEY:0:4}\" = hunt && echo has-secret",
        "secrets": { "API_KEY": "hunter2-secret" }
    }));
    let job = host.wait_state(&id, &["SUCCEEDED"], Duration::from_secs(20));
    assert_eq!(job["secret_names"], json!(["API_KEY"]));
    assert!(!job.to_string().contains("hunter2"));
    assert_eq!(lines(&host.sse(&id, "")), vec!["has-secret"]);
    assert!(!host.logs().contains("hunter2"));
}

#[test]
fn serve_starts_with_the_default_relative_data_dir() {
    // What README command 1 does: no --data-dir, no cache dir, started from
    // wherever the user is.
    use std::io::BufRead;
    let cwd = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(common::hodei_bin())
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .current_dir(cwd.path())
        // Where a host on loopback leaves the CLI its admin token.
        .env("XDG_CONFIG_HOME", cwd.path())
        .env_remove("HODEI_PLUGIN_CACHE_DIR")
        .env_remove("HODEI_DATA_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let started = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.starts_with("hodei: http listening on "));
    let _ = child.kill();
    let _ = child.wait();
    assert!(started, "hodei serve did not start with its defaults");
    assert!(cwd.path().join("hodei-data/hodei.redb").is_file());
    assert!(cwd.path().join("hodei-data/plugin-cache").is_dir());
    assert!(cwd.path().join("hodei-data/admin.token").is_file());
}
