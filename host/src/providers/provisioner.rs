//! The pools of one host: starting, replacing and listing them.
//!
//! Adding a pool checks it whole before accepting it: the spec
//! ([`PoolSpec::validate`]), the provider's imports against the pool's
//! grants, and the provider's own reading of its configuration (an
//! in-tree docker provider without an image refuses it). Only then does
//! its loop start ([`super::pool_loop`]). Pools posted over REST are kept
//! in the store's settings and come back after a restart.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::board::{OfferView, PoolView};
use super::capabilities::{DockerCapability, Grants, KubernetesCapability, ProcessCapability};
use super::instance::PoolProvider;
use super::pool_loop::{HostSide, PoolLoop};
use super::pools::{PoolError, PoolSpec};
use crate::plugins::PluginEngine;
use crate::plugins::in_tree::PROVIDERS;
use crate::plugins::provider::bindings::hodei::provider::process::ProcessState;
use crate::plugins::provider::{Capability, CompiledProvider, PoolIdentity};

/// How long a stopped local agent gets between SIGINT and SIGKILL.
const LOCAL_AGENT_GRACE: Duration = Duration::from_secs(10);
/// Timeout of one Docker engine request.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of one Kubernetes API request.
const KUBERNETES_TIMEOUT: Duration = Duration::from_secs(30);
/// The settings key under which REST pools are kept.
const POOLS_SETTING: &str = "pools";

/// The pools of this host (see the module docs).
pub struct Provisioner {
    host: HostSide,
    engine: PluginEngine,
    install: String,
    agent_binary: PathBuf,
    /// Provider components beyond the in-tree ones, by name.
    files: BTreeMap<String, PathBuf>,
    /// One supervisor of local agent processes for every local pool.
    process: Mutex<Option<ProcessCapability>>,
    /// Each running pool's stop switch.
    loops: Mutex<BTreeMap<String, watch::Sender<bool>>>,
}

impl std::fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioner")
            .field("install", &self.install)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `hodei-agent` binary local pools start: `HODEI_AGENT_BIN`, else
/// next to this executable, else from `PATH`.
pub fn agent_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HODEI_AGENT_BIN") {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("hodei-agent")))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("hodei-agent"))
}

/// The in-tree providers' names.
pub fn known_providers() -> Vec<&'static str> {
    PROVIDERS.iter().map(|(name, _)| *name).collect()
}

impl Provisioner {
    /// Pools of the installation `install` (shared by every host on one
    /// store), creating agents from `agent_binary`.
    /// `files` are provider components beyond the in-tree ones, by name.
    pub fn new(
        host: HostSide,
        engine: PluginEngine,
        install: String,
        agent_binary: PathBuf,
        files: BTreeMap<String, PathBuf>,
    ) -> Self {
        Self {
            host,
            engine,
            install,
            agent_binary,
            files,
            process: Mutex::new(None),
            loops: Mutex::new(BTreeMap::new()),
        }
    }

    /// Every pool's latest view.
    pub fn views(&self) -> Vec<PoolView> {
        self.host.board.views()
    }

    /// Checks `spec` whole and starts (or replaces) its pool.
    pub async fn add(&self, spec: PoolSpec) -> Result<PoolView, PoolError> {
        let mut known = known_providers();
        known.extend(self.files.keys().map(String::as_str));
        spec.validate(&known)?;
        // A new pool is listed at once, as starting, while its provider is
        // compiled and asked; a replaced one stays listed as it is.
        let name = spec.name.clone();
        let fresh = self.host.board.view(&name).is_none();
        if fresh {
            self.host.board.publish(PoolView::empty(spec.clone()));
        }
        let started = self.start(spec).await;
        if started.is_err() && fresh {
            self.host.board.remove(&name);
        }
        started
    }

    async fn start(&self, spec: PoolSpec) -> Result<PoolView, PoolError> {
        let problem = |problem: String| PoolError {
            pool: spec.name.clone(),
            problem,
        };
        let bytes = match PROVIDERS.iter().find(|(name, _)| *name == spec.provider) {
            Some((_, bytes)) => bytes.to_vec(),
            None => {
                let path = &self.files[&spec.provider];
                std::fs::read(path).map_err(|e| {
                    problem(format!("provider: cannot read {}: {e}", path.display()))
                })?
            }
        };
        let (engine, name) = (self.engine.clone(), spec.provider.clone());
        let compiled =
            tokio::task::spawn_blocking(move || CompiledProvider::new(&engine, &name, &bytes))
                .await
                .map_err(|e| problem(e.to_string()))?
                .map_err(|e| problem(format!("provider: {e}")))?;
        let grants = self.grants(&spec).await?;
        let identity = PoolIdentity {
            install: self.install.clone(),
            pool: spec.name.clone(),
        };
        let mut provider = PoolProvider::start(
            self.engine.clone(),
            compiled,
            grants,
            identity,
            spec.config.clone(),
        )
        .await
        .map_err(|e| problem(e.to_string()))?;
        let offer = provider
            .call(|p| p.info())
            .await
            .map_err(|e| problem(e.to_string()))?;
        let offer = OfferView {
            labels: offer.labels.into_iter().collect(),
            cpu_millis: offer.cpu_millis,
            memory_mb: offer.memory_mb,
            startup_estimate_ms: offer.startup_estimate_ms,
        };
        let view = PoolView {
            offer: offer.clone(),
            state: "running",
            ..PoolView::empty(spec.clone())
        };
        self.host.board.publish(view.clone());
        let (stop, stopped) = watch::channel(false);
        if let Some(old) = lock(&self.loops).insert(spec.name.clone(), stop) {
            old.send_replace(true);
        }
        tracing::info!(pool = %spec.name, provider = %spec.provider, min = spec.min, max = spec.max, "pool started");
        let pool = PoolLoop::new(self.host.clone(), spec, offer, provider);
        tokio::spawn(pool.run(stopped));
        Ok(view)
    }

    /// Adds `spec` and keeps it in the store, so it comes back after a
    /// restart (a pool posted over REST).
    pub async fn add_durably(&self, spec: PoolSpec) -> Result<PoolView, PoolError> {
        let view = self.add(spec.clone()).await?;
        let mut kept = self.kept().await;
        kept.retain(|p| p.name != spec.name);
        kept.push(spec);
        let json = serde_json::to_string(&kept).unwrap_or_default();
        if let Err(err) = self
            .host
            .jobs
            .store()
            .put_setting(POOLS_SETTING, json)
            .await
        {
            tracing::warn!(%err, "cannot keep the pool in the store; it will not survive a restart");
        }
        Ok(view)
    }

    /// The pools posted over REST before, from the store.
    pub async fn kept(&self) -> Vec<PoolSpec> {
        match self.host.jobs.store().setting(POOLS_SETTING).await {
            Ok(Some(json)) => serde_json::from_str(&json).unwrap_or_else(|err| {
                tracing::warn!(%err, "stored pools unreadable; ignoring them");
                Vec::new()
            }),
            Ok(None) => Vec::new(),
            Err(err) => {
                tracing::warn!(%err, "cannot read the stored pools");
                Vec::new()
            }
        }
    }

    /// Stops every pool's loop. Containers and pods stay (the next start
    /// reconciles them); local agents, which cannot outlive the host, are
    /// stopped with SIGINT (they cancel their jobs and deliver the
    /// results) and given their grace period to exit.
    pub async fn shutdown(&self) {
        for (_, stop) in std::mem::take(&mut *lock(&self.loops)) {
            stop.send_replace(true);
        }
        let Some(process) = lock(&self.process).take() else {
            return;
        };
        let _ = tokio::task::spawn_blocking(move || {
            let running: Vec<u32> = process.list(Vec::new()).iter().map(|p| p.pid).collect();
            for pid in &running {
                let _ = process.stop(*pid);
            }
            let deadline = std::time::Instant::now() + LOCAL_AGENT_GRACE;
            while std::time::Instant::now() < deadline
                && running
                    .iter()
                    .any(|pid| matches!(process.state(*pid), Ok(ProcessState::Running)))
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await;
    }

    /// The capabilities `spec` grants, connected.
    async fn grants(&self, spec: &PoolSpec) -> Result<Grants, PoolError> {
        let problem = |problem: String| PoolError {
            pool: spec.name.clone(),
            problem,
        };
        let mut grants = Grants::none();
        for capability in spec.capabilities()? {
            match capability {
                Capability::Process => grants = grants.with_process(self.process()?),
                Capability::Docker => {
                    let runtime = tokio::runtime::Handle::current();
                    let docker = tokio::task::spawn_blocking(move || {
                        DockerCapability::connect(runtime, DOCKER_TIMEOUT)
                    })
                    .await
                    .map_err(|e| problem(e.to_string()))?
                    .map_err(|e| problem(format!("grants: docker: {e:?}")))?;
                    grants = grants.with_docker(docker);
                }
                Capability::Kubernetes => {
                    let runtime = tokio::runtime::Handle::current();
                    let kubernetes = tokio::task::spawn_blocking(move || {
                        KubernetesCapability::connect(runtime, KUBERNETES_TIMEOUT)
                    })
                    .await
                    .map_err(|e| problem(e.to_string()))?
                    .map_err(|e| problem(format!("grants: kubernetes: {e:?}")))?;
                    grants = grants.with_kubernetes(kubernetes);
                }
            }
        }
        Ok(grants)
    }

    fn process(&self) -> Result<ProcessCapability, PoolError> {
        let mut process = lock(&self.process);
        if let Some(existing) = &*process {
            return Ok(existing.clone());
        }
        let started = ProcessCapability::new(self.agent_binary.clone(), LOCAL_AGENT_GRACE)
            .map_err(|e| PoolError {
                pool: "local".into(),
                problem: format!("cannot start the process supervisor: {e}"),
            })?;
        *process = Some(started.clone());
        Ok(started)
    }
}
