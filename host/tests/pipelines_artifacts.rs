//! Pipeline artifacts over real hosts and agents: a step's output reaches
//! the step that takes it as an input byte for byte (checked by both
//! steps' own `sha256sum`, and again through the download API); an output
//! over the host's limit, or missing, fails its step with a reason that
//! says so; bad inputs are refused before anything is stored; with two
//! hosts on PostgreSQL an output sent through one is fetched through the
//! other.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::io::Read;
use std::time::Duration;

use common::pg::Database;
use common::pipeline::{self, step};
use common::{Agent, Host, assert_error_shape};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const LONG: Duration = Duration::from_secs(300);
/// 50 MB, as the issue asks.
const BIG: u64 = 50_000_000;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Step `a` writes `size` random bytes to `out/big.bin` and records their
/// digest; step `b` takes that output as an input and records the digest
/// and size of what it found. `labels` place each step (`[a, b]`).
fn producer_consumer(mark: &std::path::Path, size: u64, labels: &[Value; 2]) -> Value {
    json!({
        "name": "art",
        "env": { "MARK": mark.to_str().unwrap() },
        "steps": [
            {
                "name": "a",
                "outputs": ["out/big.bin"],
                "labels": labels[0],
                "command": format!(
                    "mkdir -p out\nhead -c {size} /dev/urandom > out/big.bin\n\
                     sha256sum out/big.bin | cut -d' ' -f1 > \"$MARK/a.sum\""
                ),
            },
            {
                "name": "b",
                "needs": ["a"],
                "labels": labels[1],
                "inputs": [{ "step": "a", "output": "out/big.bin" }],
                "command": "sha256sum out/big.bin | cut -d' ' -f1 > \"$MARK/b.sum\"\n\
                            stat -c %s out/big.bin > \"$MARK/b.size\"",
            },
        ],
    })
}

fn read_trimmed(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// Downloads an artifact through the API; answers its size, the digest of
/// the bytes and the `ETag`.
fn download(host: &Host, url: &str) -> (u64, String, String) {
    let response = ureq::get(&host.url(url)).call().expect("download");
    assert_eq!(response.status().as_u16(), 200);
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned();
    let mut reader = response.into_body().into_reader();
    let (mut hasher, mut size, mut buffer) = (Sha256::new(), 0u64, vec![0u8; 1 << 20]);
    loop {
        let n = reader.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    (size, hex(&hasher.finalize()), etag)
}

/// Checks what both steps recorded and what the API serves.
fn assert_arrived_intact(host: &Host, id: &str, mark: &std::path::Path) {
    let sent = read_trimmed(&mark.join("a.sum"));
    assert_eq!(read_trimmed(&mark.join("b.sum")), sent, "b saw other bytes");
    assert_eq!(read_trimmed(&mark.join("b.size")), BIG.to_string());
    let (status, list) = host.get(&format!("/api/v1/pipelines/{id}/artifacts"));
    assert_eq!(status, 200, "{list}");
    let artifacts = list["artifacts"].as_array().unwrap();
    assert_eq!(artifacts.len(), 1, "{list}");
    let artifact = &artifacts[0];
    assert_eq!(artifact["step"], json!("a"));
    assert_eq!(artifact["path"], json!("out/big.bin"));
    assert_eq!(artifact["size"], json!(BIG));
    assert_eq!(artifact["sha256"], json!(sent));
    let (size, digest, etag) = download(host, artifact["url"].as_str().unwrap());
    assert_eq!(
        (size, digest.as_str(), etag.as_str()),
        (BIG, sent.as_str(), sent.as_str())
    );
}

#[test]
fn a_50_mb_output_arrives_byte_identical_in_the_next_step() {
    let host = Host::start_with(&["--max-artifact-bytes", "60000000"]);
    let _agent = Agent::start(&host, "a1", "", 2);
    host.wait_workers(1);
    let mark = tempfile::tempdir().unwrap();
    let body = producer_consumer(mark.path(), BIG, &[json!({}), json!({})]);
    let id = pipeline::create_ok(&host, &body);
    let done = pipeline::wait(&host, &id, &["SUCCEEDED", "FAILED"], LONG);
    assert_eq!(done["state"], json!("SUCCEEDED"), "{done}");
    assert_eq!(step(&done, "a")["outputs"], json!(["out/big.bin"]));
    assert_arrived_intact(&host, &id, mark.path());
    // Kept under the data directory (redb mode): one blob of 50 MB.
    let blobs: Vec<u64> = std::fs::read_dir(host.data_dir.join("artifacts"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.metadata().unwrap().len())
        .collect();
    assert_eq!(blobs, vec![BIG]);
}

/// Runs a one-step pipeline (plus a dependent step) and answers the
/// failed step's job.
fn failed_step(host: &Host, command: &str, output: &str) -> (Value, Value) {
    let body = json!({
        "steps": [
            { "name": "make", "outputs": [output], "command": command },
            { "name": "use", "needs": ["make"], "inputs": [{ "step": "make", "output": output }], "command": "true" },
        ],
    });
    let id = pipeline::create_ok(host, &body);
    let done = pipeline::wait(host, &id, &["SUCCEEDED", "FAILED"], LONG);
    assert_eq!(done["state"], json!("FAILED"), "{done}");
    assert_eq!(step(&done, "use")["state"], json!("SKIPPED"), "{done}");
    let make = step(&done, "make");
    assert_eq!(make["state"], json!("FAILED"), "{done}");
    (done.clone(), host.job(make["job_id"].as_str().unwrap()))
}

#[test]
fn an_output_over_the_limit_or_missing_fails_its_step_with_the_reason() {
    let host = Host::start_with(&["--max-artifact-bytes", "1000"]);
    let _agent = Agent::start(&host, "a1", "", 2);
    host.wait_workers(1);

    let (_, job) = failed_step(&host, "head -c 2000 /dev/zero > big.bin", "big.bin");
    let reason = job["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("\"big.bin\" is 2000 bytes, over the host's limit of 1000 bytes"),
        "{job}"
    );
    assert!(
        reason.starts_with("exited 0 but its outputs were not delivered"),
        "{job}"
    );

    let (pipeline, job) = failed_step(&host, "echo nothing written", "dist/app.bin");
    let reason = job["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("output \"dist/app.bin\" does not exist in the step's directory"),
        "{job}"
    );
    let (status, list) = host.get(&format!(
        "/api/v1/pipelines/{}/artifacts",
        pipeline["id"].as_str().unwrap()
    ));
    assert_eq!(status, 200);
    assert_eq!(list["artifacts"], json!([]), "nothing kept: {list}");
}

#[test]
fn bad_outputs_and_inputs_are_refused_naming_the_step_and_nothing_is_stored() {
    let host = Host::start();
    let cases = [
        (
            json!([{ "name": "a", "command": "true" },
                   { "name": "b", "needs": ["a"], "inputs": [{ "step": "zz", "output": "x" }], "command": "true" }]),
            "b",
            "input from unknown step \"zz\"",
        ),
        (
            json!([{ "name": "a", "outputs": ["x"], "command": "true" },
                   { "name": "b", "inputs": [{ "step": "a", "output": "x" }], "command": "true" }]),
            "b",
            "input from step \"a\", which is not one of its needs",
        ),
        (
            json!([{ "name": "a", "outputs": ["x"], "command": "true" },
                   { "name": "b", "needs": ["a"], "inputs": [{ "step": "a", "output": "y" }], "command": "true" }]),
            "b",
            "step \"a\" declares no output \"y\"",
        ),
        (
            json!([{ "name": "a", "outputs": ["../etc/x"], "command": "true" }]),
            "a",
            "outputs stay inside the step's directory",
        ),
    ];
    for (steps, step_name, problem) in cases {
        let (status, body) = pipeline::create(&host, &json!({ "steps": steps }));
        assert_eq!(status, 400, "{body}");
        assert_error_shape(&body, "VALIDATION_ERROR");
        let details = body["details"].as_array().unwrap();
        assert!(
            details.iter().any(|d| d["step"] == json!(step_name)
                && d["problem"].as_str().unwrap_or_default().contains(problem)),
            "expected {problem:?} about {step_name}: {body}"
        );
    }
    let (_, list) = host.get("/api/v1/pipelines");
    assert_eq!(list["pipelines"], json!([]), "nothing stored: {list}");
}

#[test]
fn on_postgres_an_output_sent_through_one_host_is_fetched_through_the_other() {
    let Some(db) = Database::create("artifacts") else {
        return;
    };
    // Hosts sharing a database share the key file: an attempt's artifact
    // grant (like a sealed secret) is checked by whichever host it meets.
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("secrets.key");
    let key = key.to_str().unwrap();
    let a = db.host(&["--secrets-key-file", key]);
    let b = db.host(&["--secrets-key-file", key]);
    let _on_a = Agent::start(&a, "on-a", "side=a", 2);
    let _on_b = Agent::start(&b, "on-b", "side=b", 2);
    a.wait_workers(1);
    b.wait_workers(1);
    let mark = tempfile::tempdir().unwrap();
    let body = producer_consumer(
        mark.path(),
        BIG,
        &[json!({ "side": "a" }), json!({ "side": "b" })],
    );
    let id = pipeline::create_ok(&a, &body);
    let done = pipeline::wait(&b, &id, &["SUCCEEDED", "FAILED"], LONG);
    assert_eq!(done["state"], json!("SUCCEEDED"), "{done}");
    a.wait_log("artifact stored", LONG);
    assert_arrived_intact(&b, &id, mark.path());
}
