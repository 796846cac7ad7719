//! The hot-swap registry of scheduling policies.
//!
//! Holds every loaded policy (the in-tree ones, embedded in the binary, and
//! uploaded ones, whose bytes are kept in the job store so they survive a
//! restart) and which one is active, behind an `ArcSwap`: a swap is one
//! pointer store, takes effect for the next decision, and a decision that
//! already took its snapshot finishes on the policy it started with.
//!
//! Failure model: a call that traps, runs past its deadline, runs out of
//! memory or answers with the wrong shape is an error value. The decision
//! falls back to the built-in policy, the failure is counted and kept
//! (function, message, time) for the API and logged with the plugin's name,
//! and after [`FAILURES_BEFORE_BACKOFF`] failures in a row the plugin is
//! left out for a backoff that doubles up to [`MAX_BACKOFF`], so a broken
//! plugin is never re-instantiated in a tight loop.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::PluginError;
use super::engine::PluginEngine;
use super::health::{Health, HealthView};
use super::policy::{CallError, CompiledPolicy, PolicyInstance};
use crate::scheduler::policy::{
    BuiltinPolicy, Candidate, Demand, PlacementPolicy, PolicySource, Ranking,
};

pub use super::health::{FAILURES_BEFORE_BACKOFF, FIRST_BACKOFF, MAX_BACKOFF};

/// Name of the native policy, always present.
pub const BUILTIN: &str = "builtin";

/// Where a plugin came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The native fallback.
    Builtin,
    /// Shipped inside this binary (plugins/).
    InTree,
    /// Uploaded over the API.
    Uploaded,
}

/// One loaded policy plugin.
#[derive(Debug)]
pub struct LoadedPolicy {
    name: String,
    source: Source,
    size_bytes: usize,
    sha256: String,
    compiled: CompiledPolicy,
    /// Idle instances, tagged with the activation they were configured for.
    pool: Mutex<Vec<(u64, PolicyInstance)>>,
    health: Health,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LoadedPolicy {
    fn record_failure(&self, error: &CallError) {
        let backoff = self.health.record_failure(error);
        tracing::warn!(
            plugin = %self.name, function = error.function, error = %error.message,
            ?backoff, "policy call failed; this decision uses the built-in policy"
        );
    }

    /// Runs `call` on an idle instance configured for `generation`, making
    /// one if needed. A failed instance is dropped, never reused.
    fn with_instance<T>(
        &self,
        engine: &PluginEngine,
        generation: u64,
        config: &str,
        function: &'static str,
        call: impl FnOnce(&mut PolicyInstance) -> Result<T, CallError>,
    ) -> Option<T> {
        if !self.health.enabled() {
            return None;
        }
        let started = Instant::now();
        let idle = {
            let mut pool = lock(&self.pool);
            pool.retain(|(g, _)| *g == generation);
            pool.pop()
        };
        let result = blocking_allowed(|| {
            match idle {
                Some((_, instance)) => Ok(instance),
                None => self.compiled.instantiate(engine, config),
            }
            .and_then(|mut instance| call(&mut instance).map(|answer| (instance, answer)))
        });
        match result {
            Ok((instance, answer)) => {
                self.health.record_success(function, started.elapsed());
                lock(&self.pool).push((generation, instance));
                Some(answer)
            }
            Err(error) => {
                self.record_failure(&error);
                None
            }
        }
    }
}

/// Runs `f`, which calls into a plugin, where blocking is allowed.
///
/// WASI's blocking stdio (a plugin printing, e.g. its panic message) enters
/// tokio with `Handle::block_on`, which panics on a runtime worker thread.
/// Callers on the hot path (the scheduler round, `explain`) already run in
/// `block_in_place`, where this is a cheap check; it is here so that no
/// other caller can forget it.
pub fn blocking_allowed<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The active choice.
#[derive(Debug)]
struct Active {
    name: String,
    config: String,
    plugin: Option<Arc<LoadedPolicy>>,
    generation: u64,
}

/// A policy as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyView {
    /// Name.
    pub name: String,
    /// Where it came from.
    pub source: Source,
    /// Whether decisions use it now.
    pub active: bool,
    /// Component size.
    pub size_bytes: usize,
    /// SHA-256 of the component.
    pub sha256: String,
    /// Calls (instantiate, configure, filter, score), errors, latency.
    #[serde(flatten)]
    pub health: HealthView,
}

/// The registry (see the module docs).
#[derive(Debug)]
pub struct PolicyRegistry {
    engine: PluginEngine,
    plugins: RwLock<BTreeMap<String, Arc<LoadedPolicy>>>,
    active: ArcSwap<Active>,
    next_generation: std::sync::atomic::AtomicU64,
}

/// Plugin names: `[a-z0-9_-]{1,64}` (policies, maskers).
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl PolicyRegistry {
    /// A registry with only the built-in policy, active.
    pub fn new(engine: PluginEngine) -> Self {
        Self {
            engine,
            plugins: RwLock::default(),
            active: ArcSwap::from_pointee(Active {
                name: BUILTIN.to_owned(),
                config: String::new(),
                plugin: None,
                generation: 0,
            }),
            next_generation: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// The engine plugins run on.
    pub fn engine(&self) -> &PluginEngine {
        &self.engine
    }

    /// Compiles and adds (or replaces) a policy. Replacing the active one
    /// re-activates it with its current configuration, which must still be
    /// accepted. Compilation is CPU-heavy: call from a blocking context.
    pub fn load(&self, name: &str, bytes: &[u8], source: Source) -> Result<(), PluginError> {
        if !valid_name(name) || name == BUILTIN {
            return Err(PluginError::BadName(name.to_owned()));
        }
        if source == Source::Uploaded && self.get(name).is_some_and(|p| p.source == Source::InTree)
        {
            return Err(PluginError::Reserved(name.to_owned()));
        }
        let compiled = CompiledPolicy::new(&self.engine, name, bytes)?;
        // Instantiating once proves the component starts and answers; its
        // configuration is checked when it is activated (a plugin may well
        // refuse an empty one).
        match compiled.instantiate(&self.engine, "") {
            Ok(mut instance) => {
                instance
                    .name(&self.engine)
                    .map_err(|e| PluginError::Invalid(e.to_string()))?;
            }
            Err(e)
                if e.function == "configure" && e.message.starts_with("configuration refused") => {}
            Err(e) => return Err(PluginError::Invalid(e.to_string())),
        }
        let loaded = Arc::new(LoadedPolicy {
            name: name.to_owned(),
            source,
            size_bytes: bytes.len(),
            sha256: format!("{:x}", Sha256::digest(bytes)),
            compiled,
            pool: Mutex::default(),
            health: Health::for_plugin("policy", name),
        });
        let active = self.active.load_full();
        if active.name == name {
            let config = active.config.clone();
            self.swap_in(&loaded, &config)?;
        }
        self.plugins
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), loaded);
        Ok(())
    }

    fn get(&self, name: &str) -> Option<Arc<LoadedPolicy>> {
        self.plugins
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    fn swap_in(&self, plugin: &Arc<LoadedPolicy>, config: &str) -> Result<(), PluginError> {
        let generation = self
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let instance = plugin
            .compiled
            .instantiate(&self.engine, config)
            .map_err(|e| PluginError::Refused(e.to_string()))?;
        lock(&plugin.pool).push((generation, instance));
        self.active.store(Arc::new(Active {
            name: plugin.name.clone(),
            config: config.to_owned(),
            plugin: Some(Arc::clone(plugin)),
            generation,
        }));
        Ok(())
    }

    /// Makes `name` the active policy with `config`; the next decision uses
    /// it. Fails, changing nothing, when the plugin refuses the config.
    pub fn activate(&self, name: &str, config: &str) -> Result<(), PluginError> {
        if name == BUILTIN {
            let generation = self
                .next_generation
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.active.store(Arc::new(Active {
                name: BUILTIN.to_owned(),
                config: String::new(),
                plugin: None,
                generation,
            }));
            return Ok(());
        }
        let plugin = self
            .get(name)
            .ok_or_else(|| PluginError::NotFound(name.to_owned()))?;
        self.swap_in(&plugin, config)
    }

    /// Removes a policy that is not active and not shipped in-tree.
    pub fn remove(&self, name: &str) -> Result<(), PluginError> {
        if name == BUILTIN {
            return Err(PluginError::Reserved(name.to_owned()));
        }
        let plugin = self
            .get(name)
            .ok_or_else(|| PluginError::NotFound(name.to_owned()))?;
        if plugin.source == Source::InTree {
            return Err(PluginError::Reserved(name.to_owned()));
        }
        if self.active.load().name == name {
            return Err(PluginError::Active(name.to_owned()));
        }
        self.plugins
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        Ok(())
    }

    /// The active policy's name and configuration.
    pub fn active(&self) -> (String, String) {
        let active = self.active.load();
        (active.name.clone(), active.config.clone())
    }

    /// Every policy, the built-in first.
    pub fn views(&self) -> Vec<PolicyView> {
        let active = self.active.load();
        let mut out = vec![PolicyView {
            name: BUILTIN.to_owned(),
            source: Source::Builtin,
            active: active.name == BUILTIN,
            size_bytes: 0,
            sha256: String::new(),
            health: Health::default().view(),
        }];
        let plugins = self.plugins.read().unwrap_or_else(PoisonError::into_inner);
        for plugin in plugins.values() {
            out.push(PolicyView {
                name: plugin.name.clone(),
                source: plugin.source,
                active: active.name == plugin.name,
                size_bytes: plugin.size_bytes,
                sha256: plugin.sha256.clone(),
                health: plugin.health.view(),
            });
        }
        out
    }
}

/// One decision's view of the active policy: the plugin if it is healthy,
/// the built-in otherwise, call by call.
#[derive(Debug)]
struct Snapshot {
    engine: PluginEngine,
    active: Arc<Active>,
}

impl PlacementPolicy for Snapshot {
    fn name(&self) -> &str {
        &self.active.name
    }

    fn rank(&self, demand: &Demand<'_>, candidates: &[Candidate]) -> Ranking {
        if let Some(plugin) = &self.active.plugin {
            let engine = &self.engine;
            if let Some(ranking) = plugin.with_instance(
                engine,
                self.active.generation,
                &self.active.config,
                "decide",
                |instance| instance.decide(engine, demand, candidates),
            ) {
                return ranking;
            }
        }
        BuiltinPolicy.rank(demand, candidates)
    }
}

impl PolicySource for PolicyRegistry {
    fn current(&self) -> Arc<dyn PlacementPolicy> {
        Arc::new(Snapshot {
            engine: self.engine.clone(),
            active: self.active.load_full(),
        })
    }
}
