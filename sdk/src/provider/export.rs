//! The component's `provider` export: one stored instance of the author's
//! [`Provider`], driven by the generated `Guest` trait, built with the
//! imported capability.

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;

use super::bindings::Guest;
use super::{
    Imported, OwnedWorker, PoolIdentity, Provider, ProviderError, WorkerOffer, WorkerSpec,
    WorkerStatus,
};

/// Implements the generated `Guest` trait for any [`Provider`] whose
/// capability is the imported one; named only by `export_provider!`.
#[derive(Debug)]
pub struct Exported<P>(PhantomData<P>);

thread_local! {
    /// The configured instance. Wasm is single-threaded and a component
    /// exports one provider, so one untyped slot is enough (statics cannot
    /// be generic over `P`).
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

impl<P: Provider> Exported<P> {
    /// Runs `f` on the configured instance, or answers with a terminal
    /// error when the host has not configured it.
    fn with_provider<R>(
        f: impl FnOnce(&P) -> Result<R, ProviderError>,
    ) -> Result<R, ProviderError> {
        INSTANCE.with_borrow(
            |slot| match slot.as_ref().and_then(|p| p.downcast_ref::<P>()) {
                Some(provider) => f(provider),
                None => Err(ProviderError::Terminal(
                    "the provider was called before configure".into(),
                )),
            },
        )
    }
}

impl<P> Guest for Exported<P>
where
    P: Provider,
    P::Capability: Imported,
{
    fn configure(identity: PoolIdentity, config: String) -> Result<(), ProviderError> {
        let provider = P::configure(P::Capability::imported(), &identity, &config)?;
        INSTANCE.set(Some(Box::new(provider)));
        Ok(())
    }

    /// # Panics
    /// Before configure (the call traps: `info` has no error to answer).
    fn info() -> WorkerOffer {
        Self::with_provider(|p| Ok(p.info()))
            .unwrap_or_else(|e| panic!("info: {}", super::message(&e)))
    }

    fn create(worker_id: String, spec: WorkerSpec) -> Result<String, ProviderError> {
        Self::with_provider(|p| p.create(&worker_id, &spec))
    }

    fn destroy(worker_id: String) -> Result<(), ProviderError> {
        Self::with_provider(|p| p.destroy(&worker_id))
    }

    fn status(worker_id: String) -> Result<WorkerStatus, ProviderError> {
        Self::with_provider(|p| p.status(&worker_id))
    }

    fn list() -> Result<Vec<OwnedWorker>, ProviderError> {
        Self::with_provider(P::list)
    }
}
