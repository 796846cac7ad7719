//! Native test helpers: run a [`Masker`] the way the host does (configure
//! once, one session per job attempt, batches of lines in order, the count
//! checked), with plain `cargo test` and no Wasm runtime.
//!
//! ```
//! # use hodei_plugin_sdk::masker::{MaskSession, Masker, Stream};
//! # struct Upper;
//! # impl Masker for Upper {
//! #     const NAME: &'static str = "upper";
//! #     const VERSION: &'static str = "0.1.0";
//! #     const DESCRIPTION: &'static str = "shouts";
//! #     type Session = Upper;
//! #     fn configure(_: &str) -> Result<Self, String> { Ok(Upper) }
//! #     fn session(&self, _: &[String]) -> Upper { Upper }
//! # }
//! # impl MaskSession for Upper {
//! #     fn mask_line(&mut self, _: Stream, line: Vec<u8>) -> Vec<u8> { line.to_ascii_uppercase() }
//! # }
//! use hodei_plugin_sdk::masker::testing::{TestSession, configure, mask_in_batches, stdout};
//!
//! let masker: Upper = configure("");
//! let lines = [stdout("a"), stdout("b"), stdout("c")];
//! let whole = TestSession::open(&masker, &[]).mask(&lines);
//! assert_eq!(whole, [b"A".to_vec(), b"B".to_vec(), b"C".to_vec()]);
//! assert_eq!(mask_in_batches(&masker, &[], &lines, [1, 2]), whole);
//! ```

use std::fmt;

use super::{Entry, Masker, Stream};

/// A line of stdout.
pub fn stdout(line: impl AsRef<[u8]>) -> Entry {
    entry(Stream::Stdout, line)
}

/// A line of stderr.
pub fn stderr(line: impl AsRef<[u8]>) -> Entry {
    entry(Stream::Stderr, line)
}

/// A line of text the host keeps from a job that is not its output (its
/// failure reason, an agent's error string).
pub fn system(line: impl AsRef<[u8]>) -> Entry {
    entry(Stream::System, line)
}

/// A line of `stream`.
pub fn entry(stream: Stream, line: impl AsRef<[u8]>) -> Entry {
    Entry {
        stream,
        data: line.as_ref().to_vec(),
    }
}

/// The masker `config` builds, as the host's `configure` would.
///
/// # Panics
/// When the configuration is refused, with the masker's message.
pub fn configure<M: Masker>(config: &str) -> M {
    M::configure(config).unwrap_or_else(|e| panic!("masker {} refused {config:?}: {e}", M::NAME))
}

/// A masker broke the batch contract: the host discards its answer and
/// masks the batch itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountMismatch {
    /// Lines sent.
    pub sent: usize,
    /// Lines answered.
    pub answered: usize,
}

impl fmt::Display for CountMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the masker answered {} lines for a batch of {}",
            self.answered, self.sent
        )
    }
}

impl std::error::Error for CountMismatch {}

/// One job attempt's session, driven as the host drives it.
pub struct TestSession<M: Masker> {
    /// The author's session.
    session: M::Session,
}

impl<M: Masker> fmt::Debug for TestSession<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TestSession<{}>", M::NAME)
    }
}

impl<M: Masker> TestSession<M> {
    /// Opens a session of `masker` with these secret values.
    pub fn open(masker: &M, secrets: &[&str]) -> Self {
        let secrets: Vec<String> = secrets.iter().map(|&s| s.to_owned()).collect();
        Self {
            session: masker.session(&secrets),
        }
    }

    /// Masks one batch, checking the count as the host does.
    pub fn try_mask(&mut self, entries: &[Entry]) -> Result<Vec<Vec<u8>>, CountMismatch> {
        let masked = super::export::mask_as_component(&mut self.session, entries.to_vec());
        if masked.len() == entries.len() {
            Ok(masked)
        } else {
            Err(CountMismatch {
                sent: entries.len(),
                answered: masked.len(),
            })
        }
    }

    /// Masks one batch.
    ///
    /// # Panics
    /// When the masker answers a different number of lines.
    pub fn mask(&mut self, entries: &[Entry]) -> Vec<Vec<u8>> {
        self.try_mask(entries)
            .unwrap_or_else(|e| panic!("masker {}: {e}", M::NAME))
    }

    /// Masks lines of one stream as one batch, as (lossy) text: the
    /// shortest way to write an expectation.
    pub fn mask_text(&mut self, stream: Stream, lines: &[&str]) -> Vec<String> {
        let entries: Vec<Entry> = lines.iter().map(|line| entry(stream, line)).collect();
        self.mask(&entries)
            .iter()
            .map(|line| String::from_utf8_lossy(line).into_owned())
            .collect()
    }
}

/// Masks `entries` in one new session of `masker`, cut into consecutive
/// batches of the given sizes (what is left after the sizes run out is one
/// last batch; a size of 0 sends an empty batch). For checking that the
/// output does not depend on how the host cuts batches.
///
/// # Panics
/// When the masker answers a batch with a different number of lines.
pub fn mask_in_batches<M: Masker>(
    masker: &M,
    secrets: &[&str],
    entries: &[Entry],
    batch_sizes: impl IntoIterator<Item = usize>,
) -> Vec<Vec<u8>> {
    let mut session = TestSession::open(masker, secrets);
    let mut out = Vec::with_capacity(entries.len());
    let mut rest = entries;
    for size in batch_sizes {
        let (batch, after) = rest.split_at(size.min(rest.len()));
        out.extend(session.mask(batch));
        rest = after;
    }
    if !rest.is_empty() {
        out.extend(session.mask(rest));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::masker::MaskSession;

    /// Numbers the lines it has seen, per session: state across batches.
    struct Counter;

    impl Masker for Counter {
        const NAME: &'static str = "counter";
        const VERSION: &'static str = "0.1.0";
        const DESCRIPTION: &'static str = "numbers lines";
        type Session = usize;

        fn configure(config: &str) -> Result<Self, String> {
            match config {
                "" => Ok(Self),
                other => Err(format!("no configuration, got {other:?}")),
            }
        }

        fn session(&self, _: &[String]) -> usize {
            0
        }
    }

    impl MaskSession for usize {
        fn mask_line(&mut self, _: Stream, line: Vec<u8>) -> Vec<u8> {
            *self += 1;
            let mut out = self.to_string().into_bytes();
            out.extend(line);
            out
        }
    }

    /// Answers one line too few.
    struct Short;

    impl Masker for Short {
        const NAME: &'static str = "short";
        const VERSION: &'static str = "0.1.0";
        const DESCRIPTION: &'static str = "drops a line";
        type Session = ();

        fn configure(_: &str) -> Result<Self, String> {
            Ok(Self)
        }

        fn session(&self, _: &[String]) {}
    }

    impl MaskSession for () {
        fn mask_line(&mut self, _: Stream, line: Vec<u8>) -> Vec<u8> {
            line
        }

        fn mask(&mut self, mut entries: Vec<Entry>) -> Vec<Vec<u8>> {
            entries.pop();
            entries.into_iter().map(|e| e.data).collect()
        }
    }

    #[test]
    fn state_carries_across_batches_and_sessions_start_afresh() {
        let masker: Counter = configure("");
        let lines = [stdout("a"), stderr("b"), system("c"), stdout("d")];
        let expected = [
            b"1a".to_vec(),
            b"2b".to_vec(),
            b"3c".to_vec(),
            b"4d".to_vec(),
        ];
        assert_eq!(mask_in_batches(&masker, &[], &lines, [1, 0, 2]), expected);
        assert_eq!(mask_in_batches(&masker, &[], &lines, [9]), expected);
        let mut session = TestSession::open(&masker, &[]);
        assert_eq!(session.mask_text(Stream::Stdout, &["x"]), ["1x"]);
    }

    #[test]
    fn a_wrong_count_is_reported() {
        let mut session = TestSession::open(&Short, &[]);
        assert_eq!(
            session.try_mask(&[stdout("a"), stdout("b")]),
            Err(CountMismatch {
                sent: 2,
                answered: 1
            })
        );
    }

    #[test]
    #[should_panic(expected = "refused")]
    fn a_refused_configuration_panics_with_the_message() {
        let _: Counter = configure("loud");
    }
}
