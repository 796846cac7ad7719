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
//!
//! When every pattern is longer than three bytes the gate need not look
//! at every position. With the shortest pattern `L` bytes long and a
//! stride `s = L - 2` (at most [`MAX_STRIDE`]), it remembers the three
//! bytes at each of the first `s` offsets of every pattern and tests only
//! the positions `0, s, 2s, …`: an occurrence at `p` spans the `s`
//! consecutive positions `p .. p + s`, exactly one of which is a multiple
//! of `s`, and the three bytes there are a remembered gram of it that lies
//! inside the text. So `false` stays exact, for `s` times fewer tests. The
//! literal masker's patterns are at least six bytes long (a stride of
//! four or more); the pattern rules' keywords include three-byte ones
//! (`eyJ`), so their gate tests every position.

/// How many leading bytes of each pattern the gate remembers.
pub const GRAM: usize = 3;

const BITS: usize = 1 << 16;

/// The largest stride: beyond it the grams remembered per pattern would
/// fill the table (and raise false alarms) faster than the stride saves.
pub const MAX_STRIDE: usize = 8;

/// See the module docs.
#[derive(Clone)]
pub struct Gate {
    bits: Box<[u64; BITS / 64]>,
    /// Positions tested: every `stride`-th (see the module docs).
    stride: usize,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set: u32 = self.bits.iter().map(|w| w.count_ones()).sum();
        f.debug_struct("Gate")
            .field("bits_set", &set)
            .field("stride", &self.stride)
            .finish()
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
        let patterns: Vec<&[u8]> = patterns.into_iter().collect();
        let shortest = patterns.iter().map(|p| p.len()).min().unwrap_or(GRAM);
        if shortest < GRAM {
            return None;
        }
        let stride = (shortest - GRAM + 1).min(MAX_STRIDE);
        let mut bits = Box::new([0u64; BITS / 64]);
        for pattern in patterns {
            for gram in pattern.windows(GRAM).take(stride) {
                let index = slot(pack(gram));
                bits[index / 64] |= 1 << (index % 64);
            }
        }
        Some(Self { bits, stride })
    }

    /// How many positions apart the gate tests the text.
    pub fn stride(&self) -> usize {
        self.stride
    }

    #[inline(always)]
    fn hit(&self, gram: u32) -> bool {
        let index = slot(gram);
        self.bits[index / 64] & (1 << (index % 64)) != 0
    }

    /// `false` when no pattern occurs in `text`; `true` when one may.
    pub fn may_match(&self, text: &[u8]) -> bool {
        if self.stride > 1 {
            let mut at = 0;
            while at + GRAM <= text.len() {
                if self.hit(pack(&text[at..])) {
                    return true;
                }
                at += self.stride;
            }
            return false;
        }
        let [b0, b1, rest @ ..] = text else {
            return false;
        };
        let mut gram = u32::from(*b0) << 8 | u32::from(*b1);
        for &byte in rest {
            gram = (gram << 8 | u32::from(byte)) & 0x00FF_FFFF;
            if self.hit(gram) {
                return true;
            }
        }
        false
    }
}

/// The first three bytes of `bytes` as `b0 << 16 | b1 << 8 | b2`.
#[inline(always)]
fn pack(bytes: &[u8]) -> u32 {
    u32::from(bytes[0]) << 16 | u32::from(bytes[1]) << 8 | u32::from(bytes[2])
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

    /// Random texts over a small alphabet, half with a pattern planted, against
    /// 20 random patterns of `shortest` to `shortest + 3` bytes.
    fn closed_gate_is_never_wrong(shortest: usize, expected_stride: usize) {
        // xorshift, seeded per length so each case has its own patterns.
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64 ^ shortest as u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"abcd_";
        let patterns: Vec<Vec<u8>> = (0..20)
            .map(|i| {
                (0..shortest + i % 4)
                    .map(|_| alphabet[next() as usize % alphabet.len()])
                    .collect()
            })
            .collect();
        let gate = Gate::new(patterns.iter().map(Vec::as_slice)).unwrap();
        assert_eq!(gate.stride(), expected_stride);
        let (mut open, mut closed, mut occurring) = (0, 0, 0);
        for _ in 0..20_000 {
            let len = next() as usize % (3 * shortest + 4);
            let mut text: Vec<u8> = (0..len)
                .map(|_| alphabet[next() as usize % alphabet.len()])
                .collect();
            // Half the texts get a pattern planted at a random offset.
            if next() % 2 == 0 {
                let at = next() as usize % (len + 1);
                let planted = &patterns[next() as usize % patterns.len()];
                text.splice(at..at, planted.iter().copied());
            }
            let occurs = patterns.iter().any(|p| contains(&text, p));
            occurring += usize::from(occurs);
            if gate.may_match(&text) {
                open += 1;
            } else {
                closed += 1;
                assert!(!occurs, "closed on {:?}", String::from_utf8_lossy(&text));
            }
        }
        assert!(
            open > 0 && closed > 0 && occurring > 100,
            "every answer was exercised: {open} open, {closed} closed, {occurring} with a pattern"
        );
    }

    #[test]
    fn a_closed_gate_is_never_wrong_on_random_text() {
        closed_gate_is_never_wrong(3, 1);
    }

    #[test]
    fn a_strided_gate_is_never_wrong_whatever_the_stride() {
        for (shortest, stride) in [(4, 2), (5, 3), (6, 4), (9, 7), (10, 8), (14, 8)] {
            closed_gate_is_never_wrong(shortest, stride);
        }
    }
}
