//! The masker chain fails closed and swaps without losing a line: a masker
//! that traps, loops or answers the wrong number of lines is replaced by
//! the host's native literal masker (nothing clear is stored, the error is
//! on record), and a chain swapped while a job prints masks every line by
//! the old chain or the new one, each line exactly once.
//! Black-box: real `hodei`, real `hodei-agent`, the real fault fixture
//! component from plugins/masker-fault-fixture.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::time::{Duration, Instant};

use common::raw_agent;
use common::{Agent, Host, lines, plugin_wasm, script_for};
use serde_json::json;

const SECRET: &str = "fault-Secret-9c1e77";
const TOKEN: &str = "ghp_0123456789abcdefghijABCDEFGHIJ012345";

#[tokio::test(flavor = "multi_thread")]
async fn a_masker_that_traps_loops_or_miscounts_is_replaced_by_the_native_masker() {
    let host = Host::start_with(&["--masker-deadline-ms", "300"]);
    let fixture = plugin_wasm("hodei_masker_fault_fixture.wasm");
    let mut agent =
        raw_agent::connect(&host, raw_agent::register("plain", &[("role", "plain")], 1))
            .await
            .expect("registers")
            .0;
    let cases = [
        ("trap", "panicked"),
        ("loop", "ran past its deadline"),
        ("wrong-count", "lines for"),
    ];
    for (mode, error) in cases {
        let name = format!("faulty-{mode}");
        let (status, body) = host.upload_masker(&name, &fixture);
        assert_eq!(status, 201, "{body}");
        let (status, body) = host.set_maskers(json!([{ "name": name, "config": mode }]));
        assert_eq!(status, 200, "{body}");

        let mut job = script_for(
            "plain",
            "for i in 1 2 3 4 5 6; do echo \"$i secret=$S\"; done",
        );
        job["secrets"] = json!({ "S": SECRET });
        let id = host.submit_ok(&job);
        let assign = agent.next_assignment().await;
        let sent = agent.run_unmasked(&assign, 3).await;
        assert!(String::from_utf8_lossy(&sent.concat()).contains(SECRET));
        host.wait_state(&id, &["SUCCEEDED"], Duration::from_secs(30));

        let log = lines(&host.sse(&id, ""));
        let expected: Vec<String> = (1..=6).map(|i| format!("{i} secret=***")).collect();
        assert_eq!(log, expected, "{mode}: only masked text is stored");
        assert!(
            !host.logs().contains(SECRET),
            "{mode}: the host log is clean"
        );
        let view = host.masker(&name);
        assert!(view["errors"].as_u64().unwrap() >= 1, "{mode}: {view}");
        let last = &view["last_error"];
        assert_eq!(last["function"], json!("mask"), "{mode}: {view}");
        assert!(
            last["message"].as_str().unwrap().contains(error),
            "{mode}: {view}"
        );
    }
    let (_, maskers) = host.get("/api/v1/maskers");
    assert!(
        maskers["masking"]["fallbacks"].as_u64().unwrap() >= 9,
        "{maskers}"
    );
    assert_eq!(maskers["masking"]["withheld"], json!(0), "{maskers}");
    // An invalid upload is refused with the one error shape.
    let (status, body) = host.upload_masker("junk", b"\0asm not really");
    assert_eq!(status, 400, "{body}");
    common::assert_error_shape(&body, "INVALID_PLUGIN");
    let (status, body) = host.upload_masker("policy", &plugin_wasm("hodei_policy_binpack.wasm"));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not a secret masker"),
        "{body}"
    );
}

#[test]
fn swapping_the_chain_while_a_job_prints_masks_every_line_once_by_the_old_or_the_new_chain() {
    let host = Host::start();
    let _agent = Agent::start(&host, "printer", "role=printer", 1);
    host.wait_workers(1);
    let total = 3000;
    let id = host.submit_ok(&script_for(
        "printer",
        &format!(
            "for i in $(seq {total}); do echo \"$i tok {TOKEN}\"; \
             if (( i % 50 == 0 )); then sleep 0.05; fi; done"
        ),
    ));
    host.wait_state(&id, &["RUNNING"], Duration::from_secs(30));
    let with_patterns = json!([{"name": "literal"}, {"name": "patterns"}]);
    let literal_only = json!([{"name": "literal"}]);
    let started = Instant::now();
    let mut swaps = 0;
    while host.job(&id)["state"] == json!("RUNNING") && started.elapsed() < Duration::from_secs(60)
    {
        let chain = if swaps % 2 == 0 {
            &literal_only
        } else {
            &with_patterns
        };
        let (status, body) = host.set_maskers(chain.clone());
        assert_eq!(status, 200, "{body}");
        swaps += 1;
        std::thread::sleep(Duration::from_millis(150));
    }
    host.wait_state(&id, &["SUCCEEDED"], Duration::from_secs(60));
    let events = host.sse(&id, "");
    let sequences: Vec<u64> = events
        .iter()
        .filter(|e| e.event == "message")
        .map(|e| e.data["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(
        sequences,
        (1..=total).collect::<Vec<u64>>(),
        "every line once, in order"
    );
    let (mut masked, mut clear) = (0, 0);
    for (i, line) in lines(&events).iter().enumerate() {
        let n = i + 1;
        if *line == format!("{n} tok [MASKED:github-token]") {
            masked += 1;
        } else if *line == format!("{n} tok {TOKEN}") {
            clear += 1;
        } else {
            panic!("line {n} was masked by neither chain: {line:?}");
        }
    }
    assert!(swaps >= 4, "the chain was swapped {swaps} times");
    assert!(
        masked > 0 && clear > 0,
        "both chains masked lines: {masked} masked, {clear} clear"
    );
}
