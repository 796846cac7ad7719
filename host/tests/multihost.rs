//! Several hosts on one PostgreSQL: real `hodei` processes sharing a real
//! database (a fresh one per test, on the server `scripts/postgres.sh`
//! starts), real agents that fail over between them.
//!
//! Without `HODEI_TEST_DATABASE_URL` these tests are skipped, unless
//! `CI=true`, where they fail: CI must run them.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::pg::Database;
use common::{Agent, Host};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// Agents of `host` that fail over to `others`, in that order.
fn agent(name: &str, hosts: &[&Host], slots: u32) -> Agent {
    let urls: Vec<&str> = hosts.iter().map(|h| h.grpc.as_str()).collect();
    Agent::start_at(&urls.join(","), name, "", slots, &[])
}

/// A job that appends its id to `markers` (appends of one short line are
/// atomic), after `sleep` seconds.
fn marker_job(markers: &Path, sleep: f32) -> Value {
    json!({
        "args": ["sh", "-c", format!("sleep {sleep}; echo \"$HODEI_JOB_ID\" >> {}", markers.display())],
        "max_attempts": 3,
    })
}

fn marker_counts(markers: &Path) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(markers).unwrap_or_default();
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        *counts.entry(line.to_owned()).or_insert(0) += 1;
    }
    counts
}

/// Submits `bodies` spread over `hosts` from 8 threads; returns the ids.
fn submit_spread(hosts: &[&Host], bodies: Vec<Value>) -> Vec<String> {
    let chunks: Vec<Vec<(usize, Value)>> = {
        let mut chunks = vec![Vec::new(); 8];
        for (i, body) in bodies.into_iter().enumerate() {
            chunks[i % 8].push((i, body));
        }
        chunks
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .into_iter()
                        .map(|(i, body)| hosts[i % hosts.len()].submit_ok(&body))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// Waits until every id is in a terminal state (asked of `host`).
fn wait_all_done(host: &Host, ids: &[String], timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    ids.iter()
        .map(|id| {
            let left = deadline.saturating_duration_since(Instant::now());
            host.wait_state(
                id,
                &["SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"],
                left.max(Duration::from_millis(1)),
            )
        })
        .collect()
}

#[test]
fn two_hosts_run_2000_jobs_exactly_once() {
    let Some(db) = Database::create("hodei_two_hosts") else {
        return;
    };
    let (a, b) = (db.host(&[]), db.host(&[]));
    let _agents = [
        agent("a1", &[&a, &b], 4),
        agent("a2", &[&a, &b], 4),
        agent("b1", &[&b, &a], 4),
        agent("b2", &[&b, &a], 4),
    ];
    a.wait_workers(2);
    b.wait_workers(2);
    let dir = tempfile::tempdir().unwrap();
    let markers = dir.path().join("markers");

    let ids = submit_spread(&[&a, &b], vec![marker_job(&markers, 0.0); 2000]);
    let jobs = wait_all_done(&a, &ids, Duration::from_secs(240));

    let counts = marker_counts(&markers);
    let submitted: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(submitted.len(), 2000, "ids are unique");
    assert_eq!(
        counts.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        submitted,
        "every job ran"
    );
    let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubled.is_empty(), "jobs ran more than once: {doubled:?}");
    let mut per_worker = BTreeMap::new();
    for job in &jobs {
        assert_eq!(job["state"], "SUCCEEDED", "{job}");
        assert_eq!(job["attempt"], 1, "{job}");
        *per_worker
            .entry(job["worker_id"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    // Both hosts claimed work for their own agents.
    assert_eq!(per_worker.len(), 4, "every agent ran jobs: {per_worker:?}");
    eprintln!("jobs per worker: {per_worker:?}");
}

#[test]
fn killing_a_host_moves_its_agents_and_loses_nothing() {
    let Some(db) = Database::create("hodei_host_kill") else {
        return;
    };
    let (a, b) = (db.host(&[]), db.host(&[]));
    let _agents = [
        agent("a1", &[&a, &b], 3),
        agent("a2", &[&a, &b], 3),
        agent("b1", &[&b, &a], 3),
        agent("b2", &[&b, &a], 3),
    ];
    a.wait_workers(2);
    b.wait_workers(2);
    let a_workers: BTreeSet<String> = ["a1", "a2"]
        .iter()
        .map(|name| {
            _agents
                .iter()
                .find(|x| x.name == *name)
                .unwrap()
                .worker_id(&a)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let markers = dir.path().join("markers");

    // 60 jobs of 2 s on 12 slots: several rounds, so the kill lands mid-run.
    let mut ids = submit_spread(&[&a, &b], vec![marker_job(&markers, 2.0); 60]);
    // Wait until jobs run on the agents of the host about to die.
    let deadline = Instant::now() + Duration::from_secs(60);
    let running_on_a = loop {
        let running: Vec<Value> = ids
            .iter()
            .map(|id| b.job(id))
            .filter(|j| j["state"] == "RUNNING")
            .collect();
        let on_a: Vec<String> = running
            .iter()
            .filter(|j| a_workers.contains(j["worker_id"].as_str().unwrap()))
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect();
        if on_a.len() >= 3 {
            break on_a;
        }
        assert!(Instant::now() < deadline, "no jobs ran on host a's agents");
        std::thread::sleep(Duration::from_millis(50));
    };
    a.signal(Signal::SIGKILL);
    let killed_at = Instant::now();
    // Host b keeps accepting work meanwhile.
    ids.extend(submit_spread(&[&b], vec![marker_job(&markers, 0.5); 20]));

    b.wait_workers(4);
    eprintln!(
        "agents of the killed host moved over in {:?}",
        killed_at.elapsed()
    );
    let jobs = wait_all_done(&b, &ids, Duration::from_secs(180));

    let counts = marker_counts(&markers);
    for (job, id) in jobs.iter().zip(&ids) {
        assert_eq!(job["state"], "SUCCEEDED", "{job}");
        assert_eq!(
            counts.get(id),
            Some(&1),
            "job {id} ran {:?} times",
            counts.get(id)
        );
    }
    assert_eq!(counts.len(), ids.len(), "no marker from an unknown job");
    // What ran on the dead host's agents was reattached, not rerun.
    for id in &running_on_a {
        let job = b.job(id);
        assert_eq!(job["attempt"], 1, "{job}");
    }
    b.wait_log("agent registered", Duration::from_secs(10));
}

#[test]
fn a_killed_agent_loses_its_attempt_to_another_agent_within_15s() {
    let Some(db) = Database::create("hodei_agent_kill") else {
        return;
    };
    let (a, b) = (db.host(&[]), db.host(&[]));
    let mut victim = agent("victim", &[&a, &b], 2);
    a.wait_workers(1);
    let retried = a.submit_ok(&json!({
        "command": "echo attempt $HODEI_ATTEMPT; sleep 4",
        "max_attempts": 2,
    }));
    let failed = a.submit_ok(&json!({
        "command": "sleep 60",
        "max_attempts": 1,
    }));
    a.wait_state(&retried, &["RUNNING"], Duration::from_secs(20));
    a.wait_state(&failed, &["RUNNING"], Duration::from_secs(20));
    // The survivor sits on the other host.
    let _survivor = agent("survivor", &[&b, &a], 2);
    b.wait_workers(1);

    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let killed_at = Instant::now();
    let deadline = killed_at + Duration::from_secs(15);
    let job = loop {
        let job = b.job(&retried);
        if job["attempt"] == 2 && (job["state"] == "RUNNING" || job["state"] == "SUCCEEDED") {
            break job;
        }
        assert!(
            Instant::now() < deadline,
            "not retried within 15 s of the kill: {job}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = killed_at.elapsed();
    assert_eq!(job["worker_id"], json!(_survivor.worker_id(&b)), "{job}");
    eprintln!("retried on another agent {took:?} after the kill");

    let job = a.wait_state(&failed, &["FAILED"], Duration::from_secs(15));
    assert_eq!(job["reason"], "agent lost", "{job}");
    assert_eq!(job["attempt"], 1);

    let job = a.wait_state(&retried, &["SUCCEEDED"], Duration::from_secs(30));
    let lines = common::lines(&a.sse(&retried, ""));
    assert!(lines.contains(&"attempt 2".to_owned()), "{lines:?} {job}");
}

#[test]
fn any_host_follows_and_cancels_a_job_running_on_another_hosts_agent() {
    let Some(db) = Database::create("hodei_cross_host") else {
        return;
    };
    let (front, back) = (db.host(&[]), db.host(&[]));
    let _worker = agent("back-worker", &[&back], 1);
    back.wait_workers(1);

    // Submitted to the host with no agents; runs on the other one's agent.
    let id = front.submit_ok(&json!({
        "command": "for i in $(seq 1 30); do echo line $i; sleep 0.05; done",
    }));
    let started = Instant::now();
    let events = front.sse(&id, "?follow=true");
    let lines = common::lines(&events);
    let expected: Vec<String> = (1..=30).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected);
    assert_eq!(events.last().unwrap().event, "done");
    assert_eq!(events.last().unwrap().data["state"], "SUCCEEDED");
    eprintln!("followed across hosts in {:?}", started.elapsed());

    // A cancel asked of the front host reaches the agent of the back host.
    let long = front.submit_ok(&json!({"command": "sleep 300"}));
    front.wait_state(&long, &["RUNNING"], Duration::from_secs(20));
    let (status, _) = front.cancel(&long);
    assert_eq!(status, 200);
    let job = front.wait_state(&long, &["CANCELLED"], Duration::from_secs(10));
    assert_eq!(job["worker_id"], json!(_worker.worker_id(&back)));
}

/// Waits (polling) until `done`, at most one second; returns how long.
fn within_a_second(what: &str, done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    common::wait_until(what, Duration::from_secs(1), done);
    started.elapsed()
}

/// The active policy's name and configuration.
fn active_policy(host: &Host) -> (String, String) {
    let (_, listing) = host.get("/api/v1/policies");
    let active = &listing["active"];
    let text = |field: &str| active[field].as_str().unwrap().to_owned();
    (text("name"), text("config"))
}

/// A component cut short: what no build of the host loads.
const BROKEN_WASM: &[u8] = b"\0asm\x0d\0\x01\0 cut short";

/// least-loaded by free slots alone: real machine figures differ between
/// agents' heartbeats on a busy machine, free slots do not.
const BY_SLOTS: &str = "weights=0,0,1";

/// Hosts on one store follow each other's policy changes: an activation,
/// an upload and a removal made on `a` show on `b` within a second, and
/// `b`'s next placement uses what `a` activated (only `b` has agents, so
/// `b` places every job). A change `b` cannot load is logged there and `b`
/// keeps its previous policy.
#[test]
fn policy_changes_on_one_host_take_effect_on_the_other_within_a_second() {
    let Some(db) = Database::create("hodei_policy_follow") else {
        return;
    };
    let (a, b) = (db.host(&[]), db.host(&[]));
    let (agents, long_jobs) =
        common::agents_running(&b, 4, &[("full", "", 3), ("half", "", 1), ("empty", "", 0)]);
    let (full, empty) = (agents[0].worker_id(&b), agents[2].worker_id(&b));
    let mut took = Vec::new();

    for (policy, config, lands_on) in [("least-loaded", BY_SLOTS, &empty), ("binpack", "", &full)] {
        let (status, body) = a.activate(policy, config);
        assert_eq!(status, 200, "{body}");
        took.push(within_a_second(&format!("b shows {policy} active"), || {
            active_policy(&b) == (policy.to_owned(), config.to_owned())
        }));
        assert_eq!(&common::placed_on(&b), lands_on, "b placed with {policy}");
    }

    let bytes = common::plugin_wasm("hodei_policy_least_loaded.wasm");
    let (status, body) = a.upload_policy("mine", &bytes);
    assert_eq!(status, 201, "{body}");
    let sha = a.policy("mine")["sha256"].clone();
    took.push(within_a_second("b lists the upload", || {
        b.policy("mine")["sha256"] == sha
    }));
    let (status, body) = a.activate("mine", BY_SLOTS);
    assert_eq!(status, 200, "{body}");
    took.push(within_a_second("b shows the upload active", || {
        active_policy(&b) == ("mine".to_owned(), BY_SLOTS.to_owned())
    }));
    assert_eq!(common::placed_on(&b), empty, "b placed with the upload");

    let (status, _) = a.activate("binpack", "");
    assert_eq!(status, 200);
    took.push(within_a_second("b shows binpack active again", || {
        active_policy(&b).0 == "binpack"
    }));
    let (status, body) = a.delete("/api/v1/policies/mine");
    assert_eq!(status, 204, "{body}");
    took.push(within_a_second("b forgets the upload", || {
        b.policy("mine").is_null()
    }));
    eprintln!("a's change seen on b after: {took:?}");

    // What a host of another build would meet: an upload that does not
    // load, made the active choice, written straight into the store.
    {
        use hodei::plugins::catalog::{ACTIVE_KEY, CHANGED_KEY};
        let active = json!({ "name": "broken" }).to_string();
        db.write_raw(
            &[("broken", BROKEN_WASM)],
            &[(ACTIVE_KEY, &active), (CHANGED_KEY, "written by the test")],
        );
    }
    b.wait_log(
        "a policy uploaded on another host does not load on this one",
        Duration::from_secs(10),
    );
    b.wait_log(
        "a policy activated on another host does not start on this one",
        Duration::from_secs(10),
    );
    assert_eq!(active_policy(&b).0, "binpack", "b kept its policy");
    assert!(b.policy("broken").is_null());
    assert_eq!(common::placed_on(&b), full, "b still places with binpack");
    for id in long_jobs {
        b.cancel(&id);
    }
}

/// Hosts on one store follow each other's masker changes, so no host keeps
/// storing output with less masking than the operator asked for: both
/// hosts start with the literal masker alone, `a` sets a chain with the
/// `patterns` masker, and within a second `b` stores a token that an
/// unmasking agent sent it in clear as `[MASKED:github-token]`. An upload
/// and a removal made on `a` show on `b` the same way.
#[test]
fn masker_changes_on_one_host_take_effect_on_the_other_within_a_second() {
    use common::raw_agent;
    let Some(db) = Database::create("hodei_masker_follow") else {
        return;
    };
    let (a, b) = (
        db.host(&["--maskers", "literal"]),
        db.host(&["--maskers", "literal"]),
    );
    let chain_of = |host: &Host| host.get("/api/v1/maskers").1["chain"].clone();
    assert_eq!(chain_of(&b), json!([{ "name": "literal", "config": "" }]));
    // The raw agent speaks gRPC; the hosts' helpers block.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut agent = runtime
        .block_on(raw_agent::connect(
            &b,
            raw_agent::register("plain", &[("role", "plain")], 1),
        ))
        .expect("registers")
        .0;

    let chain = json!([
        { "name": "literal", "config": "" },
        { "name": "patterns", "config": "" }
    ]);
    let (status, body) = a.set_maskers(chain.clone());
    assert_eq!(status, 200, "{body}");
    let mut took = vec![within_a_second("b shows a's chain", || {
        chain_of(&b) == chain
    })];
    let token = format!("ghp_{}", "aB3".repeat(12));
    let id = b.submit_ok(&common::script_for(
        "plain",
        &format!("echo 'token: {token}'"),
    ));
    let sent = runtime.block_on(async {
        let assign = agent.next_assignment().await;
        agent.run_unmasked(&assign, 1).await
    });
    let sent = String::from_utf8_lossy(&sent.concat()).into_owned();
    assert!(sent.contains(&token), "the agent sent it in clear: {sent}");
    b.wait_state(&id, &["SUCCEEDED"], Duration::from_secs(30));
    assert_eq!(
        common::lines(&b.sse(&id, "")),
        ["token: [MASKED:github-token]"],
        "b masked with a's chain"
    );

    let bytes = common::plugin_wasm("hodei_masker_patterns.wasm");
    let (status, body) = a.upload_masker("mine", &bytes);
    assert_eq!(status, 201, "{body}");
    let sha = a.masker("mine")["sha256"].clone();
    assert!(sha.is_string(), "{sha}");
    took.push(within_a_second("b lists the upload", || {
        b.masker("mine")["sha256"] == sha
    }));
    let (status, body) = a.delete("/api/v1/maskers/mine");
    assert_eq!(status, 204, "{body}");
    took.push(within_a_second("b forgets the upload", || {
        b.masker("mine").is_null()
    }));
    eprintln!("a's change seen on b after: {took:?}");

    // What a host of another build would meet: an upload that does not
    // load, put in the chain, written straight into the store. `b` logs it
    // and keeps masking with the chain it had.
    {
        use hodei::masking::catalog::{CHAIN_KEY, CHANGED_KEY, STORE_PREFIX};
        let chain = json!([{ "name": "broken", "config": "" }]).to_string();
        db.write_raw(
            &[(&format!("{STORE_PREFIX}broken"), BROKEN_WASM)],
            &[(CHAIN_KEY, &chain), (CHANGED_KEY, "written by the test")],
        );
    }
    b.wait_log(
        "a masker uploaded on another host does not load on this one",
        Duration::from_secs(10),
    );
    b.wait_log(
        "a masker chain set on another host does not start on this one",
        Duration::from_secs(10),
    );
    assert_eq!(chain_of(&b), chain, "b kept its chain");
    assert!(b.masker("broken").is_null());
}
