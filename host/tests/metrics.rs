//! `/metrics` against a real host and agent: scraped before and after known
//! work, the counters moved by exactly that work, and the text is what
//! Prometheus reads (content type, `# EOF`).
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Agent, Host, script};

/// The scrape's text, checked by `promtool check metrics` (Prometheus'
/// own linter) when it is installed (scripts/promtool.sh); under CI=true
/// it must be.
fn promtool_check(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) => {
            assert!(
                std::env::var("CI").is_err(),
                "promtool is missing under CI ({err}): scripts/promtool.sh installs it"
            );
            eprintln!("skipping promtool check: {err} (scripts/promtool.sh installs it)");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every sample line of a scrape: `name{labels}` → value. Scraped as
/// Prometheus does (OpenMetrics) and as `curl` does (text 0.0.4, which
/// promtool checks); both carry the same samples.
fn scrape(host: &Host) -> BTreeMap<String, f64> {
    let get = |accept: &str| {
        let response = ureq::get(&host.url("/metrics"))
            .header("accept", accept)
            .call()
            .unwrap();
        let content_type = response
            .headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        (content_type, response.into_body().read_to_string().unwrap())
    };
    let (open_type, open) = get("application/openmetrics-text;version=1.0.0,text/plain;q=0.5");
    assert!(
        open_type.starts_with("application/openmetrics-text"),
        "{open_type}"
    );
    assert!(open.ends_with("# EOF\n"), "{open}");
    let (text_type, text) = get("*/*");
    assert!(
        text_type.starts_with("text/plain; version=0.0.4"),
        "{text_type}"
    );
    promtool_check(&text);
    let samples = |body: &str| -> BTreeMap<String, f64> {
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (name, value) = l.rsplit_once(' ').unwrap();
                (name.to_owned(), value.parse().unwrap())
            })
            .collect()
    };
    let (open, text) = (samples(&open), samples(&text));
    assert_eq!(
        open.keys().collect::<Vec<_>>(),
        text.keys().collect::<Vec<_>>(),
        "same series in both formats"
    );
    open
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, name: &str) -> f64 {
    after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
}

#[test]
fn counters_move_by_exactly_the_work_done() {
    let host = Host::start();
    let _agent = Agent::start(&host, "metered", "", 2);
    host.wait_workers(1);
    let before = scrape(&host);
    assert_eq!(before["hodei_agents_connected"], 1.0);

    // Three jobs: two succeed, one fails; each prints two lines of 5 bytes.
    let jobs = [
        script("echo one11; echo two22"),
        script("echo thr33; echo fou44"),
        script("echo fiv55; echo six66; exit 3"),
    ];
    let ids: Vec<String> = jobs.iter().map(|job| host.submit_ok(job)).collect();
    for id in &ids {
        host.wait_state(id, &["SUCCEEDED", "FAILED"], Duration::from_secs(60));
    }
    let after = scrape(&host);

    assert_eq!(delta(&before, &after, "hodei_jobs_submitted_total"), 3.0);
    assert_eq!(
        delta(
            &before,
            &after,
            "hodei_jobs_finished_total{outcome=\"succeeded\"}"
        ),
        2.0
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "hodei_jobs_finished_total{outcome=\"failed\"}"
        ),
        1.0
    );
    assert_eq!(
        delta(&before, &after, "hodei_log_lines_ingested_total"),
        6.0
    );
    assert_eq!(
        delta(&before, &after, "hodei_log_ingested_bytes_total"),
        30.0
    );
    assert_eq!(
        delta(&before, &after, "hodei_job_queue_wait_seconds_count"),
        3.0
    );
    assert_eq!(after["hodei_jobs_queued"], 0.0);
    assert_eq!(after["hodei_agents_connected"], 1.0);
    assert_eq!(after["hodei_agents_draining"], 0.0);
    // No job id in any series.
    for series in after.keys() {
        assert!(
            ids.iter().all(|id| !series.contains(id.as_str())),
            "{series}"
        );
    }
}

#[test]
fn pending_jobs_are_counted_by_reason_with_the_oldest_age() {
    let host = Host::start();
    let _agent = Agent::start(&host, "blue", "team=blue", 1);
    host.wait_workers(1);
    let mut nowhere = script("true");
    nowhere["labels"] = serde_json::json!({ "pool": "nowhere" });
    for _ in 0..3 {
        host.submit_ok(&nowhere);
    }
    // One slot, held by a long job: the next blue job waits for capacity.
    let mut blue = script("echo started; sleep 30");
    blue["labels"] = serde_json::json!({ "team": "blue" });
    let running = host.submit_ok(&blue);
    host.wait_state(&running, &["RUNNING"], Duration::from_secs(60));
    host.submit_ok(&blue);
    std::thread::sleep(Duration::from_millis(300));
    let now = scrape(&host);
    assert_eq!(
        now["hodei_jobs_pending{reason=\"no_matching_worker\"}"],
        3.0
    );
    assert_eq!(
        now["hodei_jobs_pending{reason=\"waiting_for_capacity\"}"],
        1.0
    );
    assert_eq!(now["hodei_jobs_pending{reason=\"backoff\"}"], 0.0);
    assert_eq!(now["hodei_jobs_queued"], 4.0);
    let age = now["hodei_oldest_pending_job_age_seconds"];
    assert!((0.3..120.0).contains(&age), "{age}");
    // Scheduling rounds and store commits were timed.
    assert!(now["hodei_scheduling_round_duration_seconds_count"] >= 1.0);
    assert!(now["hodei_store_commit_duration_seconds_count"] >= 5.0);
    // The default masker chain is Wasm: the running job's line went
    // through it, and its calls are timed per plugin.
    common::wait_until("masker calls in /metrics", Duration::from_secs(30), || {
        scrape(&host).iter().any(|(series, count)| {
            series.starts_with("hodei_plugin_call_duration_seconds_count{")
                && series.contains("world=\"masker\"")
                && *count >= 1.0
        })
    });
}
