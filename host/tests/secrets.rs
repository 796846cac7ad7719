//! A job's secrets never leave the agent in its output: real `hodei` and
//! `hodei-agent` processes, the secret printed in the usual ways, checked in
//! the stored log (SSE) and in the job's JSON.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::time::Duration;

use common::{Agent, Host, lines};
use serde_json::{Value, json};

const SECRET: &str = "s3cr3t-Value-42/+&\"\\x";
const MULTI_LINE: [&str; 3] = ["line-one-alpha", "line-two-bravo", "line-three-charlie"];

/// Runs `script` with the secrets `S` and `M` and returns its job JSON and
/// its log lines, (stream, line).
fn run_with_secrets(host: &Host, script: &str) -> (Value, Vec<(String, String)>) {
    let id = host.submit_ok(&json!({
        "command": script,
        "secrets": { "S": SECRET, "M": MULTI_LINE.join("\n") },
    }));
    let job = host.wait_state(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(30));
    assert_eq!(job["state"], json!("SUCCEEDED"), "{job}");
    let events = host.sse(&id, "");
    assert_eq!(events.last().unwrap().event, "done");
    let streamed: Vec<(String, String)> = events
        .iter()
        .filter(|e| e.event == "message")
        .map(|e| {
            (
                e.data["stream"].as_str().unwrap().to_owned(),
                e.data["line"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let raw = format!("{job}\n{:?}", lines(&events));
    // The base64 of the secret's first 15 bytes, part of every offset's.
    for leaked in [SECRET, "czNjcjN0LVZhbHVlLTQy"]
        .into_iter()
        .chain(MULTI_LINE)
    {
        assert!(!raw.contains(leaked), "{leaked:?} leaked: {raw}");
    }
    (job, streamed)
}

#[test]
fn secrets_are_masked_in_every_common_form() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 2);
    let (_, log) = run_with_secrets(
        &host,
        r#"printf '%s\n' "$S"
printf '%s' "${S:0:5}"; sleep 0.1; printf '%s\n' "${S:5}"
printf '%s' "$S" | base64
printf '%s' "x$S" | base64
printf '%s' "xy$S" | base64
python3 -c 'import urllib.parse,os;print(urllib.parse.quote(os.environ["S"],safe=""))'
python3 -c 'import json,os;print(json.dumps({"k":os.environ["S"]}))'
echo "err $S" >&2
printf '%s\n' "$M"
printf '%s\n' "$M" | while read -r line; do echo "line: $line"; done
"#,
    );
    let stdout: Vec<&str> = log
        .iter()
        .filter(|(stream, _)| stream == "stdout")
        .map(|(_, line)| line.as_str())
        .collect();
    let stderr: Vec<&str> = log
        .iter()
        .filter(|(stream, _)| stream == "stderr")
        .map(|(_, line)| line.as_str())
        .collect();
    assert_eq!(stdout[..2], ["***", "***"], "whole, then split: {log:?}");
    assert!(
        stdout[2..5].iter().all(|line| line.contains("***")),
        "{log:?}"
    );
    assert_eq!(stdout[5], "***", "URL-encoded");
    assert_eq!(stdout[6], r#"{"k": "***"}"#, "JSON");
    assert_eq!(stdout[7], "***", "multi-line, whole");
    assert_eq!(stdout[8..], ["line: ***", "line: ***", "line: ***"]);
    assert_eq!(stderr, ["err ***"]);
    assert!(
        log.iter().all(|(_, line)| !line.contains("s3cr3t")),
        "{log:?}"
    );
}

#[test]
fn text_sharing_only_a_prefix_with_a_secret_is_left_intact() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 2);
    let (_, log) = run_with_secrets(
        &host,
        "echo 's3cr3t-Val'; printf 's3cr3t-Value-4'; sleep 0.1; echo '2!'; echo line-one-alph",
    );
    let lines: Vec<&str> = log.iter().map(|(_, line)| line.as_str()).collect();
    assert_eq!(lines, ["s3cr3t-Val", "s3cr3t-Value-42!", "line-one-alph"]);
}
