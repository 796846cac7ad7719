//! Worker providers as components, end to end: the real in-tree
//! `provider-local` component, loaded by the host's provider runtime with
//! the real `process` capability, creates a `hodei-agent` that connects to
//! a real host and runs a job; destroy stops it. Plus: a capability the
//! pool did not grant is refused with a clear error, and a provider that
//! loops or traps is stopped by the deadline and reported, never a crash.

mod common;

use std::time::{Duration, Instant};

use common::{Host, TOKEN, agent_bin, script};
use hodei::plugins::in_tree::{PLUGIN_DIR, PROVIDERS};
use hodei::plugins::provider::{
    Capability, CompiledProvider, FaultKind, PoolIdentity, ProviderCallError, ProviderError,
    WorkerSpec, WorkerStatus,
};
use hodei::plugins::{Limits, PluginEngine};
use hodei::providers::capabilities::{Grants, ProcessCapability};
use serde_json::{Value, json};

fn engine(deadline: Duration) -> PluginEngine {
    PluginEngine::new(
        Limits {
            deadline,
            memory_bytes: 32 << 20,
        },
        None,
    )
    .expect("engine")
}

fn in_tree(engine: &PluginEngine, name: &str) -> CompiledProvider {
    let bytes = PROVIDERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
        .unwrap_or_else(|| panic!("no in-tree provider {name}"));
    CompiledProvider::new(engine, name, bytes).expect("compile provider")
}

fn fault_fixture(engine: &PluginEngine) -> CompiledProvider {
    let path = format!("{PLUGIN_DIR}/hodei_provider_fault_fixture.wasm");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    CompiledProvider::new(engine, "fault-fixture", &bytes).expect("compile fixture")
}

fn identity() -> PoolIdentity {
    PoolIdentity {
        install: "test-install".into(),
        pool: "local".into(),
    }
}

fn spec(host: &Host) -> WorkerSpec {
    WorkerSpec {
        server_url: host.grpc.clone(),
        token: TOKEN.into(),
        labels: vec![("pool".into(), "local".into())],
        slots: 2,
        ephemeral: false,
        env: vec![("RUST_LOG".into(), "warn".into())],
    }
}

/// Polls `done` every 20 ms until it holds; panics after `limit`.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The host's view of the worker named `name`, if it has one.
fn worker_named(host: &Host, name: &str) -> Option<Value> {
    let (_, body) = host.get("/api/v1/workers");
    body["workers"]
        .as_array()?
        .iter()
        .find(|w| w["name"] == json!(name))
        .cloned()
}

fn alive(pid: u32) -> bool {
    // A zombie is dead: only the capability's reaping removes it.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

#[test]
fn provider_local_creates_an_agent_that_connects_runs_a_job_and_is_destroyed() {
    let host = Host::start();
    let engine = engine(Duration::from_secs(1));
    let local = in_tree(&engine, "local");
    let processes = ProcessCapability::new(agent_bin(), Duration::from_secs(20)).expect("spawner");
    let mut provider = local
        .instantiate(
            &engine,
            Grants::none().with_process(processes.clone()),
            &identity(),
            "slots=2",
        )
        .expect("instantiate provider-local");
    assert_eq!(provider.info().expect("info").slots, 2);

    let handle = provider.create("w-1", &spec(&host)).expect("create");
    let pid: u32 = handle.parse().expect("the handle is the pid");
    assert!(alive(pid));
    wait_until(Duration::from_secs(20), "worker w-1 connects", || {
        worker_named(&host, "w-1").is_some_and(|w| w["connected"] == json!(true))
    });
    let worker = worker_named(&host, "w-1").expect("w-1");
    assert_eq!(worker["labels"]["pool"], json!("local"), "{worker}");
    assert_eq!(worker["slots"], json!(2), "{worker}");
    // The token never shows on the command line.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert!(!String::from_utf8_lossy(&cmdline).contains(TOKEN));

    // Idempotent per worker id; status and list see it.
    assert_eq!(
        provider.create("w-1", &spec(&host)).expect("create again"),
        handle
    );
    assert_eq!(
        provider.status("w-1").expect("status"),
        WorkerStatus::Running
    );
    let owned = provider.list().expect("list");
    assert_eq!(owned.len(), 1);
    assert_eq!(
        (owned[0].worker_id.as_str(), owned[0].handle.as_str()),
        ("w-1", handle.as_str())
    );

    // It is a worker like any other: it runs a job.
    let mut job = script("echo from-provider");
    job["labels"] = json!({"pool": "local"});
    let id = host.submit_ok(&job);
    let done = host.wait_state(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(30));
    assert_eq!(done["state"], json!("SUCCEEDED"), "{done}");

    // A new instance (as after a trap) still finds it through the labels.
    let mut again = local
        .instantiate(
            &engine,
            Grants::none().with_process(processes.clone()),
            &identity(),
            "slots=2",
        )
        .expect("second instance");
    again.destroy("w-1").expect("destroy");
    wait_until(Duration::from_secs(20), "the agent process exits", || {
        !alive(pid)
    });
    wait_until(Duration::from_secs(20), "the host sees w-1 gone", || {
        worker_named(&host, "w-1").is_none_or(|w| w["connected"] != json!(true))
    });
    wait_until(Duration::from_secs(5), "the provider forgets w-1", || {
        provider.status("w-1").expect("status") == WorkerStatus::Unknown
    });
    assert!(provider.list().expect("list").is_empty());
    // Destroying a gone worker is not an error.
    provider.destroy("w-1").expect("destroy again");
}

#[test]
fn a_capability_the_pool_did_not_grant_is_refused_with_a_clear_error() {
    let engine = engine(Duration::from_secs(1));
    let local = in_tree(&engine, "local");
    let docker = in_tree(&engine, "docker");
    // What each imports is what its code calls, nothing more.
    assert_eq!(local.capabilities(), [Capability::Process]);
    assert_eq!(docker.capabilities(), [Capability::Docker]);
    assert_eq!(fault_fixture(&engine).capabilities(), []);
    let kubernetes = std::fs::read(format!("{PLUGIN_DIR}/hodei_provider_kubernetes.wasm"))
        .expect("provider-kubernetes");
    let kubernetes =
        CompiledProvider::new(&engine, "kubernetes", &kubernetes).expect("compile kubernetes");
    assert_eq!(kubernetes.capabilities(), [Capability::Kubernetes]);

    let err = local
        .instantiate(&engine, Grants::none(), &identity(), "")
        .expect_err("process not granted");
    assert!(
        matches!(
            &err,
            ProviderCallError::NotGranted {
                capability: Capability::Process,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_terminal());
    let message = err.to_string();
    assert!(
        message.contains("imports the `process` capability")
            && message.contains("does not grant (granted: none)"),
        "{message}"
    );

    let processes = ProcessCapability::new(agent_bin(), Duration::from_secs(1)).expect("spawner");
    let err = docker
        .instantiate(
            &engine,
            Grants::none().with_process(processes),
            &identity(),
            "image=x",
        )
        .expect_err("docker not granted");
    assert!(
        err.to_string().contains(
            "imports the `docker` capability, which this pool does not grant (granted: process)"
        ),
        "{err}"
    );

    // A pool granting process only cannot run the kubernetes provider.
    let processes = ProcessCapability::new(agent_bin(), Duration::from_secs(1)).expect("spawner");
    let err = kubernetes
        .instantiate(
            &engine,
            Grants::none().with_process(processes),
            &identity(),
            "image=x",
        )
        .expect_err("kubernetes cannot be granted");
    assert!(
        matches!(
            &err,
            ProviderCallError::NotGranted {
                capability: Capability::Kubernetes,
                ..
            }
        ),
        "{err:?}"
    );

    // A non-provider component is refused at compile time.
    let policy = std::fs::read(format!("{PLUGIN_DIR}/hodei_policy_binpack.wasm")).expect("binpack");
    let err = CompiledProvider::new(&engine, "binpack", &policy).expect_err("not a provider");
    assert!(err.to_string().contains("not a worker provider"), "{err}");
}

#[test]
fn a_looping_or_trapping_provider_is_an_error_value_not_a_crash() {
    let deadline = Duration::from_millis(200);
    let engine = engine(deadline);
    let fixture = fault_fixture(&engine);
    let host_spec = WorkerSpec {
        server_url: "http://127.0.0.1:1".into(),
        token: "t".into(),
        labels: Vec::new(),
        slots: 1,
        ephemeral: false,
        env: Vec::new(),
    };

    let mut looping = fixture
        .instantiate(&engine, Grants::none(), &identity(), "loop:create")
        .expect("instantiate");
    let started = Instant::now();
    let err = looping.create("w-1", &host_spec).expect_err("interrupted");
    let took = started.elapsed();
    assert!(
        matches!(
            &err,
            ProviderCallError::Fault {
                function: "create",
                kind: FaultKind::Timeout,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        took >= deadline && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(!err.is_terminal());
    // The instance is not entered again.
    let err = looping.list().expect_err("unusable");
    assert!(
        matches!(
            &err,
            ProviderCallError::Fault {
                kind: FaultKind::Unusable,
                ..
            }
        ),
        "{err:?}"
    );

    let mut trapping = fixture
        .instantiate(&engine, Grants::none(), &identity(), "trap:list")
        .expect("instantiate");
    let err = trapping.list().expect_err("trap");
    assert!(
        matches!(
            &err,
            ProviderCallError::Fault {
                function: "list",
                kind: FaultKind::Trap,
                ..
            }
        ),
        "{err:?}"
    );

    // The provider's own answers keep their kind.
    let mut transient = fixture
        .instantiate(&engine, Grants::none(), &identity(), "")
        .expect("instantiate");
    let err = transient.create("w-1", &host_spec).expect_err("transient");
    assert!(
        matches!(
            &err,
            ProviderCallError::Refused {
                function: "create",
                error: ProviderError::Transient(_)
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_terminal());
    let err = fixture
        .instantiate(&engine, Grants::none(), &identity(), "terminal")
        .expect_err("refused");
    assert!(
        matches!(
            &err,
            ProviderCallError::Refused {
                function: "configure",
                error: ProviderError::Terminal(_)
            }
        ),
        "{err:?}"
    );
    assert!(err.is_terminal());
}
