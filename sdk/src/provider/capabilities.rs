//! The host capabilities a provider is written against, as plain traits,
//! and their imported implementations.
//!
//! Provider logic takes a capability as a value (`Local<P: Process>`): in
//! the component it is the imported one ([`ImportedProcess`], a zero-sized
//! handle whose methods call the WIT imports), in unit tests a fake from
//! [`super::testing`] that records requests and answers like the host. The
//! traits mirror the WIT interfaces one function for one function, so
//! nothing is lost or added between the fake and the real thing.

use super::bindings::hodei::provider::{docker, kubernetes, process};
use super::{
    CapabilityError, Container, ContainerSpec, Label, Pod, PodSpec, ProcessInfo, ProcessState,
    SpawnRequest,
};

/// A capability as the component imports it; the export glue builds it.
pub trait Imported {
    /// The handle to the imported functions.
    fn imported() -> Self;
}

/// `hodei:provider/process`: local `hodei-agent` processes.
pub trait Process {
    /// Starts `hodei-agent`; returns its pid.
    fn spawn(&self, request: &SpawnRequest) -> Result<u32, CapabilityError>;
    /// SIGINT now, SIGKILL after the host's grace period; returns at once.
    fn stop(&self, pid: u32) -> Result<(), CapabilityError>;
    /// One process's state.
    fn state(&self, pid: u32) -> Result<ProcessState, CapabilityError>;
    /// The processes carrying every label of `selector`.
    fn list(&self, selector: &[Label]) -> Vec<ProcessInfo>;
}

/// `hodei:provider/docker`: a small container subset.
pub trait Docker {
    /// Creates and starts a container; returns its id.
    fn create_and_start(&self, spec: &ContainerSpec) -> Result<String, CapabilityError>;
    /// Stops it, SIGKILL after `timeout_secs`.
    fn stop(&self, id: &str, timeout_secs: u32) -> Result<(), CapabilityError>;
    /// Removes it (forcibly).
    fn remove(&self, id: &str) -> Result<(), CapabilityError>;
    /// One container by id or name.
    fn inspect(&self, id: &str) -> Result<Container, CapabilityError>;
    /// Containers carrying every label of `selector`.
    fn list(&self, selector: &[Label]) -> Result<Vec<Container>, CapabilityError>;
}

/// `hodei:provider/kubernetes`: a small pod subset.
pub trait Kubernetes {
    /// Creates a pod.
    fn create_pod(&self, spec: &PodSpec) -> Result<(), CapabilityError>;
    /// Deletes a pod.
    fn delete_pod(&self, namespace: &str, name: &str) -> Result<(), CapabilityError>;
    /// One pod.
    fn get_pod(&self, namespace: &str, name: &str) -> Result<Pod, CapabilityError>;
    /// Pods carrying every label of `selector`.
    fn list_pods(&self, namespace: &str, selector: &[Label]) -> Result<Vec<Pod>, CapabilityError>;
}

/// The imported `process` capability.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportedProcess;

impl Imported for ImportedProcess {
    fn imported() -> Self {
        Self
    }
}

impl Process for ImportedProcess {
    fn spawn(&self, request: &SpawnRequest) -> Result<u32, CapabilityError> {
        process::spawn(request)
    }

    fn stop(&self, pid: u32) -> Result<(), CapabilityError> {
        process::stop(pid)
    }

    fn state(&self, pid: u32) -> Result<ProcessState, CapabilityError> {
        process::state(pid)
    }

    fn list(&self, selector: &[Label]) -> Vec<ProcessInfo> {
        process::list(selector)
    }
}

/// The imported `docker` capability.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportedDocker;

impl Imported for ImportedDocker {
    fn imported() -> Self {
        Self
    }
}

impl Docker for ImportedDocker {
    fn create_and_start(&self, spec: &ContainerSpec) -> Result<String, CapabilityError> {
        docker::create_and_start(spec)
    }

    fn stop(&self, id: &str, timeout_secs: u32) -> Result<(), CapabilityError> {
        docker::stop(id, timeout_secs)
    }

    fn remove(&self, id: &str) -> Result<(), CapabilityError> {
        docker::remove(id)
    }

    fn inspect(&self, id: &str) -> Result<Container, CapabilityError> {
        docker::inspect(id)
    }

    fn list(&self, selector: &[Label]) -> Result<Vec<Container>, CapabilityError> {
        docker::list(selector)
    }
}

/// The imported `kubernetes` capability.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportedKubernetes;

impl Imported for ImportedKubernetes {
    fn imported() -> Self {
        Self
    }
}

impl Kubernetes for ImportedKubernetes {
    fn create_pod(&self, spec: &PodSpec) -> Result<(), CapabilityError> {
        kubernetes::create_pod(spec)
    }

    fn delete_pod(&self, namespace: &str, name: &str) -> Result<(), CapabilityError> {
        kubernetes::delete_pod(namespace, name)
    }

    fn get_pod(&self, namespace: &str, name: &str) -> Result<Pod, CapabilityError> {
        kubernetes::get_pod(namespace, name)
    }

    fn list_pods(&self, namespace: &str, selector: &[Label]) -> Result<Vec<Pod>, CapabilityError> {
        kubernetes::list_pods(namespace, selector)
    }
}
