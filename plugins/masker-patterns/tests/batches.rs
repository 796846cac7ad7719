//! The `patterns` masker driven as the host drives it: the output does not
//! depend on how lines are cut into batches (private key state included),
//! and no planted token survives.
#![allow(clippy::unwrap_used)] // test helpers are assertions

use hodei_masker_patterns::Patterns;
use hodei_plugin_sdk::masker::testing::{configure, entry, mask_in_batches};
use hodei_plugin_sdk::masker::{Entry, Stream};
use proptest::prelude::*;

/// Tokens of every rule but the private key (planted as lines below).
const TOKENS: &[&str] = &[
    "ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5",
    "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",
    "AKIAZ7Q2K3L4M5N6P7Q2",
    "xoxb-123456789012-1234567890123-aB3dE5gH7jK9mN1pQ3sT5vW7",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "hodei_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3",
    "hwt_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
];

const KEY: &[&str] = &[
    "-----BEGIN EC PRIVATE KEY-----",
    "MHcCAQEEIBYr8g0zNotARealKeyAtAllJustBase64ShapedTextoAoGCCqGSM49",
    "-----END EC PRIVATE KEY-----",
];

/// One generated piece of output.
#[derive(Debug, Clone)]
enum Piece {
    /// Text with maybe a token (by index) between spaces.
    Text(String, Option<usize>, String),
    /// A whole private key, one line per entry.
    Key,
}

fn piece() -> impl Strategy<Value = (bool, Piece)> {
    let text = (
        "[a-z =:\"]{0,16}",
        prop::option::weighted(0.5, 0..TOKENS.len()),
        "[a-z =:\"]{0,16}",
    )
        .prop_map(|(a, t, b)| Piece::Text(a, t, b));
    (any::<bool>(), prop_oneof![6 => text, 1 => Just(Piece::Key)])
}

fn entries(pieces: &[(bool, Piece)]) -> Vec<Entry> {
    let mut out = Vec::new();
    for (on_stderr, piece) in pieces {
        let stream = if *on_stderr {
            Stream::Stderr
        } else {
            Stream::Stdout
        };
        match piece {
            Piece::Text(a, token, b) => {
                let token = token.map_or("", |i| TOKENS[i]);
                out.push(entry(stream, format!("{a} {token} {b}")));
            }
            Piece::Key => out.extend(KEY.iter().map(|line| entry(stream, line))),
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn batches_do_not_matter_and_no_token_survives(
        pieces in prop::collection::vec(piece(), 0..40),
        sizes in prop::collection::vec(0usize..8, 0..10),
    ) {
        let masker: Patterns = configure("");
        let entries = entries(&pieces);
        let whole = mask_in_batches(&masker, &[], &entries, []);
        let batched = mask_in_batches(&masker, &[], &entries, sizes);
        prop_assert_eq!(&batched, &whole);
        for line in &whole {
            for token in TOKENS.iter().chain(KEY) {
                prop_assert!(!contains(line, token.as_bytes()), "{token} in {:?}", String::from_utf8_lossy(line));
            }
        }
    }
}
