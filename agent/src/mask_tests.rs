//! Unit tests of [`super::MaskingStream`]: streaming masks exactly what
//! masking the whole output at once masks, wherever the pieces are cut.
//! The patterns themselves are tested in the `hodei-mask` crate.

use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hodei_mask::MASK;

use super::*;

const SECRET: &str = "s3cr3t-Value-42";

fn masker(secrets: &[&str]) -> Arc<SecretMasker> {
    Arc::new(
        SecretMasker::new(secrets)
            .expect("build")
            .expect("some patterns"),
    )
}

/// Streams `pieces` through one masking stream, then finishes it.
fn streamed(masker: &Arc<SecretMasker>, pieces: &[&[u8]]) -> Vec<u8> {
    let mut stream = MaskingStream::new(Some(Arc::clone(masker)));
    let mut out = Vec::new();
    for piece in pieces {
        out.extend_from_slice(&stream.push(piece));
    }
    out.extend(stream.finish());
    out
}

#[test]
fn a_whole_secret_is_masked() {
    let masker = masker(&[SECRET]);
    let text = format!("token={SECRET}; again {SECRET}\n");
    assert_eq!(
        streamed(&masker, &[text.as_bytes()]),
        b"token=***; again ***\n"
    );
}

#[test]
fn a_secret_split_across_two_pushes_is_masked_at_every_split_point() {
    let masker = masker(&[SECRET]);
    let text = format!("log: {SECRET} done\n");
    let bytes = text.as_bytes();
    for split in 0..=bytes.len() {
        let out = streamed(&masker, &[&bytes[..split], &bytes[split..]]);
        assert_eq!(out, b"log: *** done\n", "split at {split}");
    }
    let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(streamed(&masker, &one_by_one), b"log: *** done\n");
}

#[test]
fn output_that_cannot_begin_a_secret_is_not_held_back() {
    let masker = masker(&[SECRET]);
    let mut stream = MaskingStream::new(Some(masker));
    assert_eq!(&*stream.push(b"step 1 done\n"), b"step 1 done\n");
    assert_eq!(&*stream.push(b"almost s3cr3t-Va"), b"almost ");
    assert_eq!(&*stream.push(b"lue-42!"), b"***!");
    assert_eq!(&*stream.push(b"then s3cr3t"), b"then ");
    assert_eq!(stream.finish(), b"s3cr3t");
}

#[test]
fn streamed_base64_is_masked_like_the_whole() {
    let masker = masker(&[SECRET]);
    for prefix_len in 0..6 {
        let mut plain = b"0123456"[..prefix_len].to_vec();
        plain.extend_from_slice(SECRET.as_bytes());
        let encoded = STANDARD.encode(&plain);
        let whole = masker.mask(encoded.as_bytes());
        assert!(whole.windows(MASK.len()).any(|w| w == MASK));
        let pieces: Vec<&[u8]> = encoded.as_bytes().chunks(5).collect();
        assert_eq!(streamed(&masker, &pieces), whole, "offset {prefix_len}");
    }
}

#[test]
fn a_multi_line_secret_is_masked_across_pieces() {
    let secret = "line-one-alpha\nline-two-bravo\nline-three-charlie";
    let masker = masker(&[secret]);
    let on_a_terminal = secret.replace('\n', "\r\n");
    let split: Vec<&[u8]> = on_a_terminal.as_bytes().chunks(7).collect();
    assert_eq!(streamed(&masker, &split), b"***");
}

#[test]
fn text_sharing_only_a_prefix_is_left_alone() {
    let masker = masker(&[SECRET]);
    let text = b"s3cr3t-Val and s3cr3t-Value-4 and s3cr3t-Value-4!\n";
    let pieces: Vec<&[u8]> = text.chunks(4).collect();
    assert_eq!(streamed(&masker, &pieces), text);
}

#[test]
fn the_longest_match_wins_at_every_split_point() {
    let masker = masker(&["abcdef-123", "abcdef-123456"]);
    let text = b"x abcdef-123456 y";
    for split in 0..=text.len() {
        let out = streamed(&masker, &[&text[..split], &text[split..]]);
        assert_eq!(out, b"x *** y", "split at {split}");
    }
}

#[test]
fn no_secrets_pass_bytes_through_untouched() {
    let mut stream = MaskingStream::new(None);
    let raw = b"\x1b[31mred\x1b[0m \xff\xfe s3cr3t\n";
    let out = stream.push(raw);
    assert!(matches!(out, Cow::Borrowed(_)));
    assert_eq!(&*out, raw);
    assert!(stream.finish().is_empty());
}

/// `cargo test -p hodei-agent --release -- --ignored --nocapture
/// masking_throughput`: masking 100 MB in 8 KiB pieces with 3 secrets.
#[test]
#[ignore = "a measurement, not a check"]
fn masking_throughput() {
    let masker = masker(&[SECRET, "another-secret-value", "line-one\nline-two"]);
    let line = b"2024-01-01T00:00:00Z INFO building target/debug/deps with 8 jobs\n";
    let data: Vec<u8> = line.iter().copied().cycle().take(100 << 20).collect();
    let begun = Instant::now();
    let mut stream = MaskingStream::new(Some(masker));
    let mut total = 0;
    for piece in data.chunks(8 * 1024) {
        total += stream.push(piece).len();
    }
    total += stream.finish().len();
    let secs = begun.elapsed().as_secs_f64();
    assert_eq!(total, data.len());
    println!("masked 100 MB in {secs:.3} s: {:.0} MB/s", 100.0 / secs);
}
