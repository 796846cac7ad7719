//! The component's `masker` export: one stored instance of the author's
//! [`Masker`], driven by the generated `Guest` trait, and the `session`
//! resource wrapping the author's [`MaskSession`].

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use super::bindings::{Entry, Guest, GuestSession, Info};
use super::{MaskSession, Masker};

/// Implements the generated `Guest` trait for any [`Masker`]; named only by
/// `export_masker!`.
#[derive(Debug)]
pub struct Exported<M>(PhantomData<M>);

thread_local! {
    /// The configured instance. Wasm is single-threaded and a component
    /// exports one masker, so one untyped slot is enough (statics cannot be
    /// generic over `M`).
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

impl<M: Masker> Exported<M> {
    /// Runs `f` on the stored instance, creating it with `configure("")`
    /// when the host has not configured one yet.
    ///
    /// # Panics
    /// When `configure("")` is refused: the call traps, and the host sees
    /// the message on the component's stderr.
    fn with_masker<R>(f: impl FnOnce(&M) -> R) -> R {
        INSTANCE.with_borrow_mut(|slot| {
            let masker = slot.get_or_insert_with(|| match M::configure("") {
                Ok(masker) => Box::new(masker),
                Err(e) => panic!(
                    "masker {} used before configure, and configure(\"\") failed: {e}",
                    M::NAME
                ),
            });
            let masker = masker
                .downcast_ref::<M>()
                .expect("the slot only ever holds this component's masker type");
            f(masker)
        })
    }
}

impl<M: Masker> Guest for Exported<M> {
    type Session = ExportedSession<M>;

    fn info() -> Info {
        Info {
            name: M::NAME.to_owned(),
            version: M::VERSION.to_owned(),
            description: M::DESCRIPTION.to_owned(),
        }
    }

    fn configure(config: String) -> Result<(), String> {
        let masker = M::configure(&config)?;
        INSTANCE.set(Some(Box::new(masker)));
        Ok(())
    }
}

/// The `session` resource: the author's session behind a `RefCell`, since
/// the generated trait hands out `&self` and a session changes as it masks.
pub struct ExportedSession<M: Masker>(RefCell<M::Session>);

impl<M: Masker> fmt::Debug for ExportedSession<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExportedSession<{}>", M::NAME)
    }
}

impl<M: Masker> GuestSession for ExportedSession<M> {
    fn new(secrets: Vec<String>) -> Self {
        Self(RefCell::new(Exported::<M>::with_masker(|masker| {
            masker.session(&secrets)
        })))
    }

    fn mask(&self, entries: Vec<Entry>) -> Vec<Vec<u8>> {
        self.0.borrow_mut().mask(entries)
    }
}
