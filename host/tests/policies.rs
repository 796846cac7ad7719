//! Scheduling policies as WebAssembly components: the in-tree plugins place
//! as they should, swaps under load lose nothing, faulty plugins never stop
//! the scheduler, bad uploads are refused with reasons.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Agent, Host, assert_error_shape, plugin_wasm, script};
use serde_json::json;

/// Three 4-slot agents holding 3, 1 and 0 long jobs: free slots 1, 3, 4.
fn three_uneven_workers(host: &Host) -> (Vec<Agent>, Vec<String>) {
    let agents: Vec<Agent> = ["full", "half", "empty"]
        .iter()
        .map(|name| Agent::start(host, name, &format!("box={name}"), 4))
        .collect();
    host.wait_workers(3);
    let mut fillers = Vec::new();
    for (name, count) in [("full", 3), ("half", 1)] {
        for _ in 0..count {
            fillers.push(
                host.submit_ok(&json!({ "args": ["sleep", "60"], "labels": { "box": name } })),
            );
        }
    }
    for id in &fillers {
        host.wait_state(id, &["RUNNING"], Duration::from_secs(20));
    }
    (agents, fillers)
}

fn placed_on(host: &Host) -> String {
    let id = host.submit_ok(&json!({ "args": ["true"] }));
    let job = host.wait_state(&id, &["SUCCEEDED"], Duration::from_secs(20));
    job["worker_id"].as_str().unwrap().to_owned()
}

#[test]
fn binpack_fills_the_fullest_least_loaded_the_emptiest_and_a_swap_changes_the_next_placement() {
    let host = Host::start_with(&["--policy", "binpack"]);
    let (agents, fillers) = three_uneven_workers(&host);
    let (full, empty) = (agents[0].worker_id(&host), agents[2].worker_id(&host));

    assert_eq!(
        placed_on(&host),
        full,
        "binpack: the fullest worker that fits"
    );
    let (status, body) = host.activate("least-loaded", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"]["name"], json!("least-loaded"));
    assert_eq!(placed_on(&host), empty, "least-loaded: the emptiest worker");
    let (status, _) = host.activate("binpack", "");
    assert_eq!(status, 200);
    assert_eq!(placed_on(&host), full, "swapped back");

    let binpack = host.policy("binpack");
    assert!(binpack["calls"].as_u64().unwrap() >= 4, "{binpack}");
    assert_eq!(binpack["errors"], json!(0));
    assert!(binpack["p99_us"].as_u64().unwrap() > 0);
    for id in fillers {
        host.cancel(&id);
    }
}

#[test]
fn five_thousand_jobs_complete_exactly_once_while_the_policy_swaps_twenty_times() {
    let host = Host::start_with(&["--policy", "binpack"]);
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran.log");
    let _agents: Vec<Agent> = (0..4)
        .map(|i| {
            let marker = dir.path().join(format!("agent-{i}")).display().to_string();
            Agent::start_env(&host, &format!("a{i}"), "", 2, &[("SLOT_MARKER", &marker)])
        })
        .collect();
    host.wait_workers(4);
    // Each agent has two slots: a job takes one of two lock dirs, and a
    // third job running at once on the same agent finds both taken.
    let body = script(&format!(
        r#"if mkdir "$SLOT_MARKER.1" 2>/dev/null; then s=1; elif mkdir "$SLOT_MARKER.2" 2>/dev/null; then s=2; else echo OVERCOMMITTED; exit 99; fi
echo "$HODEI_JOB_ID" >> {ran}
rmdir "$SLOT_MARKER.$s""#,
        ran = ran.display()
    ));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (url, stop) = (host.http.clone(), stop.clone());
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut swaps = 0;
            while swaps < 20 && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = if swaps % 2 == 0 {
                    "least-loaded"
                } else {
                    "binpack"
                };
                let status = agent
                    .put(&format!("{url}/api/v1/policies/active"))
                    .send_json(json!({ "name": name }))
                    .unwrap()
                    .status();
                assert_eq!(status, 200);
                swaps += 1;
                std::thread::sleep(Duration::from_millis(150));
            }
            swaps
        })
    };
    let submitters: Vec<_> = (0..8)
        .map(|_| {
            let (url, body) = (host.url("/api/v1/jobs"), body.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                (0..625)
                    .map(|_| {
                        let (status, job) = common::request(agent.post(&url).send_json(&body));
                        assert_eq!(status, 201, "{job}");
                        job["id"].as_str().unwrap().to_owned()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: Vec<String> = submitters
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(swapper.join().unwrap(), 20);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(ids.len(), 5000);
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let (_, health) = host.get("/healthz");
        if health["jobs_finished"].as_u64().unwrap() >= 5000 {
            break;
        }
        assert!(Instant::now() < deadline, "jobs did not finish: {health}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, failed) = host.get("/api/v1/jobs?state=failed&limit=10");
    assert_eq!(
        failed["jobs"],
        json!([]),
        "no job failed (none overcommitted)"
    );
    let (_, page) = host.get("/api/v1/jobs?state=succeeded&limit=1000");
    assert!(
        page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["attempt"] == json!(1))
    );
    let lines: Vec<String> = std::fs::read_to_string(&ran)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 5000, "every job ran exactly once");
    let unique: HashSet<&String> = lines.iter().collect();
    assert_eq!(unique.len(), 5000);
    assert_eq!(unique, ids.iter().collect::<HashSet<_>>());
}

/// The tier-fixture policy (plugins/tier-fixture) puts a job in queue
/// `batch` on `tier=slow`, else one of priority >= 10 on `tier=fast`, else
/// on `tier=standard`: where each job ran shows the host handed the plugin
/// the job's own priority (a constant 0 would put every job on
/// `standard`).
#[test]
fn an_uploaded_plugin_places_each_job_by_its_priority_and_queue() {
    let host = Host::start_with(&["--queue-weights", "batch=1"]);
    let agents: Vec<(&str, Agent)> = ["standard", "slow", "fast"]
        .into_iter()
        .map(|tier| (tier, Agent::start(&host, tier, &format!("tier={tier}"), 2)))
        .collect();
    host.wait_workers(3);
    let tier_of: std::collections::HashMap<String, &str> = agents
        .iter()
        .map(|(tier, agent)| (agent.worker_id(&host), *tier))
        .collect();
    let (status, body) =
        host.upload_policy("tiers", &plugin_wasm("hodei_policy_tier_fixture.wasm"));
    assert_eq!(status, 201, "{body}");
    let (status, body) = host.activate("tiers", "");
    assert_eq!(status, 200, "{body}");
    // (job fields beside `args`, the tier it must run on): the fixture
    // sends queue `batch` to `slow` whatever the priority, then priority
    // 10 and up to `fast`. A constant priority or queue fails a case.
    let cases = [
        (json!({ "queue": "batch", "priority": 50 }), "slow"),
        (json!({}), "standard"),
        (json!({ "priority": 50 }), "fast"),
        (json!({ "priority": 9 }), "standard"),
        (json!({ "priority": 10 }), "fast"),
    ];
    for (fields, expected) in cases {
        let mut body = json!({ "args": ["true"] });
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        let id = host.submit_ok(&body);
        let job = host.wait_state(&id, &["SUCCEEDED"], Duration::from_secs(20));
        let worker = job["worker_id"].as_str().unwrap();
        assert_eq!(tier_of[worker], expected, "{fields}: ran on {worker}");
    }
    let policy = host.policy("tiers");
    assert_eq!(policy["errors"], json!(0), "the plugin decided: {policy}");
}

fn fault(host: &Host, name: &str, config: &str, function: &str, expect_in_message: &str) {
    let (status, body) = host.upload_policy(name, &plugin_wasm("hodei_policy_fault_fixture.wasm"));
    assert_eq!(status, 201, "{body}");
    let (status, body) = host.activate(name, config);
    assert_eq!(status, 200, "{body}");
    // Scheduling goes on, on the built-in policy, within the deadline.
    for _ in 0..3 {
        let started = Instant::now();
        let id = host.submit_ok(&script("echo still-scheduling"));
        host.wait_state(&id, &["SUCCEEDED"], Duration::from_secs(20));
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    let policy = host.policy(name);
    assert!(policy["errors"].as_u64().unwrap() >= 1, "{policy}");
    assert_eq!(
        policy["last_error"]["function"],
        json!(function),
        "{policy}"
    );
    let message = policy["last_error"]["message"].as_str().unwrap();
    assert!(message.contains(expect_in_message), "{name}: {message}");
    let logs = host.logs();
    assert!(
        logs.lines().any(|l| l.contains(&format!("plugin={name}"))
            && l.contains(&format!("function=\"{function}\""))),
        "the host log names plugin {name} and function {function}:\n{logs}"
    );
    let (status, _) = host.get("/healthz");
    assert_eq!(status, 200, "the host is alive");
}

#[test]
fn a_plugin_that_loops_forever_is_interrupted_at_its_deadline() {
    // The production default deadline (10 ms): scheduling goes on at once.
    let host = Host::start_with(&["--plugin-deadline-ms", "10"]);
    let _agent = Agent::start(&host, "a1", "", 4);
    host.wait_workers(1);
    fault(
        &host,
        "loops",
        "loop:filter",
        "decide",
        "ran past its deadline",
    );
}

#[test]
fn plugins_that_exhaust_memory_trap_or_miscount_fall_back_to_the_builtin() {
    // Test hosts have a generous deadline (1 s), so on a busy machine each
    // fault is the one it is meant to be and not a timeout.
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 4);
    host.wait_workers(1);
    fault(
        &host,
        "hogs-memory",
        "alloc:filter",
        "decide",
        "growing memory",
    );
    fault(&host, "traps", "trap:score", "decide", "unreachable");
    fault(
        &host,
        "miscounts",
        "wrong-length:score",
        "decide",
        "scores for",
    );
    let (status, _) = host.activate("builtin", "");
    assert_eq!(status, 200);
}

#[test]
fn a_failing_plugin_is_backed_off_not_retried_in_a_tight_loop() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 4);
    host.wait_workers(1);
    let (status, _) = host.upload_policy("traps", &plugin_wasm("hodei_policy_fault_fixture.wasm"));
    assert_eq!(status, 201);
    host.activate("traps", "trap:score");
    let ids: Vec<String> = (0..30).map(|_| host.submit_ok(&script("true"))).collect();
    for id in &ids {
        host.wait_state(id, &["SUCCEEDED"], Duration::from_secs(30));
    }
    let policy = host.policy("traps");
    assert!(
        policy["consecutive_failures"].as_u64().unwrap() >= 3,
        "{policy}"
    );
    // Backoff 1 s, 2 s, 4 s...: a handful of failures, not one per decision.
    assert!(
        policy["errors"].as_u64().unwrap() <= 10,
        "not called for every decision: {policy}"
    );
}

#[test]
fn bad_uploads_get_a_clear_4xx_and_leave_the_active_policy_alone() {
    let host = Host::start_with(&["--policy", "least-loaded"]);
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let empty_component = b"\0asm\x0d\0\x01\0".to_vec();
    let cases: Vec<(&str, Vec<u8>, u16, &str, &str)> = vec![
        (
            "random",
            (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
            400,
            "INVALID_PLUGIN",
            "not WebAssembly",
        ),
        ("empty", Vec::new(), 400, "INVALID_PLUGIN", "empty"),
        (
            "core",
            core_module,
            400,
            "INVALID_PLUGIN",
            "core WebAssembly module",
        ),
        (
            "other-world",
            empty_component,
            400,
            "INVALID_PLUGIN",
            "not a scheduling policy",
        ),
        (
            "binpack",
            plugin_wasm("hodei_policy_least_loaded.wasm"),
            409,
            "RESERVED",
            "ships with hodei",
        ),
        (
            "Bad Name",
            plugin_wasm("hodei_policy_binpack.wasm"),
            400,
            "VALIDATION_ERROR",
            "invalid plugin name",
        ),
    ];
    for (name, bytes, status, code, text) in cases {
        let (got, body) = host.upload_policy(&name.replace(' ', "%20"), &bytes);
        assert_eq!(got, status, "{name}: {body}");
        assert_error_shape(&body, code);
        assert!(
            body["message"].as_str().unwrap().contains(text),
            "{name}: {body}"
        );
        let (_, listing) = host.get("/api/v1/policies");
        assert_eq!(listing["active"]["name"], json!("least-loaded"), "{name}");
    }
    // 50 MiB: refused from its Content-Length, before the body is read.
    let (status, body) = common::post_announced(
        &host.url("/api/v1/policies?name=huge"),
        "application/wasm",
        50 << 20,
    );
    assert_eq!(status, 413, "{body}");
    assert_error_shape(&body, "PAYLOAD_TOO_LARGE");
    let (status, body) = host.activate("nope", "");
    assert_eq!(status, 404);
    assert_error_shape(&body, "NOT_FOUND");
    let (status, body) = host.delete("/api/v1/policies/least-loaded");
    assert_eq!(status, 409, "{body}");
    let (_, listing) = host.get("/api/v1/policies");
    assert_eq!(listing["active"]["name"], json!("least-loaded"));
    assert_eq!(
        listing["policies"].as_array().unwrap().len(),
        3,
        "builtin + the two in-tree"
    );
}

/// `component` with a custom section appended so that it is `len` bytes
/// long: the same component to wasmtime (custom sections are skipped), as
/// big as a Python or JavaScript one.
fn padded(mut component: Vec<u8>, len: usize) -> Vec<u8> {
    const NAME: &[u8] = b"hodei-test-padding";
    // Section id 0, its size as a 5-byte LEB128 (non-minimal groups are
    // valid, and a fixed width makes the header's length known), the
    // name, then zeros up to `len`.
    let size = u32::try_from(len - component.len() - 1 - 5).unwrap();
    component.push(0);
    for group in 0..5 {
        let bits = ((size >> (7 * group)) & 0x7f) as u8;
        component.push(if group < 4 { bits | 0x80 } else { bits });
    }
    component.push(u8::try_from(NAME.len()).unwrap());
    component.extend_from_slice(NAME);
    component.resize(len, 0);
    component
}

#[test]
fn the_upload_limit_is_a_setting_and_a_component_past_it_gets_413() {
    let binpack = plugin_wasm("hodei_policy_binpack.wasm");
    // The default (32 MiB) takes a component the size of a Python one.
    let host = Host::start();
    let python_sized = padded(binpack.clone(), 18_000_000);
    let (status, body) = host.upload_policy("python-sized", &python_sized);
    assert_eq!(status, 201, "{body}");
    assert_eq!(host.policy("python-sized")["size_bytes"], json!(18_000_000));
    drop(host);

    let host = Host::start_with(&["--max-plugin-bytes", "1000000"]);
    let (status, body) = host.upload_policy("small", &padded(binpack.clone(), 1_000_000));
    assert_eq!(status, 201, "at the limit: {body}");
    let (status, body) = host.activate("small", "");
    assert_eq!(status, 200, "{body}");
    // Refused from its Content-Length, before the body is read (a client
    // still sending would see the connection close: announce only); and,
    // chunked with no Content-Length, once the stream grows past the limit.
    let over = padded(binpack, 1_000_001);
    for route in ["policies", "maskers"] {
        let url = host.url(&format!("/api/v1/{route}?name=over"));
        for (how, (status, body)) in [
            (
                "announced",
                common::post_announced(&url, "application/wasm", over.len()),
            ),
            (
                "chunked",
                common::post_chunked(&url, "application/wasm", &over),
            ),
        ] {
            assert_eq!(status, 413, "{route}, {how}: {body}");
            assert_error_shape(&body, "PAYLOAD_TOO_LARGE");
            let message = body["message"].as_str().unwrap();
            assert!(
                message.contains("a plugin component may be at most 1000000 bytes"),
                "{how}: {message}"
            );
        }
    }
    assert!(host.policy("over").is_null());
    let (_, listing) = host.get("/api/v1/policies");
    assert_eq!(listing["active"]["name"], json!("small"));
}

#[test]
fn uploaded_plugins_and_the_active_choice_survive_a_restart() {
    let mut host = Host::start();
    let (status, body) = host.upload_policy("mine", &plugin_wasm("hodei_policy_binpack.wasm"));
    assert_eq!(status, 201, "{body}");
    let (status, _) = host.activate("mine", "");
    assert_eq!(status, 200);
    let (status, body) = host.delete("/api/v1/policies/mine");
    assert_eq!(status, 409, "the active one cannot go: {body}");
    host.restart(nix::sys::signal::Signal::SIGKILL);
    let (_, listing) = host.get("/api/v1/policies");
    assert_eq!(listing["active"]["name"], json!("mine"), "{listing}");
    let (status, _) = host.activate("binpack", "");
    assert_eq!(status, 200);
    let (status, _) = host.delete("/api/v1/policies/mine");
    assert_eq!(status, 204);
    host.restart(nix::sys::signal::Signal::SIGTERM);
    assert!(host.policy("mine").is_null(), "removed for good");
    let _agent = Agent::start(&host, "a1", "", 1);
    let id = host.submit_ok(&script("echo after-restart"));
    host.wait_state(&id, &["SUCCEEDED"], Duration::from_secs(20));
}

#[test]
fn the_pending_reason_carries_what_the_active_plugin_said() {
    let host = Host::start_with(&["--policy", "binpack"]);
    let _agent = Agent::start(&host, "a1", "", 1);
    host.wait_workers(1);
    let id = host.submit_ok(&json!({ "args": ["true"], "labels": { "gpu": "true" } }));
    std::thread::sleep(Duration::from_millis(300));
    let job = host.job(&id);
    assert_eq!(job["state"], json!("PENDING"));
    assert_eq!(
        job["pending_reason"],
        json!("1 worker: missing label gpu=true")
    );
    assert!(
        host.policy("binpack")["calls"].as_u64().unwrap() > 0,
        "the plugin was asked"
    );
}

#[test]
fn cli_policy_commands_manage_the_running_host() {
    let host = Host::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mine.wasm");
    std::fs::write(&file, plugin_wasm("hodei_policy_binpack.wasm")).unwrap();
    let out = host.cli(&["policy", "load", file.to_str().unwrap(), "--name", "mine"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = host.cli(&["policy", "use", "mine"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "active: mine\n");
    let out = host.cli(&["policy", "rm", "mine"]);
    assert!(!out.status.success(), "the active policy cannot be removed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("POLICY_ACTIVE"));
    host.cli(&["policy", "use", "builtin"]);
    assert!(host.cli(&["policy", "rm", "mine"]).status.success());
    let out = host.cli(&["policy", "ls"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("binpack")
            && listing.contains("least-loaded")
            && !listing.contains("mine"),
        "{listing}"
    );
}
