//! Literal masking of a job's declared secrets.
//!
//! This crate owns one fact and one algorithm: which byte strings count as
//! "a job's secret, as the job may have printed it", and how they are found
//! and replaced with [`MASK`]. Three places mask with it, and they must
//! agree, which is why it is a crate of its own, with no runtime and no
//! Wasm engine (it builds for the native targets and for `wasm32-wasip2`):
//! - the agent, on output *before* it is cut into lines (its streaming
//!   wrapper `MaskingStream` uses [`SecretMasker::mask_settled`]);
//! - the `literal` masker plugin (`plugins/masker-literal`), line by line
//!   inside the host's masker chain;
//! - the host's native fallback, when a masker plugin fails (it masks the
//!   batch itself, fail closed).
//!
//! # Patterns
//! [`SecretMasker::new`] derives, for each secret value, the forms a job is
//! likely to print it in:
//! - the value itself; for a multi-line value also the value with `\r\n`
//!   line ends (how a terminal prints `\n`) and each of its non-empty lines;
//! - for each of those:
//!   - its base64, standard and URL-safe alphabets, at the three byte
//!     offsets the value can start at inside a 3-byte group, each trimmed to
//!     the characters that do not depend on neighbouring bytes, so the
//!     secret is found inside any longer base64 text;
//!   - its URL-encoding (every byte but the unreserved `A-Za-z0-9-._~` as
//!     `%XX`, upper and lower case hex);
//!   - its JSON string escaping (serde_json's, and the ASCII-only form with
//!     `\uXXXX` that Python's `json.dumps` prints), without the quotes;
//!   - its shell quoting: the backslash form bash's `printf %q` prints, and
//!     the inside of the single-quoted form `${v@Q}` prints (`'` as `'\''`);
//!   - Go's `%q` and `%+q` (`strconv.Quote`, `QuoteToASCII`), without the
//!     quotes.
//!
//! Values and lines shorter than [`MIN_PATTERN`] bytes are not masked, in
//! any form, nor are derived patterns that short: the host refuses secrets
//! that short ([`MIN_SECRET_LEN`]), and masking every 3-byte line would
//! mangle ordinary output. Base64 that a tool wraps into lines (`base64`
//! wraps at 76 columns) is only masked up to the first wrap.
//!
//! Matching is Aho-Corasick over raw bytes, leftmost-longest, so an encoding
//! that contains another pattern (a line inside the whole value) is masked
//! whole, and text that merely begins like a secret is left alone.
//!
//! ```
//! use hodei_mask::SecretMasker;
//!
//! let masker = SecretMasker::new(["hunter2-is-long"]).unwrap().unwrap();
//! assert_eq!(masker.mask(b"pw=hunter2-is-long;"), b"pw=***;");
//! // base64 of the value, inside longer base64 text:
//! assert_eq!(masker.mask(b"eGh1bnRlcjItaXMtbG9uZw=="), b"eG***w==");
//! assert!(SecretMasker::new(["short"]).unwrap().is_none());
//! ```

mod forms;
pub mod gate;

use std::collections::BTreeSet;

use aho_corasick::{AhoCorasick, MatchKind};

pub use gate::Gate;

/// What every occurrence of a secret is replaced with.
pub const MASK: &[u8] = b"***";

/// The shortest pattern that is masked, in bytes.
pub const MIN_PATTERN: usize = 6;

/// The shortest secret value the host accepts, in bytes: the same fact as
/// [`MIN_PATTERN`], named for the API that refuses shorter values.
pub const MIN_SECRET_LEN: usize = MIN_PATTERN;

/// The automaton could not be built (too many or too long secrets).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the secret masker: {0}")]
pub struct MaskerError(#[from] aho_corasick::BuildError);

/// Every pattern derived from one job's secrets, ready to search.
#[derive(Debug)]
pub struct SecretMasker {
    /// Leftmost-longest automaton over `patterns`.
    automaton: AhoCorasick,
    /// The patterns, sorted: answers "could these bytes begin a pattern?".
    patterns: Vec<Vec<u8>>,
    /// Whether some pattern begins with the byte (a cheap first filter).
    first_bytes: [bool; 256],
    /// The length of the longest pattern.
    max_len: usize,
    /// The quick "no pattern here" asked before the automaton.
    gate: Option<Gate>,
}

impl SecretMasker {
    /// Derives the patterns of `secrets` (see the crate docs). `None` when
    /// there is nothing to mask (no secrets, or all shorter than
    /// [`MIN_PATTERN`]).
    pub fn new<I>(secrets: I) -> Result<Option<Self>, MaskerError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut patterns = BTreeSet::new();
        for secret in secrets {
            forms::derive_patterns(secret.as_ref(), &mut patterns);
        }
        patterns.retain(|pattern| pattern.len() >= MIN_PATTERN);
        let patterns: Vec<Vec<u8>> = patterns.into_iter().collect();
        let Some(max_len) = patterns.iter().map(Vec::len).max() else {
            return Ok(None);
        };
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)?;
        let gate = Gate::new(patterns.iter().map(Vec::as_slice));
        let mut first_bytes = [false; 256];
        for pattern in &patterns {
            first_bytes[usize::from(pattern[0])] = true;
        }
        Ok(Some(Self {
            automaton,
            patterns,
            first_bytes,
            max_len,
            gate,
        }))
    }

    /// `data` with every pattern replaced by [`MASK`], as one whole.
    pub fn mask(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len());
        let mut pos = 0;
        for found in self.automaton.find_iter(data) {
            out.extend_from_slice(&data[pos..found.start()]);
            out.extend_from_slice(MASK);
            pos = found.end();
        }
        out.extend_from_slice(&data[pos..]);
        out
    }

    /// Like [`SecretMasker::mask`], but hands `data` back as it is (no copy)
    /// when no pattern occurs in it, the common case for a line of output.
    /// Asks the [`Gate`] first: this is the line-by-line path of the masker
    /// plugin, which runs as `wasm32`.
    pub fn mask_owned(&self, data: Vec<u8>) -> Vec<u8> {
        if self.is_match(&data) {
            self.mask(&data)
        } else {
            data
        }
    }

    /// Whether some pattern occurs in `data`.
    pub fn is_match(&self, data: &[u8]) -> bool {
        self.gate.as_ref().is_none_or(|gate| gate.may_match(data)) && self.automaton.is_match(data)
    }

    /// The streaming step: appends the settled part of `data`, masked, to
    /// `out` and returns its length; the rest (at most the longest pattern
    /// less one byte) could still begin a pattern and must be presented
    /// again together with what follows.
    ///
    /// Everything before the returned length is final: no match can start
    /// there any more, nor can a longer one replace a match found there.
    pub fn mask_settled(&self, data: &[u8], out: &mut Vec<u8>) -> usize {
        let len = data.len();
        let held_from = (len.saturating_sub(self.max_len - 1)..len)
            .find(|&start| self.begins_pattern(&data[start..]))
            .unwrap_or(len);
        let mut pos = 0;
        for found in self.automaton.find_iter(data) {
            // A match from here on may still grow or be overtaken.
            if found.start() >= held_from {
                break;
            }
            out.extend_from_slice(&data[pos..found.start()]);
            out.extend_from_slice(MASK);
            pos = found.end();
        }
        let settled = pos.max(held_from);
        out.extend_from_slice(&data[pos..settled]);
        settled
    }

    /// Whether `bytes` (not empty) is a proper prefix of some pattern: the
    /// first pattern sorting after `bytes` starts with it if any does.
    fn begins_pattern(&self, bytes: &[u8]) -> bool {
        if !self.first_bytes[usize::from(bytes[0])] {
            return false;
        }
        let next = self
            .patterns
            .partition_point(|pattern| pattern.as_slice() <= bytes);
        self.patterns
            .get(next)
            .is_some_and(|pattern| pattern.starts_with(bytes))
    }
}

#[cfg(test)]
mod tests;
