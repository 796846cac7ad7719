//! The plugin SDK end to end: a policy scaffolded with `hodei plugin new`
//! is tested, built, loaded into a running host and followed; the tutorial's
//! zone-spread example places as it says; a plugin that panics is named,
//! with the function and its message, in the log and in the API.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Agent, Host, agents_running, build_workspace_plugin, hodei_bin, placed_on, plugin_wasm,
    plugins_target_dir, script, without_outer_build_env,
};
use serde_json::json;

#[test]
fn a_scaffolded_policy_is_tested_built_loaded_and_followed_by_a_running_host() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let new = Command::new(hodei_bin())
        .args(["plugin", "new", "myplacer", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        new.status.success(),
        "{}",
        String::from_utf8_lossy(&new.stderr)
    );
    let crate_dir = tmp.path().join("myplacer");

    // Its own unit tests pass as generated. Shared target dir: the SDK's
    // dependencies compile once, not on every run. Offline: the new crate
    // resolves to the versions the workspace already downloaded, so the
    // test needs no network and reuses the host's compiled dependencies.
    let tested = without_outer_build_env(&mut Command::new("cargo"))
        .arg("test")
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", plugins_target_dir())
        .env("CARGO_NET_OFFLINE", "true")
        .status()
        .unwrap();
    assert!(tested.success(), "the generated crate's tests fail");

    let built = without_outer_build_env(&mut Command::new(hodei_bin()))
        .args(["plugin", "build"])
        .arg(&crate_dir)
        .env("CARGO_TARGET_DIR", plugins_target_dir())
        .env("CARGO_NET_OFFLINE", "true")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(built.status.success(), "hodei plugin build failed");
    let stdout = String::from_utf8(built.stdout).unwrap();
    let wasm = PathBuf::from(stdout.lines().last().unwrap());
    assert!(
        wasm.is_absolute() && wasm.ends_with("wasm32-wasip2/release/myplacer.wasm"),
        "{stdout}"
    );
    let built_after = started.elapsed();

    // Three 4-slot agents with 3, 1 and 0 long jobs: free slots 1, 3, 4.
    let host = Host::start();
    let (agents, long_jobs) = agents_running(
        &host,
        4,
        &[("full", "", 3), ("half", "", 1), ("empty", "", 0)],
    );
    let (full, empty) = (agents[0].worker_id(&host), agents[2].worker_id(&host));
    assert_eq!(placed_on(&host), empty, "built-in: the emptiest worker");

    let (status, body) = host.upload_policy("myplacer", &std::fs::read(&wasm).unwrap());
    assert_eq!(status, 201, "{body}");
    let (status, body) = host.activate("myplacer", "");
    assert_eq!(status, 200, "{body}");
    for _ in 0..3 {
        assert_eq!(
            placed_on(&host),
            full,
            "myplacer: the worker with the fewest free slots that has one"
        );
    }
    let policy = host.policy("myplacer");
    assert!(policy["calls"].as_u64().unwrap() >= 3, "{policy}");
    assert_eq!(policy["errors"], json!(0), "{policy}");
    for id in long_jobs {
        host.cancel(&id);
    }
    eprintln!(
        "scaffold: new + cargo test + plugin build {built_after:?}; \
         + load, activate, 4 placements {:?}",
        started.elapsed()
    );
}

#[test]
fn the_zone_spread_example_spreads_jobs_across_zones() {
    let wasm = build_workspace_plugin("hodei-policy-zone-spread");
    let host = Host::start();
    // Zone a runs 2 jobs (both on a1), zone b runs 1; `none` has no zone.
    let (agents, mut long_jobs) = agents_running(
        &host,
        4,
        &[
            ("a1", "zone=a", 2),
            ("a2", "zone=a", 0),
            ("b1", "zone=b", 1),
            ("none", "", 0),
        ],
    );
    let (a2, b1) = (agents[1].worker_id(&host), agents[2].worker_id(&host));
    let (status, body) = host.upload_policy("zones", &wasm);
    assert_eq!(status, 201, "{body}");
    let (status, body) = host.activate("zones", "");
    assert_eq!(status, 200, "{body}");

    // Not the emptiest worker (a2 or none): the least loaded zone.
    assert_eq!(placed_on(&host), b1, "zone b runs fewer jobs than zone a");
    let id = host.submit_ok(&json!({ "args": ["sleep", "60"] }));
    let job = host.wait_state(&id, &["RUNNING"], Duration::from_secs(20));
    assert_eq!(job["worker_id"], json!(b1));
    long_jobs.push(id);
    // Both zones run 2 jobs now: the most free slots decide.
    assert_eq!(placed_on(&host), a2, "tied zones: most free slots");

    let policy = host.policy("zones");
    assert_eq!(policy["errors"], json!(0), "{policy}");
    for id in long_jobs {
        host.cancel(&id);
    }
}

#[test]
fn a_panicking_plugin_is_named_with_its_function_and_message_in_the_log_and_the_api() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 2);
    host.wait_workers(1);
    let (status, body) =
        host.upload_policy("panicky", &plugin_wasm("hodei_policy_fault_fixture.wasm"));
    assert_eq!(status, 201, "{body}");
    let (status, body) = host.activate("panicky", "panic:filter:boom in the filter");
    assert_eq!(status, 200, "{body}");

    // The decision falls back to the built-in policy: the job still runs.
    let id = host.submit_ok(&script("echo placed-anyway"));
    host.wait_state(&id, &["SUCCEEDED"], Duration::from_secs(20));

    let policy = host.policy("panicky");
    assert!(policy["errors"].as_u64().unwrap() >= 1, "{policy}");
    assert_eq!(
        policy["last_error"]["function"],
        json!("decide"),
        "{policy}"
    );
    let message = policy["last_error"]["message"].as_str().unwrap();
    assert!(message.contains("boom in the filter"), "{policy}");

    // The log names the plugin with what it printed (the panic message)
    // and with the function that failed. Lines are written as the call
    // fails; give the pipe a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let logs = host.logs();
        let named_with = |what: &str| {
            logs.lines()
                .any(|l| l.contains("plugin=panicky") && l.contains(what))
        };
        if named_with("boom in the filter") && named_with("function=\"decide\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log lines name plugin=panicky with its message and function:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
