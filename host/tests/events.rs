//! `GET /api/v1/events`: the durable event log as SSE. A subscriber that
//! loses its host mid-stream and resumes with `Last-Event-ID` gets every
//! transition exactly once; filters and bad input.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Agent, Host, SseEvent, assert_error_shape, labels, script};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// Reads `/api/v1/events{query}` and hands `each` every complete event
/// until it returns false or the connection ends. Fails the test if no
/// answer or event arrives for a minute.
fn follow(host: &Host, query: &str, last_id: Option<&str>, each: impl FnMut(SseEvent) -> bool) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut request = agent.get(&host.url(&format!("/api/v1/events{query}")));
    if let Some(id) = last_id {
        request = request.header("last-event-id", id);
    }
    let response = request.call().expect("events request");
    assert_eq!(response.status().as_u16(), 200);
    read_events(response.into_body().into_reader(), each);
}

/// Parses SSE from `reader`, handing `each` every complete event until it
/// returns false or the stream ends (or breaks: a killed host).
fn read_events(reader: impl std::io::Read, mut each: impl FnMut(SseEvent) -> bool) {
    let reader = BufReader::new(reader);
    let (mut event, mut id, mut data) = (String::new(), None, String::new());
    for line in reader.lines() {
        let Ok(line) = line else { return };
        if line.is_empty() {
            if !data.is_empty() {
                let parsed = SseEvent {
                    event: std::mem::take(&mut event),
                    id: id.take(),
                    data: serde_json::from_str(&data).expect("event data is json"),
                };
                data.clear();
                if !each(parsed) {
                    return;
                }
            }
        } else if let Some(v) = line.strip_prefix("event:") {
            event = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
}

fn event_id(event: &SseEvent) -> (u64, u64) {
    let raw = event.id.as_deref().expect("every event has an id");
    assert_eq!(event.data["id"], json!(raw));
    match raw.split_once('-') {
        Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
        None => (raw.parse().unwrap(), 0),
    }
}

#[test]
fn a_subscriber_resuming_after_a_host_restart_gets_every_transition_once() {
    // Fixed ports, so the agent finds the host again after the restart.
    let grpc = common::free_local_addr();
    let mut host = Host::start_with(&["--grpc-addr", &grpc]);
    let _agent = Agent::start(&host, "a1", "", 4);
    host.wait_workers(1);

    let first: Arc<Mutex<Vec<SseEvent>>> = Arc::default();
    let reader = {
        let (sink, url_host) = (Arc::clone(&first), host.url(""));
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let response = agent
                .get(&format!("{url_host}/api/v1/events"))
                .call()
                .unwrap();
            // Read until the host dies under it.
            read_events(response.into_body().into_reader(), |event| {
                sink.lock().unwrap().push(event);
                true
            });
        })
    };
    let mut jobs: Vec<String> = (0..6)
        .map(|i| host.submit_ok(&script(&format!("sleep 0.{i}; echo {i}"))))
        .collect();
    host.wait_state(&jobs[0], &["SUCCEEDED"], Duration::from_secs(60));
    jobs.extend((0..4).map(|i| host.submit_ok(&script(&format!("sleep 1; echo late {i}")))));
    // Cut mid-stream: some jobs done, some running, some pending.
    host.restart(Signal::SIGKILL);
    reader.join().unwrap();
    let before = first.lock().unwrap().clone();
    assert!(
        before.iter().any(|e| e.event == "job.finished"),
        "the first connection saw work: {}",
        before.len()
    );
    let last_id = before.last().unwrap().id.clone().unwrap();

    for id in &jobs {
        host.wait_state(id, &["SUCCEEDED"], Duration::from_secs(90));
    }
    let wanted: HashSet<&str> = jobs.iter().map(String::as_str).collect();
    let finished_job = |event: &SseEvent| {
        (event.event == "job.finished")
            .then(|| event.data["job_id"].as_str().map(str::to_owned))
            .flatten()
    };
    let mut finished: HashSet<String> = before.iter().filter_map(finished_job).collect();
    let mut after = Vec::new();
    follow(&host, "", Some(&last_id), |event| {
        finished.extend(finished_job(&event));
        after.push(event);
        !wanted.iter().all(|j| finished.contains(*j))
    });

    // Ids are unique and increase across both connections.
    let all: Vec<&SseEvent> = before.iter().chain(&after).collect();
    let ids: Vec<(u64, u64)> = all.iter().map(|e| event_id(e)).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    // Each job's events form one unbroken chain of states from PENDING to
    // its final state: a transition missed or delivered twice breaks it.
    let mut chains: BTreeMap<&str, Vec<&SseEvent>> = BTreeMap::new();
    for event in &all {
        if let Some(job) = event.data["job_id"].as_str() {
            chains.entry(job).or_default().push(event);
        }
    }
    for id in &jobs {
        let chain = &chains[id.as_str()];
        assert_eq!(chain[0].event, "job.created", "{id}");
        assert_eq!(chain[0].data["state"], json!("PENDING"));
        for pair in chain.windows(2) {
            assert_eq!(
                pair[1].data["previous_state"],
                pair[0].data["state"],
                "job {id}: {:?}",
                chain.iter().map(|e| &e.data).collect::<Vec<_>>()
            );
        }
        let last = chain.last().unwrap();
        assert_eq!(last.event, "job.finished");
        assert_eq!(last.data["state"], host.job(id)["state"]);
        assert!(chain.iter().filter(|e| e.event == "job.finished").count() == 1);
    }
    // The agent came back to the restarted host: a worker event after the
    // cut.
    assert!(
        after.iter().any(|e| e.event == "worker.connected"),
        "{:?}",
        after.iter().map(|e| &e.event).collect::<Vec<_>>()
    );
}

#[test]
fn filters_pick_kinds_and_labels_and_bad_input_is_refused() {
    let host = Host::start();
    let _agent = Agent::start(&host, "a1", "team=red", 2);
    host.wait_workers(1);
    let mut red = script("echo red");
    red["labels"] = json!(labels(&[("team", "red")]));
    let blue = script("echo blue");
    let red_id = host.submit_ok(&red);
    let blue_id = host.submit_ok(&blue);
    host.wait_state(&red_id, &["SUCCEEDED"], Duration::from_secs(60));
    let mut seen: Vec<SseEvent> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    follow(
        &host,
        "?kind=job.finished,worker&label=team=red",
        None,
        |e| {
            seen.push(e);
            assert!(Instant::now() < deadline);
            !seen.iter().any(|e| e.event == "job.finished")
        },
    );
    let kinds: Vec<&str> = seen.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, vec!["worker.connected", "job.finished"], "{seen:?}");
    assert_eq!(seen[1].data["job_id"], json!(red_id));
    assert_eq!(seen[0].data["labels"], json!({ "team": "red" }));
    assert!(!seen.iter().any(|e| e.data["job_id"] == json!(blue_id)));

    for (query, field) in [
        ("?kind=jobs", "kind"),
        ("?label=team", "label"),
        ("?after=abc", "after"),
    ] {
        let (status, body) = host.get(&format!("/api/v1/events{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert_error_shape(&body, "VALIDATION_ERROR");
        assert_eq!(body["details"][0]["field"], json!(field), "{body}");
    }
    let (status, body): (u16, Value) = host.get("/api/v1/events?since=1");
    assert_eq!(status, 400, "{body}");
}
