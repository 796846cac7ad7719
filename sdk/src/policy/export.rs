//! The component's `policy` export: one stored instance of the author's
//! [`Policy`], driven by the generated `Guest` trait.

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;

use super::bindings::{Demand, Guest, Ranking, Workers};
use super::{Policy, columns};

/// Implements the generated `Guest` trait for any [`Policy`]; named only by
/// `export_policy!`.
#[derive(Debug)]
pub struct Exported<P>(PhantomData<P>);

thread_local! {
    /// The configured instance. Wasm is single-threaded and a component
    /// exports one policy, so one untyped slot is enough (statics cannot be
    /// generic over `P`).
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

impl<P: Policy> Exported<P> {
    /// Runs `f` on the stored instance, creating it with `configure("")`
    /// when the host has not configured one yet.
    ///
    /// # Panics
    /// When `configure("")` is refused: the call traps, and the host sees
    /// the message on the component's stderr.
    fn with_policy<R>(f: impl FnOnce(&P) -> R) -> R {
        INSTANCE.with_borrow_mut(|slot| {
            let policy = slot.get_or_insert_with(|| match P::configure("") {
                Ok(policy) => Box::new(policy),
                Err(e) => panic!(
                    "policy {} used before configure, and configure(\"\") failed: {e}",
                    P::NAME
                ),
            });
            let policy = policy
                .downcast_ref::<P>()
                .expect("the slot only ever holds this component's policy type");
            f(policy)
        })
    }
}

impl<P: Policy> Guest for Exported<P> {
    fn name() -> String {
        P::NAME.to_owned()
    }

    fn configure(config: String) -> Result<(), String> {
        let policy = P::configure(&config)?;
        INSTANCE.set(Some(Box::new(policy)));
        Ok(())
    }

    fn label_keys() -> Vec<String> {
        P::LABEL_KEYS.iter().map(|&key| key.to_owned()).collect()
    }

    fn decide(job: Demand, candidates: Workers) -> Ranking {
        Self::with_policy(|p| columns::decide(p, job, &candidates))
    }
}
