//! Pipelines across crashes and hosts: a host SIGKILLed at random moments
//! of a pipeline resumes it with every step run once; two hosts on one
//! PostgreSQL advancing the same pipelines create each step's job once.
//! Steps append to marker files (see `common::pipeline`), so "once" is
//! what really ran, not what the API says.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::pg::Database;
use common::pipeline::{self, assert_once_in_order, marked, runs};
use common::{Agent, Host};
use nix::sys::signal::Signal;
use serde_json::json;

fn seed() -> u64 {
    let seed = std::env::var("HODEI_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("seed {seed} (HODEI_TEST_SEED to repeat)");
    seed
}

/// A small deterministic generator.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

#[test]
fn a_host_sigkilled_10_times_during_a_30_step_pipeline_runs_each_step_once() {
    let mut rng = Lcg(seed());
    // The agent must find the restarted host: pin the gRPC port.
    let grpc = common::free_local_addr();
    let mut host = Host::start_with(&["--grpc-addr", &grpc]);
    let _agent = Agent::start(&host, "a1", "", 4);
    host.wait_workers(1);
    let mark = tempfile::tempdir().unwrap();
    // 15 layers of 2; each step needs one or both steps of the layer
    // before, so the pipeline outlasts the kills.
    let mut steps = Vec::new();
    for layer in 0..15u64 {
        for k in 0..2u64 {
            let mut needs = Vec::new();
            if layer > 0 {
                match rng.next(3) {
                    0 => needs.push(format!("l{}s0", layer - 1)),
                    1 => needs.push(format!("l{}s1", layer - 1)),
                    _ => {
                        needs.push(format!("l{}s0", layer - 1));
                        needs.push(format!("l{}s1", layer - 1));
                    }
                }
            }
            let needs: Vec<&str> = needs.iter().map(String::as_str).collect();
            steps.push(marked(&format!("l{layer}s{k}"), &needs, "sleep 1"));
        }
    }
    let body = json!({ "env": { "MARK": mark.path().to_str().unwrap() }, "steps": steps });
    let id = pipeline::create_ok(&host, &body);
    let mut while_running = 0;
    for kill in 0..10 {
        std::thread::sleep(Duration::from_millis(rng.next(3000)));
        let state = pipeline::get(&host, &id)["state"].clone();
        if matches!(state.as_str(), Some("PENDING" | "RUNNING")) {
            while_running += 1;
        }
        eprintln!(
            "kill {kill}: pipeline {state}, {} steps marked",
            runs(mark.path()).len()
        );
        host.restart(Signal::SIGKILL);
    }
    eprintln!("{while_running} of 10 kills hit the pipeline while it ran");
    assert!(while_running >= 1);
    let done = pipeline::wait(
        &host,
        &id,
        &["SUCCEEDED", "FAILED"],
        Duration::from_secs(300),
    );
    assert_eq!(done["state"], json!("SUCCEEDED"), "{done}");
    assert_once_in_order(mark.path(), &pipeline::needs_of(&steps));
    // Each step's job exists once: one job per step, no earlier ones.
    let (_, jobs) = host.get("/api/v1/jobs?limit=1000");
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 30, "{jobs}");
}

#[test]
fn two_hosts_on_postgres_advance_100_pipelines_and_run_every_step_once() {
    let Some(db) = Database::create("pipelines") else {
        return;
    };
    let a = db.host(&[]);
    let b = db.host(&[]);
    let urls = format!("{},{}", a.grpc, b.grpc);
    let _agents: Vec<Agent> = (0..2)
        .map(|i| Agent::start_at(&urls, &format!("a{i}"), "", 8, &[]))
        .collect();
    common::wait_until("agents connect", Duration::from_secs(60), || {
        let count = |h: &Host| {
            h.get("/api/v1/workers").1["workers"]
                .as_array()
                .map_or(0, Vec::len)
        };
        count(&a) + count(&b) >= 2
    });
    let mark = tempfile::tempdir().unwrap();
    // 100 diamonds, all created on host a: host b advances them too.
    let started = Instant::now();
    let mut ids = Vec::new();
    let mut all_needs = BTreeMap::new();
    for p in 0..100 {
        let steps = vec![
            marked(&format!("p{p}a"), &[], "true"),
            marked(&format!("p{p}b"), &[&format!("p{p}a")], "true"),
            marked(&format!("p{p}c"), &[&format!("p{p}a")], "true"),
            marked(
                &format!("p{p}d"),
                &[&format!("p{p}b"), &format!("p{p}c")],
                "true",
            ),
        ];
        all_needs.extend(pipeline::needs_of(&steps));
        let body = json!({ "env": { "MARK": mark.path().to_str().unwrap() }, "steps": steps });
        ids.push(pipeline::create_ok(&a, &body));
    }
    for (i, id) in ids.iter().enumerate() {
        let reader = if i % 2 == 0 { &b } else { &a };
        let done = pipeline::wait(
            reader,
            id,
            &["SUCCEEDED", "FAILED"],
            Duration::from_secs(600),
        );
        assert_eq!(done["state"], json!("SUCCEEDED"), "{done}");
    }
    eprintln!(
        "100 pipelines, 400 steps, two hosts: {:?}",
        started.elapsed()
    );
    let (_, jobs) = a.get("/api/v1/jobs?limit=1000");
    // A step that ran twice is most likely a job whose attempt was lost
    // (its lease ran out) and retried: say so before the check fails.
    for job in jobs["jobs"].as_array().unwrap() {
        if job["attempt"].as_u64().unwrap_or(0) > 1 {
            eprintln!(
                "job {} took {} attempts: {}",
                job["name"], job["attempt"], job["reason"]
            );
            let id = job["id"].as_str().unwrap_or_default();
            for (host, log) in [("a", a.logs()), ("b", b.logs())] {
                for line in log.lines().filter(|l| {
                    l.contains(id)
                        || l.contains("worker forgotten")
                        || l.contains("agent registered")
                }) {
                    eprintln!("  host {host}: {line}");
                }
            }
        }
    }
    assert_once_in_order(mark.path(), &all_needs);
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 400);
    // Both hosts created step jobs (a job is counted by the host whose
    // insert stored it), b only by advancing pipelines a created, and
    // together exactly one per step.
    let created = |h: &Host| -> u64 {
        let text = ureq::get(&h.url("/metrics"))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("hodei_jobs_submitted_total "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no submit counter in {text}"))
    };
    let (by_a, by_b) = (created(&a), created(&b));
    eprintln!("step jobs created by host a: {by_a}, by host b: {by_b}");
    assert_eq!(by_a + by_b, 400);
    assert!(by_a > 0 && by_b > 0, "a: {by_a}, b: {by_b}");
}
