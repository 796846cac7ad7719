//! Private key blocks: PEM (`-----BEGIN RSA PRIVATE KEY-----`, `OPENSSH`,
//! `EC`, `ENCRYPTED`, PKCS#8's plain `PRIVATE KEY`) and PGP's `PRIVATE KEY
//! BLOCK`. A key spans lines, and the host may cut its lines into
//! different batches, so the state of "inside a block" is kept per stream
//! in the session ([`Block`]) and carried across lines and calls.
//!
//! From the BEGIN line through the END line every line is replaced (what
//! precedes BEGIN on its line, and what follows END on its line, stays). A
//! block that never ends is given up after [`MAX_BLOCK_LINES`] lines, so a
//! stray BEGIN cannot hide the rest of a job's output. Public keys and
//! certificates (`-----BEGIN PUBLIC KEY-----`, `CERTIFICATE`) are not
//! secrets and stay.

use regex::bytes::Regex;

/// The most lines one block masks; the next line is read as ordinary
/// output again. A 4096-bit RSA key in PEM is about 50 lines.
pub const MAX_BLOCK_LINES: u32 = 200;

/// Where a stream is with respect to private key blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Block {
    /// Ordinary output.
    #[default]
    Outside,
    /// Inside a block, this many lines masked so far (the BEGIN line
    /// included).
    Inside(u32),
}

impl Block {
    /// One more line of the block was masked.
    pub fn count_line(&mut self) {
        if let Self::Inside(lines) = self {
            *lines += 1;
            if *lines >= MAX_BLOCK_LINES {
                *self = Self::Outside;
            }
        }
    }
}

/// The BEGIN and END lines of a private key block.
#[derive(Debug)]
pub struct PrivateKeys {
    /// A BEGIN marker, anchored at its keyword.
    begin: Regex,
    /// An END marker, anywhere.
    end: Regex,
}

/// What a private key marker is: `-----BEGIN ` or `-----END `, then words
/// ending in `PRIVATE KEY` (PGP: `PRIVATE KEY BLOCK`), then `-----`.
const MARKER: &str = "[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----";

impl PrivateKeys {
    /// The compiled markers.
    ///
    /// # Panics
    /// When a pattern does not compile (a bug caught by every test).
    pub fn new() -> Self {
        let compile = |pattern: String| Regex::new(&pattern).expect("the PEM patterns compile");
        Self {
            begin: compile(format!("^-----BEGIN {MARKER}")),
            end: compile(format!("-----END {MARKER}")),
        }
    }

    /// Whether a private key BEGIN marker starts at `at`.
    pub fn begins_at(&self, line: &[u8], at: usize) -> bool {
        self.begin.is_match(&line[at..])
    }

    /// Where the first END marker at or after `from` ends, if there is one.
    pub fn end_after(&self, line: &[u8], from: usize) -> Option<usize> {
        self.end.find_at(line, from).map(|found| found.end())
    }
}

impl Default for PrivateKeys {
    fn default() -> Self {
        Self::new()
    }
}
