//! Scheduling order end to end, with real hosts and agents: aging lets a
//! low-priority job through a stream of high-priority ones; backfill holds
//! a worker for a job that needs a whole one while small jobs keep
//! flowing; two queues weighted 3:1 share a saturated cluster 75/25.
//!
//! Assertions are about order and shares, read from the jobs' own
//! timestamps and the host's queue figures, so a loaded machine changes
//! how long a test takes, not what it finds.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Agent, Host, post_json};
use serde_json::{Value, json};

/// An RFC 3339 timestamp of a job, as Unix seconds.
fn at(job: &Value, field: &str) -> f64 {
    let text = job[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field}: {job}"));
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap();
    t.unix_timestamp_nanos() as f64 / 1e9
}

/// The CPU capacity of a connected worker, in millicores.
fn cpu_of_a_worker(host: &Host) -> u64 {
    let (_, body) = host.get("/api/v1/workers");
    body["workers"][0]["capacity"]["cpu_millis"]
        .as_u64()
        .unwrap()
}

#[test]
fn aging_lets_a_low_priority_job_through_a_stream_of_high_priority_ones() {
    // 600 points a minute: a priority-0 job is worth a priority-10 job
    // submitted 1 s after it.
    let host = Host::start_with(&["--aging-per-minute", "600"]);
    let _agent = Agent::start(&host, "a1", "", 1);
    host.wait_workers(1);
    let stop = AtomicBool::new(false);
    let (low, high) = std::thread::scope(|scope| {
        let stream = scope.spawn(|| {
            let mut ids = Vec::new();
            let started = Instant::now();
            // Twice as fast as one slot runs them: the queue only grows.
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                ids.push(host.submit_ok(&json!({"command": "sleep 0.1", "priority": 10})));
                std::thread::sleep(Duration::from_millis(50));
            }
            ids
        });
        std::thread::sleep(Duration::from_millis(600));
        let low = host.submit_ok(&json!({"args": ["true"], "priority": 0}));
        let job = host.wait_state(&low, &["SUCCEEDED"], Duration::from_secs(60));
        // Some more high-priority jobs after it started, then stop.
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        (job, stream.join().unwrap())
    });
    let (created, scheduled) = (at(&low, "created_at"), at(&low, "scheduled_at"));
    let mut ahead_of_it = 0;
    let mut behind_it = 0;
    for id in &high {
        let job = host.job(id);
        let c = at(&job, "created_at");
        let s = job["scheduled_at"]
            .as_str()
            .map(|_| at(&job, "scheduled_at"));
        if c >= created + 1.0 {
            // Exact, whatever the load: at any moment T, the low job's rank
            // is 10 (T - created) and this one's 10 + 10 (T - c), lower.
            assert!(
                s.is_none_or(|s| s > scheduled),
                "a priority-10 job submitted {:.3} s after the aged job went first",
                c - created
            );
            behind_it += 1;
        } else if c > created && s.is_some_and(|s| s < scheduled) {
            ahead_of_it += 1;
        }
    }
    assert!(behind_it > 0, "no priority-10 job came late enough to test");
    assert!(
        ahead_of_it > 0,
        "priority did not matter: no newer priority-10 job went ahead of the priority-0 one"
    );
    let waited = scheduled - created;
    println!("priority 0 waited {waited:.2} s behind {ahead_of_it} newer priority-10 jobs");
    // The promise: 10 points / 600 per minute = 1 s, plus a slot freeing
    // (0.1 s jobs) and a loaded machine's slack.
    assert!(waited < 1.0 + 10.0, "waited {waited:.2} s");
    assert_eq!(low["effective_priority"], json!(0), "not pending: its own");
}

#[test]
fn a_job_needing_a_whole_worker_starts_while_small_jobs_keep_flowing() {
    let host = Host::start_with(&["--backfill-after-secs", "1"]);
    let _a = Agent::start(&host, "a1", "", 4);
    let _b = Agent::start(&host, "b1", "", 4);
    host.wait_workers(2);
    let cpu = cpu_of_a_worker(&host);
    // 1,000 small jobs: 8 slots of 0.3 s jobs take ~40 s to run them all,
    // so there is always one ready for any hole.
    let small = json!({"command": "sleep 0.3", "resources": {"cpu_millis": cpu / 4}});
    let (status, body) = post_json(
        &host.url("/api/v1/jobs/batch"),
        &json!({"jobs": vec![small; 1000]}),
    );
    assert_eq!(status, 201, "{body}");
    let smalls: Vec<String> = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["id"].as_str().unwrap().to_owned())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // First in line, and it fits nowhere while small jobs hold both workers.
    let big = host.submit_ok(&json!({
        "args": ["true"], "priority": 5, "resources": {"cpu_millis": cpu},
    }));
    let big = host.wait_state(&big, &["SUCCEEDED"], Duration::from_secs(120));
    let (created, started) = (at(&big, "created_at"), at(&big, "started_at"));
    let waited = started - created;
    let held = big["worker_id"].as_str().unwrap().to_owned();
    let (mut during_elsewhere, mut after) = (0, 0);
    for id in &smalls {
        let job = host.job(id);
        let Some(s) = job["scheduled_at"]
            .as_str()
            .map(|_| at(&job, "scheduled_at"))
        else {
            continue;
        };
        if s > created && s < started && job["worker_id"] != json!(held) {
            during_elsewhere += 1;
        }
        if s > started {
            after += 1;
        }
    }
    println!(
        "the whole-worker job waited {waited:.2} s; {during_elsewhere} small jobs started elsewhere meanwhile"
    );
    // The bound: the threshold, then the held worker's running jobs
    // ending (0.3 s), plus a loaded machine's slack. Without a held
    // worker it waits for the 1,000 small jobs to be placed (~40 s).
    assert!(waited < 1.0 + 0.3 + 15.0, "waited {waited:.2} s");
    assert!(after > 0, "small jobs ran out before it started");
    assert!(
        during_elsewhere > 0,
        "no small job used the other worker while a worker was held"
    );
}

#[test]
fn two_saturating_queues_weighted_3_to_1_share_the_slots_75_25() {
    let host = Host::start_with(&["--queue-weights", "batch=3,web=1"]);
    let _a = Agent::start(&host, "a1", "", 4);
    let _b = Agent::start(&host, "b1", "", 4);
    host.wait_workers(2);
    // A minute of 0.2 s jobs on 8 slots is at most 2,400 of them.
    for _ in 0..3 {
        for queue in ["web", "batch"] {
            let jobs = vec![json!({"command": "sleep 0.2", "queue": queue}); 1000];
            let (status, body) = post_json(&host.url("/api/v1/jobs/batch"), &json!({"jobs": jobs}));
            assert_eq!(status, 201, "{body}");
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let slots = |queues: &Value, name: &str| -> u64 {
        queues["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == json!(name))
            .unwrap()["slots_held"]
            .as_u64()
            .unwrap()
    };
    let (mut batch, mut web) = (0u64, 0u64);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let (status, queues) = host.get("/api/v1/queues");
        assert_eq!(status, 200, "{queues}");
        batch += slots(&queues, "batch");
        web += slots(&queues, "web");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, queues) = host.get("/api/v1/queues");
    for name in ["batch", "web"] {
        let queue = queues["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == json!(name))
            .unwrap();
        assert!(
            queue["pending"].as_u64().unwrap() > 0,
            "{name} ran dry: {queues}"
        );
    }
    let share = batch as f64 / (batch + web) as f64;
    println!(
        "batch held {:.1} % of the job-slots over a minute",
        share * 100.0
    );
    assert!((0.70..=0.80).contains(&share), "batch held {share:.3}");
}

#[test]
fn a_queue_is_shown_with_its_weight_and_an_unknown_one_is_refused() {
    let host = Host::start_with(&["--queue-weights", "batch=3"]);
    let (status, queues) = host.get("/api/v1/queues");
    assert_eq!(status, 200);
    assert_eq!(
        queues["queues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| (q["name"].as_str().unwrap(), q["weight"].as_u64().unwrap()))
            .collect::<Vec<_>>(),
        [("default", 1), ("batch", 3)]
    );
    // The document this host serves lists them for a request body.
    let (status, doc) = host.get("/api/v1/openapi.json");
    assert_eq!(status, 200);
    let submit = &doc["components"]["schemas"]["SubmitJob"]["allOf"][0]["properties"]["queue"];
    assert_eq!(
        submit["enum"],
        json!(["default", "batch", null]),
        "{submit}"
    );
    let id = host.submit_ok(&json!({"args": ["true"], "queue": "batch", "priority": 4}));
    let job = host.job(&id);
    assert_eq!(job["queue"], json!("batch"));
    assert_eq!(job["effective_priority"], json!(4));
    let (_, queues) = host.get("/api/v1/queues");
    assert_eq!(queues["queues"][1]["pending"], json!(1));
    // Unknown and malformed queues: 400, naming the configured ones, and
    // nothing stored.
    for (queue, needle) in [
        ("nightly", "configured: default, batch"),
        ("Bad Name", "a-z"),
    ] {
        let (status, body) = host.submit(&json!({"args": ["true"], "queue": queue}));
        assert_eq!(status, 400, "{body}");
        common::assert_error_shape(&body, "VALIDATION_ERROR");
        assert!(body.to_string().contains(needle), "{body}");
    }
    let (status, body) = post_json(
        &host.url("/api/v1/jobs/batch"),
        &json!({"jobs": [{"args": ["true"]}, {"args": ["true"], "queue": "nightly"}]}),
    );
    assert_eq!(status, 400, "{body}");
    let (_, list) = host.get("/api/v1/jobs");
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "{list}");
}
