//! `provider-docker`: one container per worker, through the host's `docker`
//! capability (world `hodei:provider/docker-provider`).
//!
//! Each worker is a container named `hodei-<worker-id>`, labelled with the
//! install, pool and worker id (`hodei.install`, `hodei.pool`,
//! `hodei.worker`), running the image's `hodei-agent` with the worker's
//! flags and the registration token in its environment. Host networking is
//! the default, so the agent dials the host's 127.0.0.1 address as given.
//! A container is only ever stopped or removed when its labels say it is
//! this pool's: a name clash with a foreign container is a terminal error,
//! never a removal.
//!
//! Configuration (whitespace-separated words): `image=<ref>` (required;
//! the image must be on the engine: `scripts/worker-image.sh` builds
//! `hodei-worker:<version>`), `agent=<path>` (the agent inside the image,
//! default `/hodei-agent`), `network=host|bridge` (default `host`),
//! `stop-timeout=<secs>` (default 10), and what each worker offers:
//! `cpu-millis=<n>`, `memory-mb=<n>`, `slots=<n>`, `label=<key>=<value>`.

use hodei_plugin_sdk::provider::{
    self, CapabilityError, Container, ContainerSpec, ContainerState, Docker, ImportedDocker,
    LABEL_WORKER, OwnedWorker, PoolIdentity, Provider, ProviderError, WorkerOffer, WorkerSpec,
    WorkerStatus,
};

/// Name used in messages.
const NAME: &str = "provider-docker";

/// Containers for one pool.
#[derive(Debug)]
pub struct DockerProvider<D> {
    docker: D,
    identity: PoolIdentity,
    image: String,
    agent: String,
    host_network: bool,
    stop_timeout_secs: u32,
    offer: WorkerOffer,
}

impl<D: Docker + 'static> Provider for DockerProvider<D> {
    type Capability = D;

    fn configure(docker: D, identity: &PoolIdentity, config: &str) -> Result<Self, ProviderError> {
        let known = [
            "image",
            "agent",
            "network",
            "stop-timeout",
            "cpu-millis",
            "memory-mb",
            "slots",
            "label",
        ];
        let mut provider = Self {
            docker,
            identity: identity.clone(),
            image: String::new(),
            agent: "/hodei-agent".to_owned(),
            host_network: true,
            stop_timeout_secs: 10,
            offer: WorkerOffer {
                labels: Vec::new(),
                cpu_millis: 1000,
                memory_mb: 1024,
                slots: 1,
                gpus: 0,
                startup_estimate_ms: 1500,
            },
        };
        for (key, value) in provider::settings(NAME, config, &known)? {
            match key {
                "image" => provider.image = value.to_owned(),
                "agent" => provider.agent = value.to_owned(),
                "network" => {
                    provider.host_network = match value {
                        "host" => true,
                        "bridge" => false,
                        other => {
                            return Err(ProviderError::Terminal(format!(
                                "{NAME}: network={other:?}: expected host or bridge"
                            )));
                        }
                    }
                }
                "stop-timeout" => provider.stop_timeout_secs = number(key, value)?,
                "cpu-millis" => provider.offer.cpu_millis = number(key, value)?,
                "memory-mb" => provider.offer.memory_mb = number(key, value)?,
                "slots" => provider.offer.slots = number(key, value)?,
                _ => provider.offer.labels.push(provider::parse_label(value)?),
            }
        }
        if provider.image.is_empty() {
            return Err(ProviderError::Terminal(format!(
                "{NAME}: no image configured; add image=<ref> to the pool's provider \
                 configuration (scripts/worker-image.sh builds hodei-worker:<version>)"
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
        if let Some(existing) = self.ours(worker_id)? {
            match existing.state {
                ContainerState::Exited(_) => self.remove(&existing.id)?,
                _ => return Ok(existing.id),
            }
        }
        let mut cmd = vec![self.agent.clone()];
        cmd.extend(args);
        let container = ContainerSpec {
            name: container_name(worker_id),
            image: self.image.clone(),
            cmd,
            env,
            labels: provider::worker_labels(&self.identity, worker_id),
            host_network: self.host_network,
        };
        match self.docker.create_and_start(&container) {
            Ok(id) => Ok(id),
            // Created meanwhile (a retried call): it is the answer.
            Err(CapabilityError::Conflict(_)) => match self.ours(worker_id)? {
                Some(existing) => Ok(existing.id),
                None => Err(ProviderError::Transient(format!(
                    "container {} was in use and is gone; retry",
                    container.name
                ))),
            },
            Err(CapabilityError::Invalid(m)) => Err(ProviderError::Terminal(format!(
                "{NAME}: cannot create a container from image {:?}: {m} (the image must be \
                 on the engine; scripts/worker-image.sh builds one)",
                self.image
            ))),
            Err(e) => Err(e.into_provider_error("create container")),
        }
    }

    fn destroy(&self, worker_id: &str) -> Result<(), ProviderError> {
        let Some(container) = self.ours(worker_id)? else {
            return Ok(());
        };
        if container.state == ContainerState::Running {
            match self.docker.stop(&container.id, self.stop_timeout_secs) {
                Ok(()) | Err(CapabilityError::NotFound(_)) => {}
                Err(e) => return Err(e.into_provider_error("stop container")),
            }
        }
        self.remove(&container.id)
    }

    fn status(&self, worker_id: &str) -> Result<WorkerStatus, ProviderError> {
        Ok(self
            .ours(worker_id)?
            .map_or(WorkerStatus::Unknown, |c| status_of(&c.state)))
    }

    fn list(&self) -> Result<Vec<OwnedWorker>, ProviderError> {
        let containers = self
            .docker
            .list(&provider::pool_labels(&self.identity))
            .map_err(|e| e.into_provider_error("list containers"))?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let worker_id = provider::labels_of(&c.labels)
                    .get(LABEL_WORKER)?
                    .to_string();
                Some(OwnedWorker {
                    worker_id,
                    handle: c.id,
                    status: status_of(&c.state),
                })
            })
            .collect())
    }
}

impl<D: Docker> DockerProvider<D> {
    /// The container of `worker_id`, if there is one and its labels say it
    /// is this pool's; a foreign container with that name is a terminal
    /// error (never touched).
    fn ours(&self, worker_id: &str) -> Result<Option<Container>, ProviderError> {
        let name = container_name(worker_id);
        let container = match self.docker.inspect(&name) {
            Ok(container) => container,
            Err(CapabilityError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into_provider_error("inspect container")),
        };
        let wanted = provider::worker_labels(&self.identity, worker_id);
        if wanted.iter().all(|label| container.labels.contains(label)) {
            Ok(Some(container))
        } else {
            Err(ProviderError::Terminal(format!(
                "{NAME}: container {name} exists but is not this pool's (labels {:?}); \
                 remove it or use another worker id",
                container.labels
            )))
        }
    }

    fn remove(&self, id: &str) -> Result<(), ProviderError> {
        match self.docker.remove(id) {
            Ok(()) | Err(CapabilityError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into_provider_error("remove container")),
        }
    }
}

/// `hodei-<worker-id>`: worker ids are unique per install and valid in
/// container names.
fn container_name(worker_id: &str) -> String {
    format!("hodei-{worker_id}")
}

fn status_of(state: &ContainerState) -> WorkerStatus {
    match state {
        ContainerState::Created => WorkerStatus::Starting,
        ContainerState::Running => WorkerStatus::Running,
        ContainerState::Exited(code) => WorkerStatus::Exited(*code),
        ContainerState::Other(_) => WorkerStatus::Unknown,
    }
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ProviderError> {
    value.parse().map_err(|_| {
        ProviderError::Terminal(format!("{NAME}: {key}={value:?} is not a valid number"))
    })
}

hodei_plugin_sdk::export_provider!(DockerProvider<ImportedDocker>);

#[cfg(test)]
mod tests {
    use super::*;
    use hodei_plugin_sdk::provider::testing::FakeDocker;

    const IMAGE: &str = "hodei-worker:0.1.0";

    fn identity(pool: &str) -> PoolIdentity {
        PoolIdentity {
            install: "install-1".into(),
            pool: pool.into(),
        }
    }

    fn spec() -> WorkerSpec {
        WorkerSpec {
            server_url: "http://127.0.0.1:50051".into(),
            token: "one-time-token".into(),
            labels: vec![("zone".into(), "a".into())],
            slots: 1,
            ephemeral: true,
            env: Vec::new(),
        }
    }

    fn docker_provider(docker: &FakeDocker, pool: &str) -> DockerProvider<FakeDocker> {
        DockerProvider::configure(docker.clone(), &identity(pool), &format!("image={IMAGE}"))
            .unwrap()
    }

    #[test]
    fn missing_image_is_a_clear_terminal_error() {
        let err = DockerProvider::configure(FakeDocker::default(), &identity("p"), "slots=2")
            .unwrap_err();
        assert!(
            matches!(&err, ProviderError::Terminal(m) if m.contains("no image configured")),
            "{err:?}"
        );
        assert!(
            DockerProvider::configure(
                FakeDocker::default(),
                &identity("p"),
                "image=x network=overlay"
            )
            .is_err()
        );
    }

    #[test]
    fn create_runs_the_agent_on_the_host_network_with_our_labels() {
        let docker = FakeDocker::default().with_image(IMAGE);
        let id = docker_provider(&docker, "p")
            .create("w-1", &spec())
            .unwrap();
        assert_eq!(id, "c1");
        let created = docker.containers();
        assert_eq!(created.len(), 1);
        let c = &created[0];
        assert_eq!(c.name, "hodei-w-1");
        assert_eq!(c.image, IMAGE);
        assert!(c.host_network);
        assert_eq!(c.cmd[0], "/hodei-agent");
        assert_eq!(
            &c.cmd[1..5],
            ["--server-url", "http://127.0.0.1:50051", "--name", "w-1"]
        );
        assert!(!c.cmd.iter().any(|a| a.contains("one-time-token")));
        assert!(
            c.env
                .contains(&("HODEI_TOKEN".into(), "one-time-token".into()))
        );
        let labels = provider::labels_of(&c.labels);
        assert_eq!(labels.get("hodei.install"), Some(&"install-1"));
        assert_eq!(labels.get("hodei.pool"), Some(&"p"));
        assert_eq!(labels.get("hodei.worker"), Some(&"w-1"));
    }

    #[test]
    fn create_is_idempotent_and_replaces_an_exited_container() {
        let docker = FakeDocker::default().with_image(IMAGE);
        let provider = docker_provider(&docker, "p");
        assert_eq!(provider.create("w-1", &spec()).unwrap(), "c1");
        assert_eq!(provider.create("w-1", &spec()).unwrap(), "c1");
        assert_eq!(docker.containers().len(), 1);
        docker.exit("hodei-w-1", 0);
        assert_eq!(provider.create("w-1", &spec()).unwrap(), "c2");
        assert_eq!(docker.containers().len(), 1);
    }

    #[test]
    fn a_missing_image_is_terminal_and_an_engine_down_transient() {
        let docker = FakeDocker::default();
        let provider = docker_provider(&docker, "p");
        let err = provider.create("w-1", &spec()).unwrap_err();
        assert!(
            matches!(&err, ProviderError::Terminal(m) if m.contains("No such image") && m.contains(IMAGE)),
            "{err:?}"
        );
        docker.set_down(true);
        assert!(matches!(
            provider.create("w-1", &spec()),
            Err(ProviderError::Transient(_))
        ));
        assert!(matches!(provider.list(), Err(ProviderError::Transient(_))));
    }

    #[test]
    fn foreign_containers_are_never_touched() {
        let docker = FakeDocker::default().with_image(IMAGE);
        docker_provider(&docker, "other")
            .create("w-1", &spec())
            .unwrap();
        let provider = docker_provider(&docker, "p");
        for result in [
            provider.create("w-1", &spec()).map(drop),
            provider.destroy("w-1"),
            provider.status("w-1").map(drop),
        ] {
            assert!(
                matches!(&result, Err(ProviderError::Terminal(m)) if m.contains("not this pool's")),
                "{result:?}"
            );
        }
        assert_eq!(docker.containers().len(), 1);
        assert!(provider.list().unwrap().is_empty());
    }

    #[test]
    fn status_list_and_destroy() {
        let docker = FakeDocker::default().with_image(IMAGE);
        let provider = docker_provider(&docker, "p");
        provider.create("w-1", &spec()).unwrap();
        provider.create("w-2", &spec()).unwrap();
        assert_eq!(provider.status("w-1").unwrap(), WorkerStatus::Running);
        assert_eq!(provider.status("w-3").unwrap(), WorkerStatus::Unknown);
        docker.exit("hodei-w-2", 3);
        assert_eq!(provider.status("w-2").unwrap(), WorkerStatus::Exited(3));
        let mut owned = provider.list().unwrap();
        owned.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        assert_eq!(
            owned,
            [
                OwnedWorker {
                    worker_id: "w-1".into(),
                    handle: "c1".into(),
                    status: WorkerStatus::Running
                },
                OwnedWorker {
                    worker_id: "w-2".into(),
                    handle: "c2".into(),
                    status: WorkerStatus::Exited(3)
                },
            ]
        );
        provider.destroy("w-1").unwrap();
        provider.destroy("w-2").unwrap();
        provider.destroy("w-2").unwrap();
        assert!(docker.containers().is_empty());
        assert!(provider.list().unwrap().is_empty());
    }
}
