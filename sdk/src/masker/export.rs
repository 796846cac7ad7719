//! The component's `masker` export: one stored instance of the author's
//! [`Masker`], driven by the generated `Guest` trait, and the `session`
//! resource wrapping the author's [`MaskSession`].

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use super::Entry;
use super::bindings::{Guest, GuestSession, Info, Lines, Masked};
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

    fn mask(&self, batch: Lines) -> Masked {
        let entries = split(batch);
        let answers = self.0.borrow_mut().mask(entries);
        join(answers)
    }
}

/// The columns of a batch as one [`Entry`] per line. Ends past the data or
/// going backwards (a broken host) give empty lines rather than a trap.
fn split(batch: Lines) -> Vec<Entry> {
    let mut start = 0usize;
    batch
        .ends
        .iter()
        .zip(batch.streams)
        .map(|(end, stream)| {
            let end = (*end as usize).clamp(start, batch.data.len());
            let data = batch.data[start..end].to_vec();
            start = end;
            Entry { stream, data }
        })
        .collect()
}

/// The answers as columns.
fn join(answers: Vec<Vec<u8>>) -> Masked {
    let mut masked = Masked {
        ends: Vec::with_capacity(answers.len()),
        data: Vec::with_capacity(answers.iter().map(Vec::len).sum()),
    };
    for answer in answers {
        masked.data.extend_from_slice(&answer);
        masked
            .ends
            .push(u32::try_from(masked.data.len()).unwrap_or(u32::MAX));
    }
    masked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::masker::Stream;

    #[test]
    fn columns_round_trip_lines_of_any_length() {
        let batch = Lines {
            streams: vec![Stream::Stdout, Stream::Stderr, Stream::Stdout],
            ends: vec![3, 3, 8],
            data: b"abcdefgh".to_vec(),
        };
        let entries = split(batch);
        let data: Vec<&[u8]> = entries.iter().map(|e| e.data.as_slice()).collect();
        assert_eq!(data, [&b"abc"[..], b"", b"defgh"]);
        assert_eq!(entries[1].stream, Stream::Stderr);
        let masked = join(entries.into_iter().map(|e| e.data).collect());
        assert_eq!(masked.ends, [3, 3, 8]);
        assert_eq!(masked.data, b"abcdefgh");
    }

    #[test]
    fn ends_that_do_not_fit_give_empty_lines_not_a_trap() {
        let batch = Lines {
            streams: vec![Stream::Stdout; 3],
            ends: vec![4, 2, 99],
            data: b"abcdef".to_vec(),
        };
        let data: Vec<Vec<u8>> = split(batch).into_iter().map(|e| e.data).collect();
        assert_eq!(data, [b"abcd".to_vec(), Vec::new(), b"ef".to_vec()]);
    }
}
