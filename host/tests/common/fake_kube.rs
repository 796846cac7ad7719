//! A fake Kubernetes API server for the kubernetes provider's tests: real
//! HTTP on 127.0.0.1 (axum), speaking the pod subset the host's
//! `kubernetes` capability uses, to the real kube client configured from
//! a real kubeconfig file (plain http, a bearer token the fake checks).
//!
//! Served: `GET /version`; `POST`, `GET` (one, or a list filtered by
//! `labelSelector` of `k=v` terms) and `DELETE` on
//! `/api/v1/namespaces/{ns}/pods[/{name}]`, with JSON `Status` objects on
//! errors (404 NotFound, 409 AlreadyExists, 422 Invalid, 401).
//!
//! Like a kubelet, creating a pod starts its container's command as a
//! local process: a command named `hodei-agent` (any directory) runs the
//! workspace's real agent binary with the pod's args and env (the env is
//! the container's plus `PATH`, nothing inherited). The pod is `Running`
//! while the process lives, `Succeeded` or `Failed` (with the container's
//! exit code) when it exits. `DELETE` is a graceful delete: the pod goes
//! at once, its process gets SIGTERM (what a kubelet sends), then its
//! whole process tree SIGKILL after a grace period. [`FakeKube::force_delete`]
//! is `kubectl delete pod --force --grace-period=0` or a lost node:
//! SIGKILL to the tree, the pod gone, behind the host's back.
//!
//! Not covered: scheduling, nodes, images (the image is recorded, never
//! pulled), resource enforcement, restarts, watches, resource versions and
//! optimistic concurrency, pods lingering while terminating, RBAC beyond
//! one token, namespaces as objects, TLS.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// The bearer token the kubeconfig carries and the fake requires.
const TOKEN: &str = "fake-kube-token";
/// Time between SIGTERM and SIGKILL on a graceful delete.
const GRACE: Duration = Duration::from_secs(5);

/// One pod as the fake holds it.
struct FakePod {
    /// The object as posted, with metadata filled in (status added on read).
    object: Value,
    /// Its container's process, while it is ours to reap.
    child: Option<Child>,
    /// `Running`, `Succeeded` or `Failed`.
    phase: &'static str,
    exit_code: Option<i32>,
}

#[derive(Default)]
struct Pods {
    by_key: BTreeMap<(String, String), FakePod>,
    created: usize,
}

#[derive(Clone)]
struct Shared {
    pods: Arc<Mutex<Pods>>,
    agent: PathBuf,
    logs: PathBuf,
}

impl Shared {
    fn pods(&self) -> MutexGuard<'_, Pods> {
        self.pods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A pod as a test sees it.
#[derive(Debug, Clone)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    pub labels: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
    pub image: String,
    pub pid: Option<u32>,
}

/// A running fake API server; its processes are killed on drop.
pub struct FakeKube {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    shared: Shared,
    dir: tempfile::TempDir,
}

impl FakeKube {
    /// Starts the server on a port picked by the OS, with `default_namespace`
    /// in its kubeconfig.
    pub fn start(default_namespace: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let shared = Shared {
            pods: Arc::default(),
            agent: super::agent_bin(),
            logs: dir.path().to_owned(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/version", get(version))
            .route("/api/v1/namespaces/{ns}/pods", get(list).post(create))
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}",
                get(get_one).delete(delete),
            )
            .with_state(shared.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        let reaper = shared.clone();
        std::thread::spawn(move || {
            loop {
                reap(&reaper);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let fake = Self { url, shared, dir };
        std::fs::write(fake.kubeconfig(), kubeconfig(&fake.url, default_namespace)).unwrap();
        fake
    }

    /// The kubeconfig file to pass to the host as `KUBECONFIG`.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    /// Every pod, in name order.
    pub fn pods(&self) -> Vec<PodView> {
        let pods = self.shared.pods();
        pods.by_key.values().map(view_of).collect()
    }

    /// How many pods were ever created.
    pub fn created(&self) -> usize {
        self.shared.pods().created
    }

    /// What a pod's agent printed.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.shared.logs.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Deletes a pod behind the host's back with no grace: its process
    /// tree is SIGKILLed and the pod is gone.
    pub fn force_delete(&self, namespace: &str, name: &str) {
        let removed = self
            .shared
            .pods()
            .by_key
            .remove(&(namespace.to_owned(), name.to_owned()));
        let mut pod = removed.unwrap_or_else(|| panic!("no pod {namespace}/{name}"));
        if let Some(mut child) = pod.child.take() {
            kill_tree(child.id(), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        let mut pods = self.shared.pods();
        for pod in pods.by_key.values_mut() {
            if let Some(mut child) = pod.child.take() {
                kill_tree(child.id(), Signal::SIGKILL);
                let _ = child.wait();
            }
        }
    }
}

/// A kubeconfig for the server at `url` (plain http) with the fake's
/// token and `namespace` as the default.
pub fn kubeconfig(url: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\n\
         current-context: fake\nusers:\n- name: fake\n  user:\n    token: {TOKEN}\n"
    )
}

/// A `Status` failure object with its HTTP code.
fn failure(code: StatusCode, reason: &str, message: String) -> (StatusCode, Json<Value>) {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, Json(body))
}

type Answer = Result<(StatusCode, Json<Value>), (StatusCode, Json<Value>)>;

fn authorized(headers: &HeaderMap) -> Result<(), (StatusCode, Json<Value>)> {
    let expected = format!("Bearer {TOKEN}");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str()) {
        Ok(())
    } else {
        Err(failure(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized".into(),
        ))
    }
}

async fn version() -> Json<Value> {
    Json(json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "gitCommit": "fake",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
        "compiler": "gc", "platform": "linux/amd64",
    }))
}

async fn create(
    State(shared): State<Shared>,
    UrlPath(ns): UrlPath<String>,
    headers: HeaderMap,
    Json(mut object): Json<Value>,
) -> Answer {
    authorized(&headers)?;
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
        return Err(failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "Pod \"\" is invalid: metadata.name: Required value".into(),
        ));
    };
    let container = object["spec"]["containers"][0].clone();
    let Some(command) = container["command"].as_array().filter(|c| !c.is_empty()) else {
        return Err(failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("Pod {name:?} is invalid: spec.containers[0].command: Required value"),
        ));
    };
    let command: Vec<String> = command
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    let key = (ns.clone(), name.clone());
    let mut pods = shared.pods();
    if pods.by_key.contains_key(&key) {
        return Err(failure(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("pods {name:?} already exists"),
        ));
    }
    object["apiVersion"] = json!("v1");
    object["kind"] = json!("Pod");
    object["metadata"]["namespace"] = json!(ns);
    object["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
    object["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    let (child, phase) = match start_container(&shared, &name, &command, &container["env"]) {
        Ok(child) => (Some(child), "Running"),
        Err(e) => {
            // What `kubectl logs` would not show but a test needs.
            let _ = std::fs::write(shared.logs.join(format!("{name}.log")), e.to_string());
            (None, "Failed")
        }
    };
    let pod = FakePod {
        object,
        child,
        phase,
        exit_code: (phase == "Failed").then_some(128),
    };
    let answer = with_status(&pod);
    pods.by_key.insert(key, pod);
    pods.created += 1;
    Ok((StatusCode::CREATED, Json(answer)))
}

async fn get_one(
    State(shared): State<Shared>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    authorized(&headers)?;
    let pods = shared.pods();
    match pods.by_key.get(&(ns, name.clone())) {
        Some(pod) => Ok((StatusCode::OK, Json(with_status(pod)))),
        None => Err(not_found(&name)),
    }
}

async fn list(
    State(shared): State<Shared>,
    UrlPath(ns): UrlPath<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Answer {
    authorized(&headers)?;
    let mut wanted = Vec::new();
    for term in query
        .get("labelSelector")
        .map_or("", String::as_str)
        .split(',')
        .filter(|t| !t.is_empty())
    {
        let Some((key, value)) = term.split_once('=') else {
            return Err(failure(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("unable to parse requirement: {term:?} (the fake knows k=v only)"),
            ));
        };
        wanted.push((key.to_owned(), value.to_owned()));
    }
    let pods = shared.pods();
    let items: Vec<Value> = pods
        .by_key
        .iter()
        .filter(|((pod_ns, _), _)| *pod_ns == ns)
        .filter(|(_, pod)| {
            wanted
                .iter()
                .all(|(k, v)| pod.object["metadata"]["labels"][k].as_str() == Some(v.as_str()))
        })
        .map(|(_, pod)| with_status(pod))
        .collect();
    Ok((
        StatusCode::OK,
        Json(json!({
            "apiVersion": "v1", "kind": "PodList", "metadata": { "resourceVersion": "1" },
            "items": items,
        })),
    ))
}

async fn delete(
    State(shared): State<Shared>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    authorized(&headers)?;
    let removed = shared.pods().by_key.remove(&(ns, name.clone()));
    let Some(mut pod) = removed else {
        return Err(not_found(&name));
    };
    let answer = with_status(&pod);
    if let Some(child) = pod.child.take() {
        std::thread::spawn(move || stop_gracefully(child));
    }
    Ok((StatusCode::OK, Json(answer)))
}

fn not_found(name: &str) -> (StatusCode, Json<Value>) {
    failure(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("pods {name:?} not found"),
    )
}

/// Starts the container's command: `hodei-agent` is the workspace's
/// agent; anything else cannot run here.
fn start_container(
    shared: &Shared,
    name: &str,
    command: &[String],
    env: &Value,
) -> std::io::Result<Child> {
    let program = Path::new(&command[0]);
    if program.file_name().and_then(|n| n.to_str()) != Some("hodei-agent") {
        return Err(std::io::Error::other(format!(
            "the fake kubelet only runs hodei-agent, not {}",
            command[0]
        )));
    }
    let log = std::fs::File::create(shared.logs.join(format!("{name}.log")))?;
    let mut process = Command::new(&shared.agent);
    process
        .args(&command[1..])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    for var in env.as_array().into_iter().flatten() {
        if let (Some(k), Some(v)) = (var["name"].as_str(), var["value"].as_str()) {
            process.env(k, v);
        }
    }
    process.spawn()
}

/// SIGTERM to the container's main process, SIGKILL to its tree after
/// the grace period.
fn stop_gracefully(mut child: Child) {
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    kill_tree(child.id(), Signal::SIGKILL);
    let _ = child.wait();
}

/// Signals `pid` and every descendant (a container's processes die with
/// it; the agent's jobs run in process groups of their own).
fn kill_tree(pid: u32, signal: Signal) {
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        tree.extend(children_of(tree[i]));
        i += 1;
    }
    for pid in tree {
        let _ = kill(Pid::from_raw(pid as i32), signal);
    }
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // `pid (comm) state ppid ...`; comm may hold spaces.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}

/// Marks pods whose process exited as `Succeeded` or `Failed`.
fn reap(shared: &Shared) {
    let mut pods = shared.pods();
    for pod in pods.by_key.values_mut() {
        let Some(child) = pod.child.as_mut() else {
            continue;
        };
        if let Ok(Some(status)) = child.try_wait() {
            use std::os::unix::process::ExitStatusExt;
            let code = status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            pod.phase = if code == 0 { "Succeeded" } else { "Failed" };
            pod.exit_code = Some(code);
            pod.child = None;
        }
    }
}

/// The pod object with its current status.
fn with_status(pod: &FakePod) -> Value {
    let mut object = pod.object.clone();
    let state = match pod.exit_code {
        Some(code) => json!({ "terminated": {
            "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
        }}),
        None => json!({ "running": { "startedAt": "2026-01-01T00:00:00Z" } }),
    };
    object["status"] = json!({
        "phase": pod.phase,
        "containerStatuses": [{
            "name": object["spec"]["containers"][0]["name"].clone(),
            "image": object["spec"]["containers"][0]["image"].clone(),
            "imageID": "", "ready": pod.phase == "Running", "restartCount": 0,
            "state": state,
        }],
    });
    object
}

fn view_of(pod: &FakePod) -> PodView {
    let object = &pod.object;
    let strings = |value: &Value| -> BTreeMap<String, String> {
        value
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect()
    };
    let container = &object["spec"]["containers"][0];
    PodView {
        namespace: object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        name: object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        phase: pod.phase.to_owned(),
        labels: strings(&object["metadata"]["labels"]),
        env: container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| {
                Some((
                    v["name"].as_str()?.to_owned(),
                    v["value"].as_str()?.to_owned(),
                ))
            })
            .collect(),
        image: container["image"].as_str().unwrap_or_default().to_owned(),
        pid: pod.child.as_ref().map(Child::id),
    }
}
