//! `--log-format json` and the per-attempt trace: every line the host
//! writes is one JSON object, and a job's attempt shows as one `attempt`
//! span carrying its job id, with its steps in order.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::time::Duration;

use common::{Agent, Host, script, wait_until};
use serde_json::{Value, json};

#[test]
fn json_logs_carry_one_span_per_attempt_with_its_steps() {
    let host = Host::start_with_env(
        &["--log-format", "json"],
        &[("RUST_LOG", "info,hodei::jobs::traces=debug")],
    );
    let _agent = Agent::start(&host, "traced", "", 1);
    host.wait_workers(1);
    let id = host.submit_ok(&script("echo traced; exit 3"));
    host.wait_state(&id, &["FAILED"], Duration::from_secs(60));
    let lines = || -> Vec<Value> {
        host.logs()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    };
    let of_attempt = |lines: &[Value]| -> Vec<Value> {
        lines
            .iter()
            .filter(|l| l["span"]["name"] == json!("attempt") && l["span"]["job_id"] == json!(id))
            .cloned()
            .collect()
    };
    wait_until(
        "the attempt's result in the log",
        Duration::from_secs(10),
        || {
            of_attempt(&lines())
                .iter()
                .any(|l| l["fields"]["message"] == json!("result"))
        },
    );
    let all = lines();
    assert!(
        all.iter()
            .any(|l| l["fields"]["message"] == json!("job submitted")
                && l["fields"]["job_id"] == json!(id)),
        "submit event"
    );
    let steps = of_attempt(&all);
    let messages: Vec<&str> = steps
        .iter()
        .map(|l| l["fields"]["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["scheduled", "assigned", "started", "result"]);
    for step in &steps {
        assert_eq!(step["span"]["attempt"], json!(1));
        assert_eq!(step["level"], json!("DEBUG"));
        assert!(step["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    let result = &steps[3]["fields"];
    assert_eq!(result["state"], json!("FAILED"));
    assert_eq!(result["exit_code"], json!(3));
}
