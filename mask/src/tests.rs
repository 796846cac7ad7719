//! Unit tests of [`super::SecretMasker`] and the forms it derives. The
//! expected encodings were printed by the tools themselves (bash 5
//! `printf %q` / `${v@Q}`, Python's `json.dumps`, Go's `%q`).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

use super::forms::{base64_core, go_quoted, shell_ansi_c, shell_backslashed};
use super::*;

const SECRET: &str = "s3cr3t-Value-42";

fn masker(secrets: &[&str]) -> SecretMasker {
    SecretMasker::new(secrets)
        .expect("build")
        .expect("some patterns")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[test]
fn a_whole_secret_is_masked() {
    let masker = masker(&[SECRET]);
    let text = format!("token={SECRET}; again {SECRET}\n");
    assert_eq!(masker.mask(text.as_bytes()), b"token=***; again ***\n");
    assert_eq!(
        masker.mask_owned(text.into_bytes()),
        b"token=***; again ***\n"
    );
    assert_eq!(masker.mask_owned(b"clean".to_vec()), b"clean");
    assert!(!masker.is_match(b"s3cr3t-Value-4"));
}

#[test]
fn base64_is_masked_at_all_three_offsets_in_both_alphabets() {
    // `?>` and `~~` put `/` and `+` (`_` and `-` in base64url) in the text.
    let secret = "s3cr3t??>>~~~-42";
    let masker = masker(&[secret]);
    for (engine, core_engine) in [(&STANDARD, &STANDARD_NO_PAD), (&URL_SAFE, &URL_SAFE_NO_PAD)] {
        for prefix_len in 0..6 {
            for suffix_len in 0..3 {
                let mut plain = b"0123456"[..prefix_len].to_vec();
                plain.extend_from_slice(secret.as_bytes());
                plain.extend_from_slice(&b"xyz"[..suffix_len]);
                let encoded = engine.encode(&plain);
                let out = masker.mask(encoded.as_bytes());
                let core = base64_core(core_engine, secret.as_bytes(), prefix_len % 3);
                assert!(
                    !contains(&out, &core),
                    "offset {prefix_len}: {}",
                    String::from_utf8_lossy(&out)
                );
                assert!(contains(&out, MASK), "offset {prefix_len}");
            }
        }
    }
}

#[test]
fn the_base64_core_is_what_does_not_depend_on_neighbours() {
    // 15 bytes at offset 0 are 20 whole characters.
    assert_eq!(
        base64_core(&STANDARD_NO_PAD, SECRET.as_bytes(), 0),
        STANDARD_NO_PAD.encode(SECRET).into_bytes()
    );
    for offset in 0..3 {
        let core = base64_core(&STANDARD_NO_PAD, SECRET.as_bytes(), offset);
        for fill in [0u8, 0xff] {
            let mut plain = vec![fill; offset];
            plain.extend_from_slice(SECRET.as_bytes());
            plain.extend_from_slice(&[fill; 3]);
            assert!(contains(STANDARD.encode(&plain).as_bytes(), &core));
        }
    }
}

#[test]
fn url_encoding_is_masked() {
    let secret = "p@ss w/rd:42&x";
    let masker = masker(&[secret]);
    let upper = "p%40ss%20w%2Frd%3A42%26x";
    let lower = "p%40ss%20w%2frd%3a42%26x";
    assert_eq!(masker.mask(format!("?q={upper}").as_bytes()), b"?q=***");
    assert_eq!(masker.mask(format!("?q={lower}").as_bytes()), b"?q=***");
}

#[test]
fn json_escaping_is_masked() {
    let secret = "pa\"ss\\wo\nrd!\u{1}\u{8}";
    let masker = masker(&[secret]);
    let json = serde_json::json!({ "k": secret }).to_string();
    assert_eq!(masker.mask(json.as_bytes()), br#"{"k":"***"}"#);

    let accented = "clé-secrète-9";
    let masker = self::masker(&[accented]);
    let python = br#"{"k": "cl\u00e9-secr\u00e8te-9"}"#;
    assert_eq!(masker.mask(python), br#"{"k": "***"}"#);
    let serde = serde_json::json!({ "k": accented }).to_string();
    assert_eq!(masker.mask(serde.as_bytes()), br#"{"k":"***"}"#);
}

#[test]
fn shell_quoting_is_masked() {
    // bash: v='p@ss w/rd!$x#~a=~b'; printf '%q' "$v"
    let secret = "p@ss w/rd!$x#~a=~b";
    assert_eq!(
        shell_backslashed(secret),
        br"p@ss\ w/rd\!\$x#~a=\~b".to_vec()
    );
    assert_eq!(shell_backslashed("#x~y:~z"), br"\#x~y:\~z".to_vec());
    let masker = self::masker(&[secret]);
    assert_eq!(masker.mask(br"echo p@ss\ w/rd\!\$x#~a=\~b"), b"echo ***");

    // bash: v="it's-a-secret"; echo "${v@Q}"; printf '%q' "$v"
    let quoted = self::masker(&["it's-a-secret"]);
    assert_eq!(quoted.mask(br"v='it'\''s-a-secret'"), b"v='***'");
    assert_eq!(quoted.mask(br"v=it\'s-a-secret"), b"v=***");

    // bash: printf '%q' $'a\tb\x01c\x1bd\ne\''
    assert_eq!(
        shell_ansi_c("a\tb\u{1}c\u{1b}d\ne'"),
        br"a\tb\001c\Ed\ne\'".to_vec()
    );
    let multi = self::masker(&["tab\there-and\u{1b}esc"]);
    assert_eq!(multi.mask(br"$'tab\there-and\Eesc'"), b"$'***'");
}

#[test]
fn go_quoting_is_masked() {
    let secret = "pa\"ss\\wo\nrd\t\u{1}\u{7f}é\u{a0}😀";
    assert_eq!(
        go_quoted(secret, false),
        "pa\\\"ss\\\\wo\\nrd\\t\\x01\\x7fé\\u00a0😀".as_bytes()
    );
    assert_eq!(
        go_quoted(secret, true),
        br#"pa\"ss\\wo\nrd\t\x01\x7f\u00e9\u00a0\U0001f600"#.to_vec()
    );
    let masker = masker(&[secret]);
    let printed = br#"msg="pa\"ss\\wo\nrd\t\x01\x7f\u00e9\u00a0\U0001f600""#;
    assert_eq!(masker.mask(printed), br#"msg="***""#);
}

#[test]
fn a_multi_line_secret_is_masked_whole_and_line_by_line() {
    let secret = "line-one-alpha\nline-two-bravo\nline-three-charlie";
    let masker = masker(&[secret]);
    assert_eq!(masker.mask(format!("{secret}\n").as_bytes()), b"***\n");
    let on_a_terminal = secret.replace('\n', "\r\n");
    assert_eq!(masker.mask(on_a_terminal.as_bytes()), b"***");
    assert_eq!(
        masker.mask(b"2: line-two-bravo\n3: line-three-charlie\n"),
        b"2: ***\n3: ***\n"
    );
    let json = serde_json::Value::from(secret).to_string();
    assert_eq!(masker.mask(json.as_bytes()), b"\"***\"");
}

#[test]
fn lines_shorter_than_the_minimum_are_not_patterns() {
    let masker = masker(&["first-line\nab\nthird-line"]);
    assert_eq!(masker.mask(b"grab a tab"), b"grab a tab");
    assert_eq!(masker.mask(b"first-line"), b"***");
}

#[test]
fn text_sharing_only_a_prefix_is_left_alone() {
    let masker = masker(&[SECRET]);
    let text = b"s3cr3t-Val and s3cr3t-Value-4 and s3cr3t-Value-4!\n";
    assert_eq!(masker.mask(text), text);
}

#[test]
fn the_longest_match_wins() {
    let masker = masker(&["abcdef-123", "abcdef-123456"]);
    assert_eq!(masker.mask(b"x abcdef-123456 y"), b"x *** y");
}

#[test]
fn settled_output_stops_where_a_pattern_could_begin() {
    let masker = masker(&[SECRET]);
    let mut out = Vec::new();
    let settled = masker.mask_settled(b"ok s3cr3t-Value-42 then s3cr3t", &mut out);
    assert_eq!(out, b"ok *** then ");
    assert_eq!(settled, b"ok s3cr3t-Value-42 then ".len());
}

#[test]
fn nothing_to_mask_is_none() {
    assert!(
        SecretMasker::new(Vec::<String>::new())
            .expect("build")
            .is_none()
    );
    assert!(SecretMasker::new(["short"]).expect("build").is_none());
    assert_eq!(MIN_SECRET_LEN, MIN_PATTERN);
}
