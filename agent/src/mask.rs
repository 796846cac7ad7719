//! Masking a job's secrets in its output before the output leaves the
//! agent.
//!
//! A job's secrets reach its process as environment variables; whatever
//! the job prints goes through a [`MaskingStream`] per stream (stdout,
//! stderr) *before* it is cut into lines, and every occurrence of a secret
//! becomes [`MASK`].
//!
//! # Patterns
//! [`SecretMasker::new`] derives, for each secret value, the forms a job is
//! likely to print it in:
//! - the value itself; for a multi-line value also the value with `\r\n`
//!   line ends (how a terminal prints `\n`) and each of its non-empty lines;
//! - for each of those: its base64 (standard alphabet) at the three byte
//!   offsets the value can start at inside a 3-byte group, each trimmed to
//!   the characters that do not depend on neighbouring bytes, so the secret
//!   is found inside any longer base64 text; its URL-encoding (every byte
//!   but the unreserved `A-Za-z0-9-._~` as `%XX`, upper and lower case
//!   hex); its JSON string escaping (serde_json's, and the ASCII-only form
//!   with `\uXXXX` that Python's `json.dumps` prints), without the quotes.
//!
//! Values and lines shorter than [`MIN_PATTERN`] bytes are not masked, in
//! any form, nor are derived patterns that short: the host refuses secrets
//! that short, and masking every 3-byte line would mangle ordinary output. Base64 that a tool wraps into lines (`base64`
//! wraps at 76 columns) is only masked up to the first wrap.
//!
//! Matching is Aho-Corasick over raw bytes, leftmost-longest, so an encoding
//! that contains another pattern (a line inside the whole value) is masked
//! whole, and text that merely begins like a secret is left alone.
//!
//! # Streaming
//! Output arrives in arbitrary pieces (PTY reads, pipe reads), and a secret
//! may be split across two of them. A [`MaskingStream`] therefore holds
//! back the shortest tail of what it has seen that could still be the
//! beginning of a pattern (a proper prefix of one), at most
//! `longest pattern - 1` bytes, and searches it again together with the
//! next piece. Everything before that tail is settled: no match can start
//! there any more, nor can a longer one replace a match found there. Output
//! that cannot begin a secret is not delayed at all; the held tail is
//! flushed (masked) at end of output.
//!
//! With no secrets there is no masker and the stream hands the input back
//! borrowed: no copy, no search.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;

/// What every occurrence of a secret is replaced with.
pub const MASK: &[u8] = b"***";
/// The shortest pattern that is masked, in bytes.
pub const MIN_PATTERN: usize = 6;

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
}

impl SecretMasker {
    /// Derives the patterns of `secrets` (see the module docs). `None` when
    /// there is nothing to mask.
    pub fn new<I>(secrets: I) -> Result<Option<Self>, MaskerError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut patterns = BTreeSet::new();
        for secret in secrets {
            derive_patterns(secret.as_ref(), &mut patterns);
        }
        patterns.retain(|pattern| pattern.len() >= MIN_PATTERN);
        let patterns: Vec<Vec<u8>> = patterns.into_iter().collect();
        let Some(max_len) = patterns.iter().map(Vec::len).max() else {
            return Ok(None);
        };
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)?;
        let mut first_bytes = [false; 256];
        for pattern in &patterns {
            first_bytes[usize::from(pattern[0])] = true;
        }
        Ok(Some(Self {
            automaton,
            patterns,
            first_bytes,
            max_len,
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

    /// Appends the settled part of `data`, masked, to `out` and returns
    /// its length; the rest could still begin a pattern and must be
    /// presented again with what follows.
    fn mask_settled(&self, data: &[u8], out: &mut Vec<u8>) -> usize {
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

/// One stream of output on its way out of the agent, masked piece by
/// piece (see the module docs on streaming).
#[derive(Debug, Default)]
pub struct MaskingStream {
    /// `None`: the job has no secrets and bytes pass through untouched.
    masker: Option<Arc<SecretMasker>>,
    /// The unsettled tail: it could still begin a secret.
    held: Vec<u8>,
}

impl MaskingStream {
    /// A stream masking with `masker`, or passing through with `None`.
    pub fn new(masker: Option<Arc<SecretMasker>>) -> Self {
        Self {
            masker,
            held: Vec::new(),
        }
    }

    /// Adds a piece of output; returns the bytes that are now safe to emit
    /// (masked), possibly fewer than were pushed.
    pub fn push<'a>(&mut self, chunk: &'a [u8]) -> Cow<'a, [u8]> {
        let Some(masker) = &self.masker else {
            return Cow::Borrowed(chunk);
        };
        let mut out = Vec::with_capacity(chunk.len() + self.held.len());
        if self.held.is_empty() {
            let settled = masker.mask_settled(chunk, &mut out);
            self.held.extend_from_slice(&chunk[settled..]);
        } else {
            self.held.extend_from_slice(chunk);
            let settled = masker.mask_settled(&self.held, &mut out);
            self.held.drain(..settled);
        }
        Cow::Owned(out)
    }

    /// The held tail, masked, at end of output.
    pub fn finish(&mut self) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        match &self.masker {
            Some(masker) => masker.mask(&held),
            None => held,
        }
    }
}

/// Adds every form of `secret` to `patterns`.
fn derive_patterns(secret: &str, patterns: &mut BTreeSet<Vec<u8>>) {
    let mut forms = vec![secret.to_owned()];
    if secret.contains('\n') {
        forms.push(secret.replace("\r\n", "\n").replace('\n', "\r\n"));
        forms.extend(
            secret
                .lines()
                .filter(|line| !line.is_empty())
                .map(str::to_owned),
        );
    }
    // A form too short to mask is not masked in any encoding either.
    for form in forms.iter().filter(|form| form.len() >= MIN_PATTERN) {
        let bytes = form.as_bytes();
        patterns.insert(bytes.to_vec());
        for offset in 0..3 {
            patterns.insert(base64_core(bytes, offset));
        }
        patterns.insert(url_encoded(bytes, b"0123456789ABCDEF"));
        patterns.insert(url_encoded(bytes, b"0123456789abcdef"));
        let json = json_escaped(form);
        patterns.insert(ascii_json(&json));
        patterns.insert(json.into_bytes());
    }
}

/// The base64 characters of `bytes` that are the same wherever `bytes`
/// appears at `offset` (0..3) within a 3-byte group: each character encodes
/// 6 bits, and only those lying wholly inside `bytes` are kept.
fn base64_core(bytes: &[u8], offset: usize) -> Vec<u8> {
    let mut shifted = vec![0; offset];
    shifted.extend_from_slice(bytes);
    let encoded = STANDARD_NO_PAD.encode(&shifted);
    let first = (8 * offset).div_ceil(6);
    let end = 8 * (offset + bytes.len()) / 6;
    encoded
        .as_bytes()
        .get(first..end)
        .unwrap_or_default()
        .to_vec()
}

/// Percent-encoding of every byte that is not unreserved (RFC 3986).
fn url_encoded(bytes: &[u8], hex: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 3);
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte);
        } else {
            out.extend_from_slice(&[
                b'%',
                hex[usize::from(byte >> 4)],
                hex[usize::from(byte & 0xf)],
            ]);
        }
    }
    out
}

/// `value` as serde_json escapes it inside a string, without the quotes.
fn json_escaped(value: &str) -> String {
    let quoted = serde_json::Value::from(value).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

/// A JSON-escaped string with every non-ASCII character as `\uXXXX`
/// (UTF-16 units, lower-case hex), as Python's `json.dumps` prints it.
fn ascii_json(escaped: &str) -> Vec<u8> {
    let mut out = String::with_capacity(escaped.len());
    for c in escaped.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            for unit in c.encode_utf16(&mut [0; 2]) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out.into_bytes()
}

#[cfg(test)]
#[path = "mask_tests.rs"]
mod tests;
