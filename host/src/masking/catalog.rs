//! The durable side of the masker registry: uploads are stored before they
//! are acknowledged and the active chain when it changes; both are
//! restored at start-up.
//!
//! Uploads share the store's plugin table with policies, under the key
//! `masker/NAME` ([`STORE_PREFIX`]); policy names cannot contain `/`, so
//! the two never collide and the policy catalog skips these keys.
//!
//! Hosts sharing one store (PostgreSQL) follow each other's changes the
//! way they follow policies, through the same loop
//! ([`crate::plugins::catalog`]'s `spawn_follow`): every upload, chain
//! change and removal ends by writing a fresh value to [`CHANGED_KEY`]; a
//! host on a shared store reads it every
//! [`FOLLOW_EVERY`](crate::plugins::catalog::FOLLOW_EVERY) and, when it
//! moved, loads the uploads it lacks or holds with other bytes, activates
//! the stored chain, and drops the uploads gone from the store. This
//! matters more here than for policies: a host left on an older chain
//! stores the lines its agents send with less masking than the operator
//! asked for. A change this host cannot load is logged and it keeps what
//! it had.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::registry::{ChainEntry, MaskerRegistry};
use crate::plugins::catalog::{apply_uploads, mark_changed, spawn_follow};
use crate::plugins::{CatalogError, PluginError, Source, in_tree};
use crate::store::{JobStore, StoreError};

/// Prefix of masker uploads in the store's plugin table.
pub const STORE_PREFIX: &str = "masker/";
/// Settings key of the active chain.
pub const CHAIN_KEY: &str = "active_maskers";
/// Settings key rewritten with a fresh random value after every change of
/// the maskers (see the module docs).
pub const CHANGED_KEY: &str = "maskers_changed";
/// The chain of a fresh installation: declared secrets, then well-known
/// token formats.
pub const DEFAULT_CHAIN: &[&str] = &["literal", "patterns"];

/// The registry and the store it persists to.
#[derive(Debug, Clone)]
pub struct MaskerCatalog {
    registry: Arc<MaskerRegistry>,
    store: Arc<dyn JobStore>,
    /// This host's changes and reloads take turns, so a reload never sees
    /// a change of this host half done.
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl MaskerCatalog {
    /// Wraps a registry with its persistence.
    pub fn new(registry: Arc<MaskerRegistry>, store: Arc<dyn JobStore>) -> Self {
        Self {
            registry,
            store,
            turn: Arc::default(),
        }
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<MaskerRegistry> {
        &self.registry
    }

    /// Loads the in-tree maskers and every stored upload, then activates
    /// `wanted` (from the host's configuration), else the stored chain,
    /// else [`DEFAULT_CHAIN`]. A configured chain that cannot start is an
    /// error: the host does not run with less masking than it was told. On
    /// a shared store, this host then follows the changes other hosts make
    /// (see the module docs).
    pub async fn restore(&self, wanted: Option<Vec<ChainEntry>>) -> anyhow::Result<()> {
        // Read first: a change made while this host loads is then seen.
        let seen = self.store.setting(CHANGED_KEY).await?;
        let mut sources: Vec<(String, Vec<u8>, Source)> = in_tree::MASKERS
            .iter()
            .map(|(name, bytes)| ((*name).to_owned(), bytes.to_vec(), Source::InTree))
            .collect();
        for (key, bytes) in self.store.plugins().await? {
            if let Some(name) = key.strip_prefix(STORE_PREFIX) {
                sources.push((name.to_owned(), bytes, Source::Uploaded));
            }
        }
        let registry = Arc::clone(&self.registry);
        tokio::task::spawn_blocking(move || {
            for (name, bytes, source) in sources {
                if let Err(err) = registry.load(&name, &bytes, source) {
                    tracing::error!(plugin = %name, %err, "stored masker does not load; skipped");
                }
            }
        })
        .await?;
        let stored = match self.store.setting(CHAIN_KEY).await? {
            Some(json) => serde_json::from_str::<Vec<ChainEntry>>(&json).ok(),
            None => None,
        };
        let default = || {
            DEFAULT_CHAIN
                .iter()
                .map(|name| ChainEntry {
                    name: (*name).to_owned(),
                    config: String::new(),
                })
                .collect::<Vec<_>>()
        };
        match (wanted, stored) {
            (Some(chain), _) => self.activate_now(chain).await?,
            (None, Some(chain)) => {
                if let Err(err) = self.activate_now(chain).await {
                    tracing::error!(%err, "stored masker chain does not start; using the default chain");
                    self.activate_now(default()).await?;
                }
            }
            (None, None) => self.activate_now(default()).await?,
        }
        let names: Vec<String> = self
            .registry
            .chain()
            .entries()
            .into_iter()
            .map(|e| e.name)
            .collect();
        if names.is_empty() {
            tracing::warn!(
                "host-side masking is off (--maskers none): output is stored as agents send it"
            );
        } else {
            tracing::info!(chain = %names.join(" → "), "active masker chain");
        }
        if self.store.is_shared() {
            let (store, turn) = (Arc::clone(&self.store), Arc::clone(&self.turn));
            spawn_follow(
                &self.registry,
                &self.store,
                CHANGED_KEY,
                seen,
                move |registry| {
                    let catalog = Self {
                        registry,
                        store: Arc::clone(&store),
                        turn: Arc::clone(&turn),
                    };
                    async move { catalog.reload().await }
                },
            );
        }
        Ok(())
    }

    /// Brings this host's registry to what the store holds (see the module
    /// docs). Only a store failure is an error.
    async fn reload(&self) -> Result<(), StoreError> {
        let _turn = self.turn.lock().await;
        let stored: BTreeMap<String, Vec<u8>> = self
            .store
            .plugins()
            .await?
            .into_iter()
            .filter_map(|(key, bytes)| Some((key.strip_prefix(STORE_PREFIX)?.to_owned(), bytes)))
            .collect();
        let chain = match self.store.setting(CHAIN_KEY).await? {
            Some(json) => serde_json::from_str::<Vec<ChainEntry>>(&json).ok(),
            None => None,
        };
        let registry = Arc::clone(&self.registry);
        tokio::task::spawn_blocking(move || apply(&registry, &stored, chain.as_deref()))
            .await
            .map_err(StoreError::backend)
    }

    /// Tells the hosts sharing the store that the maskers changed.
    async fn mark_changed(&self) -> Result<(), StoreError> {
        mark_changed(self.store.as_ref(), CHANGED_KEY).await
    }

    async fn activate_now(&self, chain: Vec<ChainEntry>) -> Result<(), PluginError> {
        let registry = Arc::clone(&self.registry);
        tokio::task::spawn_blocking(move || registry.activate(&chain))
            .await
            .map_err(PluginError::engine)?
    }

    /// Compiles, validates and stores an upload; replaces a previous upload
    /// of the same name. Durable before it returns.
    pub async fn upload(&self, name: &str, bytes: Vec<u8>) -> Result<(), CatalogError> {
        let _turn = self.turn.lock().await;
        let registry = Arc::clone(&self.registry);
        let owned = name.to_owned();
        let for_compile = bytes.clone();
        tokio::task::spawn_blocking(move || registry.load(&owned, &for_compile, Source::Uploaded))
            .await
            .map_err(PluginError::engine)??;
        self.store
            .put_plugin(&format!("{STORE_PREFIX}{name}"), bytes)
            .await?;
        self.mark_changed().await?;
        tracing::info!(target: "hodei::audit", event = "masker_uploaded", plugin = %name, "masker uploaded");
        Ok(())
    }

    /// Makes `chain` the active chain for the next batch and remembers it.
    /// An empty chain is refused: the API cannot turn masking off.
    pub async fn activate(&self, chain: Vec<ChainEntry>) -> Result<(), CatalogError> {
        if chain.is_empty() {
            return Err(PluginError::Refused(
                "the chain needs at least one masker (e.g. [\"literal\"]); host-side masking \
                 can only be turned off in the host's configuration"
                    .into(),
            )
            .into());
        }
        let _turn = self.turn.lock().await;
        self.activate_now(chain.clone()).await?;
        let json = serde_json::to_string(&chain).map_err(StoreError::backend)?;
        self.store.put_setting(CHAIN_KEY, json).await?;
        self.mark_changed().await?;
        let names: Vec<&str> = chain.iter().map(|e| e.name.as_str()).collect();
        tracing::info!(target: "hodei::audit", event = "masker_chain_set", chain = %names.join(" → "), "masker chain activated");
        Ok(())
    }

    /// Removes an uploaded masker that is not in the chain.
    pub async fn remove(&self, name: &str) -> Result<(), CatalogError> {
        let _turn = self.turn.lock().await;
        self.registry.remove(name)?;
        self.store
            .delete_plugin(&format!("{STORE_PREFIX}{name}"))
            .await?;
        self.mark_changed().await?;
        tracing::info!(target: "hodei::audit", event = "masker_removed", plugin = %name, "masker removed");
        Ok(())
    }
}

/// Applies the store's uploads and chain to `registry`: new or changed
/// uploads first (so the chain may name one), then the chain, then
/// removals (so the chain has moved off a removed upload). Failures are
/// logged and leave what this host had.
fn apply(
    registry: &MaskerRegistry,
    stored: &BTreeMap<String, Vec<u8>>,
    chain: Option<&[ChainEntry]>,
) {
    let here: BTreeMap<String, String> = registry
        .views()
        .into_iter()
        .filter(|view| view.source == Source::Uploaded)
        .map(|view| (view.name, view.sha256))
        .collect();
    apply_uploads(
        "masker",
        &here,
        stored,
        |name, bytes| registry.load(name, bytes, Source::Uploaded),
        || {
            let Some(chain) = chain.filter(|chain| registry.chain().entries() != *chain) else {
                return;
            };
            let names: Vec<&str> = chain.iter().map(|e| e.name.as_str()).collect();
            match registry.activate(chain) {
                Ok(()) => {
                    tracing::info!(chain = %names.join(" → "), "masker chain set on another host activated")
                }
                Err(err) => tracing::error!(
                    chain = %names.join(" → "), %err,
                    "a masker chain set on another host does not start on this one; keeping the previous chain"
                ),
            }
        },
        |name| registry.remove(name),
    );
}
