//! The `docker` capability: a small container subset on bollard (create +
//! start, stop, remove, inspect, list by label), over the engine's unix
//! socket.
//!
//! Plugin calls are synchronous, bollard is async: each request runs on
//! the host's tokio runtime (the handle given at construction) under this
//! capability's timeout, and the calling thread, which is a blocking one
//! (plugin calls never run on an async worker), waits for it. Engine
//! answers map to the WIT error kinds: 404 → `not-found` (an image missing
//! on create → `invalid`: retrying cannot help), 409 → `conflict`, other
//! 4xx → `invalid`, 5xx / socket / timeout → `unavailable`. The host never
//! pulls images: a provider names an image that is on the engine.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
    StopContainerOptions,
};
use tokio::runtime::Handle;
use wasmtime::component::{HasData, Linker};

use crate::plugins::provider::bindings::hodei::provider::docker::{
    self as wit, Container, ContainerSpec, ContainerState,
};
use crate::plugins::provider::bindings::hodei::provider::types::CapabilityError;

/// A `(key, value)` label.
type Label = (String, String);

/// One engine connection; clones share it.
#[derive(Clone)]
pub struct DockerCapability {
    docker: Docker,
    runtime: Handle,
    timeout: Duration,
}

impl std::fmt::Debug for DockerCapability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerCapability")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl DockerCapability {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket)
    /// and agrees on an API version; each later request runs on `runtime`
    /// and may take `timeout` (a stop waits for the container's own stop
    /// timeout on top).
    pub fn connect(runtime: Handle, timeout: Duration) -> Result<Self, CapabilityError> {
        let docker = {
            let _entered = runtime.enter();
            Docker::connect_with_local_defaults().map_err(|e| unavailable(&e))?
        };
        let docker = block_on(&runtime, timeout, docker.negotiate_version())?;
        Ok(Self {
            docker,
            runtime,
            timeout,
        })
    }

    /// Creates and starts a container; returns its id.
    pub fn create_and_start(&self, spec: ContainerSpec) -> Result<String, CapabilityError> {
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(spec.cmd),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(spec.labels.into_iter().collect::<HashMap<_, _>>()),
            host_config: Some(HostConfig {
                network_mode: Some(if spec.host_network { "host" } else { "bridge" }.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        let created = self
            .run(self.docker.create_container(Some(options), body))
            .map_err(|e| match e {
                // 404 on create: the image is not on the engine.
                CapabilityError::NotFound(m) => CapabilityError::Invalid(m),
                other => other,
            })?;
        if let Err(e) = self.run(self.docker.start_container(&created.id, None)) {
            // A container that cannot start is of no use to anyone.
            let _ = self.remove(&created.id);
            return Err(e);
        }
        Ok(created.id)
    }

    /// Stops a container: SIGTERM, SIGKILL after `timeout_secs`.
    pub fn stop(&self, id: &str, timeout_secs: u32) -> Result<(), CapabilityError> {
        let options = StopContainerOptions {
            t: Some(i32::try_from(timeout_secs).unwrap_or(i32::MAX)),
            ..Default::default()
        };
        let stop_wait = Duration::from_secs(timeout_secs.into());
        block_on(
            &self.runtime,
            self.timeout + stop_wait,
            self.docker.stop_container(id, Some(options)),
        )
    }

    /// Removes a container, running or not.
    pub fn remove(&self, id: &str) -> Result<(), CapabilityError> {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        self.run(self.docker.remove_container(id, Some(options)))
    }

    /// One container by id or name.
    pub fn inspect(&self, id: &str) -> Result<Container, CapabilityError> {
        let found = self.run(
            self.docker
                .inspect_container(id, None::<InspectContainerOptions>),
        )?;
        let state = found.state.unwrap_or_default();
        Ok(Container {
            id: found.id.unwrap_or_default(),
            name: found
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            labels: sorted(found.config.and_then(|c| c.labels)),
            state: state_of(
                state.status.map(|s| s.to_string()).as_deref(),
                state.exit_code,
            ),
        })
    }

    /// Every container (running or not) carrying all of `selector`.
    pub fn list(&self, selector: &[Label]) -> Result<Vec<Container>, CapabilityError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            selector.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let found = self.run(self.docker.list_containers(Some(options)))?;
        Ok(found
            .into_iter()
            .map(|c| {
                // A listing has no exit code field; the status text has it:
                // "Exited (137) 5 seconds ago".
                let code = c
                    .status
                    .as_deref()
                    .and_then(|s| s.strip_prefix("Exited ("))
                    .and_then(|s| s.split_once(')'))
                    .and_then(|(code, _)| code.parse::<i64>().ok());
                Container {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .names
                        .and_then(|names| names.into_iter().next())
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_owned(),
                    labels: sorted(c.labels),
                    state: state_of(c.state.map(|s| s.to_string()).as_deref(), code),
                }
            })
            .collect())
    }

    fn run<T>(
        &self,
        request: impl Future<Output = Result<T, BollardError>>,
    ) -> Result<T, CapabilityError> {
        block_on(&self.runtime, self.timeout, request)
    }
}

/// Runs `request` on `runtime` from a blocking thread, within `timeout`.
fn block_on<T>(
    runtime: &Handle,
    timeout: Duration,
    request: impl Future<Output = Result<T, BollardError>>,
) -> Result<T, CapabilityError> {
    crate::plugins::blocking_allowed(|| {
        runtime.block_on(async {
            match tokio::time::timeout(timeout, request).await {
                Ok(answer) => answer.map_err(|e| classify(&e)),
                Err(_) => Err(CapabilityError::Unavailable(format!(
                    "the Docker engine did not answer within {timeout:?}"
                ))),
            }
        })
    })
}

fn classify(error: &BollardError) -> CapabilityError {
    match error {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            404 => CapabilityError::NotFound(message.clone()),
            409 => CapabilityError::Conflict(message.clone()),
            400..=499 => CapabilityError::Invalid(message.clone()),
            _ => CapabilityError::Unavailable(format!("{status_code}: {message}")),
        },
        other => unavailable(other),
    }
}

fn unavailable(error: &BollardError) -> CapabilityError {
    CapabilityError::Unavailable(format!("Docker engine: {error}"))
}

fn sorted(labels: Option<HashMap<String, String>>) -> Vec<Label> {
    let mut labels: Vec<Label> = labels.unwrap_or_default().into_iter().collect();
    labels.sort();
    labels
}

/// The WIT state of an engine status word (`running`, `exited`, ...).
fn state_of(status: Option<&str>, exit_code: Option<i64>) -> ContainerState {
    match status.unwrap_or("") {
        "created" => ContainerState::Created,
        "running" => ContainerState::Running,
        "exited" => {
            ContainerState::Exited(exit_code.and_then(|c| i32::try_from(c).ok()).unwrap_or(-1))
        }
        other => ContainerState::Other(other.to_owned()),
    }
}

/// The `docker` imports of one store: the granted capability (if any) and
/// the store's host clock.
pub struct DockerView<'a> {
    capability: Option<&'a DockerCapability>,
    clock: &'a mut Duration,
}

impl std::fmt::Debug for DockerView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerView").finish_non_exhaustive()
    }
}

impl<'a> DockerView<'a> {
    /// A view over `capability`, adding time spent to `clock`.
    pub fn new(capability: Option<&'a DockerCapability>, clock: &'a mut Duration) -> Self {
        Self { capability, clock }
    }

    fn with<R>(
        &mut self,
        f: impl FnOnce(&DockerCapability) -> Result<R, CapabilityError>,
    ) -> Result<R, CapabilityError> {
        let capability = self.capability.ok_or_else(|| {
            CapabilityError::Denied("the docker capability is not granted".into())
        })?;
        super::timed(self.clock, || f(capability))
    }
}

impl wit::Host for DockerView<'_> {
    fn create_and_start(&mut self, spec: ContainerSpec) -> Result<String, CapabilityError> {
        self.with(|c| c.create_and_start(spec))
    }

    fn stop(&mut self, id: String, timeout_secs: u32) -> Result<(), CapabilityError> {
        self.with(|c| c.stop(&id, timeout_secs))
    }

    fn remove(&mut self, id: String) -> Result<(), CapabilityError> {
        self.with(|c| c.remove(&id))
    }

    fn inspect(&mut self, id: String) -> Result<Container, CapabilityError> {
        self.with(|c| c.inspect(&id))
    }

    fn list(&mut self, selector: Vec<Label>) -> Result<Vec<Container>, CapabilityError> {
        self.with(|c| c.list(&selector))
    }
}

struct HasDocker;

impl HasData for HasDocker {
    type Data<'a> = DockerView<'a>;
}

/// Adds the `hodei:provider/docker` imports to `linker`; `get` projects
/// the store's state into a [`DockerView`].
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> DockerView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasDocker>(linker, get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_answers_map_to_capability_errors() {
        let answer = |status_code: u16, message: &str| {
            classify(&BollardError::DockerResponseServerError {
                status_code,
                message: message.to_owned(),
            })
        };
        assert!(
            matches!(answer(404, "No such container: x"), CapabilityError::NotFound(m) if m.contains("x"))
        );
        assert!(matches!(
            answer(409, "name in use"),
            CapabilityError::Conflict(_)
        ));
        assert!(matches!(answer(400, "bad"), CapabilityError::Invalid(_)));
        assert!(
            matches!(answer(500, "boom"), CapabilityError::Unavailable(m) if m.contains("500"))
        );
    }

    #[test]
    fn states_read_from_engine_words() {
        assert_eq!(state_of(Some("running"), None), ContainerState::Running);
        assert_eq!(state_of(Some("created"), None), ContainerState::Created);
        assert_eq!(
            state_of(Some("exited"), Some(137)),
            ContainerState::Exited(137)
        );
        assert_eq!(state_of(Some("exited"), None), ContainerState::Exited(-1));
        assert_eq!(
            state_of(Some("paused"), None),
            ContainerState::Other("paused".into())
        );
    }
}
