//! Agent identities end to end: real `hodei` and `hodei-agent` processes,
//! a host with `--agent-auth tokens`, bootstrap tokens made by the CLI.
//!
//! What must hold: the shared token is refused; a one-use token admits one
//! agent (which joins the token's pool) and refuses a second; a token bound
//! to a pool refuses an agent labelled for another; revoking a credential
//! closes that agent's stream at once (the time is printed) and its job
//! follows the lost-agent rules (re-run elsewhere after the lease). The
//! token logic itself (expiry under an injected clock, 32 racing
//! redemptions, both stores) is tested in `host/src/auth/agents_tests.rs`.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::time::{Duration, Instant};

use common::{Agent, Host, labels, wait_until};
use serde_json::{Value, json};

fn create(host: &Host, args: &[&str]) -> String {
    let mut all = vec!["agent-token", "create"];
    all.extend_from_slice(args);
    let out = host.cli(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn agent_with(host: &Host, name: &str, labels: &str, token: &str) -> Agent {
    Agent::start_env(host, name, labels, 1, &[("HODEI_TOKEN", token)])
}

/// Waits for the agent process to exit; its exit code.
fn exit_code(agent: &mut Agent, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < deadline, "agent {} still runs", agent.name);
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn worker<'a>(workers: &'a Value, name: &str) -> Option<&'a Value> {
    workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == json!(name))
}

fn connected(host: &Host, name: &str) -> bool {
    let (_, workers) = host.get("/api/v1/workers");
    worker(&workers, name).is_some_and(|w| w["connected"] == json!(true))
}

#[test]
fn bootstrap_tokens_admit_one_agent_each_and_revocation_closes_its_stream() {
    let host = Host::start_with(&["--agent-auth", "tokens", "--lease-secs", "3"]);

    // The shared token no longer admits anyone: the agent exits with 2.
    let mut shared = Agent::start(&host, "shared", "", 1);
    assert_eq!(exit_code(&mut shared, Duration::from_secs(30)), Some(2));

    // A one-use token bound to pool gpu admits one agent, into that pool.
    let once = create(&host, &["--pool", "gpu", "--ttl", "15m", "--uses", "1"]);
    assert!(once.starts_with("hodei_"), "{once}");
    let first = agent_with(&host, "first", "zone=a", &once);
    host.wait_workers(1);
    let (_, workers) = host.get("/api/v1/workers");
    let bound = worker(&workers, "first").unwrap();
    assert_eq!(bound["labels"]["pool"], json!("gpu"), "{bound}");

    // The second use is refused.
    let mut second = agent_with(&host, "second", "", &once);
    assert_eq!(exit_code(&mut second, Duration::from_secs(30)), Some(2));

    // A token for pool gpu refuses an agent that says it is in pool cpu.
    let gpu = create(&host, &["--pool", "gpu"]);
    let mut wrong = agent_with(&host, "wrong", "pool=cpu", &gpu);
    assert_eq!(exit_code(&mut wrong, Duration::from_secs(30)), Some(2));

    // The credential is listed, with its token and last connection.
    let (status, listing) = host.get("/api/v1/agents/credentials");
    assert_eq!(status, 200, "{listing}");
    let credentials = listing["credentials"].as_array().unwrap();
    assert_eq!(credentials.len(), 1, "{listing}");
    assert_eq!(credentials[0]["name"], json!("first"));
    assert!(credentials[0]["last_used_at"].is_string());
    let agent_id = credentials[0]["agent_id"].as_str().unwrap().to_owned();
    let (_, tokens) = host.get("/api/v1/agent-tokens");
    assert_eq!(tokens["tokens"].as_array().unwrap().len(), 2, "{tokens}");
    assert!(!tokens.to_string().contains(&once), "tokens are shown once");

    // A job runs on the first agent; a second agent of pool gpu waits.
    let job = json!({
        "command": "sleep 30",
        "labels": labels(&[("pool", "gpu")]),
        "max_attempts": 2,
    });
    let id = host.submit_ok(&job);
    let running = host.wait_state(&id, &["RUNNING"], Duration::from_secs(30));
    assert_eq!(running["attempt"], json!(1));
    let spare = create(&host, &["--pool", "gpu"]);
    let _spare = agent_with(&host, "spare", "", &spare);
    host.wait_workers(2);

    // Revoking the credential closes the first agent's stream.
    let mut first = first;
    let revoked_at = Instant::now();
    let out = host.cli(&["agent-token", "revoke-agent", &agent_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        "the revoked agent disconnects",
        Duration::from_secs(10),
        || !connected(&host, "first"),
    );
    let closed_in = revoked_at.elapsed();
    assert_eq!(exit_code(&mut first, Duration::from_secs(30)), Some(2));
    println!("revoked agent's stream closed {closed_in:?} after the revoke command returned");
    assert!(
        closed_in < Duration::from_secs(3),
        "stream closed only after {closed_in:?}"
    );

    // Its job follows the lost-agent rules: attempt 2 runs on the spare.
    wait_until("the job's second attempt", Duration::from_secs(60), || {
        host.job(&id)["attempt"] == json!(2)
    });
    let job = host.wait_state(&id, &["RUNNING"], Duration::from_secs(30));
    let (_, workers) = host.get("/api/v1/workers");
    let spare_id = worker(&workers, "spare").unwrap()["id"].clone();
    assert_eq!(job["worker_id"], spare_id, "{job}");
    host.cancel(&id);
}

#[test]
fn strict_mode_without_mutual_tls_is_a_config_error() {
    let out = std::process::Command::new(common::hodei_bin())
        .args(["serve", "--agent-auth", "strict", "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("client_ca"), "{stderr}");
}

#[test]
fn an_agent_keeping_its_identity_comes_back_with_its_one_use_token() {
    let host = Host::start_with(&["--agent-auth", "tokens"]);
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("identity");
    let identity = identity.to_str().unwrap();
    let once = create(&host, &["--uses", "1"]);
    let env = [
        ("HODEI_TOKEN", once.as_str()),
        ("HODEI_IDENTITY_FILE", identity),
    ];

    let first = Agent::start_env(&host, "kept", "", 1, &env);
    host.wait_workers(1);
    let id_before = first.worker_id(&host);
    drop(first);
    wait_until(
        "the killed agent disconnects",
        Duration::from_secs(30),
        || !connected(&host, "kept"),
    );

    // The restarted process proves the same id, so the spent token still
    // admits it.
    let again = Agent::start_env(&host, "kept", "", 1, &env);
    wait_until(
        "the restarted agent reconnects",
        Duration::from_secs(30),
        || connected(&host, "kept"),
    );
    assert_eq!(again.worker_id(&host), id_before);

    // Another process without that identity is refused.
    let mut other = agent_with(&host, "other", "", &once);
    assert_eq!(exit_code(&mut other, Duration::from_secs(30)), Some(2));
    let mode = std::fs::metadata(identity).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
}
