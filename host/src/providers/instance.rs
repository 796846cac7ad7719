//! A pool's provider instance, called from async code.
//!
//! Provider calls block (a `docker create` takes seconds; the plugin's own
//! time is bounded by its deadline), so each runs on tokio's blocking pool
//! with the instance moved there and back. An instance that faulted is
//! dropped and the next call makes a fresh one: a trap costs one call,
//! never the pool.

use crate::plugins::PluginEngine;
use crate::plugins::provider::{
    CompiledProvider, FaultKind, PoolIdentity, ProviderCallError, ProviderInstance,
};

use super::Grants;

/// One pool's provider (see the module docs).
#[derive(Debug)]
pub struct PoolProvider {
    engine: PluginEngine,
    compiled: CompiledProvider,
    grants: Grants,
    identity: PoolIdentity,
    config: String,
    instance: Option<ProviderInstance>,
}

impl PoolProvider {
    /// Instantiates and configures the provider: an error here refuses the
    /// pool (a capability not granted, a configuration the provider
    /// refuses).
    pub async fn start(
        engine: PluginEngine,
        compiled: CompiledProvider,
        grants: Grants,
        identity: PoolIdentity,
        config: String,
    ) -> Result<Self, ProviderCallError> {
        let mut provider = Self {
            engine,
            compiled,
            grants,
            identity,
            config,
            instance: None,
        };
        provider.call(|_| Ok(())).await?;
        Ok(provider)
    }

    /// Runs `f` on the instance, off the async threads.
    pub async fn call<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut ProviderInstance) -> Result<R, ProviderCallError> + Send + 'static,
    ) -> Result<R, ProviderCallError> {
        let existing = self.instance.take();
        let (engine, compiled, grants) = (
            self.engine.clone(),
            self.compiled.clone(),
            self.grants.clone(),
        );
        let (identity, config) = (self.identity.clone(), self.config.clone());
        let joined = tokio::task::spawn_blocking(move || {
            let mut instance = match existing {
                Some(instance) => instance,
                None => match compiled.instantiate(&engine, grants, &identity, &config) {
                    Ok(instance) => instance,
                    Err(err) => return (None, Err(err)),
                },
            };
            let result = f(&mut instance);
            (Some(instance), result)
        })
        .await;
        let (instance, result) = match joined {
            Ok(done) => done,
            Err(join) => (
                None,
                Err(ProviderCallError::Fault {
                    function: "call",
                    kind: FaultKind::Trap,
                    message: format!("the provider call panicked: {join}"),
                }),
            ),
        };
        if !matches!(result, Err(ProviderCallError::Fault { .. })) {
            self.instance = instance;
        }
        result
    }
}
