//! The token formats the `patterns` masker knows: one [`Rule`] per format,
//! each with a stable id, the keywords that must occur for it to be tried,
//! and the exact shape of a token, validated at a keyword's position.
//!
//! # Boundaries
//! A token is masked only when it stands on its own: the byte before it and
//! the byte after it are not token characters ([`Rule::continues`]). So
//! `xghp_…` inside a longer identifier, or a GitHub token followed by a
//! 37th character, is not a token and stays. Two escapes that glue a
//! letter or digit to the front of a token in real output are still a
//! boundary: a JSON/C escape (`\n`, `\t`, `\r`, `\"`) and a URL escape
//! (`%3D`, `%20`: `token%3Dghp_…`).

use regex::bytes::Regex;

/// The rule id of the private key block rule; handled line by line in
/// `pem.rs`, not here.
pub const PRIVATE_KEY: &str = "private-key";

/// One token format.
#[derive(Debug)]
pub struct Rule {
    /// Stable id; a hit becomes `[MASKED:<id>]`.
    pub id: &'static str,
    /// The prefixes that make the rule worth trying at their position.
    pub keywords: &'static [&'static str],
    /// The token's exact shape, anchored at the keyword (`^…`).
    pattern: Regex,
    /// Which bytes would continue the token (not a boundary).
    continues: fn(u8) -> bool,
    /// A further check on the whole token: `false` leaves it alone.
    accept: fn(&[u8]) -> bool,
}

impl Rule {
    /// The length of the token starting at `at` in `line`, if one does.
    pub fn token_at(&self, line: &[u8], at: usize) -> Option<usize> {
        if !self.boundary_before(line, at) {
            return None;
        }
        let found = self.pattern.find(&line[at..])?;
        let end = at + found.end();
        let bounded = line.get(end).is_none_or(|&next| !(self.continues)(next));
        (bounded && (self.accept)(found.as_bytes())).then_some(found.end())
    }

    /// Whether the token may start at `at`: the line starts there, the
    /// byte before does not continue a token, or it ends an escape.
    fn boundary_before(&self, line: &[u8], at: usize) -> bool {
        let before = &line[..at];
        match before.last() {
            None => true,
            Some(&byte) if !(self.continues)(byte) => true,
            Some(_) => ends_with_escape(before),
        }
    }
}

/// Whether `text` ends with `\n`-style or `%XX` escape.
fn ends_with_escape(text: &[u8]) -> bool {
    match text {
        [.., b'\\', b'n' | b'r' | b't' | b'"'] => true,
        [.., b'%', high, low] => high.is_ascii_hexdigit() && low.is_ascii_hexdigit(),
        _ => false,
    }
}

/// Letters, digits and `_`: what continues an identifier-like token.
fn word(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// Letters, digits, `_` and `-`: what continues a base64url or dashed token.
fn word_or_dash(byte: u8) -> bool {
    word(byte) || byte == b'-'
}

/// Every token passes.
fn any(_: &[u8]) -> bool {
    true
}

/// AWS documents its example keys ending in `EXAMPLE`
/// (`AKIAIOSFODNN7EXAMPLE`); they are in every tutorial and stay.
fn not_an_aws_example(token: &[u8]) -> bool {
    !token.ends_with(b"EXAMPLE")
}

/// A Slack token is long: the shortest real ones (bot tokens) have about
/// 50 characters.
fn slack_length(token: &[u8]) -> bool {
    token.len() >= 40
}

/// A rule's definition, compiled by [`rules`].
struct Definition {
    id: &'static str,
    keywords: &'static [&'static str],
    pattern: &'static str,
    continues: fn(u8) -> bool,
    accept: fn(&[u8]) -> bool,
}

/// `eyJ` followed by each base64url character: what a JWT starts with.
const JWT_KEYWORDS: [&str; 64] = [
    "eyJA", "eyJB", "eyJC", "eyJD", "eyJE", "eyJF", "eyJG", "eyJH", "eyJI", "eyJJ", "eyJK", "eyJL",
    "eyJM", "eyJN", "eyJO", "eyJP", "eyJQ", "eyJR", "eyJS", "eyJT", "eyJU", "eyJV", "eyJW", "eyJX",
    "eyJY", "eyJZ", "eyJa", "eyJb", "eyJc", "eyJd", "eyJe", "eyJf", "eyJg", "eyJh", "eyJi", "eyJj",
    "eyJk", "eyJl", "eyJm", "eyJn", "eyJo", "eyJp", "eyJq", "eyJr", "eyJs", "eyJt", "eyJu", "eyJv",
    "eyJw", "eyJx", "eyJy", "eyJz", "eyJ0", "eyJ1", "eyJ2", "eyJ3", "eyJ4", "eyJ5", "eyJ6", "eyJ7",
    "eyJ8", "eyJ9", "eyJ_", "eyJ-",
];

/// The token rules, in the order they are tried at one position (the
/// longest match wins; on a tie, the earlier rule).
const DEFINITIONS: &[Definition] = &[
    Definition {
        id: "github-token",
        keywords: &["ghp_", "gho_", "ghs_", "ghu_", "ghr_"],
        pattern: "^gh[pousr]_[A-Za-z0-9]{36}",
        continues: word,
        accept: any,
    },
    Definition {
        id: "github-pat",
        keywords: &["github_pat_"],
        pattern: "^github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}",
        continues: word,
        accept: any,
    },
    Definition {
        id: "aws-access-key-id",
        keywords: &["AKIA", "ASIA"],
        pattern: "^(?:AKIA|ASIA)[A-Z2-7]{16}",
        continues: word,
        accept: not_an_aws_example,
    },
    Definition {
        id: "slack-token",
        // The prefix with its type letter and dash, not `xox` alone: a
        // keyword of five bytes rather than three lets the gate test half
        // the positions (see `hodei_mask::gate`), and the pattern requires
        // them anyway.
        keywords: &["xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-"],
        pattern: "^xox[abprs]-[0-9]{1,13}(?:-[0-9A-Za-z]{1,64}){2,5}",
        continues: word_or_dash,
        accept: slack_length,
    },
    Definition {
        id: "jwt",
        // `eyJ` and each character the pattern allows after it: four
        // bytes rather than three, for the gate's stride (as above).
        keywords: &JWT_KEYWORDS,
        // Header `{"…` and payload `{"…` or `{ …`, signature at least 16
        // characters (an HMAC-SHA256 one has 43); `=` padding tolerated.
        pattern: "^eyJ[A-Za-z0-9_-]{10,}\\.ey[A-Za-z0-9_-]{8,}\\.[A-Za-z0-9_-]{16,}={0,2}",
        continues: word_or_dash,
        accept: any,
    },
    Definition {
        id: "hodei-api-token",
        keywords: &["hodei_"],
        // The API token format is still being decided (its own issue): at
        // least 32 base62 characters after the prefix covers it.
        pattern: "^hodei_[A-Za-z0-9]{32,}",
        continues: word,
        accept: any,
    },
    Definition {
        id: "hodei-worker-token",
        keywords: &["hwt_"],
        // host/src/providers/tokens.rs: `hwt_` and two simple UUIDv4s, 64
        // lower-case hex digits.
        pattern: "^hwt_[0-9a-f]{64}",
        continues: word,
        accept: any,
    },
];

/// The ids of every rule, the private key block included: what an operator
/// may name in the configuration.
pub fn ids() -> impl Iterator<Item = &'static str> {
    DEFINITIONS
        .iter()
        .map(|definition| definition.id)
        .chain([PRIVATE_KEY])
}

/// The token rules whose ids `enabled` accepts, compiled.
///
/// # Panics
/// When a pattern does not compile (a bug caught by every test).
pub fn rules(enabled: impl Fn(&str) -> bool) -> Vec<Rule> {
    DEFINITIONS
        .iter()
        .filter(|definition| enabled(definition.id))
        .map(|definition| Rule {
            id: definition.id,
            keywords: definition.keywords,
            pattern: Regex::new(definition.pattern).expect("the rule patterns compile"),
            continues: definition.continues,
            accept: definition.accept,
        })
        .collect()
}

#[cfg(test)]
mod keyword_tests {
    use super::*;

    fn rule(id: &str) -> Rule {
        rules(|r| r == id).remove(0)
    }

    /// A keyword longer than its shared prefix must still be exact: every
    /// byte the pattern accepts after the prefix begins some keyword.
    fn every_accepted_next_byte_is_a_keyword(id: &str, prefix: &str, tail: &str) {
        let rule = rule(id);
        let mut accepted = 0;
        for byte in 0..=u8::MAX {
            let mut candidate = prefix.as_bytes().to_vec();
            candidate.push(byte);
            candidate.extend_from_slice(tail.as_bytes());
            if rule.pattern.is_match(&candidate) {
                accepted += 1;
                let keyword = &candidate[..=prefix.len()];
                assert!(
                    rule.keywords
                        .iter()
                        .any(|k| k.as_bytes().starts_with(keyword)),
                    "{id}: {:?} is accepted but no keyword starts it",
                    String::from_utf8_lossy(&candidate)
                );
            }
        }
        assert!(accepted > 0, "{id}: the probe matched nothing");
    }

    #[test]
    fn the_jwt_and_slack_keywords_cover_their_patterns() {
        every_accepted_next_byte_is_a_keyword(
            "jwt",
            "eyJ",
            "aaaaaaaaaa.eyaaaaaaaa.aaaaaaaaaaaaaaaa",
        );
        every_accepted_next_byte_is_a_keyword("slack-token", "xox", "-1-a-b");
    }

    #[test]
    fn every_keyword_is_at_least_four_bytes_so_the_gate_skips_every_other_position() {
        for definition in DEFINITIONS {
            for keyword in definition.keywords {
                assert!(keyword.len() >= 4, "{}: {keyword:?}", definition.id);
            }
        }
    }
}
