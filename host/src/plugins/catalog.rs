//! The durable side of the policy registry: uploads are stored before they
//! are acknowledged, the active choice is stored when it changes, and both
//! are restored at start-up, so loaded plugins survive a restart (the bytes
//! are kept, not a path).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::registry::BUILTIN;
use super::{PluginError, PolicyRegistry, Source, in_tree};
use crate::store::{JobStore, StoreError};

/// Settings key of the active policy.
const ACTIVE_KEY: &str = "active_policy";

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
}

impl PolicyCatalog {
    /// Wraps a registry with its persistence.
    pub fn new(registry: Arc<PolicyRegistry>, store: Arc<dyn JobStore>) -> Self {
        Self { registry, store }
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<PolicyRegistry> {
        &self.registry
    }

    /// Loads the in-tree policies and every stored upload, then activates
    /// `wanted` (from config) or else the stored choice. A stored plugin that
    /// no longer loads is logged and skipped; an explicitly configured
    /// policy that cannot start is an error.
    pub async fn restore(&self, wanted: Option<ActiveChoice>) -> anyhow::Result<()> {
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
        Ok(())
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
        let registry = Arc::clone(&self.registry);
        let owned = name.to_owned();
        let for_compile = bytes.clone();
        tokio::task::spawn_blocking(move || registry.load(&owned, &for_compile, Source::Uploaded))
            .await
            .map_err(PluginError::engine)??;
        self.store.put_plugin(name, bytes).await?;
        tracing::info!(target: "hodei::audit", event = "policy_uploaded", plugin = %name, "policy uploaded");
        Ok(())
    }

    /// Activates a policy for the next decision and remembers the choice.
    pub async fn activate(&self, choice: ActiveChoice) -> Result<(), CatalogError> {
        self.activate_now(&choice).await?;
        let json = serde_json::to_string(&choice).map_err(StoreError::backend)?;
        self.store.put_setting(ACTIVE_KEY, json).await?;
        tracing::info!(target: "hodei::audit", event = "policy_activated", policy = %choice.name, "policy activated");
        Ok(())
    }

    /// Removes an uploaded, inactive policy.
    pub async fn remove(&self, name: &str) -> Result<(), CatalogError> {
        self.registry.remove(name)?;
        self.store.delete_plugin(name).await?;
        tracing::info!(target: "hodei::audit", event = "policy_removed", plugin = %name, "policy removed");
        Ok(())
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
