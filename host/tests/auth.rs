//! REST API tokens with scopes, against a real `hodei serve` in its default
//! mode (`--api-auth tokens`): every route × scope, token creation within
//! the creator's scopes, expiry, revocation ending open streams, the
//! first run needing no token handling, and no listener on a public
//! address without protection.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{Agent, Body, Host, call, plugin_wasm};
use hodei::auth::{Access, Scope};
use serde_json::{Value, json};

/// A host with token auth on, whose local-token dir is its own.
fn host(extra: &[&str]) -> (Host, tempfile::TempDir) {
    let config = tempfile::tempdir().unwrap();
    let mut args = vec!["--api-auth", "tokens"];
    args.extend_from_slice(extra);
    let host = Host::start_with_env(
        &args,
        &[("XDG_CONFIG_HOME", config.path().to_str().unwrap())],
    );
    (host, config)
}

fn admin(host: &Host) -> String {
    std::fs::read_to_string(host.data_dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned()
}

fn create(host: &Host, by: &str, scopes: &[&str], ttl: Option<u64>) -> (u16, Value) {
    call(
        "POST",
        &host.url("/api/v1/tokens"),
        Some(by),
        Body::Json(json!({ "name": "test", "scopes": scopes, "ttl_secs": ttl })),
    )
}

fn token(host: &Host, scopes: &[&str]) -> String {
    let (status, body) = create(host, &admin(host), scopes, None);
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// A job no worker takes: it stays pending.
fn pending_job(host: &Host) -> String {
    let (status, body) = call(
        "POST",
        &host.url("/api/v1/jobs"),
        Some(&admin(host)),
        Body::Json(json!({ "command": "true", "labels": { "pool": "nowhere" } })),
    );
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// A pipeline whose steps no worker takes.
fn pipeline_body() -> Value {
    json!({ "labels": { "pool": "nowhere" }, "steps": [{ "name": "a", "command": "true" }] })
}

/// A pipeline that stays pending (its step's job waits for a worker).
fn pending_pipeline(host: &Host) -> String {
    let (status, body) = call(
        "POST",
        &host.url("/api/v1/pipelines"),
        Some(&admin(host)),
        Body::Json(pipeline_body()),
    );
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// A pipeline whose step `make` stored its output `out.txt` (run by an
/// agent of its own).
fn pipeline_with_an_artifact(host: &Host) -> String {
    let _agent = Agent::start(host, "maker", "", 1);
    let (status, body) = call(
        "POST",
        &host.url("/api/v1/pipelines"),
        Some(&admin(host)),
        Body::Json(json!({ "steps": [{
            "name": "make", "outputs": ["out.txt"], "command": "echo made > out.txt"
        }] })),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    common::wait_until(
        "the artifact's step succeeds",
        Duration::from_secs(120),
        || {
            let (_, pipeline) = call(
                "GET",
                &host.url(&format!("/api/v1/pipelines/{id}")),
                Some(&admin(host)),
                Body::None,
            );
            assert_ne!(pipeline["state"], json!("FAILED"), "{pipeline}");
            pipeline["state"] == json!("SUCCEEDED")
        },
    );
    id
}

/// The request that exercises `method path` successfully, built against
/// the live host; panics for a route the test does not know, so a new
/// route cannot go untested.
fn fixture(host: &Host, method: &str, path: &str) -> (String, Body) {
    let admin = admin(host);
    let put = |p: &str, body: Body| {
        let (status, answer) = call("POST", &host.url(p), Some(&admin), body);
        assert!(status < 300, "{p}: {status} {answer}");
        answer
    };
    match (method, path) {
        ("GET", "/" | "/jobs" | "/workers" | "/plugins") => (path.to_owned(), Body::None),
        ("GET", "/jobs/{id}") => (format!("/jobs/{}", pending_job(host)), Body::None),
        ("GET", "/assets/{file}") => ("/assets/app.js".to_owned(), Body::None),
        // The API's document and its docs UI (the bare path redirects to
        // the directory, which the client follows).
        ("GET", "/api/v1/openapi.json" | "/api/v1/docs" | "/api/v1/docs/") => {
            (path.to_owned(), Body::None)
        }
        ("GET", "/api/v1/docs/{*file}") => ("/api/v1/docs/index.css".to_owned(), Body::None),
        ("GET", "/api/v1/jobs/{id}/logs/page" | "/api/v1/jobs/{id}/logs/raw") => {
            (path.replace("{id}", &pending_job(host)), Body::None)
        }
        ("GET", "/api/v1/jobs/{id}/logs/search") => (
            format!("/api/v1/jobs/{}/logs/search?q=x", pending_job(host)),
            Body::None,
        ),
        ("GET", "/healthz" | "/api/v1/jobs" | "/api/v1/workers" | "/api/v1/pools")
        | ("GET", "/api/v1/queues")
        | ("GET", "/api/v1/policies" | "/api/v1/maskers" | "/api/v1/tokens")
        | ("GET", "/api/v1/agent-tokens" | "/api/v1/agents/credentials" | "/metrics") => {
            (path.to_owned(), Body::None)
        }
        // The event stream ends once the stored events are sent.
        ("GET", "/api/v1/events") => ("/api/v1/events?follow=false".to_owned(), Body::None),
        ("POST", "/api/v1/jobs/batch") => (
            path.to_owned(),
            Body::Json(json!({ "jobs": [{ "command": "true" }, { "args": ["true"] }] })),
        ),
        ("POST", "/api/v1/agent-tokens") => (
            path.to_owned(),
            Body::Json(json!({ "pool": "gpu", "ttl_secs": 60, "uses": 2 })),
        ),
        ("DELETE", "/api/v1/agent-tokens/{id}") => {
            let made = put("/api/v1/agent-tokens", Body::Json(json!({})));
            (
                format!(
                    "/api/v1/agent-tokens/{}",
                    made["record"]["id"].as_str().unwrap()
                ),
                Body::None,
            )
        }
        ("DELETE", "/api/v1/agents/credentials/{id}") => {
            // A credential exists once an agent redeemed a bootstrap token.
            let made = put("/api/v1/agent-tokens", Body::Json(json!({})));
            let token = made["token"].as_str().unwrap();
            let _agent = Agent::start_env(host, "bound", "", 1, &[("HODEI_TOKEN", token)]);
            let mut agent_id = None;
            common::wait_until(
                "the agent redeems its token",
                Duration::from_secs(30),
                || {
                    let (_, listing) = call(
                        "GET",
                        &host.url("/api/v1/agents/credentials"),
                        Some(&admin),
                        Body::None,
                    );
                    agent_id = listing["credentials"]
                        .as_array()
                        .and_then(|c| c.iter().find(|c| c["name"] == json!("bound")))
                        .map(|c| c["agent_id"].as_str().unwrap().to_owned());
                    agent_id.is_some()
                },
            );
            (
                format!("/api/v1/agents/credentials/{}", agent_id.unwrap()),
                Body::None,
            )
        }
        ("POST", "/api/v1/jobs") => (
            path.to_owned(),
            Body::Json(json!({ "command": "true", "labels": { "pool": "nowhere" } })),
        ),
        ("GET", "/api/v1/pipelines") => (path.to_owned(), Body::None),
        ("POST", "/api/v1/pipelines") => (path.to_owned(), Body::Json(pipeline_body())),
        ("GET", "/api/v1/pipelines/{id}") => (
            format!("/api/v1/pipelines/{}", pending_pipeline(host)),
            Body::None,
        ),
        ("GET", "/api/v1/pipelines/{id}/events") => (
            format!(
                "/api/v1/pipelines/{}/events?follow=false",
                pending_pipeline(host)
            ),
            Body::None,
        ),
        ("GET", "/api/v1/pipelines/{id}/artifacts") => (
            format!("/api/v1/pipelines/{}/artifacts", pending_pipeline(host)),
            Body::None,
        ),
        ("GET", "/api/v1/pipelines/{id}/artifacts/{step}/{*path}") => {
            let id = pipeline_with_an_artifact(host);
            (
                format!("/api/v1/pipelines/{id}/artifacts/make/out.txt"),
                Body::None,
            )
        }
        ("POST", "/api/v1/pipelines/{id}/cancel") => (
            format!("/api/v1/pipelines/{}/cancel", pending_pipeline(host)),
            Body::None,
        ),
        ("POST", "/api/v1/pipelines/{id}/retry") => {
            let id = pending_pipeline(host);
            put(&format!("/api/v1/pipelines/{id}/cancel"), Body::None);
            (format!("/api/v1/pipelines/{id}/retry"), Body::None)
        }
        ("GET", "/api/v1/jobs/{id}") => (format!("/api/v1/jobs/{}", pending_job(host)), Body::None),
        ("POST", "/api/v1/jobs/{id}/cancel") => (
            format!("/api/v1/jobs/{}/cancel", pending_job(host)),
            Body::None,
        ),
        ("GET", "/api/v1/jobs/{id}/logs") => {
            let id = pending_job(host);
            put(&format!("/api/v1/jobs/{id}/cancel"), Body::None);
            (format!("/api/v1/jobs/{id}/logs"), Body::None)
        }
        ("POST", "/api/v1/pools") => (
            path.to_owned(),
            Body::Json(
                json!({ "name": "p", "provider": "local", "grants": ["process"], "max": 0 }),
            ),
        ),
        ("GET", "/api/v1/pools/{name}") => {
            put(
                "/api/v1/pools",
                Body::Json(
                    json!({ "name": "q", "provider": "local", "grants": ["process"], "max": 0 }),
                ),
            );
            ("/api/v1/pools/q".to_owned(), Body::None)
        }
        ("PUT", "/api/v1/policies/active") => {
            (path.to_owned(), Body::Json(json!({ "name": "builtin" })))
        }
        ("POST", "/api/v1/policies") => (
            "/api/v1/policies?name=mine".to_owned(),
            Body::Wasm(plugin_wasm("hodei_policy_binpack.wasm")),
        ),
        ("DELETE", "/api/v1/policies/{name}") => {
            put(
                "/api/v1/policies?name=doomed",
                Body::Wasm(plugin_wasm("hodei_policy_binpack.wasm")),
            );
            ("/api/v1/policies/doomed".to_owned(), Body::None)
        }
        ("PUT", "/api/v1/maskers/chain") => (
            path.to_owned(),
            Body::Json(json!({ "maskers": [{ "name": "literal" }, { "name": "patterns" }] })),
        ),
        ("POST", "/api/v1/maskers") => (
            "/api/v1/maskers?name=mine".to_owned(),
            Body::Wasm(plugin_wasm("hodei_masker_fault_fixture.wasm")),
        ),
        ("DELETE", "/api/v1/maskers/{name}") => {
            put(
                "/api/v1/maskers?name=doomed",
                Body::Wasm(plugin_wasm("hodei_masker_fault_fixture.wasm")),
            );
            ("/api/v1/maskers/doomed".to_owned(), Body::None)
        }
        ("POST", "/api/v1/tokens") => (
            path.to_owned(),
            Body::Json(json!({ "name": "made", "scopes": ["jobs:read"] })),
        ),
        ("DELETE", "/api/v1/tokens/{id}") => {
            let made = put(
                "/api/v1/tokens",
                Body::Json(json!({ "name": "doomed", "scopes": ["jobs:read"] })),
            );
            (
                format!("/api/v1/tokens/{}", made["record"]["id"].as_str().unwrap()),
                Body::None,
            )
        }
        other => panic!("route {other:?} has no fixture in tests/auth.rs: add one"),
    }
}

#[test]
fn every_route_is_401_without_a_token_403_without_its_scope_and_2xx_with_it() {
    let (host, _config) = host(&[]);
    let mut table: Vec<_> = hodei::api::routes().table().to_vec();
    table.extend(hodei::api::upload_routes().table().iter().cloned());
    assert!(table.len() >= 20, "{table:?}");
    let mut checked = 0;
    for (path, method, access) in table {
        let method = method.as_str();
        let dummy = host.url(&path.replace("{id}", "x").replace("{name}", "x"));
        let (url, body) = fixture(&host, method, &path);
        let url = host.url(&url);
        match access {
            Access::Public => {
                let (status, answer) = call(method, &url, None, body);
                assert!(
                    (200..300).contains(&status),
                    "{method} {path}: {status} {answer}"
                );
            }
            Access::Authenticated | Access::Scope(_) => {
                let (status, answer) = call(method, &dummy, None, Body::None);
                assert_eq!(status, 401, "{method} {path} without a token: {answer}");
                assert_eq!(answer["error"], json!("UNAUTHENTICATED"), "{answer}");
                let (status, _) = call(method, &dummy, Some("hodei_not-a-token"), Body::None);
                assert_eq!(status, 401, "{method} {path} with a malformed token");
                let needed = match access {
                    Access::Scope(scope) => scope,
                    _ => Scope::JobsRead,
                };
                if let Access::Scope(scope) = access {
                    // Every other scope but admin is refused.
                    for other in Scope::ALL
                        .into_iter()
                        .filter(|s| *s != scope && *s != Scope::Admin)
                    {
                        let (status, answer) = call(
                            method,
                            &dummy,
                            Some(&token(&host, &[other.as_str()])),
                            Body::None,
                        );
                        assert_eq!(status, 403, "{method} {path} with {other}: {answer}");
                        assert_eq!(answer["error"], json!("FORBIDDEN"), "{answer}");
                    }
                }
                let with = token(&host, &[needed.as_str()]);
                let (status, answer) = call(method, &url, Some(&with), body);
                assert!(
                    (200..300).contains(&status),
                    "{method} {path} with {needed}: {status} {answer}"
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 20);
}

#[test]
fn tokens_grant_only_their_creators_scopes_expire_and_revocation_ends_streams() {
    let (host, _config) = host(&["--local-agents", "1"]);
    let admin = admin(&host);
    let reader = token(&host, &["jobs:read", "logs:read"]);
    // A reader cannot mint a submitter, nor an admin.
    for scopes in [
        &["jobs:submit"][..],
        &["admin"],
        &["jobs:read", "jobs:cancel"],
    ] {
        let (status, body) = create(&host, &reader, scopes, None);
        assert_eq!(status, 403, "{scopes:?}: {body}");
    }
    let (status, body) = create(&host, &reader, &["jobs:read"], None);
    assert_eq!(status, 201, "a subset is fine: {body}");
    let (status, body) = create(&host, &admin, &["jobs:frobnicate"], None);
    assert_eq!(status, 400, "{body}");

    // Expiry.
    let (_, short) = create(&host, &admin, &["jobs:read"], Some(1));
    let short = short["token"].as_str().unwrap().to_owned();
    assert_eq!(
        call("GET", &host.url("/api/v1/jobs"), Some(&short), Body::None).0,
        200
    );
    std::thread::sleep(Duration::from_millis(1500));
    let (status, body) = call("GET", &host.url("/api/v1/jobs"), Some(&short), Body::None);
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    // Revocation ends an open log stream within a second.
    let (status, job) = call(
        "POST",
        &host.url("/api/v1/jobs"),
        Some(&admin),
        Body::Json(json!({ "command": "echo started; sleep 30" })),
    );
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let follower = token(&host, &["logs:read"]);
    let url = host.url(&format!("/api/v1/jobs/{id}/logs?follow=true"));
    let (tx, rx) = std::sync::mpsc::channel();
    let reading = std::thread::spawn({
        let follower = follower.clone();
        move || {
            let response = ureq::get(&url)
                .header("authorization", &format!("Bearer {follower}"))
                .call()
                .unwrap();
            let mut reader = response.into_body().into_reader();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        seen.extend_from_slice(&buf[..n]);
                        if seen.windows(7).any(|w| w == b"started") {
                            let _ = tx.send(());
                        }
                    }
                }
            }
            Instant::now()
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the stream shows the job's first line");
    let (_, listing) = call("GET", &host.url("/api/v1/tokens"), Some(&admin), Body::None);
    let id_of = |token: &str| {
        listing["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["last_used_at"].is_string() && t["scopes"] == json!(["logs:read"]))
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("{token}: {listing}"))
    };
    let follower_id = id_of(&follower);
    let revoked_at = Instant::now();
    let (status, body) = call(
        "DELETE",
        &host.url(&format!("/api/v1/tokens/{follower_id}")),
        Some(&admin),
        Body::None,
    );
    assert_eq!(status, 204, "{body}");
    let ended = reading.join().unwrap();
    let took = ended.duration_since(revoked_at);
    assert!(
        took < Duration::from_secs(1),
        "the stream ended {took:?} after the revocation"
    );
    let (status, body) = call(
        "GET",
        &host.url(&format!("/api/v1/jobs/{id}/logs")),
        Some(&follower),
        Body::None,
    );
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("revoked"),
        "{body}"
    );
    // Refusals are audited, never with the token.
    let logs = host.logs();
    assert!(logs.contains("API request refused"), "{logs}");
    assert!(!logs.contains(&follower) && !logs.contains(&admin));
    // The store keeps hashes, not tokens.
    let file = std::fs::read(host.data_dir.join("hodei.redb")).unwrap();
    for secret in [&admin, &reader, &follower] {
        assert!(!file.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }
    let _ = host.cancel(&id);
}

#[test]
fn the_first_run_needs_no_token_handling_and_a_public_address_is_refused() {
    let (host, config) = host(&[]);
    let _agent = Agent::start(&host, "a", "", 1);
    host.wait_workers(1);
    let elsewhere = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(common::hodei_bin())
        .args(["run", "--", "echo", "hello"])
        .current_dir(elsewhere.path())
        .env("HODEI_SERVER", &host.http)
        .env("XDG_CONFIG_HOME", config.path())
        .env_remove("HODEI_API_TOKEN")
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "hello");
    // Without the token the host left, the CLI is refused with a clear error.
    let stranger = tempfile::tempdir().unwrap();
    let refused = std::process::Command::new(common::hodei_bin())
        .args(["jobs", "ls"])
        .current_dir(stranger.path())
        .env("HODEI_SERVER", &host.http)
        .env("XDG_CONFIG_HOME", stranger.path())
        .env_remove("HODEI_API_TOKEN")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("UNAUTHENTICATED") && stderr.contains("401"),
        "{stderr}"
    );

    let data = tempfile::tempdir().unwrap();
    let open = std::process::Command::new(common::hodei_bin())
        .args([
            "serve",
            "--http-addr",
            "0.0.0.0:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!open.status.success());
    let stderr = String::from_utf8_lossy(&open.stderr);
    assert!(stderr.contains("refusing to listen on 0.0.0.0"), "{stderr}");
}

#[test]
fn a_token_submitting_past_its_rate_gets_429_and_others_are_not_slowed() {
    let (host, _config) = host(&["--api-submit-rate", "5"]);
    let flooder = token(&host, &["jobs:submit"]);
    let other = token(&host, &["jobs:submit"]);
    let reader = token(&host, &["jobs:read"]);
    // A connection per request: the host answers 429 without reading the
    // body, and then closes that connection; a pooled one reused right
    // after could be that closed one (a POST is not retried).
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .build()
        .into();
    let submit = |token: &str| {
        agent
            .post(&host.url("/api/v1/jobs"))
            .header("authorization", &format!("Bearer {token}"))
            .send_json(json!({ "command": "true", "labels": { "pool": "nowhere" } }))
            .unwrap()
    };
    let mut limited = None;
    for _ in 0..20 {
        let response = submit(&flooder);
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status(), 201);
    }
    let mut limited = limited.expect("20 submits at once pass a limit of 5/s");
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After: {retry}");
    let body: Value = serde_json::from_str(&limited.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["error"], json!("RATE_LIMITED"), "{body}");
    // The flooder's bucket is empty; another token's is not, and reads
    // are never limited.
    assert_eq!(submit(&other).status(), 201);
    for _ in 0..20 {
        let (status, _) = call(
            "GET",
            &host.url("/api/v1/jobs?limit=1"),
            Some(&reader),
            Body::None,
        );
        assert_eq!(status, 200);
    }
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(submit(&flooder).status(), 201, "the bucket refills");
}
