//! `POST /api/v1/jobs/batch`: one durable commit for up to 1,000 jobs,
//! all or nothing.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::time::Duration;

use common::{Agent, Host, assert_error_shape, lines, post_json, script};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

fn batch_url(host: &Host) -> String {
    host.url("/api/v1/jobs/batch")
}

fn stored_count(host: &Host) -> usize {
    let (status, page) = host.get("/api/v1/jobs?limit=1000");
    assert_eq!(status, 200, "{page}");
    page["jobs"].as_array().unwrap().len()
}

#[test]
fn a_batch_of_1000_is_durable_before_its_201() {
    let mut host = Host::start();
    let jobs: Vec<Value> = (0..1000)
        .map(|i| json!({ "name": format!("job-{i}"), "command": "true", "priority": i % 7 }))
        .collect();
    let (status, body) = post_json(&batch_url(&host), &json!({ "jobs": jobs }));
    assert_eq!(status, 201, "{body}");
    // Killed right after the answer: nothing acknowledged may be lost.
    host.signal(Signal::SIGKILL);
    let created = body["jobs"].as_array().unwrap();
    assert_eq!(created.len(), 1000);
    for (i, job) in created.iter().enumerate() {
        assert_eq!(job["name"], json!(format!("job-{i}")), "order kept");
        assert_eq!(job["state"], json!("PENDING"));
    }
    host.restart(Signal::SIGKILL);
    for (i, job) in created.iter().enumerate() {
        let stored = host.job(job["id"].as_str().unwrap());
        assert_eq!(stored["name"], json!(format!("job-{i}")));
        assert_eq!(stored["priority"], json!(i % 7));
        assert_eq!(stored["state"], json!("PENDING"));
    }
    assert_eq!(stored_count(&host), 1000, "no job twice");
}

#[test]
fn batch_jobs_run_once_each() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "", 4);
    host.wait_workers(1);
    let jobs: Vec<Value> = (0..20)
        .map(|i| script(&format!("echo batch item {i}")))
        .collect();
    let (status, body) = post_json(&batch_url(&host), &json!({ "jobs": jobs }));
    assert_eq!(status, 201, "{body}");
    for (i, job) in body["jobs"].as_array().unwrap().iter().enumerate() {
        let id = job["id"].as_str().unwrap();
        host.wait_state(id, &["SUCCEEDED"], Duration::from_secs(60));
        assert_eq!(lines(&host.sse(id, "")), vec![format!("batch item {i}")]);
        assert_eq!(host.job(id)["attempt"], json!(1));
    }
}

#[test]
fn one_bad_item_refuses_the_batch_and_names_its_index() {
    let host = Host::start();
    let jobs = json!([
        { "command": "true" },
        { "command": "true" },
        { "command": "true" },
        { "name": "no command" },
        { "command": "true", "priority": "high" },
        { "command": "true", "secrets": { "TOKEN": "short" } },
    ]);
    let (status, body) = post_json(&batch_url(&host), &json!({ "jobs": jobs }));
    assert_eq!(status, 400, "{body}");
    assert_error_shape(&body, "VALIDATION_ERROR");
    let details = body["details"].as_array().unwrap();
    let indexes: Vec<u64> = details
        .iter()
        .map(|d| d["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, vec![3, 4, 5], "{body}");
    assert_eq!(details[0]["field"], json!("jobs[3].command"));
    assert_eq!(details[2]["field"], json!("jobs[5].secrets.TOKEN"));
    assert!(
        details[1]["problem"]
            .as_str()
            .unwrap()
            .contains("invalid type"),
        "{body}"
    );
    assert_eq!(stored_count(&host), 0, "nothing stored");
}

#[test]
fn batch_size_and_shape_are_checked() {
    let host = Host::start();
    let url = batch_url(&host);
    for (body, field) in [
        (json!({ "jobs": [] }), "jobs"),
        (
            json!({ "jobs": vec![json!({ "command": "true" }); 1001] }),
            "jobs",
        ),
    ] {
        let (status, answer) = post_json(&url, &body);
        assert_eq!(status, 400, "{answer}");
        assert_error_shape(&answer, "VALIDATION_ERROR");
        assert_eq!(answer["details"][0]["field"], json!(field));
    }
    let (status, answer) = post_json(&url, &json!({ "jobs": [], "extra": 1 }));
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = post_json(&url, &json!([{ "command": "true" }]));
    assert_eq!(status, 400, "{answer}");
    assert_eq!(stored_count(&host), 0, "nothing stored");
}
