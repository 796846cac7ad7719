//! Table-driven tests per rule (positives and near misses), the private key
//! block across lines, batches and streams, and the configuration. The
//! tokens are made up: right shape, no credentials.

use hodei_plugin_sdk::masker::testing::{TestSession, configure, stderr, stdout};

use super::*;

/// `n` base62 characters, varied (no run a rule could mistake).
fn base62(n: usize) -> String {
    const ALPHABET: &[u8] = b"aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5hJ7kL9nP1qR3tU5wX7zA2cD4eF6";
    ALPHABET
        .iter()
        .cycle()
        .take(n)
        .map(|&b| char::from(b))
        .collect()
}

/// `n` lower-case hex digits.
fn hex(n: usize) -> String {
    "0123456789abcdef3c5e7a9b1d2f4e6a"
        .chars()
        .cycle()
        .take(n)
        .collect()
}

/// One line through a fresh session of the default masker.
fn masked(line: &str) -> String {
    let masker: Patterns = configure("");
    let mut session = TestSession::open(&masker, &[]);
    session.mask_text(Stream::Stdout, &[line]).remove(0)
}

/// Checks that each token is masked whole as `rule` in a few contexts, and
/// that each near miss stays as it is.
fn check(rule: &str, tokens: &[String], near_misses: &[String]) {
    let mark = format!("[MASKED:{rule}]");
    for token in tokens {
        assert_eq!(masked(token), mark, "{token}");
        for (line, expected) in [
            (format!("token={token} ok"), format!("token={mark} ok")),
            (
                format!("{{\"t\":\"{token}\"}}"),
                format!("{{\"t\":\"{mark}\"}}"),
            ),
            (format!("a\\n{token}."), format!("a\\n{mark}.")),
            (format!("?t%3D{token}&x"), format!("?t%3D{mark}&x")),
        ] {
            assert_eq!(masked(&line), expected, "{line}");
        }
    }
    for near in near_misses {
        assert_eq!(masked(near), *near, "near miss {near}");
        let line = format!("x {near} y");
        assert_eq!(masked(&line), line, "near miss {line}");
    }
}

#[test]
fn github_tokens() {
    let tokens: Vec<String> = ["ghp_", "gho_", "ghs_", "ghu_", "ghr_"]
        .iter()
        .map(|prefix| format!("{prefix}{}", base62(36)))
        .collect();
    check(
        "github-token",
        &tokens,
        &[
            format!("ghp_{}", base62(35)),
            format!("ghp_{}", base62(37)),
            format!("ghx_{}", base62(36)),
            format!("xghp_{}", base62(36)),
            format!("ghp_{}-{}", base62(20), base62(15)),
            format!("GHP_{}", base62(36)),
        ],
    );
}

#[test]
fn github_fine_grained_pats() {
    check(
        "github-pat",
        &[format!("github_pat_{}_{}", base62(22), base62(59))],
        &[
            format!("github_pat_{}_{}", base62(21), base62(59)),
            format!("github_pat_{}{}", base62(22), base62(59)),
            format!("github_pat_{}_{}", base62(22), base62(58)),
        ],
    );
}

#[test]
fn aws_access_key_ids() {
    check(
        "aws-access-key-id",
        &["AKIAZ7Q2K3L4M5N6P7Q2".into(), "ASIAQ2W3E4R5T6Y7U2I3".into()],
        &[
            "AKIAIOSFODNN7EXAMPLE".into(),
            "ASIAXXXXXXXXXEXAMPLE".into(),
            "AKIAZ7Q2K3L4M5N6P7Q".into(),
            "AKIAZ7Q2K3L4M5N6P7Q2X".into(),
            "AKIAZ7Q2K3L4M5N6P7Q8".into(),
            "akiaz7q2k3l4m5n6p7q2".into(),
            "XAKIAZ7Q2K3L4M5N6P7Q2".into(),
        ],
    );
}

#[test]
fn slack_tokens() {
    check(
        "slack-token",
        &[
            format!("xoxb-123456789012-1234567890123-{}", base62(24)),
            format!("xoxp-1234567890-1234567890-1234567890-{}", hex(32)),
            format!("xoxa-2-123456789012-{}-{}", base62(13), base62(30)),
        ],
        &[
            "xoxb-not-a-token".into(),
            "xoxb-123-456-789".into(),
            format!("xoxz-123456789012-1234567890123-{}", base62(24)),
            format!("xoxb-{}-1234567890123-{}", base62(12), base62(24)),
        ],
    );
}

#[test]
fn jwts() {
    let header = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
    let payload = "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ";
    let signature = "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    check(
        "jwt",
        &[format!("{header}.{payload}.{signature}")],
        &[
            format!("{header}.{payload}"),
            format!("{header}.{payload}.short"),
            format!("{header}.notjson{}.{signature}", base62(10)),
            "eyJhbGciOiJIUzI1NiJ9.eyJ.sig".into(),
            format!("x{header}.{payload}.{signature}"),
        ],
    );
}

#[test]
fn hodei_tokens() {
    check(
        "hodei-api-token",
        &[
            format!("hodei_{}", base62(32)),
            format!("hodei_{}", base62(48)),
        ],
        &[
            format!("hodei_{}", base62(31)),
            "hodei_plugin_sdk".into(),
            format!("hodei_{}_x", base62(40)),
        ],
    );
    check(
        "hodei-worker-token",
        &[format!("hwt_{}", hex(64))],
        &[
            format!("hwt_{}", hex(63)),
            format!("hwt_{}", hex(65)),
            format!("hwt_{}", hex(64).to_uppercase()),
            format!("hwt_{}", base62(43)),
        ],
    );
}

#[test]
fn a_line_may_hold_several_tokens_and_clean_lines_pass_untouched() {
    let line = format!("a=ghp_{} b=AKIAZ7Q2K3L4M5N6P7Q2,c", base62(36));
    assert_eq!(
        masked(&line),
        "a=[MASKED:github-token] b=[MASKED:aws-access-key-id],c"
    );
    let clean = "2024-01-01 INFO eyJ is not a token, nor is ghp_ or AKIA";
    assert_eq!(masked(clean), clean);
    assert_eq!(masked(""), "");
}

const KEY: [&str; 5] = [
    "-----BEGIN OPENSSH PRIVATE KEY-----",
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
    "QyNTUxOQAAACBhbGljZS1zLWtleS1pcy1ub3QtYS1yZWFsLWtleS1hdC1hbGwAAAAJ",
    "c2VjcmV0LWtleQ==",
    "-----END OPENSSH PRIVATE KEY-----",
];

#[test]
fn a_private_key_block_is_masked_line_by_line_across_batches() {
    let masker: Patterns = configure("");
    let mark = "[MASKED:private-key]";
    for cut in 0..=KEY.len() {
        let mut session = TestSession::open(&masker, &[]);
        let mut lines = vec!["before".to_owned()];
        lines.extend(KEY.iter().map(|&l| l.to_owned()));
        lines.push("after".into());
        let (first, second) = lines.split_at(cut + 1);
        let first: Vec<&str> = first.iter().map(String::as_str).collect();
        let second: Vec<&str> = second.iter().map(String::as_str).collect();
        let mut out = session.mask_text(Stream::Stderr, &first);
        out.extend(session.mask_text(Stream::Stderr, &second));
        let mut expected = vec!["before"];
        expected.extend([mark; KEY.len()]);
        expected.push("after");
        assert_eq!(out, expected, "cut after {cut}");
    }
}

#[test]
fn text_around_the_markers_stays_and_one_line_keys_are_masked() {
    let begin = format!("key: {} # rsa", KEY[0].replace("OPENSSH", "RSA"));
    let end = format!("{} trailing", KEY[4]);
    let mut session = TestSession::open(&configure::<Patterns>(""), &[]);
    assert_eq!(
        session.mask_text(Stream::Stdout, &[&begin, KEY[1], &end]),
        [
            "key: [MASKED:private-key]",
            "[MASKED:private-key]",
            "[MASKED:private-key] trailing"
        ]
    );
    let json = format!("{{\"k\":\"{}\"}}", KEY.join("\\n"));
    assert_eq!(masked(&json), "{\"k\":\"[MASKED:private-key]\"}");
    let pgp = "-----BEGIN PGP PRIVATE KEY BLOCK-----";
    assert_eq!(masked(pgp), "[MASKED:private-key]");
}

#[test]
fn public_keys_and_certificates_stay() {
    for line in [
        "-----BEGIN PUBLIC KEY-----",
        "-----BEGIN CERTIFICATE-----",
        "-----BEGIN RSA PUBLIC KEY-----",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----",
    ] {
        let mut session = TestSession::open(&configure::<Patterns>(""), &[]);
        let out = session.mask_text(Stream::Stdout, &[line, "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A"]);
        assert_eq!(out, [line, "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A"]);
    }
}

#[test]
fn a_block_on_one_stream_is_not_ended_by_another() {
    let mut session = TestSession::open(&configure::<Patterns>(""), &[]);
    let out = session.mask(&[
        stderr(KEY[0]),
        stdout(KEY[4]),
        stdout("visible"),
        stderr(KEY[1]),
        stderr(KEY[4]),
        stderr("visible too"),
    ]);
    let out: Vec<String> = out
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    assert_eq!(
        out,
        [
            "[MASKED:private-key]",
            KEY[4],
            "visible",
            "[MASKED:private-key]",
            "[MASKED:private-key]",
            "visible too"
        ]
    );
}

#[test]
fn a_block_that_never_ends_is_given_up() {
    let mut session = TestSession::open(&configure::<Patterns>(""), &[]);
    let cap = usize::try_from(MAX_BLOCK_LINES).expect("small");
    let mut lines = vec![KEY[0]];
    lines.extend(std::iter::repeat_n("AAAA", cap + 2));
    let out = session.mask_text(Stream::Stdout, &lines);
    assert!(out[..cap].iter().all(|l| l == "[MASKED:private-key]"));
    assert_eq!(out[cap..], ["AAAA", "AAAA", "AAAA"]);
}

#[test]
fn configuration_disables_rules_by_id() {
    let token = format!("ghp_{}", base62(36));
    let masker: Patterns = configure("disable=jwt, github-token");
    let mut session = TestSession::open(&masker, &[]);
    assert_eq!(
        session.mask_text(Stream::Stdout, &[&token]),
        [token.as_str()]
    );
    let no_keys: Patterns = configure("disable=private-key");
    let mut session = TestSession::open(&no_keys, &[]);
    assert_eq!(session.mask_text(Stream::Stdout, &[KEY[0]]), [KEY[0]]);
    let err = Patterns::configure("disable=github").expect_err("unknown rule");
    assert!(err.contains("\"github-token\""), "{err}");
    assert!(Patterns::configure("strict").is_err());
    assert_eq!(rule_ids().len(), 8);
}
