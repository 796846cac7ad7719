//! The `hodei:provider` world (wit/provider.wit) on the host side:
//! compiling a provider component, linking the capabilities its pool
//! grants, and calling its lifecycle exports.
//!
//! A provider runs on the same engine as policies, with the same memory
//! cap and the same epoch deadline, with one difference: the deadline
//! counts the plugin's own time only. Time spent inside a host capability
//! (a `docker create` takes seconds) is bounded by that capability's own
//! timeout and given back to the plugin, so a provider that loops is
//! stopped after the deadline however long its I/O took.
//!
//! Every failure is an error value ([`ProviderCallError`]), never a crash:
//! the provider's own answer (terminal or transient), a capability it
//! imports but its pool did not grant, or a fault (trap, timeout, out of
//! memory, unusable instance).

use std::time::{Duration, Instant};

use wasmtime::component::Component;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtxView, WasiView};

use super::PluginError;
use super::engine::{PluginEngine, PluginState, ticks};
use crate::providers::capabilities::{self, Grants};

/// Generated bindings; the capability modules implement their `Host`
/// traits, nothing else outside this module sees them.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "any-provider",
        path: "../wit/provider.wit",
        additional_derives: [PartialEq, Eq],
    });
}

use bindings::AnyProviderPre;
pub use bindings::hodei::provider::types::{
    OwnedWorker, PoolIdentity, ProviderError, WorkerOffer, WorkerSpec, WorkerStatus,
};

/// The export every provider has.
const PROVIDER_EXPORT: &str = "hodei:provider/provider@0.1.0";
/// Prefix of the capability imports.
const CAPABILITY_PREFIX: &str = "hodei:provider/";
/// Version suffix of the capability imports this host implements.
const CAPABILITY_VERSION: &str = "@0.1.0";

/// A host capability a provider may import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Capability {
    /// `hodei:provider/process`: local `hodei-agent` processes.
    Process,
    /// `hodei:provider/docker`: containers.
    Docker,
    /// `hodei:provider/kubernetes`: pods.
    Kubernetes,
}

impl Capability {
    /// The interface name, as in pool configuration: `process`, `docker`,
    /// `kubernetes`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::Docker => "docker",
            Self::Kubernetes => "kubernetes",
        }
    }

    fn from_import(name: &str) -> Option<Option<Self>> {
        let interface = name
            .strip_prefix(CAPABILITY_PREFIX)?
            .strip_suffix(CAPABILITY_VERSION)?;
        match interface {
            "process" => Some(Some(Self::Process)),
            "docker" => Some(Some(Self::Docker)),
            "kubernetes" => Some(Some(Self::Kubernetes)),
            // Shared type definitions: nothing to grant.
            "types" => Some(None),
            _ => None,
        }
    }
}

/// Why a provider failed to start or a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderCallError {
    /// The provider answered with an error of its own.
    #[error("{function}: {}", describe(.error))]
    Refused {
        /// Which export.
        function: &'static str,
        /// Its answer: terminal or transient.
        error: ProviderError,
    },
    /// The provider imports a capability its pool did not grant.
    #[error(
        "provider {provider:?} imports the `{}` capability, which this pool does not grant \
         (granted: {granted}); grant it in the pool's configuration or use another provider",
        .capability.name()
    )]
    NotGranted {
        /// The provider's name.
        provider: String,
        /// The capability it needs.
        capability: Capability,
        /// What the pool grants, for the message.
        granted: String,
    },
    /// A trap, a timeout, memory exhaustion, or an instance unusable after
    /// an earlier fault.
    #[error("{function}: {message}")]
    Fault {
        /// Which export (or `instantiate`).
        function: &'static str,
        /// Trap, timeout or other.
        kind: FaultKind,
        /// What happened, with the plugin's last stderr lines.
        message: String,
    },
}

impl ProviderCallError {
    /// Whether retrying cannot help: the provider said so, or a capability
    /// is missing. Faults and transient errors are worth a retry after a
    /// backoff.
    pub fn is_terminal(&self) -> bool {
        match self {
            Self::Refused { error, .. } => matches!(error, ProviderError::Terminal(_)),
            Self::NotGranted { .. } => true,
            Self::Fault { .. } => false,
        }
    }
}

fn describe(error: &ProviderError) -> String {
    match error {
        ProviderError::Terminal(m) => format!("terminal: {m}"),
        ProviderError::Transient(m) => format!("transient: {m}"),
    }
}

/// What kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Ran past its deadline.
    Timeout,
    /// Trapped (panic, `unreachable`, memory cap).
    Trap,
    /// The instance trapped earlier and cannot be entered again.
    Unusable,
    /// The component could not be linked against the granted
    /// capabilities (an interface of another version, say).
    Link,
}

/// What a provider's store holds: its sandbox, the granted capabilities,
/// and the clock that keeps host time out of the plugin's deadline.
pub struct ProviderState {
    sandbox: PluginState,
    grants: Grants,
    /// Deadline of the plugin's own time in one call.
    deadline: Duration,
    /// When the current call started.
    call_started: Instant,
    /// Time spent in host capabilities during the current call.
    host_time: Duration,
}

impl std::fmt::Debug for ProviderState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderState")
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

impl WasiView for ProviderState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.sandbox.ctx()
    }
}

impl ProviderState {
    /// The granted capabilities and the host-time clock, for the
    /// capability views.
    pub(crate) fn grants_and_clock(&mut self) -> (&Grants, &mut Duration) {
        (&self.grants, &mut self.host_time)
    }

    /// The plugin's own time in the current call.
    fn guest_time(&self) -> Duration {
        self.call_started.elapsed().saturating_sub(self.host_time)
    }
}

/// A compiled provider component and the capabilities it imports.
#[derive(Clone)]
pub struct CompiledProvider {
    name: String,
    component: Component,
    needs: Vec<Capability>,
}

impl std::fmt::Debug for CompiledProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledProvider")
            .field("name", &self.name)
            .field("needs", &self.needs)
            .finish_non_exhaustive()
    }
}

impl CompiledProvider {
    /// Compiles `bytes` and checks it is a provider: it exports
    /// `hodei:provider/provider` and imports nothing but WASI and provider
    /// capabilities.
    pub fn new(engine: &PluginEngine, name: &str, bytes: &[u8]) -> Result<Self, PluginError> {
        let component = engine.compile(bytes)?;
        let ty = component.component_type();
        let wasmtime = component.engine();
        if ty.get_export(wasmtime, PROVIDER_EXPORT).is_none() {
            return Err(PluginError::Invalid(format!(
                "not a worker provider: it does not export {PROVIDER_EXPORT} (wit/provider.wit)"
            )));
        }
        let mut needs = Vec::new();
        for (import, _) in ty.imports(wasmtime) {
            if import.starts_with("wasi:") {
                continue;
            }
            match Capability::from_import(import) {
                Some(Some(capability)) => needs.push(capability),
                Some(None) => {}
                None => {
                    return Err(PluginError::Invalid(format!(
                        "it imports {import}, which no provider may import (capabilities: \
                         hodei:provider/process, docker, kubernetes{CAPABILITY_VERSION})"
                    )));
                }
            }
        }
        needs.sort();
        Ok(Self {
            name: name.to_owned(),
            component,
            needs,
        })
    }

    /// The capabilities it imports, in a stable order.
    pub fn capabilities(&self) -> &[Capability] {
        &self.needs
    }

    /// An instance for one pool: links what `grants` grants (refusing a
    /// provider that imports anything else), instantiates, configures.
    pub fn instantiate(
        &self,
        engine: &PluginEngine,
        grants: Grants,
        identity: &PoolIdentity,
        config: &str,
    ) -> Result<ProviderInstance, ProviderCallError> {
        if let Some(&capability) = self.needs.iter().find(|c| !grants.grants(**c)) {
            return Err(ProviderCallError::NotGranted {
                provider: self.name.clone(),
                capability,
                granted: grants.describe(),
            });
        }
        let link_error = |e: &dyn std::fmt::Display| ProviderCallError::Fault {
            function: "instantiate",
            kind: FaultKind::Link,
            message: format!("cannot link the provider: {e}"),
        };
        let mut linker = engine
            .wasi_linker::<ProviderState>()
            .map_err(|e| link_error(&e))?;
        capabilities::add_granted_to_linker(&mut linker, &grants).map_err(|e| link_error(&e))?;
        let pre = linker
            .instantiate_pre(&self.component)
            .and_then(AnyProviderPre::new)
            .map_err(|e| link_error(&format!("{e:#}")))?;
        let state = ProviderState {
            sandbox: engine.sandbox(&self.name),
            grants,
            deadline: engine.limits().deadline,
            call_started: Instant::now(),
            host_time: Duration::ZERO,
        };
        let mut store = engine.store_with(state, |s| &mut s.sandbox);
        // The deadline counts the plugin's own time: when it passes, give
        // back what the call spent in host capabilities, if any.
        store.epoch_deadline_callback(|ctx| {
            let state = ctx.data();
            let guest = state.guest_time();
            Ok(if guest >= state.deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(ticks(state.deadline - guest))
            })
        });
        start_call(&mut store);
        let bindings = pre
            .instantiate(&mut store)
            .map_err(|e| fault(&store, "instantiate", &e))?;
        let mut instance = ProviderInstance {
            name: self.name.clone(),
            store,
            bindings,
            unusable: false,
        };
        instance
            .call("configure", |b, s| {
                b.hodei_provider_provider()
                    .call_configure(s, identity, config)
            })?
            .map_err(|error| refused("configure", error))?;
        Ok(instance)
    }
}

/// Resets the call clock and arms the deadline.
fn start_call(store: &mut Store<ProviderState>) {
    let deadline = {
        let state = store.data_mut();
        state.call_started = Instant::now();
        state.host_time = Duration::ZERO;
        state.deadline
    };
    store.set_epoch_deadline(ticks(deadline));
}

/// A trap or timeout as an error value, with what the plugin printed.
fn fault(
    store: &Store<ProviderState>,
    function: &'static str,
    error: &wasmtime::Error,
) -> ProviderCallError {
    let (kind, mut message) = match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => (
            FaultKind::Timeout,
            "ran past its deadline and was interrupted".to_owned(),
        ),
        _ => (FaultKind::Trap, format!("{error:#}")),
    };
    let printed = store.data().sandbox.take_stderr();
    if !printed.is_empty() {
        message = format!("{}\n{message}", printed.join("\n"));
    }
    ProviderCallError::Fault {
        function,
        kind,
        message,
    }
}

/// A configured provider for one pool. Calls are sequential (`&mut
/// self`); after a fault the instance refuses further calls and the owner
/// makes a new one.
pub struct ProviderInstance {
    name: String,
    store: Store<ProviderState>,
    bindings: bindings::AnyProvider,
    unusable: bool,
}

impl std::fmt::Debug for ProviderInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderInstance")
            .field("name", &self.name)
            .field("unusable", &self.unusable)
            .finish_non_exhaustive()
    }
}

impl ProviderInstance {
    /// Runs one export under the deadline; a trap makes the instance
    /// unusable.
    fn call<R>(
        &mut self,
        function: &'static str,
        f: impl FnOnce(&bindings::AnyProvider, &mut Store<ProviderState>) -> wasmtime::Result<R>,
    ) -> Result<R, ProviderCallError> {
        if self.unusable {
            return Err(ProviderCallError::Fault {
                function,
                kind: FaultKind::Unusable,
                message: format!(
                    "provider {:?} faulted earlier; make a new instance",
                    self.name
                ),
            });
        }
        start_call(&mut self.store);
        f(&self.bindings, &mut self.store).map_err(|e| {
            self.unusable = true;
            fault(&self.store, function, &e)
        })
    }

    /// What each worker offers.
    pub fn info(&mut self) -> Result<WorkerOffer, ProviderCallError> {
        self.call("info", |b, s| b.hodei_provider_provider().call_info(s))
    }

    /// Creates worker `worker_id`; returns the provider's handle.
    pub fn create(
        &mut self,
        worker_id: &str,
        spec: &WorkerSpec,
    ) -> Result<String, ProviderCallError> {
        self.call("create", |b, s| {
            b.hodei_provider_provider().call_create(s, worker_id, spec)
        })?
        .map_err(|error| refused("create", error))
    }

    /// Destroys worker `worker_id`.
    pub fn destroy(&mut self, worker_id: &str) -> Result<(), ProviderCallError> {
        self.call("destroy", |b, s| {
            b.hodei_provider_provider().call_destroy(s, worker_id)
        })?
        .map_err(|error| refused("destroy", error))
    }

    /// Worker `worker_id`'s status.
    pub fn status(&mut self, worker_id: &str) -> Result<WorkerStatus, ProviderCallError> {
        self.call("status", |b, s| {
            b.hodei_provider_provider().call_status(s, worker_id)
        })?
        .map_err(|error| refused("status", error))
    }

    /// Every worker the provider owns for its pool.
    pub fn list(&mut self) -> Result<Vec<OwnedWorker>, ProviderCallError> {
        self.call("list", |b, s| b.hodei_provider_provider().call_list(s))?
            .map_err(|error| refused("list", error))
    }
}

fn refused(function: &'static str, error: ProviderError) -> ProviderCallError {
    ProviderCallError::Refused { function, error }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_imports_are_recognised_by_interface_and_version() {
        let import = Capability::from_import;
        assert_eq!(
            import("hodei:provider/process@0.1.0"),
            Some(Some(Capability::Process))
        );
        assert_eq!(
            import("hodei:provider/docker@0.1.0"),
            Some(Some(Capability::Docker))
        );
        assert_eq!(
            import("hodei:provider/kubernetes@0.1.0"),
            Some(Some(Capability::Kubernetes))
        );
        assert_eq!(import("hodei:provider/types@0.1.0"), Some(None));
        assert_eq!(import("hodei:provider/process@0.2.0"), None);
        assert_eq!(import("hodei:provider/ssh@0.1.0"), None);
        assert_eq!(import("acme:evil/net@0.1.0"), None);
    }

    #[test]
    fn terminal_means_retrying_cannot_help() {
        let refused = |error| ProviderCallError::Refused {
            function: "create",
            error,
        };
        assert!(refused(ProviderError::Terminal("quota".into())).is_terminal());
        assert!(!refused(ProviderError::Transient("down".into())).is_terminal());
        let not_granted = ProviderCallError::NotGranted {
            provider: "p".into(),
            capability: Capability::Docker,
            granted: "none".into(),
        };
        assert!(not_granted.is_terminal());
        let fault = ProviderCallError::Fault {
            function: "create",
            kind: FaultKind::Timeout,
            message: String::new(),
        };
        assert!(!fault.is_terminal());
        assert_eq!(
            refused(ProviderError::Terminal("no such image".into())).to_string(),
            "create: terminal: no such image"
        );
    }
}
