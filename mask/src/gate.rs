//! [`Gate`]: a cheap, exact "none of these patterns occurs here".
//!
//! Aho-Corasick is fast on x86_64 because it skips ahead with a SIMD
//! prefilter (Teddy); a masker plugin runs as `wasm32`, where there is no
//! such prefilter for more than three distinct bytes, and the automaton
//! then walks every byte of every line (measured: about 9 ns a byte under
//! load, most of the host's masking cost). Nearly every line of output
//! holds no pattern at all, so a masker asks the gate first and runs the
//! automaton only on the few lines the gate lets through.
//!
//! The gate remembers every pattern's first three bytes as one bit of a
//! 65,536-bit table (a multiplicative hash of the three bytes) and tests
//! the three bytes at each position of the text, rolling: a few integer
//! operations per byte and no branch but the hit. A pattern occurring in
//! the text sets off its own bit, so `false` is exact; `true` may be a
//! false alarm (another three bytes with the same hash), which the
//! automaton then settles. With tens of patterns, a false alarm is about
//! one position in a few thousand.

/// How many leading bytes of each pattern the gate remembers.
pub const GRAM: usize = 3;

const BITS: usize = 1 << 16;

/// See the module docs.
#[derive(Clone)]
pub struct Gate {
    bits: Box<[u64; BITS / 64]>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set: u32 = self.bits.iter().map(|w| w.count_ones()).sum();
        f.debug_struct("Gate").field("bits_set", &set).finish()
    }
}

/// The table index of three bytes packed as `b0 << 16 | b1 << 8 | b2`.
#[inline(always)]
fn slot(gram: u32) -> usize {
    (gram.wrapping_mul(0x9E37_79B1) >> 16) as usize
}

impl Gate {
    /// A gate over `patterns`; `None` when one is shorter than [`GRAM`]
    /// bytes (the gate cannot vouch for it, so it must not be used).
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a [u8]>) -> Option<Self> {
        let mut bits = Box::new([0u64; BITS / 64]);
        for pattern in patterns {
            let [b0, b1, b2, ..] = *pattern else {
                return None;
            };
            let index = slot(u32::from(b0) << 16 | u32::from(b1) << 8 | u32::from(b2));
            bits[index / 64] |= 1 << (index % 64);
        }
        Some(Self { bits })
    }

    /// `false` when no pattern occurs in `text`; `true` when one may.
    pub fn may_match(&self, text: &[u8]) -> bool {
        let [b0, b1, rest @ ..] = text else {
            return false;
        };
        let mut gram = u32::from(*b0) << 8 | u32::from(*b1);
        for &byte in rest {
            gram = (gram << 8 | u32::from(byte)) & 0x00FF_FFFF;
            let index = slot(gram);
            if self.bits[index / 64] & (1 << (index % 64)) != 0 {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn every_occurrence_opens_the_gate_and_clean_text_mostly_does_not() {
        let patterns: [&[u8]; 4] = [b"ghp_", b"eyJ", b"s3cr3t-Value", b"-----BEGIN"];
        let gate = Gate::new(patterns).unwrap();
        for pattern in patterns {
            for at in 0..5 {
                let mut text = vec![b'.'; at];
                text.extend_from_slice(pattern);
                text.extend_from_slice(b" tail");
                assert!(
                    gate.may_match(&text),
                    "{:?}",
                    String::from_utf8_lossy(&text)
                );
                assert!(
                    gate.may_match(&text[at..at + 3]),
                    "the pattern's first bytes alone"
                );
            }
        }
        assert!(!gate.may_match(b""));
        assert!(!gate.may_match(b"gh"));
        assert!(!gate.may_match(b"plain build output, nothing to see"));
    }

    #[test]
    fn short_patterns_are_refused() {
        assert!(Gate::new([b"ab".as_slice()]).is_none());
        assert!(Gate::new([b"abc".as_slice(), b"x".as_slice()]).is_none());
        assert!(Gate::new(std::iter::empty()).is_some());
    }

    #[test]
    fn a_closed_gate_is_never_wrong_on_random_text() {
        // xorshift text over a small alphabet, so that patterns do occur.
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"abcde_";
        let patterns: Vec<Vec<u8>> = (0..20)
            .map(|i| {
                (0..3 + i % 4)
                    .map(|_| alphabet[next() as usize % alphabet.len()])
                    .collect()
            })
            .collect();
        let gate = Gate::new(patterns.iter().map(Vec::as_slice)).unwrap();
        let (mut open, mut closed) = (0, 0);
        for _ in 0..5_000 {
            let len = next() as usize % 12;
            let text: Vec<u8> = (0..len)
                .map(|_| alphabet[next() as usize % alphabet.len()])
                .collect();
            let occurs = patterns.iter().any(|p| contains(&text, p));
            if gate.may_match(&text) {
                open += 1;
            } else {
                closed += 1;
                assert!(!occurs, "closed on {:?}", String::from_utf8_lossy(&text));
            }
        }
        assert!(
            open > 0 && closed > 0,
            "both answers were exercised: {open} / {closed}"
        );
    }
}
