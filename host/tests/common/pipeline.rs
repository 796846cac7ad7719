//! Pipeline helpers: create and wait over the API, and the marker files
//! steps write (one line `start NS` and one `end NS` per run, appended),
//! from which tests read how often and in which order steps ran.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Host, post_json, wait_until};

/// `POST /api/v1/pipelines`.
pub fn create(host: &Host, body: &Value) -> (u16, Value) {
    post_json(&host.url("/api/v1/pipelines"), body)
}

/// Creates and returns the id, asserting 201.
pub fn create_ok(host: &Host, body: &Value) -> String {
    let (status, pipeline) = create(host, body);
    assert_eq!(status, 201, "{pipeline}");
    pipeline["id"].as_str().unwrap().to_owned()
}

/// `GET /api/v1/pipelines/{id}`, asserting 200.
pub fn get(host: &Host, id: &str) -> Value {
    let (status, pipeline) = host.get(&format!("/api/v1/pipelines/{id}"));
    assert_eq!(status, 200, "{pipeline}");
    pipeline
}

/// Waits until the pipeline is in one of `states`; answers it.
pub fn wait(host: &Host, id: &str, states: &[&str], timeout: Duration) -> Value {
    let mut last = Value::Null;
    wait_until(&format!("pipeline {id} in {states:?}"), timeout, || {
        let (status, pipeline) = host.get(&format!("/api/v1/pipelines/{id}"));
        let done = status == 200
            && states
                .iter()
                .any(|s| pipeline["state"].as_str() == Some(*s));
        last = pipeline;
        done
    });
    last
}

/// The state of step `name` of a pipeline view.
pub fn step<'a>(pipeline: &'a Value, name: &str) -> &'a Value {
    pipeline["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == json!(name))
        .unwrap_or_else(|| panic!("no step {name} in {pipeline}"))
}

/// A step body whose script marks its start and end in `$MARK/NAME`
/// around `body`.
pub fn marked(name: &str, needs: &[&str], body: &str) -> Value {
    json!({
        "name": name,
        "needs": needs,
        "command": format!(
            "echo start $(date +%s%N) >> \"$MARK/{name}\"\n{body}\necho end $(date +%s%N) >> \"$MARK/{name}\""
        ),
    })
}

/// One run of a step, read from its marker file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// When it started (ns since the epoch).
    pub start: u128,
    /// When it ended, if it did.
    pub end: Option<u128>,
}

/// Every run of every step that wrote a marker in `dir`, by step name.
pub fn runs(dir: &Path) -> BTreeMap<String, Vec<Run>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let mut runs: Vec<Run> = Vec::new();
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("start", ns)) => runs.push(Run {
                    start: ns.parse().unwrap(),
                    end: None,
                }),
                Some(("end", ns)) => {
                    let run = runs.last_mut().expect("end without start");
                    run.end = Some(ns.parse().unwrap());
                }
                _ => panic!("bad marker line {line:?} in {name}"),
            }
        }
        out.insert(name, runs);
    }
    out
}

/// Asserts every step in `needs` (step → its needs) ran exactly once,
/// starting after each of its needs had ended.
pub fn assert_once_in_order(dir: &Path, needs: &BTreeMap<String, Vec<String>>) {
    let runs = runs(dir);
    for (step, step_needs) in needs {
        let mine = runs.get(step).unwrap_or_else(|| panic!("{step} never ran"));
        assert_eq!(mine.len(), 1, "{step} ran {} times: {mine:?}", mine.len());
        assert!(mine[0].end.is_some(), "{step} did not end: {mine:?}");
        for need in step_needs {
            let end = runs[need][0].end.unwrap();
            assert!(
                mine[0].start >= end,
                "{step} started at {} before its need {need} ended at {end}",
                mine[0].start
            );
        }
    }
    assert_eq!(runs.len(), needs.len(), "steps that ran: {:?}", runs.keys());
}

/// True when the two runs overlapped in time.
pub fn overlapped(a: Run, b: Run) -> bool {
    a.start < b.end.unwrap_or(u128::MAX) && b.start < a.end.unwrap_or(u128::MAX)
}

/// The event log read to its present end (`follow=false` in `query`).
pub fn events(host: &Host, query: &str) -> Vec<super::SseEvent> {
    sse_until_end(host, &format!("/api/v1/events?{query}"))
}

/// The server-sent events at `path`, read until the host ends the stream
/// (a minute at most).
pub fn sse_until_end(host: &Host, path: &str) -> Vec<super::SseEvent> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let response = agent.get(&host.url(path)).call().expect("events request");
    assert_eq!(response.status().as_u16(), 200);
    super::parse_sse(response.into_body().into_reader())
}

/// Each step's needs, by step name, as the bodies `steps` say.
pub fn needs_of(steps: &[Value]) -> BTreeMap<String, Vec<String>> {
    steps
        .iter()
        .map(|s| {
            let needs = s["needs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect();
            (s["name"].as_str().unwrap().to_owned(), needs)
        })
        .collect()
}
