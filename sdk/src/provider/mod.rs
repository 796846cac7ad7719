//! Worker providers: the `hodei:provider` world (wit/provider.wit).
//!
//! A provider turns "the host wants worker `w-12` in pool `docker-small`"
//! into a process, container or pod running `hodei-agent`, and answers what
//! it owns. It does no I/O itself: it calls host capabilities
//! ([`Process`], [`Docker`], [`Kubernetes`]) and the host links, per pool,
//! only the ones the pool grants.
//!
//! Write the logic against a capability *trait*, generic over it, and
//! implement [`Provider`]; export the imported variant with
//! [`export_provider!`](crate::export_provider); unit-test the same logic
//! natively with the fakes in [`testing`], which answer like the host.
//!
//! ```
//! use hodei_plugin_sdk::provider::testing::FakeProcess;
//! use hodei_plugin_sdk::provider::{
//!     ImportedProcess, OwnedWorker, PoolIdentity, Process, Provider, ProviderError,
//!     SpawnRequest, WorkerOffer, WorkerSpec, WorkerStatus, labels_of, worker_labels,
//! };
//!
//! /// One agent process per worker.
//! struct Tiny<P> {
//!     process: P,
//!     identity: PoolIdentity,
//! }
//!
//! impl<P: Process + 'static> Provider for Tiny<P> {
//!     type Capability = P;
//!
//!     fn configure(process: P, identity: &PoolIdentity, _config: &str) -> Result<Self, ProviderError> {
//!         Ok(Self { process, identity: identity.clone() })
//!     }
//!
//!     fn info(&self) -> WorkerOffer {
//!         WorkerOffer { labels: vec![], cpu_millis: 1000, memory_mb: 512, slots: 1, gpus: 0, startup_estimate_ms: 100 }
//!     }
//!
//!     fn create(&self, worker_id: &str, spec: &WorkerSpec) -> Result<String, ProviderError> {
//!         let request = SpawnRequest {
//!             args: vec!["--server-url".into(), spec.server_url.clone()],
//!             env: vec![("HODEI_TOKEN".into(), spec.token.clone())],
//!             labels: worker_labels(&self.identity, worker_id),
//!         };
//!         let pid = self.process.spawn(&request).map_err(|e| e.into_provider_error("spawn"))?;
//!         Ok(pid.to_string())
//!     }
//!
//!     fn destroy(&self, worker_id: &str) -> Result<(), ProviderError> {
//!         for p in self.process.list(&worker_labels(&self.identity, worker_id)) {
//!             self.process.stop(p.pid).map_err(|e| e.into_provider_error("stop"))?;
//!         }
//!         Ok(())
//!     }
//!
//!     fn status(&self, _worker_id: &str) -> Result<WorkerStatus, ProviderError> {
//!         Ok(WorkerStatus::Unknown)
//!     }
//!
//!     fn list(&self) -> Result<Vec<OwnedWorker>, ProviderError> {
//!         Ok(vec![])
//!     }
//! }
//!
//! hodei_plugin_sdk::export_provider!(Tiny<ImportedProcess>);
//!
//! // Native test against the fake.
//! let fake = FakeProcess::default();
//! let identity = PoolIdentity { install: "i1".into(), pool: "local".into() };
//! let tiny = Tiny::configure(fake.clone(), &identity, "").unwrap();
//! let spec = WorkerSpec {
//!     server_url: "http://127.0.0.1:50051".into(), token: "t0k3n".into(), labels: vec![],
//!     slots: 1, ephemeral: false, env: vec![],
//! };
//! assert_eq!(tiny.create("w-1", &spec).unwrap(), "1000");
//! assert_eq!(labels_of(&fake.running()[0].labels).get("hodei.worker"), Some(&"w-1"));
//! tiny.destroy("w-1").unwrap();
//! assert!(fake.running().is_empty());
//! ```

mod agent;
#[doc(hidden)]
pub mod bindings;
mod capabilities;
mod export;
pub mod testing;

use std::collections::BTreeMap;

pub use agent::{TOKEN_ENV, agent_command};
pub use bindings::hodei::provider::docker::{Container, ContainerSpec, ContainerState};
pub use bindings::hodei::provider::kubernetes::{Pod, PodPhase, PodSpec};
pub use bindings::hodei::provider::process::{ProcessInfo, ProcessState, SpawnRequest};
pub use bindings::hodei::provider::types::{
    CapabilityError, EnvVar, Label, OwnedWorker, PoolIdentity, ProviderError, WorkerOffer,
    WorkerSpec, WorkerStatus,
};
pub use capabilities::{
    Docker, Imported, ImportedDocker, ImportedKubernetes, ImportedProcess, Kubernetes, Process,
};
#[doc(hidden)]
pub use export::Exported;

/// Label naming the host installation on everything a provider creates.
pub const LABEL_INSTALL: &str = "hodei.install";
/// Label naming the pool.
pub const LABEL_POOL: &str = "hodei.pool";
/// Label naming the worker id.
pub const LABEL_WORKER: &str = "hodei.worker";

/// A worker provider.
///
/// One instance lives in the component, created by [`Provider::configure`]
/// with the imported capability; the host then calls the lifecycle
/// functions on it. Calls are sequential (Wasm is single-threaded), and
/// the host may re-instantiate the component at any time (after a trap,
/// say), so keep no state that `list` cannot rebuild: the truth is in the
/// labels of what the provider created.
pub trait Provider: Sized + 'static {
    /// The capability the provider uses: a [`Process`], [`Docker`] or
    /// [`Kubernetes`] implementation (generic in the provider's code,
    /// the imported one in the component, a fake in tests).
    type Capability;

    /// Builds the provider for a pool from its configuration. An error
    /// refuses the pool: say what is accepted.
    fn configure(
        capability: Self::Capability,
        identity: &PoolIdentity,
        config: &str,
    ) -> Result<Self, ProviderError>;

    /// What each worker offers.
    fn info(&self) -> WorkerOffer;

    /// Starts worker `worker_id`; idempotent per id. Returns the handle.
    fn create(&self, worker_id: &str, spec: &WorkerSpec) -> Result<String, ProviderError>;

    /// Stops and removes it; a gone worker is not an error.
    fn destroy(&self, worker_id: &str) -> Result<(), ProviderError>;

    /// Its status.
    fn status(&self, worker_id: &str) -> Result<WorkerStatus, ProviderError>;

    /// Every worker this provider owns for its pool identity.
    fn list(&self) -> Result<Vec<OwnedWorker>, ProviderError>;
}

impl CapabilityError {
    /// The provider error this capability error means: `invalid` and
    /// `denied` are terminal (retrying cannot help), the others transient.
    /// `what` names the failed operation in the message.
    pub fn into_provider_error(self, what: &str) -> ProviderError {
        match self {
            Self::Invalid(m) => ProviderError::Terminal(format!("{what}: invalid request: {m}")),
            Self::Denied(m) => ProviderError::Terminal(format!("{what}: denied: {m}")),
            Self::Unavailable(m) => ProviderError::Transient(format!("{what}: unavailable: {m}")),
            Self::NotFound(m) => ProviderError::Transient(format!("{what}: not found: {m}")),
            Self::Conflict(m) => ProviderError::Transient(format!("{what}: conflict: {m}")),
        }
    }
}

/// The message of a provider error, whichever kind.
pub fn message(error: &ProviderError) -> &str {
    match error {
        ProviderError::Terminal(m) | ProviderError::Transient(m) => m,
    }
}

/// The labels every resource of worker `worker_id` carries: install,
/// pool, worker.
pub fn worker_labels(identity: &PoolIdentity, worker_id: &str) -> Vec<Label> {
    let mut labels = pool_labels(identity);
    labels.push((LABEL_WORKER.to_owned(), worker_id.to_owned()));
    labels
}

/// The labels selecting every resource of this pool: install and pool.
pub fn pool_labels(identity: &PoolIdentity) -> Vec<Label> {
    vec![
        (LABEL_INSTALL.to_owned(), identity.install.clone()),
        (LABEL_POOL.to_owned(), identity.pool.clone()),
    ]
}

/// Labels as a map, for lookups.
pub fn labels_of(labels: &[Label]) -> BTreeMap<&str, &str> {
    labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Refuses a worker id that could not be a label value, a container name
/// or a pod name: 1-63 of `a-z`, `0-9`, `-`, starting and ending with a
/// letter or digit.
pub fn check_worker_id(worker_id: &str) -> Result<(), ProviderError> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let valid = (1..=63).contains(&worker_id.len())
        && worker_id.chars().all(|c| ok_char(c) || c == '-')
        && worker_id.starts_with(ok_char)
        && worker_id.ends_with(ok_char);
    if valid {
        Ok(())
    } else {
        Err(ProviderError::Terminal(format!(
            "invalid worker id {worker_id:?}: use 1-63 of a-z, 0-9 and '-', not at either end"
        )))
    }
}

/// Parses a configuration of whitespace-separated `key=value` words (the
/// in-tree providers' format), refusing keys not in `known`. A key may
/// repeat (e.g. `label=zone=a label=gpu=true`); values keep their order.
///
/// ```
/// use hodei_plugin_sdk::provider::settings;
/// let s = settings("local", "slots=2 label=zone=a", &["slots", "label"]).unwrap();
/// assert_eq!(s, [("slots", "2"), ("label", "zone=a")]);
/// assert!(settings("local", "colour=red", &["slots"]).is_err());
/// ```
pub fn settings<'a>(
    provider: &str,
    config: &'a str,
    known: &[&str],
) -> Result<Vec<(&'a str, &'a str)>, ProviderError> {
    config
        .split_whitespace()
        .map(|word| match word.split_once('=') {
            Some((key, value)) if known.contains(&key) => Ok((key, value)),
            _ => Err(ProviderError::Terminal(format!(
                "{provider}: cannot use {word:?} in the configuration; expected key=value \
                 words with keys {known:?}"
            ))),
        })
        .collect()
}

/// Parses `key=value` as a label.
pub fn parse_label(text: &str) -> Result<Label, ProviderError> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(ProviderError::Terminal(format!(
            "label {text:?} is not of the form key=value"
        ))),
    }
}

/// Exports `$provider` (a [`Provider`] whose capability is the imported
/// one, e.g. `MyProvider<ImportedDocker>`) as the component's `provider`:
///
/// ```ignore
/// hodei_plugin_sdk::export_provider!(MyProvider<ImportedDocker>);
/// ```
///
/// `configure` replaces the stored instance on success (and keeps the old
/// one on error); lifecycle calls before any successful `configure` answer
/// a terminal error (`info`, which cannot answer an error, traps).
#[macro_export]
macro_rules! export_provider {
    ($provider:ty) => {
        // Only a Wasm build exports anything; a native build is for tests.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __HodeiExportedProvider = $crate::provider::Exported<$provider>;
            $crate::provider::bindings::export!(
                __HodeiExportedProvider with_types_in $crate::provider::bindings
            );
        };
        // Natively, still check that the type can be exported.
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = || {
            fn is_exportable<P>()
            where
                P: $crate::provider::Provider,
                P::Capability: $crate::provider::Imported,
            {
            }
            is_exportable::<$provider>();
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_errors_split_into_terminal_and_transient() {
        let terminal =
            |e: CapabilityError| matches!(e.into_provider_error("x"), ProviderError::Terminal(_));
        assert!(terminal(CapabilityError::Invalid("no such image".into())));
        assert!(terminal(CapabilityError::Denied("quota".into())));
        assert!(!terminal(CapabilityError::Unavailable(
            "engine down".into()
        )));
        assert!(!terminal(CapabilityError::NotFound("gone".into())));
        assert_eq!(
            CapabilityError::Invalid("no such image: x".into()).into_provider_error("create"),
            ProviderError::Terminal("create: invalid request: no such image: x".into())
        );
    }

    #[test]
    fn worker_ids() {
        assert!(check_worker_id("w-12").is_ok());
        assert!(check_worker_id("0a").is_ok());
        for bad in ["", "-w", "w-", "W1", "w_1", "w.1", &"a".repeat(64)] {
            assert!(check_worker_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels() {
        let identity = PoolIdentity {
            install: "i".into(),
            pool: "p".into(),
        };
        let labels = worker_labels(&identity, "w-1");
        let map = labels_of(&labels);
        assert_eq!(map.get(LABEL_INSTALL), Some(&"i"));
        assert_eq!(map.get(LABEL_POOL), Some(&"p"));
        assert_eq!(map.get(LABEL_WORKER), Some(&"w-1"));
        assert_eq!(parse_label("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_label("=b").is_err() && parse_label("ab").is_err());
    }
}
