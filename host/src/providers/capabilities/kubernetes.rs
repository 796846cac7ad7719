//! The `kubernetes` capability: a small pod subset on kube (create,
//! delete, get, list by label selector), in the namespace each call names.
//!
//! The host connects with the standard kube configuration,
//! `kube::Config::infer()`: the file `KUBECONFIG` names (else
//! `~/.kube/config`), else the in-cluster service account. Pools carry no
//! cluster settings of their own; a call whose namespace is empty uses
//! the kubeconfig's default namespace. Connecting asks the API server for
//! its version, so an unreachable cluster refuses the pool at once rather
//! than at its first create.
//!
//! TLS: kube with `rustls-tls` on the `ring` provider (the rest of the
//! workspace has no OpenSSL and no aws-lc; ring is pure Rust plus a little
//! assembly, nothing to install). Real clusters speak https; the test's
//! fake API server speaks plain http, which kube accepts from a kubeconfig
//! whatever the TLS features.
//!
//! Plugin calls are synchronous and kube is async: as in `docker`, each
//! request runs on the host's tokio runtime (the handle given at
//! construction) under this capability's timeout, while the calling
//! blocking thread waits; the time counts on the store's host clock, not
//! against the plugin's deadline. API answers map to the WIT error kinds:
//! 404 → `not-found`, 409 → `conflict`, 400 / 422 → `invalid`, 401 / 403
//! → `denied` (RBAC, quota admission), other statuses, connection errors
//! and timeouts → `unavailable`.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, EnvVar, Pod as KubePod, PodSpec as KubePodSpec, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, Config};
use tokio::runtime::Handle;
use wasmtime::component::{HasData, Linker};

use crate::plugins::provider::bindings::hodei::provider::kubernetes::{
    self as wit, Pod, PodPhase, PodSpec,
};
use crate::plugins::provider::bindings::hodei::provider::types::CapabilityError;

/// A `(key, value)` label.
type Label = (String, String);

/// The one container of a worker pod.
const CONTAINER: &str = "agent";

/// One API server connection; clones share it.
#[derive(Clone)]
pub struct KubernetesCapability {
    client: Client,
    default_namespace: String,
    runtime: Handle,
    timeout: Duration,
}

impl std::fmt::Debug for KubernetesCapability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesCapability")
            .field("default_namespace", &self.default_namespace)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl KubernetesCapability {
    /// Reads the kube configuration (`KUBECONFIG`, `~/.kube/config`, or
    /// in-cluster), connects and asks the API server's version; each later
    /// request runs on `runtime` and may take `timeout`.
    pub fn connect(runtime: Handle, timeout: Duration) -> Result<Self, CapabilityError> {
        let (client, default_namespace) = crate::plugins::blocking_allowed(|| {
            runtime.block_on(async {
                let config = Config::infer().await.map_err(|e| {
                    CapabilityError::Unavailable(format!("no usable kube configuration: {e}"))
                })?;
                let namespace = config.default_namespace.clone();
                // The client spawns its request buffer: build it inside the
                // runtime.
                let client = Client::try_from(config).map_err(|e| unavailable(&e))?;
                Ok::<_, CapabilityError>((client, namespace))
            })
        })?;
        block_on(&runtime, timeout, client.apiserver_version())?;
        Ok(Self {
            client,
            default_namespace,
            runtime,
            timeout,
        })
    }

    /// Creates a pod with one container running `spec.command`.
    pub fn create_pod(&self, spec: PodSpec) -> Result<(), CapabilityError> {
        let api = self.pods(&spec.namespace);
        let pod = pod_of(spec);
        self.run(api.create(&PostParams::default(), &pod))
            .map(|_| ())
    }

    /// Deletes a pod (gracefully: the kubelet sends SIGTERM, then SIGKILL
    /// after the pod's grace period).
    pub fn delete_pod(&self, namespace: &str, name: &str) -> Result<(), CapabilityError> {
        let api = self.pods(namespace);
        self.run(api.delete(name, &DeleteParams::default()))
            .map(|_| ())
    }

    /// One pod by name.
    pub fn get_pod(&self, namespace: &str, name: &str) -> Result<Pod, CapabilityError> {
        let api = self.pods(namespace);
        self.run(api.get(name)).map(|pod| wit_pod(&pod))
    }

    /// The pods carrying every label of `selector`.
    pub fn list_pods(
        &self,
        namespace: &str,
        selector: &[Label],
    ) -> Result<Vec<Pod>, CapabilityError> {
        let api = self.pods(namespace);
        let params = ListParams::default().labels(&label_selector(selector));
        let pods = self.run(api.list(&params))?;
        Ok(pods.items.iter().map(wit_pod).collect())
    }

    /// The pod API of `namespace`, the kubeconfig's default if empty.
    fn pods(&self, namespace: &str) -> Api<KubePod> {
        let namespace = if namespace.is_empty() {
            &self.default_namespace
        } else {
            namespace
        };
        Api::namespaced(self.client.clone(), namespace)
    }

    fn run<T>(
        &self,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, CapabilityError> {
        block_on(&self.runtime, self.timeout, request)
    }
}

/// Runs `request` on `runtime` from a blocking thread, within `timeout`.
fn block_on<T>(
    runtime: &Handle,
    timeout: Duration,
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, CapabilityError> {
    crate::plugins::blocking_allowed(|| {
        runtime.block_on(async {
            match tokio::time::timeout(timeout, request).await {
                Ok(answer) => answer.map_err(|e| classify(&e)),
                Err(_) => Err(CapabilityError::Unavailable(format!(
                    "the Kubernetes API server did not answer within {timeout:?}"
                ))),
            }
        })
    })
}

fn classify(error: &kube::Error) -> CapabilityError {
    let kube::Error::Api(status) = error else {
        return unavailable(error);
    };
    let message = if status.message.is_empty() {
        status.reason.clone()
    } else {
        status.message.clone()
    };
    match status.code {
        404 => CapabilityError::NotFound(message),
        409 => CapabilityError::Conflict(message),
        400 | 422 => CapabilityError::Invalid(message),
        401 | 403 => CapabilityError::Denied(message),
        code => CapabilityError::Unavailable(format!("{code}: {message}")),
    }
}

fn unavailable(error: &kube::Error) -> CapabilityError {
    CapabilityError::Unavailable(format!("Kubernetes API server: {error}"))
}

/// `k1=v1,k2=v2`.
fn label_selector(selector: &[Label]) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The API object of a WIT pod spec: one container, never restarted (a
/// worker that exited is the host's to replace), cpu and memory as both
/// requests and limits when non-zero.
fn pod_of(spec: PodSpec) -> KubePod {
    let mut resources = BTreeMap::new();
    if spec.cpu_millis > 0 {
        resources.insert("cpu".to_owned(), Quantity(format!("{}m", spec.cpu_millis)));
    }
    if spec.memory_mb > 0 {
        resources.insert(
            "memory".to_owned(),
            Quantity(format!("{}Mi", spec.memory_mb)),
        );
    }
    let resources = (!resources.is_empty()).then(|| ResourceRequirements {
        requests: Some(resources.clone()),
        limits: Some(resources),
        ..Default::default()
    });
    let env = spec
        .env
        .into_iter()
        .map(|(name, value)| EnvVar {
            name,
            value: Some(value),
            ..Default::default()
        })
        .collect();
    KubePod {
        metadata: ObjectMeta {
            name: Some(spec.name),
            namespace: (!spec.namespace.is_empty()).then_some(spec.namespace),
            labels: Some(spec.labels.into_iter().collect()),
            ..Default::default()
        },
        spec: Some(KubePodSpec {
            restart_policy: Some("Never".to_owned()),
            containers: vec![Container {
                name: CONTAINER.to_owned(),
                image: Some(spec.image),
                command: Some(spec.command),
                env: Some(env),
                resources,
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The WIT view of an API pod: name, labels (sorted), phase with the
/// container's exit code when it failed.
fn wit_pod(pod: &KubePod) -> Pod {
    let status = pod.status.as_ref();
    let exit_code = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|statuses| {
            statuses
                .iter()
                .find_map(|c| c.state.as_ref()?.terminated.as_ref())
        })
        .map(|terminated| terminated.exit_code);
    Pod {
        name: pod.metadata.name.clone().unwrap_or_default(),
        labels: pod
            .metadata
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        phase: phase_of(status.and_then(|s| s.phase.as_deref()), exit_code),
    }
}

/// The WIT phase of an API phase word; a failed pod without a container
/// exit code reads as -1.
fn phase_of(phase: Option<&str>, exit_code: Option<i32>) -> PodPhase {
    match phase.unwrap_or("Pending") {
        "Pending" => PodPhase::Pending,
        "Running" => PodPhase::Running,
        "Succeeded" => PodPhase::Succeeded,
        "Failed" => PodPhase::Failed(exit_code.unwrap_or(-1)),
        _ => PodPhase::Unknown,
    }
}

/// The `kubernetes` imports of one store: the granted capability (if any)
/// and the store's host clock.
pub struct KubernetesView<'a> {
    capability: Option<&'a KubernetesCapability>,
    clock: &'a mut Duration,
}

impl std::fmt::Debug for KubernetesView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesView").finish_non_exhaustive()
    }
}

impl<'a> KubernetesView<'a> {
    /// A view over `capability`, adding time spent to `clock`.
    pub fn new(capability: Option<&'a KubernetesCapability>, clock: &'a mut Duration) -> Self {
        Self { capability, clock }
    }

    fn with<R>(
        &mut self,
        f: impl FnOnce(&KubernetesCapability) -> Result<R, CapabilityError>,
    ) -> Result<R, CapabilityError> {
        let capability = self.capability.ok_or_else(|| {
            CapabilityError::Denied("the kubernetes capability is not granted".into())
        })?;
        super::timed(self.clock, || f(capability))
    }
}

impl wit::Host for KubernetesView<'_> {
    fn create_pod(&mut self, spec: PodSpec) -> Result<(), CapabilityError> {
        self.with(|c| c.create_pod(spec))
    }

    fn delete_pod(&mut self, namespace: String, name: String) -> Result<(), CapabilityError> {
        self.with(|c| c.delete_pod(&namespace, &name))
    }

    fn get_pod(&mut self, namespace: String, name: String) -> Result<Pod, CapabilityError> {
        self.with(|c| c.get_pod(&namespace, &name))
    }

    fn list_pods(
        &mut self,
        namespace: String,
        selector: Vec<Label>,
    ) -> Result<Vec<Pod>, CapabilityError> {
        self.with(|c| c.list_pods(&namespace, &selector))
    }
}

struct HasKubernetes;

impl HasData for HasKubernetes {
    type Data<'a> = KubernetesView<'a>;
}

/// Adds the `hodei:provider/kubernetes` imports to `linker`; `get`
/// projects the store's state into a [`KubernetesView`].
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> KubernetesView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasKubernetes>(linker, get)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    #[test]
    fn api_answers_map_to_capability_errors() {
        let answer = |code: u16, message: &str| {
            classify(&kube::Error::Api(
                Status::failure(message, "Reason").with_code(code).boxed(),
            ))
        };
        assert!(
            matches!(answer(404, "pods \"x\" not found"), CapabilityError::NotFound(m) if m.contains("x"))
        );
        assert!(matches!(
            answer(409, "exists"),
            CapabilityError::Conflict(_)
        ));
        assert!(matches!(answer(422, "bad"), CapabilityError::Invalid(_)));
        assert!(matches!(answer(400, "bad"), CapabilityError::Invalid(_)));
        assert!(matches!(answer(403, "quota"), CapabilityError::Denied(_)));
        assert!(
            matches!(answer(503, "busy"), CapabilityError::Unavailable(m) if m.contains("503"))
        );
    }

    #[test]
    fn a_pod_spec_becomes_one_never_restarted_container_with_requests() {
        let pod = pod_of(PodSpec {
            namespace: "ci".into(),
            name: "hodei-w-1".into(),
            image: "hodei-worker:0.1.0".into(),
            command: vec!["/hodei-agent".into(), "--name".into(), "w-1".into()],
            env: vec![("HODEI_TOKEN".into(), "t".into())],
            labels: vec![("hodei.worker".into(), "w-1".into())],
            cpu_millis: 500,
            memory_mb: 0,
        });
        let json = serde_json::to_value(&pod).unwrap_or_default();
        assert_eq!(json["metadata"]["namespace"], "ci");
        assert_eq!(json["metadata"]["labels"]["hodei.worker"], "w-1");
        assert_eq!(json["spec"]["restartPolicy"], "Never");
        let container = &json["spec"]["containers"][0];
        assert_eq!(container["command"][2], "w-1");
        assert_eq!(container["env"][0]["name"], "HODEI_TOKEN");
        assert_eq!(container["resources"]["requests"]["cpu"], "500m");
        assert!(container["resources"]["requests"].get("memory").is_none());
        assert_eq!(
            label_selector(&[("a".into(), "1".into()), ("b".into(), "2".into())]),
            "a=1,b=2"
        );
    }

    #[test]
    fn phases_read_from_api_words() {
        assert_eq!(phase_of(None, None), PodPhase::Pending);
        assert_eq!(phase_of(Some("Running"), None), PodPhase::Running);
        assert_eq!(phase_of(Some("Succeeded"), Some(0)), PodPhase::Succeeded);
        assert_eq!(phase_of(Some("Failed"), Some(137)), PodPhase::Failed(137));
        assert_eq!(phase_of(Some("Failed"), None), PodPhase::Failed(-1));
        assert_eq!(phase_of(Some("Weird"), None), PodPhase::Unknown);
    }
}
