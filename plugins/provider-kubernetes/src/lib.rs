//! `provider-kubernetes`: one pod per worker, through the host's
//! `kubernetes` capability (world `hodei:provider/kubernetes-provider`).
//!
//! Each worker is a pod named `hodei-<worker-id>` in the configured
//! namespace, labelled with the install, pool and worker id, running the
//! image's `hodei-agent` with the worker's flags, the registration token in
//! its environment (one-time and bound to the worker id, so a reader of the
//! pod spec cannot reuse it), and the offer's cpu and memory as requests.
//! A pod is only deleted when its labels say it is this pool's.
//!
//! The host implements the `kubernetes` capability on kube
//! (host/src/providers/capabilities/kubernetes.rs). This component is
//! unit-tested natively on the SDK's `FakeKubernetes`, and end to end by
//! host/tests/pools_kubernetes.rs against a fake API server whose
//! "kubelet" runs each pod's `hodei-agent` as a local process.
//!
//! Configuration (whitespace-separated words): `image=<ref>` (required),
//! `namespace=<ns>` (default: the host's, i.e. its kubeconfig's),
//! `agent=<path>` (default
//! `/hodei-agent`), and what each worker offers: `cpu-millis=<n>`,
//! `memory-mb=<n>` (both also the pod's requests), `slots=<n>`,
//! `label=<key>=<value>`.

use hodei_plugin_sdk::provider::{
    self, CapabilityError, ImportedKubernetes, Kubernetes, LABEL_WORKER, OwnedWorker, Pod,
    PodPhase, PodSpec, PoolIdentity, Provider, ProviderError, WorkerOffer, WorkerSpec,
    WorkerStatus,
};

/// Name used in messages.
const NAME: &str = "provider-kubernetes";

/// Pods for one pool.
#[derive(Debug)]
pub struct KubernetesProvider<K> {
    kube: K,
    identity: PoolIdentity,
    namespace: String,
    image: String,
    agent: String,
    offer: WorkerOffer,
}

impl<K: Kubernetes + 'static> Provider for KubernetesProvider<K> {
    type Capability = K;

    fn configure(kube: K, identity: &PoolIdentity, config: &str) -> Result<Self, ProviderError> {
        let known = [
            "image",
            "namespace",
            "agent",
            "cpu-millis",
            "memory-mb",
            "slots",
            "label",
        ];
        let mut provider = Self {
            kube,
            identity: identity.clone(),
            namespace: String::new(),
            image: String::new(),
            agent: "/hodei-agent".to_owned(),
            offer: WorkerOffer {
                labels: Vec::new(),
                cpu_millis: 1000,
                memory_mb: 1024,
                slots: 1,
                gpus: 0,
                startup_estimate_ms: 3000,
            },
        };
        for (key, value) in provider::settings(NAME, config, &known)? {
            match key {
                "image" => provider.image = value.to_owned(),
                "namespace" => provider.namespace = value.to_owned(),
                "agent" => provider.agent = value.to_owned(),
                "cpu-millis" => provider.offer.cpu_millis = number(key, value)?,
                "memory-mb" => provider.offer.memory_mb = number(key, value)?,
                "slots" => provider.offer.slots = number(key, value)?,
                _ => provider.offer.labels.push(provider::parse_label(value)?),
            }
        }
        if provider.image.is_empty() {
            return Err(ProviderError::Terminal(format!(
                "{NAME}: no image configured; add image=<ref> to the pool's provider configuration"
            )));
        }
        Ok(provider)
    }

    fn info(&self) -> WorkerOffer {
        self.offer.clone()
    }

    fn create(&self, worker_id: &str, spec: &WorkerSpec) -> Result<String, ProviderError> {
        provider::check_worker_id(worker_id)?;
        let (args, env) = provider::agent_command(worker_id, spec)?;
        let name = pod_name(worker_id);
        if let Some(existing) = self.ours(worker_id)? {
            return match existing.phase {
                PodPhase::Succeeded | PodPhase::Failed(_) => {
                    // A pod cannot be restarted and its name is taken until
                    // it is gone: delete it and let the host retry.
                    self.delete(&name)?;
                    Err(ProviderError::Transient(format!(
                        "pod {name} had ended; deleted it, create again"
                    )))
                }
                _ => Ok(name),
            };
        }
        let mut command = vec![self.agent.clone()];
        command.extend(args);
        let pod = PodSpec {
            namespace: self.namespace.clone(),
            name: name.clone(),
            image: self.image.clone(),
            command,
            env,
            labels: provider::worker_labels(&self.identity, worker_id),
            cpu_millis: self.offer.cpu_millis,
            memory_mb: self.offer.memory_mb,
        };
        match self.kube.create_pod(&pod) {
            Ok(()) => Ok(name),
            Err(CapabilityError::Conflict(_)) if self.ours(worker_id)?.is_some() => Ok(name),
            Err(e) => Err(e.into_provider_error("create pod")),
        }
    }

    fn destroy(&self, worker_id: &str) -> Result<(), ProviderError> {
        match self.ours(worker_id)? {
            Some(_) => self.delete(&pod_name(worker_id)),
            None => Ok(()),
        }
    }

    fn status(&self, worker_id: &str) -> Result<WorkerStatus, ProviderError> {
        Ok(self
            .ours(worker_id)?
            .map_or(WorkerStatus::Unknown, |pod| status_of(pod.phase)))
    }

    fn list(&self) -> Result<Vec<OwnedWorker>, ProviderError> {
        let pods = self
            .kube
            .list_pods(&self.namespace, &provider::pool_labels(&self.identity))
            .map_err(|e| e.into_provider_error("list pods"))?;
        Ok(pods
            .into_iter()
            .filter_map(|pod| {
                let worker_id = provider::labels_of(&pod.labels)
                    .get(LABEL_WORKER)?
                    .to_string();
                Some(OwnedWorker {
                    worker_id,
                    handle: pod.name,
                    status: status_of(pod.phase),
                })
            })
            .collect())
    }
}

impl<K: Kubernetes> KubernetesProvider<K> {
    /// The pod of `worker_id` if it exists and is this pool's; a foreign
    /// pod with that name is a terminal error (never touched).
    fn ours(&self, worker_id: &str) -> Result<Option<Pod>, ProviderError> {
        let name = pod_name(worker_id);
        let pod = match self.kube.get_pod(&self.namespace, &name) {
            Ok(pod) => pod,
            Err(CapabilityError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into_provider_error("get pod")),
        };
        let wanted = provider::worker_labels(&self.identity, worker_id);
        if wanted.iter().all(|label| pod.labels.contains(label)) {
            Ok(Some(pod))
        } else {
            Err(ProviderError::Terminal(format!(
                "{NAME}: pod {name} exists in namespace {:?} but is not this pool's",
                self.namespace
            )))
        }
    }

    fn delete(&self, name: &str) -> Result<(), ProviderError> {
        match self.kube.delete_pod(&self.namespace, name) {
            Ok(()) | Err(CapabilityError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into_provider_error("delete pod")),
        }
    }
}

/// `hodei-<worker-id>`: a valid pod name for any valid worker id.
fn pod_name(worker_id: &str) -> String {
    format!("hodei-{worker_id}")
}

fn status_of(phase: PodPhase) -> WorkerStatus {
    match phase {
        PodPhase::Pending => WorkerStatus::Starting,
        PodPhase::Running => WorkerStatus::Running,
        PodPhase::Succeeded => WorkerStatus::Exited(0),
        PodPhase::Failed(code) => WorkerStatus::Exited(code),
        PodPhase::Unknown => WorkerStatus::Unknown,
    }
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ProviderError> {
    value.parse().map_err(|_| {
        ProviderError::Terminal(format!("{NAME}: {key}={value:?} is not a valid number"))
    })
}

hodei_plugin_sdk::export_provider!(KubernetesProvider<ImportedKubernetes>);

#[cfg(test)]
mod tests {
    use super::*;
    use hodei_plugin_sdk::provider::testing::FakeKubernetes;

    fn identity(pool: &str) -> PoolIdentity {
        PoolIdentity {
            install: "install-1".into(),
            pool: pool.into(),
        }
    }

    fn spec() -> WorkerSpec {
        WorkerSpec {
            server_url: "http://hodei.hodei.svc:50051".into(),
            token: "one-time-token".into(),
            labels: vec![("pool".into(), "k8s".into())],
            slots: 2,
            ephemeral: false,
            env: Vec::new(),
        }
    }

    fn kube_provider(kube: &FakeKubernetes, pool: &str) -> KubernetesProvider<FakeKubernetes> {
        KubernetesProvider::configure(
            kube.clone(),
            &identity(pool),
            "image=hodei-worker:0.1.0 namespace=ci cpu-millis=500 memory-mb=256",
        )
        .unwrap()
    }

    #[test]
    fn create_makes_a_labelled_pod_with_requests_and_the_agent() {
        let kube = FakeKubernetes::default();
        let name = kube_provider(&kube, "k8s").create("w-1", &spec()).unwrap();
        assert_eq!(name, "hodei-w-1");
        let pods = kube.pods();
        assert_eq!(pods.len(), 1);
        let pod = &pods[0];
        assert_eq!(
            (pod.namespace.as_str(), pod.name.as_str()),
            ("ci", "hodei-w-1")
        );
        assert_eq!((pod.cpu_millis, pod.memory_mb), (500, 256));
        assert_eq!(pod.command[0], "/hodei-agent");
        assert!(
            pod.command.contains(&"--name".to_owned()) && pod.command.contains(&"w-1".to_owned())
        );
        assert!(!pod.command.iter().any(|a| a.contains("one-time-token")));
        assert!(
            pod.env
                .contains(&("HODEI_TOKEN".into(), "one-time-token".into()))
        );
        let labels = provider::labels_of(&pod.labels);
        assert_eq!(labels.get("hodei.pool"), Some(&"k8s"));
        assert_eq!(labels.get("hodei.worker"), Some(&"w-1"));
    }

    #[test]
    fn lifecycle_follows_the_pod_phase() {
        let kube = FakeKubernetes::default();
        let provider = kube_provider(&kube, "k8s");
        provider.create("w-1", &spec()).unwrap();
        assert_eq!(provider.status("w-1").unwrap(), WorkerStatus::Starting);
        // Idempotent while it lives.
        assert_eq!(provider.create("w-1", &spec()).unwrap(), "hodei-w-1");
        assert_eq!(kube.pods().len(), 1);
        kube.set_phase("hodei-w-1", PodPhase::Running);
        assert_eq!(provider.status("w-1").unwrap(), WorkerStatus::Running);
        assert_eq!(
            provider.list().unwrap(),
            [OwnedWorker {
                worker_id: "w-1".into(),
                handle: "hodei-w-1".into(),
                status: WorkerStatus::Running
            }]
        );
        kube.set_phase("hodei-w-1", PodPhase::Failed(137));
        assert_eq!(provider.status("w-1").unwrap(), WorkerStatus::Exited(137));
        // An ended pod is deleted and the host told to retry.
        assert!(matches!(
            provider.create("w-1", &spec()),
            Err(ProviderError::Transient(_))
        ));
        assert!(kube.pods().is_empty());
        provider.create("w-1", &spec()).unwrap();
        provider.destroy("w-1").unwrap();
        provider.destroy("w-1").unwrap();
        assert!(kube.pods().is_empty());
        assert_eq!(provider.status("w-1").unwrap(), WorkerStatus::Unknown);
    }

    #[test]
    fn quota_is_terminal_an_unreachable_api_transient_foreign_pods_untouched() {
        let kube = FakeKubernetes::default();
        let provider = kube_provider(&kube, "k8s");
        kube.deny_creates(Some("exceeded quota: pods=10"));
        assert!(matches!(
            provider.create("w-1", &spec()),
            Err(ProviderError::Terminal(m)) if m.contains("exceeded quota")
        ));
        kube.deny_creates(None);
        kube.set_down(true);
        assert!(matches!(provider.list(), Err(ProviderError::Transient(_))));
        kube.set_down(false);
        kube_provider(&kube, "other")
            .create("w-2", &spec())
            .unwrap();
        assert!(matches!(
            provider.destroy("w-2"),
            Err(ProviderError::Terminal(_))
        ));
        assert_eq!(kube.pods().len(), 1);
        assert!(provider.list().unwrap().is_empty());
        assert!(KubernetesProvider::configure(kube, &identity("k8s"), "namespace=ci").is_err());
    }
}
