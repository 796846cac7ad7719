//! Per-job CPU and memory: a job whose process tree burns a core and holds
//! tens of megabytes shows it in `GET /api/v1/jobs/{id}` (`usage`) and in
//! `GET /api/v1/workers` (`job_usage`), from the agent's heartbeats.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::time::{Duration, Instant};

use common::{Agent, Host, script};
use serde_json::{Value, json};

#[test]
fn a_running_job_shows_the_cpu_and_memory_of_its_process_tree() {
    let host = Host::start();
    let _agent = Agent::start(&host, "meter", "", 1);
    host.wait_workers(1);
    // A busy child, and the script itself holding 60 MB in a variable.
    let id = host.submit_ok(&script(
        "(while :; do :; done) &\nx=$(head -c 60000000 /dev/zero | tr '\\000' a)\nsleep 60\n: \"${#x}\"",
    ));
    host.wait_state(&id, &["RUNNING"], Duration::from_secs(20));

    let deadline = Instant::now() + Duration::from_secs(30);
    let usage = loop {
        let usage = host.job(&id)["usage"].clone();
        let cpu = usage["cpu_percent"].as_f64().unwrap_or(0.0);
        let memory = usage["memory_bytes"].as_u64().unwrap_or(0);
        if cpu > 20.0 && memory > 50_000_000 {
            break usage;
        }
        assert!(
            Instant::now() < deadline,
            "usage never showed the busy loop and the 60 MB: {usage}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(usage["processes"].as_u64().unwrap() >= 2, "{usage}");
    assert_eq!(usage["attempt"], json!(1));

    let (_, workers) = host.get("/api/v1/workers");
    let listed: Vec<Value> = workers["workers"][0]["job_usage"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(listed.len(), 1, "{workers}");
    assert_eq!(listed[0]["job_id"], json!(id));

    assert_eq!(host.cancel(&id).0, 200);
    let job = host.wait_state(&id, &["CANCELLED"], Duration::from_secs(20));
    assert!(job.get("usage").is_none(), "no usage once finished: {job}");
}
