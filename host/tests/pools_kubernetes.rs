//! Kubernetes pools against a fake API server (common/fake_kube.rs): the
//! host's real kube client, configured from a real kubeconfig named by
//! `KUBECONFIG`, creates pods over real HTTP, and the fake's "kubelet"
//! runs each pod's `hodei-agent` as a local process from the pod spec's
//! command and env, so a job goes end to end: a job creates a pod whose
//! agent registers and runs it, the idle pod is deleted, a pod deleted
//! behind the host's back mid-job is detected and the job retried, a host
//! SIGKILLed while pods start and run comes back to no orphan pod and
//! every job done; and a kubernetes pool without the grant, or without a reachable API server,
//! is refused naming the capability.
//!
//! What the fake does not cover: scheduling and nodes, images (recorded,
//! never pulled: the agent is the workspace's binary), resource limits,
//! container restarts, watches, resource versions, pods lingering in
//! `Terminating`, RBAC (one bearer token), namespaces as objects, TLS.
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::time::Duration;

use common::fake_kube::{self, FakeKube};
use common::{Host, lines, script_for, wait_until};
use serde_json::{Value, json};

/// The namespace the first pool names (its kubeconfig's default is
/// another, so the provider's `namespace=` is what counts).
const NAMESPACE: &str = "hodei-ci";

/// A kubernetes pool serving `role=<name>`, in `namespace` if given (else
/// the kubeconfig's).
fn kube_pool(name: &str, namespace: Option<&str>) -> String {
    let namespace = namespace.map_or(String::new(), |ns| format!(" namespace={ns}"));
    format!(
        "[[pools]]\nname = \"{name}\"\nprovider = \"kubernetes\"\n\
         config = \"image=hodei-worker:test{namespace} cpu-millis=250 memory-mb=128\"\n\
         grants = [\"kubernetes\"]\nlabels = {{ role = \"{name}\" }}\nmin = 0\nmax = 2\n\
         idle_timeout_secs = 2\n"
    )
}

/// A host with `config` as its config file, `--lease-secs 3`, `extra`
/// flags, and `KUBECONFIG` pointing at `kube`.
fn host_on(kube: &FakeKube, config: &str, extra: &[&str]) -> (Host, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hodei.toml");
    std::fs::write(&path, config).unwrap();
    let kubeconfig = kube.kubeconfig();
    let mut args = vec!["--config", path.to_str().unwrap(), "--lease-secs", "3"];
    args.extend_from_slice(extra);
    let host = Host::start_with_env(&args, &[("KUBECONFIG", kubeconfig.to_str().unwrap())]);
    (host, dir)
}

fn pool_view(host: &Host, name: &str) -> Value {
    host.get(&format!("/api/v1/pools/{name}")).1
}

#[test]
fn a_job_creates_a_pod_whose_agent_runs_it_and_the_idle_pod_is_deleted() {
    let kube = FakeKube::start("default");
    let (host, _dir) = host_on(&kube, &kube_pool("k8s", Some(NAMESPACE)), &[]);
    assert!(kube.pods().is_empty(), "min 0");

    let id = host.submit_ok(&script_for("k8s", "echo from-a-pod"));
    let done = host.wait_state(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(60));
    assert_eq!(done["state"], json!("SUCCEEDED"), "{done}\n{}", host.logs());
    assert_eq!(lines(&host.sse(&id, "")), vec!["from-a-pod".to_owned()]);

    let pods = kube.pods();
    assert_eq!(pods.len(), 1, "one pod ran it: {pods:?}");
    let pod = &pods[0];
    assert_eq!(pod.namespace, NAMESPACE);
    assert_eq!(pod.image, "hodei-worker:test");
    assert_eq!(
        pod.labels.get("hodei.pool").map(String::as_str),
        Some("k8s")
    );
    let worker = pod.labels.get("hodei.worker").unwrap();
    let agent = pod.pid.expect("the pod's agent runs");
    assert_eq!(pod.name, format!("hodei-{worker}"));
    assert_eq!(done["worker_id"].as_str(), Some(worker.as_str()), "{done}");
    assert!(pod.env.contains_key("HODEI_TOKEN"), "{pod:?}");

    wait_until("the idle pod deleted", Duration::from_secs(60), || {
        kube.pods().is_empty()
    });
    assert_eq!(kube.created(), 1);
    wait_until("the pod's agent exited", Duration::from_secs(30), || {
        !std::path::Path::new(&format!("/proc/{agent}")).exists()
    });
    wait_until("the pool shows no worker", Duration::from_secs(30), || {
        pool_view(&host, "k8s")["workers"] == json!([])
    });
}

#[test]
fn a_pod_deleted_behind_the_hosts_back_mid_job_is_detected_and_the_job_retried() {
    // No namespace in the pool: the kubeconfig's.
    let kube = FakeKube::start("from-kubeconfig");
    let (host, _dir) = host_on(&kube, &kube_pool("k8s-lost", None), &[]);
    let id = host.submit_ok(&script_for(
        "k8s-lost",
        "echo attempt-$HODEI_ATTEMPT; if [ \"$HODEI_ATTEMPT\" = 1 ]; then sleep 30; fi; echo done",
    ));
    host.wait_state(&id, &["RUNNING"], Duration::from_secs(60));
    let pods = kube.pods();
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(pods[0].namespace, "from-kubeconfig");
    kube.force_delete(&pods[0].namespace, &pods[0].name);

    let done = host.wait_state(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(90));
    assert_eq!(done["state"], json!("SUCCEEDED"), "{done}\n{}", host.logs());
    assert!(done["attempt"].as_u64().unwrap() >= 2, "retried: {done}");
    assert!(
        lines(&host.sse(&id, "")).contains(&"done".to_owned()),
        "the retry ran to the end"
    );
    assert!(kube.created() >= 2, "a new pod ran the retry");
    assert_ne!(
        done["worker_id"].as_str(),
        pods[0].labels.get("hodei.worker").map(String::as_str),
        "{done}"
    );
}

#[test]
fn a_host_killed_while_pods_start_and_run_leaves_no_orphan_pod_and_converges() {
    let kube = FakeKube::start("default");
    // Agents dial the gRPC port they were created with: the restarted host
    // must listen on the same one.
    let grpc = common::free_local_addr();
    let (mut host, _dir) = host_on(
        &kube,
        &kube_pool("k8s-crash", None),
        &["--grpc-addr", &grpc],
    );
    let ids: Vec<String> = (0..4)
        .map(|i| {
            host.submit_ok(&script_for(
                "k8s-crash",
                &format!("sleep 3; echo crash-{i}"),
            ))
        })
        .collect();
    wait_until("a job running in a pod", Duration::from_secs(60), || {
        ids.iter()
            .any(|id| host.job(id)["state"] == json!("RUNNING"))
    });
    host.restart(nix::sys::signal::Signal::SIGKILL);

    let mut most = 0;
    wait_until(
        "every job finished after the restart",
        Duration::from_secs(120),
        || {
            most = most.max(kube.pods().len());
            ids.iter()
                .all(|id| matches!(host.job(id)["state"].as_str(), Some("SUCCEEDED" | "FAILED")))
        },
    );
    for (i, id) in ids.iter().enumerate() {
        let job = host.job(id);
        assert_eq!(job["state"], json!("SUCCEEDED"), "{job}");
        let got = lines(&host.sse(id, ""));
        assert_eq!(got.last(), Some(&format!("crash-{i}")), "{job}");
    }
    assert!(most <= 2, "never more than max, orphans included: {most}");
    wait_until(
        "the pool converges to zero pods",
        Duration::from_secs(60),
        || kube.pods().is_empty(),
    );
    wait_until("the pool shows no worker", Duration::from_secs(30), || {
        pool_view(&host, "k8s-crash")["workers"] == json!([])
    });
}

#[test]
fn a_kubernetes_pool_without_the_grant_or_the_api_server_is_refused_naming_kubernetes() {
    let kube = FakeKube::start("default");
    let (host, _dir) = host_on(&kube, "", &[]);
    let post = |body: Value| common::post_json(&host.url("/api/v1/pools"), &body);

    let (status, answer) = post(json!({
        "name": "k", "provider": "kubernetes", "config": "image=x", "grants": [], "max": 1,
    }));
    assert_eq!(status, 400, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("imports the `kubernetes` capability, which this pool does not grant"),
        "{answer}"
    );

    // No API server behind the kubeconfig: refused at once, naming
    // kubernetes.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, fake_kube::kubeconfig(&url, "default")).unwrap();
    let host = Host::start_with_env(&[], &[("KUBECONFIG", path.to_str().unwrap())]);
    let (status, answer) = common::post_json(
        &host.url("/api/v1/pools"),
        &json!({
            "name": "k", "provider": "kubernetes", "config": "image=x",
            "grants": ["kubernetes"], "max": 1,
        }),
    );
    assert_eq!(status, 400, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("grants: kubernetes") && message.contains("Kubernetes API server"),
        "{answer}"
    );
}
