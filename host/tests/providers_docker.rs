//! The in-tree `provider-docker` component on the real Docker engine: a
//! worker image built FROM scratch by `scripts/worker-image.sh` (the
//! static musl agent, busybox and bash from Debian's static packages), a
//! container on the host network whose agent connects to a real host and
//! runs a job, then destroy leaves nothing behind (`docker ps -a` shows
//! none of ours). A missing image is a terminal error naming the image.
//! The plugin deadline is far shorter than the engine's calls (a destroy
//! drains a running job): time spent in the `docker` capability is not
//! charged to the plugin.
//!
//! Needs a Docker engine: without one the test says so and passes, except
//! under `CI=true`, where it fails.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::docker::{self, IMAGE};
use common::{Host, TOKEN, script};
use hodei::plugins::in_tree::PROVIDERS;
use hodei::plugins::provider::{
    CompiledProvider, PoolIdentity, ProviderCallError, ProviderError, WorkerSpec, WorkerStatus,
};
use hodei::plugins::{Limits, PluginEngine};
use hodei::providers::capabilities::{DockerCapability, Grants};
use serde_json::json;

/// The plugin deadline: ample for the provider's own work, shorter than
/// what a container start or stop takes the engine.
const DEADLINE: Duration = Duration::from_millis(100);

/// Our containers (by install label), as `docker ps -a` shows them.
fn containers_of(install: &str) -> Vec<String> {
    docker::containers_labelled("hodei.install", install)
}

/// Removes whatever a failed test left.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in containers_of(&self.0) {
            let _ = Command::new("docker").args(["rm", "-f", &id]).output();
        }
    }
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn provider_docker_runs_a_worker_container_that_runs_a_job_and_leaves_nothing() {
    if !docker::available() {
        return;
    }
    docker::build_image();
    let install = format!("test-{}", std::process::id());
    let _cleanup = Cleanup(install.clone());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let docker = DockerCapability::connect(runtime.handle().clone(), Duration::from_secs(30))
        .expect("docker");
    let engine = PluginEngine::new(
        Limits {
            deadline: DEADLINE,
            memory_bytes: 32 << 20,
        },
        None,
    )
    .expect("engine");
    let bytes = PROVIDERS
        .iter()
        .find(|(name, _)| *name == "docker")
        .map(|(_, bytes)| *bytes)
        .expect("in-tree docker provider");
    let compiled = CompiledProvider::new(&engine, "docker", bytes).expect("compile");
    let identity = PoolIdentity {
        install: install.clone(),
        pool: "docker".into(),
    };
    let grants = Grants::none().with_docker(docker);

    let host = Host::start();
    let spec = WorkerSpec {
        server_url: host.grpc.clone(),
        token: TOKEN.into(),
        labels: vec![("pool".into(), "docker".into())],
        slots: 1,
        ephemeral: false,
        env: vec![("RUST_LOG".into(), "warn".into())],
    };
    let worker_id = format!("w-{}", std::process::id());

    // A missing image: terminal, naming the image; nothing created.
    let mut missing = compiled
        .instantiate(
            &engine,
            grants.clone(),
            &identity,
            "image=hodei-worker:does-not-exist",
        )
        .expect("instantiate");
    let err = missing
        .create(&worker_id, &spec)
        .expect_err("no such image");
    assert!(err.is_terminal(), "{err}");
    assert!(
        matches!(&err, ProviderCallError::Refused { error: ProviderError::Terminal(m), .. }
            if m.contains("hodei-worker:does-not-exist")),
        "{err}"
    );
    assert!(containers_of(&install).is_empty());

    let mut provider = compiled
        .instantiate(
            &engine,
            grants,
            &identity,
            &format!("image={IMAGE} stop-timeout=5"),
        )
        .expect("instantiate");
    let started = Instant::now();
    let id = provider.create(&worker_id, &spec).expect("create");
    let create_took = started.elapsed();
    assert_eq!(containers_of(&install).len(), 1);
    assert!(id.starts_with(&containers_of(&install)[0]), "{id}");
    wait_until(
        Duration::from_secs(30),
        "the container's agent connects",
        || {
            let (_, body) = host.get("/api/v1/workers");
            body["workers"].as_array().is_some_and(|ws| {
                ws.iter()
                    .any(|w| w["name"] == json!(worker_id) && w["connected"] == json!(true))
            })
        },
    );
    eprintln!("create → agent connected: {:?}", started.elapsed());
    assert_eq!(
        provider.status(&worker_id).expect("status"),
        WorkerStatus::Running
    );
    let owned = provider.list().expect("list");
    assert_eq!(owned.len(), 1);
    assert_eq!(owned[0].worker_id, worker_id);

    let mut job = script("echo \"in a container: $(cat /proc/1/cmdline | tr '\\0' ' ')\"");
    job["labels"] = json!({"pool": "docker"});
    let job_id = host.submit_ok(&job);
    let done = host.wait_state(&job_id, &["SUCCEEDED", "FAILED"], Duration::from_secs(30));
    assert_eq!(done["state"], json!("SUCCEEDED"), "{done}");
    let lines = common::lines(&host.sse(&job_id, ""));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("in a container: /hodei-agent")),
        "{lines:?}"
    );

    // Destroy while a job runs: `docker stop` sends SIGTERM, the agent
    // drains (the job finishes and its result is stored), then the
    // container is removed. That takes the engine seconds, far past the
    // plugin deadline, and is not interrupted: the engine's time is the
    // host's, not the plugin's.
    let mut job = script("sleep 2; echo drained");
    job["labels"] = json!({"pool": "docker"});
    let running = host.submit_ok(&job);
    host.wait_state(&running, &["RUNNING"], Duration::from_secs(30));
    let destroying = Instant::now();
    provider.destroy(&worker_id).expect("destroy");
    let destroy_took = destroying.elapsed();
    eprintln!(
        "create call: {create_took:?}, destroy call: {destroy_took:?}, deadline {DEADLINE:?}"
    );
    assert!(destroy_took > 10 * DEADLINE, "{destroy_took:?}");
    let drained = host.wait_state(&running, &["SUCCEEDED", "FAILED"], Duration::from_secs(30));
    assert_eq!(drained["state"], json!("SUCCEEDED"), "{drained}");
    assert!(
        containers_of(&install).is_empty(),
        "docker ps -a still shows ours"
    );
    assert_eq!(
        provider.status(&worker_id).expect("status"),
        WorkerStatus::Unknown
    );
    provider.destroy(&worker_id).expect("destroy again");
}
