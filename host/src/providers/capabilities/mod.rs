//! The native capabilities provider plugins import, one module per WIT
//! interface of wit/provider.wit, each with one `add_to_linker` (as
//! wasmtime's wasi-config does): [`process`] (local `hodei-agent`
//! processes), [`docker`] (a container subset on bollard) and
//! [`kubernetes`] (a pod subset on kube).
//!
//! A capability is a cheap-to-clone handle to host state that outlives any
//! one plugin instance (the process table, the Docker or Kubernetes
//! client): a provider
//! re-instantiated after a trap still sees the workers it created. Time a
//! call spends in a capability is added to the store's host clock, which
//! keeps it out of the plugin's deadline (see `plugins::provider`).

pub mod docker;
pub mod kubernetes;
pub mod process;

use std::time::{Duration, Instant};

use wasmtime::component::Linker;

pub use docker::DockerCapability;
pub use kubernetes::KubernetesCapability;
pub use process::ProcessCapability;

use crate::plugins::provider::{Capability, ProviderState};

/// The capabilities a pool grants its provider. A provider importing one
/// that is not granted is refused before it is instantiated.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Local `hodei-agent` processes.
    pub process: Option<ProcessCapability>,
    /// Docker containers.
    pub docker: Option<DockerCapability>,
    /// Kubernetes pods.
    pub kubernetes: Option<KubernetesCapability>,
}

impl Grants {
    /// Nothing granted.
    pub fn none() -> Self {
        Self::default()
    }

    /// Grants `process`.
    pub fn with_process(mut self, process: ProcessCapability) -> Self {
        self.process = Some(process);
        self
    }

    /// Grants `docker`.
    pub fn with_docker(mut self, docker: DockerCapability) -> Self {
        self.docker = Some(docker);
        self
    }

    /// Grants `kubernetes`.
    pub fn with_kubernetes(mut self, kubernetes: KubernetesCapability) -> Self {
        self.kubernetes = Some(kubernetes);
        self
    }

    /// Whether `capability` is granted.
    pub fn grants(&self, capability: Capability) -> bool {
        match capability {
            Capability::Process => self.process.is_some(),
            Capability::Docker => self.docker.is_some(),
            Capability::Kubernetes => self.kubernetes.is_some(),
        }
    }

    /// The granted capabilities' names, for messages: `process, docker`
    /// or `none`.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = [
            Capability::Process,
            Capability::Docker,
            Capability::Kubernetes,
        ]
        .into_iter()
        .filter(|c| self.grants(*c))
        .map(Capability::name)
        .collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    }
}

/// Links every capability `grants` grants, and nothing else.
pub(crate) fn add_granted_to_linker(
    linker: &mut Linker<ProviderState>,
    grants: &Grants,
) -> wasmtime::Result<()> {
    if grants.process.is_some() {
        process::add_to_linker(linker, process_view)?;
    }
    if grants.docker.is_some() {
        docker::add_to_linker(linker, docker_view)?;
    }
    if grants.kubernetes.is_some() {
        kubernetes::add_to_linker(linker, kubernetes_view)?;
    }
    Ok(())
}

fn process_view(state: &mut ProviderState) -> process::ProcessView<'_> {
    let (grants, clock) = state.grants_and_clock();
    process::ProcessView::new(grants.process.as_ref(), clock)
}

fn docker_view(state: &mut ProviderState) -> docker::DockerView<'_> {
    let (grants, clock) = state.grants_and_clock();
    docker::DockerView::new(grants.docker.as_ref(), clock)
}

fn kubernetes_view(state: &mut ProviderState) -> kubernetes::KubernetesView<'_> {
    let (grants, clock) = state.grants_and_clock();
    kubernetes::KubernetesView::new(grants.kubernetes.as_ref(), clock)
}

/// Runs `f` and adds its duration to `clock`.
pub(crate) fn timed<R>(clock: &mut Duration, f: impl FnOnce() -> R) -> R {
    let started = Instant::now();
    let result = f();
    *clock += started.elapsed();
    result
}
