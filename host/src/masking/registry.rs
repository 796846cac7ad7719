//! The hot-swap registry of secret maskers and the active chain.
//!
//! Holds every loaded masker (the in-tree ones, embedded in the binary, and
//! uploads, whose bytes the catalog keeps in the store) and the active
//! chain behind an `ArcSwap`: a swap is one pointer store and takes effect
//! for the next batch; a batch that took its snapshot finishes on the chain
//! it started with, so every line is masked by the old chain or the new
//! one, never by half of each.
//!
//! A masker's sessions live inside its instances, so instances are not
//! interchangeable the way a policy's are: each link of the chain has a
//! few *lanes*, each one instance behind a mutex, and a job attempt's
//! session is pinned to one lane (by its id). Lanes let batches of
//! different jobs be masked in parallel. A lane whose instance failed is
//! emptied and started afresh on its next call; sessions it held are
//! re-opened (their cross-line state, e.g. inside a key block, is lost and
//! the failure is on record).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::plugins::PluginError;
use crate::plugins::Source;
use crate::plugins::engine::PluginEngine;
use crate::plugins::health::{Health, HealthView};
use crate::plugins::masker::{CompiledMasker, MaskerInfo, MaskerInstance};
use crate::plugins::policy::CallError;

/// Instances (lanes) per link of the chain.
fn lanes() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4))
}

/// One masker in the chain, with its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChainEntry {
    /// Masker name.
    pub name: String,
    /// Its configuration (free-form, usually JSON; "" for defaults).
    #[serde(default)]
    pub config: String,
}

/// One loaded masker component.
#[derive(Debug)]
pub struct LoadedMasker {
    pub(super) name: String,
    source: Source,
    size_bytes: usize,
    sha256: String,
    info: MaskerInfo,
    compiled: CompiledMasker,
    pub(super) health: Health,
}

/// One instance of a link and the sessions open in it.
#[derive(Debug, Default)]
pub(super) struct Lane {
    pub(super) instance: Option<MaskerInstance>,
    /// Bumped whenever the instance is replaced: a session opened under an
    /// older epoch is gone.
    pub(super) epoch: u64,
}

/// A masker in the active chain: the plugin, its configuration and its
/// lanes.
#[derive(Debug)]
pub struct Link {
    pub(super) plugin: Arc<LoadedMasker>,
    pub(super) config: String,
    pub(super) lanes: Box<[Mutex<Lane>]>,
}

impl Link {
    /// The lane `key` is pinned to.
    pub(super) fn lane(&self, key: u64) -> (usize, std::sync::MutexGuard<'_, Lane>) {
        let index = usize::try_from(key % self.lanes.len() as u64).unwrap_or(0);
        let lane = self.lanes[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (index, lane)
    }

    /// The lane's instance, starting one when it has none.
    pub(super) fn instance<'l>(
        &self,
        engine: &PluginEngine,
        lane: &'l mut Lane,
    ) -> Result<&'l mut MaskerInstance, CallError> {
        if lane.instance.is_none() {
            lane.instance = Some(self.plugin.compiled.instantiate(engine, &self.config)?);
        }
        Ok(lane.instance.as_mut().expect("set just above"))
    }
}

/// The active chain, in order; empty only when host masking is off.
#[derive(Debug, Default)]
pub struct Chain {
    pub(super) links: Vec<Arc<Link>>,
}

impl Chain {
    /// The chain as configured.
    pub fn entries(&self) -> Vec<ChainEntry> {
        self.links
            .iter()
            .map(|link| ChainEntry {
                name: link.plugin.name.clone(),
                config: link.config.clone(),
            })
            .collect()
    }
}

/// A masker as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MaskerView {
    /// Name it was loaded under.
    pub name: String,
    /// Where it came from.
    pub source: Source,
    /// Its place in the active chain (0 first), absent when not in it.
    pub position: Option<usize>,
    /// What the component says about itself.
    pub info: MaskerInfo,
    /// Component size.
    pub size_bytes: usize,
    /// SHA-256 of the component.
    pub sha256: String,
    /// Calls (instantiate, configure, session, mask), errors, latency.
    #[serde(flatten)]
    pub health: HealthView,
}

/// The registry (see the module docs).
#[derive(Debug)]
pub struct MaskerRegistry {
    engine: PluginEngine,
    plugins: RwLock<BTreeMap<String, Arc<LoadedMasker>>>,
    chain: ArcSwap<Chain>,
}

use crate::plugins::registry::valid_name;

impl MaskerRegistry {
    /// A registry with no masker and an empty chain.
    pub fn new(engine: PluginEngine) -> Self {
        Self {
            engine,
            plugins: RwLock::default(),
            chain: ArcSwap::from_pointee(Chain::default()),
        }
    }

    /// The engine maskers run on.
    pub fn engine(&self) -> &PluginEngine {
        &self.engine
    }

    /// The chain batches are masked with now.
    pub fn chain(&self) -> Arc<Chain> {
        self.chain.load_full()
    }

    fn get(&self, name: &str) -> Option<Arc<LoadedMasker>> {
        self.plugins
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Compiles and adds (or replaces) a masker: it must instantiate,
    /// accept its default configuration, say what it is and open and use a
    /// session. Replacing one in the active chain re-activates the chain
    /// with it. CPU-heavy: call from a blocking context.
    pub fn load(&self, name: &str, bytes: &[u8], source: Source) -> Result<(), PluginError> {
        if !valid_name(name) {
            return Err(PluginError::BadName(name.to_owned()));
        }
        if source == Source::Uploaded && self.get(name).is_some_and(|p| p.source == Source::InTree)
        {
            return Err(PluginError::Reserved(name.to_owned()));
        }
        let compiled = CompiledMasker::new(&self.engine, name, bytes)?;
        let invalid = |e: CallError| PluginError::Invalid(e.to_string());
        let mut instance = compiled.instantiate(&self.engine, "").map_err(invalid)?;
        let info = instance.info(&self.engine).map_err(invalid)?;
        let loaded = Arc::new(LoadedMasker {
            name: name.to_owned(),
            source,
            size_bytes: bytes.len(),
            sha256: format!("{:x}", Sha256::digest(bytes)),
            info,
            compiled,
            health: Health::for_plugin("masker", name),
        });
        let chain = self.chain.load_full();
        let in_chain = chain.links.iter().any(|l| l.plugin.name == name);
        self.plugins
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), loaded);
        if in_chain {
            self.activate(&chain.entries())?;
        }
        Ok(())
    }

    /// Makes `entries` the active chain; the next batch uses it. Every
    /// masker must exist and accept its configuration, or nothing changes.
    /// An empty list turns host masking off (only from the host's own
    /// configuration; the API refuses it).
    pub fn activate(&self, entries: &[ChainEntry]) -> Result<(), PluginError> {
        let mut links = Vec::with_capacity(entries.len());
        for entry in entries {
            let plugin = self
                .get(&entry.name)
                .ok_or_else(|| PluginError::NotFound(entry.name.clone()))?;
            // The first lane's instance proves the configuration.
            let first = plugin
                .compiled
                .instantiate(&self.engine, &entry.config)
                .map_err(|e| PluginError::Refused(format!("{}: {e}", entry.name)))?;
            let lanes: Box<[Mutex<Lane>]> = (0..lanes())
                .map(|i| {
                    Mutex::new(Lane {
                        instance: None,
                        epoch: u64::from(i == 0),
                    })
                })
                .collect();
            lanes[0]
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .instance = Some(first);
            links.push(Arc::new(Link {
                plugin,
                config: entry.config.clone(),
                lanes,
            }));
        }
        self.chain.store(Arc::new(Chain { links }));
        Ok(())
    }

    /// Removes an uploaded masker that is not in the active chain.
    pub fn remove(&self, name: &str) -> Result<(), PluginError> {
        let plugin = self
            .get(name)
            .ok_or_else(|| PluginError::NotFound(name.to_owned()))?;
        if plugin.source == Source::InTree {
            return Err(PluginError::Reserved(name.to_owned()));
        }
        if self
            .chain
            .load()
            .links
            .iter()
            .any(|l| l.plugin.name == name)
        {
            return Err(PluginError::Active(name.to_owned()));
        }
        self.plugins
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        Ok(())
    }

    /// Every loaded masker, by name.
    pub fn views(&self) -> Vec<MaskerView> {
        let chain = self.chain.load();
        let plugins = self.plugins.read().unwrap_or_else(PoisonError::into_inner);
        plugins
            .values()
            .map(|plugin| MaskerView {
                name: plugin.name.clone(),
                source: plugin.source,
                position: chain
                    .links
                    .iter()
                    .position(|l| Arc::ptr_eq(&l.plugin, plugin)),
                info: plugin.info.clone(),
                size_bytes: plugin.size_bytes,
                sha256: plugin.sha256.clone(),
                health: plugin.health.view(),
            })
            .collect()
    }
}
