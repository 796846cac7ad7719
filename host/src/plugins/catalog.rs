//! The durable side of the policy registry: uploads are stored before they
//! are acknowledged, the active choice is stored when it changes, and both
//! are restored at start-up, so loaded plugins survive a restart (the bytes
//! are kept, not a path).
//!
//! Hosts sharing one store (PostgreSQL) follow each other's changes. Every
//! upload, activation and removal ends by writing a fresh random value to
//! the setting [`CHANGED_KEY`], after the change itself. A host on a shared
//! store reads that one setting every [`FOLLOW_EVERY`]; when it differs
//! from the value it last acted on, it reloads: uploads it lacks or holds
//! with other bytes (SHA-256) are compiled, the stored active choice is
//! activated, uploads gone from the store are dropped. Because the marker
//! is written after the change, a host that read a marker then reads data
//! at least as new as that marker's change; a marker is never written
//! twice, so no change is missed however hosts interleave.
//!
//! Why a poll and not PostgreSQL's LISTEN/NOTIFY: the poll is one
//! primary-key read of one small row, four times a second per host, over
//! the pool the host already has, and it works through the `JobStore` port
//! for any shared backend. LISTEN needs a connection of its own held
//! outside the pool, and notifications sent while that connection is down
//! are lost, so a host would need this same poll as a fallback to be
//! correct; the poll alone is correct and bounds the delay to
//! [`FOLLOW_EVERY`] plus the reload. Policy changes are operator actions,
//! a few a day: a shorter delay buys nothing.
//!
//! A reload that fails here (a component that does not compile or start on
//! this host, a choice this host cannot activate) is logged, and this host
//! keeps what it had: its previous version of that upload, its previous
//! active policy. Operations of one host (API calls, reloads) take turns
//! on one lock, so a reload never sees this host's own half-done change.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::registry::BUILTIN;
use super::{PluginError, PolicyRegistry, Source, in_tree};
use crate::store::{JobStore, StoreError};

/// Settings key of the active policy.
pub const ACTIVE_KEY: &str = "active_policy";

/// Settings key rewritten with a fresh random value after every change of
/// the catalog (see the module docs).
pub const CHANGED_KEY: &str = "policies_changed";

/// How often a host on a shared store looks for changes made elsewhere.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// What is stored about the active policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActiveChoice {
    /// Policy name.
    pub name: String,
    /// Its configuration.
    #[serde(default)]
    pub config: String,
}

/// A failure of a catalog operation.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The plugin side refused.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The store failed; nothing was acknowledged.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The registry and the store it persists to.
#[derive(Debug, Clone)]
pub struct PolicyCatalog {
    registry: Arc<PolicyRegistry>,
    store: Arc<dyn JobStore>,
    /// One change at a time on this host: API calls and reloads.
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl PolicyCatalog {
    /// Wraps a registry with its persistence.
    pub fn new(registry: Arc<PolicyRegistry>, store: Arc<dyn JobStore>) -> Self {
        Self {
            registry,
            store,
            turn: Arc::default(),
        }
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<PolicyRegistry> {
        &self.registry
    }

    /// Loads the in-tree policies and every stored upload, then activates
    /// `wanted` (from config) or else the stored choice. A stored plugin that
    /// no longer loads is logged and skipped; an explicitly configured
    /// policy that cannot start is an error. On a shared store, this host
    /// then follows the changes other hosts make (see the module docs).
    pub async fn restore(&self, wanted: Option<ActiveChoice>) -> anyhow::Result<()> {
        // Read first: a change made while this host loads is then seen.
        let seen = self.store.setting(CHANGED_KEY).await?;
        let mut sources: Vec<(String, Vec<u8>, Source)> = in_tree::POLICIES
            .iter()
            .map(|(name, bytes)| ((*name).to_owned(), bytes.to_vec(), Source::InTree))
            .collect();
        for (name, bytes) in self.store.plugins().await? {
            // Other worlds' uploads (`masker/NAME`) share the table.
            if !name.contains('/') {
                sources.push((name, bytes, Source::Uploaded));
            }
        }
        let registry = Arc::clone(&self.registry);
        tokio::task::spawn_blocking(move || {
            for (name, bytes, source) in sources {
                if let Err(err) = registry.load(&name, &bytes, source) {
                    tracing::error!(plugin = %name, %err, "stored policy does not load; skipped");
                }
            }
        })
        .await?;
        let stored = match self.store.setting(ACTIVE_KEY).await? {
            Some(json) => serde_json::from_str::<ActiveChoice>(&json).ok(),
            None => None,
        };
        match (wanted, stored) {
            (Some(choice), _) => {
                self.activate_now(&choice).await?;
            }
            (None, Some(choice)) => {
                if let Err(err) = self.activate_now(&choice).await {
                    tracing::error!(policy = %choice.name, %err, "stored active policy does not start; using builtin");
                }
            }
            (None, None) => {}
        }
        let (name, _) = self.registry.active();
        tracing::info!(policy = %name, "active scheduling policy");
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
            .filter(|(name, _)| !name.contains('/'))
            .collect();
        let choice = match self.store.setting(ACTIVE_KEY).await? {
            Some(json) => serde_json::from_str::<ActiveChoice>(&json).ok(),
            None => None,
        };
        let registry = Arc::clone(&self.registry);
        tokio::task::spawn_blocking(move || apply(&registry, &stored, choice.as_ref()))
            .await
            .map_err(StoreError::backend)
    }

    /// Tells the hosts sharing the store that the catalog changed.
    async fn mark_changed(&self) -> Result<(), StoreError> {
        mark_changed(self.store.as_ref(), CHANGED_KEY).await
    }

    async fn activate_now(&self, choice: &ActiveChoice) -> Result<(), PluginError> {
        let registry = Arc::clone(&self.registry);
        let choice = choice.clone();
        tokio::task::spawn_blocking(move || registry.activate(&choice.name, &choice.config))
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
        self.store.put_plugin(name, bytes).await?;
        self.mark_changed().await?;
        tracing::info!(target: "hodei::audit", event = "policy_uploaded", plugin = %name, "policy uploaded");
        Ok(())
    }

    /// Activates a policy for the next decision and remembers the choice.
    pub async fn activate(&self, choice: ActiveChoice) -> Result<(), CatalogError> {
        let _turn = self.turn.lock().await;
        self.activate_now(&choice).await?;
        let json = serde_json::to_string(&choice).map_err(StoreError::backend)?;
        self.store.put_setting(ACTIVE_KEY, json).await?;
        self.mark_changed().await?;
        tracing::info!(target: "hodei::audit", event = "policy_activated", policy = %choice.name, "policy activated");
        Ok(())
    }

    /// Removes an uploaded, inactive policy.
    pub async fn remove(&self, name: &str) -> Result<(), CatalogError> {
        let _turn = self.turn.lock().await;
        self.registry.remove(name)?;
        self.store.delete_plugin(name).await?;
        self.mark_changed().await?;
        tracing::info!(target: "hodei::audit", event = "policy_removed", plugin = %name, "policy removed");
        Ok(())
    }
}

/// Follows the changes other hosts on a shared store make to one catalog
/// (see the module docs): every [`FOLLOW_EVERY`], while `registry` lives,
/// reads the setting `changed_key`, and when it differs from the value last
/// acted on (`seen`) calls `reload` with the registry. A reload the store
/// fails is tried again on the next tick; one that fails on the plugin
/// side is logged by `reload` and not retried until the next change. The
/// policy and the masker catalogs both follow this way.
pub(crate) fn spawn_follow<R, F, Fut>(
    registry: &Arc<R>,
    store: &Arc<dyn JobStore>,
    changed_key: &'static str,
    mut seen: Option<String>,
    reload: F,
) where
    R: Send + Sync + 'static,
    F: Fn(Arc<R>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), StoreError>> + Send,
{
    let registry = Arc::downgrade(registry);
    let store = Arc::clone(store);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FOLLOW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(registry) = registry.upgrade() else {
                return;
            };
            let marker = match store.setting(changed_key).await {
                Ok(marker) if marker != seen => marker,
                Ok(_) => continue,
                Err(err) => {
                    tracing::warn!(%err, key = changed_key, "cannot read a catalog's change marker; trying again");
                    continue;
                }
            };
            match reload(registry).await {
                Ok(()) => seen = marker,
                Err(err) => {
                    tracing::warn!(%err, key = changed_key, "cannot reload a catalog changed on another host; trying again");
                }
            }
        }
    });
}

/// Tells the hosts sharing `store` that the catalog whose marker is
/// `changed_key` changed: a fresh random value, never written twice.
pub(crate) async fn mark_changed(
    store: &dyn JobStore,
    changed_key: &str,
) -> Result<(), StoreError> {
    store
        .put_setting(changed_key, uuid::Uuid::new_v4().to_string())
        .await
}

/// Applies the store's uploads and active choice to `registry`: new or
/// changed uploads first (so the choice may name one), then the choice,
/// then removals (so the active one has moved off a removed upload).
/// Failures are logged and leave what this host had.
fn apply(
    registry: &PolicyRegistry,
    stored: &BTreeMap<String, Vec<u8>>,
    choice: Option<&ActiveChoice>,
) {
    let here: BTreeMap<String, String> = registry
        .views()
        .into_iter()
        .filter(|view| view.source == Source::Uploaded)
        .map(|view| (view.name, view.sha256))
        .collect();
    apply_uploads(
        "policy",
        &here,
        stored,
        |name, bytes| registry.load(name, bytes, Source::Uploaded),
        || {
            if let Some(choice) = choice
                && registry.active() != (choice.name.clone(), choice.config.clone())
            {
                match registry.activate(&choice.name, &choice.config) {
                    Ok(()) => {
                        tracing::info!(policy = %choice.name, "policy activated on another host")
                    }
                    Err(err) => tracing::error!(
                        policy = %choice.name, %err,
                        "a policy activated on another host does not start on this one; keeping the previous policy"
                    ),
                }
            }
        },
        |name| registry.remove(name),
    );
}

/// What a reload of either catalog (policies, maskers) does with the
/// store's uploads: `load` each one this host lacks or holds with other
/// bytes (`here`: name → SHA-256 of this host's uploads), then `settle`
/// (the active choice or chain, which may name a new upload), then
/// `remove` each upload gone from the store (nothing active uses it by
/// then). `kind` names them in the logs. A failure is logged and leaves
/// what this host had.
pub(crate) fn apply_uploads(
    kind: &str,
    here: &BTreeMap<String, String>,
    stored: &BTreeMap<String, Vec<u8>>,
    load: impl Fn(&str, &[u8]) -> Result<(), PluginError>,
    settle: impl FnOnce(),
    remove: impl Fn(&str) -> Result<(), PluginError>,
) {
    for (name, bytes) in stored {
        if here.get(name) == Some(&format!("{:x}", Sha256::digest(bytes))) {
            continue;
        }
        match load(name, bytes) {
            Ok(()) => tracing::info!(plugin = %name, "{kind} uploaded on another host loaded"),
            Err(err) => tracing::error!(
                plugin = %name, %err,
                "a {kind} uploaded on another host does not load on this one; keeping what this host had"
            ),
        }
    }
    settle();
    for name in here.keys().filter(|name| !stored.contains_key(*name)) {
        match remove(name) {
            Ok(()) => tracing::info!(plugin = %name, "{kind} removed on another host"),
            Err(err) => {
                tracing::error!(plugin = %name, %err, "cannot drop a {kind} removed on another host")
            }
        }
    }
}

impl Default for ActiveChoice {
    fn default() -> Self {
        Self {
            name: BUILTIN.to_owned(),
            config: String::new(),
        }
    }
}
