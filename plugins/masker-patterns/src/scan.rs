//! One line through the rules: the keyword prefilter finds where a token
//! could start, the rules validate there, the longest token at a position
//! wins, and every hit becomes `[MASKED:<rule-id>]`.
//!
//! A line with no keyword (nearly every line) costs one pass of the gate
//! (`hodei_mask::gate`) and is handed back as it is, without a copy.

use aho_corasick::AhoCorasick;
use hodei_mask::Gate;

use crate::pem::{Block, PrivateKeys};
use crate::rules::{self, PRIVATE_KEY, Rule};

/// What a keyword hit is worth trying.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The token rule at this index.
    Token(usize),
    /// A private key BEGIN marker.
    PrivateKey,
}

/// The compiled rules and their keyword prefilter; shared by every session.
#[derive(Debug)]
pub struct Scanner {
    /// Every keyword of every enabled rule (standard semantics, searched
    /// overlapping: one keyword may sit inside another's token).
    keywords: AhoCorasick,
    /// The quick "no keyword in this line" (see `hodei_mask::gate`).
    gate: Gate,
    /// Per keyword (by pattern id), what to try where it occurs.
    targets: Vec<Vec<Target>>,
    /// The enabled token rules.
    rules: Vec<Rule>,
    /// The private key markers, when that rule is enabled.
    keys: Option<PrivateKeys>,
}

/// A validated hit at one position.
struct Hit {
    /// Its length from the position.
    len: usize,
    /// The rule that found it.
    id: &'static str,
    /// Whether it opens a private key block that goes on past this line.
    opens_block: bool,
}

impl Scanner {
    /// A scanner over the rules whose ids `enabled` accepts.
    ///
    /// # Panics
    /// When the keyword automaton or gate cannot be built (a bug: the
    /// keywords are a few constants of three bytes or more).
    pub fn new(enabled: impl Fn(&str) -> bool) -> Self {
        let rules = rules::rules(&enabled);
        let keys = enabled(PRIVATE_KEY).then(PrivateKeys::new);
        let mut keywords: Vec<&str> = Vec::new();
        let mut targets: Vec<Vec<Target>> = Vec::new();
        let mut add = |keyword: &'static str, target: Target| match keywords
            .iter()
            .position(|&known| known == keyword)
        {
            Some(index) => targets[index].push(target),
            None => {
                keywords.push(keyword);
                targets.push(vec![target]);
            }
        };
        for (index, rule) in rules.iter().enumerate() {
            for &keyword in rule.keywords {
                add(keyword, Target::Token(index));
            }
        }
        if keys.is_some() {
            add("-----BEGIN", Target::PrivateKey);
        }
        let gate = Gate::new(keywords.iter().map(|k| k.as_bytes()))
            .expect("every keyword is at least the gate's three bytes");
        let keywords = AhoCorasick::new(&keywords).expect("the keywords build an automaton");
        Self {
            keywords,
            gate,
            targets,
            rules,
            keys,
        }
    }

    /// `line` masked, `None` when it stays as it is; `block` is its
    /// stream's private key state, read and updated.
    pub fn mask_slice(&self, line: &[u8], block: &mut Block) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut cursor = 0;
        if let (Block::Inside(_), Some(keys)) = (*block, &self.keys) {
            let Some(end) = keys.end_after(line, 0) else {
                block.count_line();
                return Some(marker(PRIVATE_KEY));
            };
            *block = Block::Outside;
            push_marker(&mut out, PRIVATE_KEY);
            cursor = end;
        }
        // Nearly every line has no keyword: the gate says so at a few
        // integer operations a byte, where the overlapping search below
        // walks every byte through the automaton (with no SIMD prefilter
        // in wasm32; it was most of this masker's time).
        if cursor == 0 && !self.gate.may_match(line) {
            return None;
        }
        let mut candidates: Vec<(usize, Target)> = self
            .keywords
            .find_overlapping_iter(line)
            .filter(|found| found.start() >= cursor)
            .flat_map(|found| {
                let at = found.start();
                self.targets[found.pattern().as_usize()]
                    .iter()
                    .map(move |&target| (at, target))
            })
            .collect();
        if candidates.is_empty() && cursor == 0 {
            return None;
        }
        candidates.sort_by_key(|&(at, _)| at);
        let mut rest = candidates.as_slice();
        while let Some(&(at, _)) = rest.first() {
            let same = rest.iter().take_while(|&&(other, _)| other == at).count();
            let (here, after) = rest.split_at(same);
            rest = after;
            if at < cursor {
                continue;
            }
            let Some(hit) = self.best_hit(line, at, here) else {
                continue;
            };
            out.extend_from_slice(&line[cursor..at]);
            push_marker(&mut out, hit.id);
            cursor = at + hit.len;
            if hit.opens_block {
                *block = Block::Inside(1);
            }
        }
        if out.is_empty() {
            return None;
        }
        out.extend_from_slice(&line[cursor..]);
        Some(out)
    }

    /// The longest validated hit among `targets` at `at` (the earlier
    /// target on a tie).
    fn best_hit(&self, line: &[u8], at: usize, targets: &[(usize, Target)]) -> Option<Hit> {
        let mut best: Option<Hit> = None;
        for &(_, target) in targets {
            let hit = match target {
                Target::Token(index) => {
                    let rule = &self.rules[index];
                    rule.token_at(line, at).map(|len| Hit {
                        len,
                        id: rule.id,
                        opens_block: false,
                    })
                }
                Target::PrivateKey => self.private_key_at(line, at),
            };
            if let Some(hit) = hit
                && best.as_ref().is_none_or(|top| hit.len > top.len)
            {
                best = Some(hit);
            }
        }
        best
    }

    /// A private key block beginning at `at`: through its END marker when
    /// that is on this line, else to the end of the line (and the block
    /// goes on).
    fn private_key_at(&self, line: &[u8], at: usize) -> Option<Hit> {
        let keys = self.keys.as_ref()?;
        if !keys.begins_at(line, at) {
            return None;
        }
        let end = keys.end_after(line, at);
        Some(Hit {
            len: end.unwrap_or(line.len()) - at,
            id: PRIVATE_KEY,
            opens_block: end.is_none(),
        })
    }
}

/// `[MASKED:<id>]`.
pub fn marker(id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(id.len() + 9);
    push_marker(&mut out, id);
    out
}

fn push_marker(out: &mut Vec<u8>, id: &str) {
    out.extend_from_slice(b"[MASKED:");
    out.extend_from_slice(id.as_bytes());
    out.push(b']');
}
