//! Pools of workers the host creates on demand, with the real in-tree
//! `local` provider (real `hodei-agent` processes) and the fault fixture:
//! scale 0 → N → 0 for demand, ephemeral workers, one-time registration
//! tokens, backoff and stop on failing creates, and bad pool
//! configurations refused with the field named.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::time::Duration;

use common::raw_agent;
use common::{Host, script_for, wait_until};
use hodei::plugins::in_tree::PLUGIN_DIR;
use serde_json::{Value, json};

/// A host whose config file declares `pools` (TOML `[[pools]]` tables).
fn host_with_pools(pools: &str, extra: &[&str]) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hodei.toml");
    std::fs::write(&config, pools).unwrap();
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    (Host::start_with(&args), dir)
}

/// The pool's view, once its loop has published one (the host lists a
/// pool as soon as it starts checking it, with no counts yet).
fn pool(host: &Host, name: &str) -> Value {
    let mut found = Value::Null;
    wait_until(
        &format!("pool {name} listed"),
        Duration::from_secs(60),
        || {
            let (status, body) = host.get(&format!("/api/v1/pools/{name}"));
            found = body;
            status == 200 && found["counts"].as_object().is_some_and(|c| !c.is_empty())
        },
    );
    found
}

/// Waits until the pool's view satisfies `done`; returns it.
fn pool_until(host: &Host, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut view = Value::Null;
    wait_until(what, Duration::from_secs(60), || {
        view = pool(host, name);
        done(&view)
    });
    view
}

/// The value of one series in the host's `/metrics` (0 when absent).
fn metric(host: &Host, series: &str) -> f64 {
    let text = ureq::get(&host.url("/metrics"))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.split_whitespace().nth(2).is_none_or(|s| s != "Z"))
}

const BURST: &str = r#"
[[pools]]
name = "burst"
provider = "local"
grants = ["process"]
labels = { role = "burst" }
min = 0
max = 2
slots = 1
idle_timeout_secs = 1
"#;

#[test]
fn a_local_pool_grows_for_demand_within_max_and_shrinks_to_zero_when_idle() {
    let (host, _dir) = host_with_pools(BURST, &[]);
    assert_eq!(
        pool(&host, "burst")["workers"],
        json!([]),
        "min 0: no worker yet"
    );
    let ids: Vec<String> = (0..4)
        .map(|_| host.submit_ok(&script_for("burst", "sleep 1; echo ran")))
        .collect();
    let mut most = 0;
    let mut pids = std::collections::BTreeSet::new();
    wait_until("every job done", Duration::from_secs(60), || {
        let view = pool(&host, "burst");
        let workers = view["workers"].as_array().unwrap();
        most = most.max(workers.len());
        pids.extend(
            workers
                .iter()
                .filter_map(|w| w["handle"].as_str()?.parse::<u64>().ok()),
        );
        ids.iter()
            .all(|id| host.job(id)["state"] == json!("SUCCEEDED"))
    });
    assert!((1..=2).contains(&most), "never more than max: {most}");
    for id in &ids {
        let job = host.job(id);
        assert_eq!(job["attempt"], json!(1), "ran once: {job}");
        assert!(
            job["worker_id"].as_str().unwrap().starts_with("w-"),
            "{job}"
        );
    }
    wait_until("back to zero workers", Duration::from_secs(30), || {
        pool(&host, "burst")["workers"] == json!([])
    });
    assert!(!pids.is_empty());
    wait_until("agent processes gone", Duration::from_secs(15), || {
        pids.iter().all(|pid| !alive(*pid))
    });
    let view = pool(&host, "burst");
    let created = view["create_latency"]["count"].as_u64().unwrap();
    assert!(created >= 1, "{view}");
    // The same figure in /metrics, as a histogram per pool.
    assert_eq!(
        metric(
            &host,
            "hodei_provider_create_duration_seconds_count{pool=\"burst\"}"
        ),
        created as f64
    );
}

#[test]
fn an_ephemeral_pool_runs_each_job_on_its_own_worker_and_removes_it() {
    let pools = r#"
[[pools]]
name = "once"
provider = "local"
grants = ["process"]
labels = { role = "once" }
max = 2
ephemeral = true
"#;
    let (host, _dir) = host_with_pools(pools, &[]);
    let ids: Vec<String> = (0..5)
        .map(|_| host.submit_ok(&script_for("once", "echo one-shot")))
        .collect();
    for id in &ids {
        host.wait_state(id, &["SUCCEEDED"], Duration::from_secs(60));
    }
    let workers: std::collections::BTreeSet<String> = ids
        .iter()
        .map(|id| host.job(id)["worker_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(workers.len(), 5, "each job on its own worker: {workers:?}");
    let mut last = Value::Null;
    wait_until("every worker removed", Duration::from_secs(30), || {
        last = pool(&host, "once");
        last["workers"] == json!([])
    });
    assert_eq!(last["counts"]["CONNECTED"], json!(0), "{last}");
}

#[test]
fn a_registration_token_is_refused_when_replayed_by_another_agent() {
    let pools = r#"
[[pools]]
name = "one"
provider = "local"
grants = ["process"]
min = 1
max = 1
"#;
    let (host, _dir) = host_with_pools(pools, &[]);
    wait_until("the worker registers", Duration::from_secs(30), || {
        pool(&host, "one")["counts"]["CONNECTED"] == json!(1)
    });
    let handle = pool(&host, "one")["workers"][0]["handle"]
        .as_str()
        .unwrap()
        .to_owned();
    // The agent got its one-time token in its environment.
    let environ = std::fs::read(format!("/proc/{handle}/environ")).unwrap();
    let token = environ
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(b"HODEI_TOKEN="))
        .map(|t| String::from_utf8(t.to_vec()).unwrap())
        .unwrap();
    assert!(
        token.starts_with("hwt_"),
        "a one-time token, not the shared one"
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        raw_agent::connect_with_token(&host, raw_agent::register("thief", &[], 1), &token)
            .await
            .err()
            .unwrap()
    });
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("already used"), "{status:?}");
    host.wait_log("registration token refused", Duration::from_secs(10));
    assert_eq!(
        pool(&host, "one")["counts"]["CONNECTED"],
        json!(1),
        "the real worker stays"
    );
}

#[test]
fn failing_creates_back_off_stop_on_terminal_errors_and_say_why() {
    let pools = r#"
[[pools]]
name = "flaky"
provider = "hodei_provider_fault_fixture"
labels = { role = "flaky" }
max = 2

[[pools]]
name = "quota"
provider = "hodei_provider_fault_fixture"
config = "terminal:create"
labels = { role = "quota" }
max = 2

[[pools]]
name = "spins"
provider = "hodei_provider_fault_fixture"
config = "loop:create"
labels = { role = "spins" }
max = 1
"#;
    let (host, _dir) = host_with_pools(
        pools,
        &["--provider-dir", PLUGIN_DIR, "--plugin-deadline-ms", "200"],
    );
    let flaky = host.submit_ok(&script_for("flaky", "true"));
    let quota = host.submit_ok(&script_for("quota", "true"));
    let spins = host.submit_ok(&script_for("spins", "true"));

    // Transient: it backs off 1 s, 2 s, 4 s…: once two creates failed, the
    // next waits at least 2 s, so 3 s later at most two more have failed,
    // however slow or fast the machine is.
    let failures = |v: &Value| v["consecutive_failures"].as_u64().unwrap();
    let view = pool_until(&host, "flaky", "two failed creates", |v| {
        v["state"] == json!("backoff") && failures(v) >= 2
    });
    let before = failures(&view);
    assert!(
        metric(
            &host,
            "hodei_provider_create_failures_total{pool=\"flaky\"}"
        ) >= before as f64,
        "failures in /metrics"
    );
    std::thread::sleep(Duration::from_secs(3));
    let view = pool(&host, "flaky");
    assert!(
        failures(&view) <= before + 2,
        "no faster than its backoff: {before} then {} within 3 s",
        failures(&view)
    );
    let error = view["last_create_error"].as_str().unwrap();
    assert!(error.contains("transient"), "{view}");
    assert_eq!(view["workers"], json!([]), "a failed worker holds no place");
    let reason = host.job(&flaky)["pending_reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("pool flaky:") && reason.contains("retry in"),
        "{reason}"
    );

    // Terminal: the pool stops, and says so.
    let view = pool_until(&host, "quota", "the quota pool stopped", |v| {
        v["state"] == json!("stopped")
    });
    assert_eq!(view["consecutive_failures"], json!(0));
    let reason = host.job(&quota)["pending_reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("pool quota: stopped") && reason.contains("quota exceeded"),
        "{reason}"
    );

    // A provider that loops is stopped by the deadline, as a fault.
    pool_until(&host, "spins", "the looping create interrupted", |v| {
        v["last_create_error"]
            .as_str()
            .is_some_and(|e| e.contains("ran past its deadline"))
    });
    assert_eq!(host.job(&spins)["state"], json!("PENDING"));
    let (status, _) = host.get("/healthz");
    assert_eq!(status, 200, "the host keeps serving");

    // `hodei pools` says the same.
    let out = host.cli(&["pools"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("quota") && text.contains("stopped"), "{text}");
    assert!(text.contains("quota: stopped: create"), "{text}");
    assert!(
        text.contains("flaky: ") && text.contains("retry in"),
        "{text}"
    );
}

#[test]
fn bad_pools_are_refused_with_the_field_named() {
    let host = Host::start();
    let post = |body: Value| common::post_json(&host.url("/api/v1/pools"), &body);
    let base = json!({ "name": "p", "provider": "local", "grants": ["process"], "max": 2 });
    let with = |key: &str, value: Value| {
        let mut body = base.clone();
        body[key] = value;
        body
    };
    for (body, says) in [
        (with("provider", json!("nomad")), "unknown provider"),
        (with("min", json!(3)), "min (3) is greater than max (2)"),
        (with("grants", json!([])), "does not grant"),
        (
            json!({ "name": "d", "provider": "docker", "grants": ["docker"], "max": 1 }),
            "image",
        ),
        (with("maxx", json!(1)), "unknown field"),
    ] {
        let (status, answer) = post(body.clone());
        assert_eq!(status, 400, "{body} → {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(says),
            "{body} → {answer}"
        );
    }
    let (status, answer) = post(with("min", json!(0)));
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["name"], json!("p"));
}
