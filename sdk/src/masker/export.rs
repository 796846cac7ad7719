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
        let mut session = self.0.borrow_mut();
        if <M::Session as MaskSession>::BORROWS_LINES {
            return mask_borrowed(&mut *session, batch);
        }
        join(session.mask(split(batch)))
    }
}

/// What the component answers for `entries` (columns in, columns out, by
/// whichever path the session takes), as lines: what
/// [`super::testing::TestSession`] runs, so a plugin's tests drive the
/// path the host does.
pub(crate) fn mask_as_component<S: MaskSession>(
    session: &mut S,
    entries: Vec<Entry>,
) -> Vec<Vec<u8>> {
    let masked = if S::BORROWS_LINES {
        let mut batch = Lines {
            streams: Vec::with_capacity(entries.len()),
            ends: Vec::with_capacity(entries.len()),
            data: Vec::new(),
        };
        for entry in &entries {
            batch.streams.push(entry.stream);
            batch.data.extend_from_slice(&entry.data);
            batch
                .ends
                .push(u32::try_from(batch.data.len()).unwrap_or(u32::MAX));
        }
        mask_borrowed(session, batch)
    } else {
        join(session.mask(entries))
    };
    let mut start = 0usize;
    masked
        .ends
        .iter()
        .map(|&end| {
            let end = (end as usize).clamp(start, masked.data.len());
            let line = masked.data[start..end].to_vec();
            start = end;
            line
        })
        .collect()
}

/// The batch masked line by line in place ([`MaskSession::BORROWS_LINES`]):
/// a line left as it is is not copied until the answer is built, and a
/// batch with no line changed is answered with its own columns.
fn mask_borrowed<S: MaskSession>(session: &mut S, batch: Lines) -> Masked {
    // As `split` reads the columns: one line per (end, stream) pair, an end
    // past the data or going backwards clamped (an empty line).
    let lines = batch.ends.len().min(batch.streams.len());
    let mut start = 0usize;
    let mut well_formed = lines == batch.ends.len();
    let bounds: Vec<(usize, usize)> = batch.ends[..lines]
        .iter()
        .map(|&raw| {
            let end = (raw as usize).clamp(start, batch.data.len());
            well_formed &= end == raw as usize;
            let line = (start, end);
            start = end;
            line
        })
        .collect();
    well_formed &= start == batch.data.len();
    let mut answers: Vec<(usize, Vec<u8>)> = Vec::new();
    for (index, (&(start, end), stream)) in bounds.iter().zip(&batch.streams).enumerate() {
        if let Some(answer) = session.mask_borrowed(*stream, &batch.data[start..end]) {
            answers.push((index, answer));
        }
    }
    if answers.is_empty() && well_formed {
        return Masked {
            ends: batch.ends,
            data: batch.data,
        };
    }
    let mut masked = Masked {
        ends: Vec::with_capacity(bounds.len()),
        data: Vec::with_capacity(batch.data.len()),
    };
    let mut answers = answers.into_iter().peekable();
    for (index, &(start, end)) in bounds.iter().enumerate() {
        match answers.next_if(|(at, _)| *at == index) {
            Some((_, answer)) => masked.data.extend_from_slice(&answer),
            None => masked.data.extend_from_slice(&batch.data[start..end]),
        }
        masked
            .ends
            .push(u32::try_from(masked.data.len()).unwrap_or(u32::MAX));
    }
    masked
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

    /// Uppercases lines holding an `x`, line by line, borrowing.
    struct Shout;

    impl MaskSession for Shout {
        fn mask_line(&mut self, _: Stream, line: Vec<u8>) -> Vec<u8> {
            if line.contains(&b'x') {
                line.to_ascii_uppercase()
            } else {
                line
            }
        }

        const BORROWS_LINES: bool = true;

        fn mask_borrowed(&mut self, _: Stream, line: &[u8]) -> Option<Vec<u8>> {
            line.contains(&b'x').then(|| line.to_ascii_uppercase())
        }
    }

    #[test]
    fn borrowing_answers_as_owned_entries_do_whatever_the_columns() {
        // xorshift batches: random lines, some with an `x`, and now and
        // then an end out of place or a stream missing.
        let mut seed = 0x2545_F491_4F6C_DD1D_u64;
        let mut next = move |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        let mut unchanged_batches = 0;
        for _ in 0..2_000 {
            let data: Vec<u8> = (0..next(40)).map(|_| b"abx.\n"[next(5) as usize]).collect();
            let count = next(6) as usize;
            let mut ends: Vec<u32> = (0..count)
                .map(|_| next(data.len() as u64 + 1) as u32)
                .collect();
            ends.sort_unstable();
            match next(6) {
                0 if count > 0 => ends[0] = 99,
                1 if count > 0 => *ends.last_mut().unwrap() = data.len() as u32,
                2 | 3 if count > 0 => *ends.last_mut().unwrap() = data.len() as u32,
                _ => {}
            }
            let streams_count = if next(8) == 0 {
                count.saturating_sub(1)
            } else {
                count
            };
            let batch = || Lines {
                streams: vec![Stream::Stdout; streams_count],
                ends: ends.clone(),
                data: data.clone(),
            };
            let owned = join(Shout.mask(split(batch())));
            let borrowed = mask_borrowed(&mut Shout, batch());
            assert_eq!(
                (&borrowed.ends, &borrowed.data),
                (&owned.ends, &owned.data),
                "ends {ends:?}, {streams_count} streams, data {:?}",
                String::from_utf8_lossy(&data)
            );
            unchanged_batches += usize::from(owned.data == data && owned.ends == ends);
        }
        assert!(
            unchanged_batches > 100,
            "the no-copy answer was exercised: {unchanged_batches}"
        );
    }
}
