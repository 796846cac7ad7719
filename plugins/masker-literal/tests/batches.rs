//! The `literal` masker driven as the host drives it: planted secrets never
//! survive, however the lines are cut into batches, and the forms a job
//! prints them in are masked too.
#![allow(clippy::unwrap_used)] // test helpers are assertions

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hodei_masker_literal::Literal;
use hodei_plugin_sdk::masker::testing::{TestSession, mask_in_batches, stdout, system};
use hodei_plugin_sdk::masker::{Entry, Stream};
use proptest::prelude::*;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// One line: text, maybe a planted secret (by index), more text.
fn line() -> impl Strategy<Value = (String, Option<usize>, String)> {
    (
        "[a-z =:\"]{0,20}",
        prop::option::weighted(0.4, 0usize..3),
        "[a-z =:\"]{0,20}",
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn batches_do_not_matter_and_no_secret_survives(
        secrets in prop::collection::vec("[A-Za-z0-9_-]{6,24}", 3),
        lines in prop::collection::vec(line(), 0..40),
        sizes in prop::collection::vec(0usize..8, 0..10),
        on_stderr in any::<bool>(),
    ) {
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let stream = if on_stderr { Stream::Stderr } else { Stream::Stdout };
        let entries: Vec<Entry> = lines
            .iter()
            .map(|(before, planted, after)| {
                let secret = planted.map_or("", |i| secrets[i]);
                hodei_plugin_sdk::masker::testing::entry(stream, format!("{before}{secret}{after}"))
            })
            .collect();
        let whole = mask_in_batches(&Literal, &secrets, &entries, []);
        let batched = mask_in_batches(&Literal, &secrets, &entries, sizes);
        prop_assert_eq!(&batched, &whole);
        for (line, (_, planted, _)) in whole.iter().zip(&lines) {
            for secret in &secrets {
                prop_assert!(!contains(line, secret.as_bytes()), "{secret} in {:?}", String::from_utf8_lossy(line));
            }
            if planted.is_some() {
                prop_assert!(contains(line, b"***"));
            }
        }
    }
}

#[test]
fn a_secret_coloured_by_ansi_codes_is_masked() {
    let mut session = TestSession::open(&Literal, &["s3cr3t-Value-42"]);
    let masked = session.mask(&[stdout("\x1b[1;31ms3cr3t-Value-42\x1b[0m done")]);
    assert_eq!(masked, [b"\x1b[1;31m***\x1b[0m done".to_vec()]);
}

#[test]
fn encoded_forms_are_masked() {
    let secret = "p@ss w/rd:42&x\"y";
    let mut session = TestSession::open(&Literal, &[secret]);
    let json = format!("{{\"password\":{}}}", json_string(secret));
    let url = "https://h/?p=p%40ss%20w%2Frd%3A42%26x%22y&next=1";
    let base64 = format!(
        "Authorization: Basic {}",
        STANDARD.encode(format!("user:{secret}"))
    );
    let masked = session.mask_text(Stream::Stdout, &[&json, url, &base64]);
    assert_eq!(masked[0], "{\"password\":\"***\"}");
    assert_eq!(masked[1], "https://h/?p=***&next=1");
    assert!(
        masked[2].starts_with("Authorization: Basic dXNlcj"),
        "{}",
        masked[2]
    );
    assert!(masked[2].contains("***"), "{}", masked[2]);
    assert!(!masked[2].contains(&STANDARD.encode(secret)[..8]));
}

#[test]
fn a_three_line_secret_is_masked_whole_and_line_by_line() {
    let secret = "-----line-one-alpha\nline-two-bravo\nline-three-charlie";
    let mut session = TestSession::open(&Literal, &[secret]);
    // Printed as is: three lines of output, each masked on its own.
    let lines: Vec<&str> = secret.lines().collect();
    assert_eq!(
        session.mask_text(Stream::Stdout, &lines),
        ["***", "***", "***"]
    );
    // Whole, inside one entry: a failure reason the host keeps.
    let reason = format!("bad key {secret} given");
    assert_eq!(
        session.mask(&[system(&reason)]),
        [b"bad key *** given".to_vec()]
    );
    // Whole, escaped on one line: JSON, and bash's `printf %q`.
    let json = json_string(secret);
    let ansi_c = format!("$'{}'", secret.replace('\n', "\\n"));
    assert_eq!(
        session.mask_text(Stream::Stderr, &[&json, &ansi_c]),
        ["\"***\"", "$'***'"]
    );
}

/// `value` as a JSON string literal, by hand (escapes `"`, `\` and `\n`).
fn json_string(value: &str) -> String {
    let escaped = value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}
