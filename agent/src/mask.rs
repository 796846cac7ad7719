//! Masking a job's secrets in its output before the output leaves the
//! agent.
//!
//! A job's secrets reach its process as environment variables; whatever
//! the job prints goes through a [`MaskingStream`] per stream (stdout,
//! stderr) *before* it is cut into lines, and every occurrence of a secret
//! becomes `***` ([`hodei_mask::MASK`]).
//!
//! Which byte strings are "a secret" (the value, its lines, its base64,
//! URL, JSON, shell and Go forms) and how they are matched is owned by the
//! `hodei-mask` crate, shared with the host's fallback and the `literal`
//! masker plugin so the three agree; this module owns only the streaming.
//!
//! # Streaming
//! Output arrives in arbitrary pieces (PTY reads, pipe reads), and a secret
//! may be split across two of them. A [`MaskingStream`] therefore holds
//! back the shortest tail of what it has seen that could still be the
//! beginning of a pattern (a proper prefix of one), at most
//! `longest pattern - 1` bytes, and searches it again together with the
//! next piece ([`SecretMasker::mask_settled`]). Everything before that tail
//! is settled: no match can start there any more, nor can a longer one
//! replace a match found there. Output that cannot begin a secret is not
//! delayed at all; the held tail is flushed (masked) at end of output.
//!
//! With no secrets there is no masker and the stream hands the input back
//! borrowed: no copy, no search.

use std::borrow::Cow;
use std::sync::Arc;

pub use hodei_mask::{MaskerError, SecretMasker};

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

#[cfg(test)]
#[path = "mask_tests.rs"]
mod tests;
