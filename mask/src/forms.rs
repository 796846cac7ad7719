//! The forms a secret value is printed in: which forms of a value are
//! searched for, and each encoding, byte for byte as the tool that prints
//! it (see the crate docs for the list).

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

use crate::MIN_PATTERN;

/// Adds every form of `secret` to `patterns`.
pub(crate) fn derive_patterns(secret: &str, patterns: &mut BTreeSet<Vec<u8>>) {
    let mut forms = vec![secret.to_owned()];
    if secret.contains('\n') {
        forms.push(secret.replace("\r\n", "\n").replace('\n', "\r\n"));
        forms.extend(
            secret
                .lines()
                .filter(|line| !line.is_empty())
                .map(str::to_owned),
        );
    }
    // A form too short to mask is not masked in any encoding either.
    for form in forms.iter().filter(|form| form.len() >= MIN_PATTERN) {
        let bytes = form.as_bytes();
        patterns.insert(bytes.to_vec());
        for offset in 0..3 {
            patterns.insert(base64_core(&STANDARD_NO_PAD, bytes, offset));
            patterns.insert(base64_core(&URL_SAFE_NO_PAD, bytes, offset));
        }
        patterns.insert(url_encoded(bytes, b"0123456789ABCDEF"));
        patterns.insert(url_encoded(bytes, b"0123456789abcdef"));
        patterns.insert(json_escaped(form, false));
        patterns.insert(json_escaped(form, true));
        patterns.insert(shell_backslashed(form));
        patterns.insert(shell_single_quoted(form));
        patterns.insert(shell_ansi_c(form));
        patterns.insert(go_quoted(form, false));
        patterns.insert(go_quoted(form, true));
    }
}

/// The base64 characters of `bytes` that are the same wherever `bytes`
/// appears at `offset` (0..3) within a 3-byte group: each character encodes
/// 6 bits, and only those lying wholly inside `bytes` are kept.
pub(crate) fn base64_core(
    engine: &base64::engine::GeneralPurpose,
    bytes: &[u8],
    offset: usize,
) -> Vec<u8> {
    let mut shifted = vec![0; offset];
    shifted.extend_from_slice(bytes);
    let encoded = engine.encode(&shifted);
    let first = (8 * offset).div_ceil(6);
    let end = 8 * (offset + bytes.len()) / 6;
    encoded
        .as_bytes()
        .get(first..end)
        .unwrap_or_default()
        .to_vec()
}

/// Percent-encoding of every byte that is not unreserved (RFC 3986).
pub(crate) fn url_encoded(bytes: &[u8], hex: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 3);
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte);
        } else {
            out.extend_from_slice(&[
                b'%',
                hex[usize::from(byte >> 4)],
                hex[usize::from(byte & 0xf)],
            ]);
        }
    }
    out
}

/// `value` inside a JSON string, without the quotes: serde_json's escaping
/// (`\"`, `\\`, `\b\f\n\r\t`, other control characters as `\u00xx`), and
/// with `ascii` every non-ASCII character as `\uxxxx` UTF-16 units, as
/// Python's `json.dumps` prints it.
pub(crate) fn json_escaped(value: &str, ascii: bool) -> Vec<u8> {
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' => push_utf16_escapes(&mut out, c),
            c if ascii && !c.is_ascii() => push_utf16_escapes(&mut out, c),
            c => out.push(c),
        }
    }
    out.into_bytes()
}

/// `value` as bash's `printf %q` prints a printable value: each character
/// that is special to the shell behind a backslash (`#` only first, `~`
/// only first or after `=` or `:`).
pub(crate) fn shell_backslashed(value: &str) -> Vec<u8> {
    const SPECIAL: &str = "\t\n !\"$&'()*,;<>?[\\]^`{|}";
    let mut out = String::with_capacity(value.len() * 2);
    let mut previous = None;
    for c in value.chars() {
        let tilde = c == '~' && matches!(previous, None | Some('=' | ':'));
        if SPECIAL.contains(c) || (c == '#' && previous.is_none()) || tilde {
            out.push('\\');
        }
        out.push(c);
        previous = Some(c);
    }
    out.into_bytes()
}

/// The inside of `value` single-quoted, as bash's `${v@Q}` prints it:
/// `'` ends the quote, is escaped and reopens it (`'\''`).
pub(crate) fn shell_single_quoted(value: &str) -> Vec<u8> {
    value.replace('\'', "'\\''").into_bytes()
}

/// The inside of `$'…'`, the ANSI-C quoting bash's `printf %q` uses for a
/// value with non-printable characters (a multi-line value): C escapes,
/// `\E` for escape, `\'`, `\\`, other control characters in octal.
pub(crate) fn shell_ansi_c(value: &str) -> Vec<u8> {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            '\u{1b}' => out.push_str("\\E"),
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_control() => out.push_str(&format!("\\{:03o}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.into_bytes()
}

/// `value` as Go's `%q` prints it (`strconv.Quote`), without the quotes;
/// with `ascii`, as `%+q` does (`strconv.QuoteToASCII`). Go escapes what
/// Unicode calls non-printable; that is approximated here by control
/// characters, whitespace other than the space, and the common format
/// characters (soft hyphen, zero-width and direction marks, BOM).
pub(crate) fn go_quoted(value: &str, ascii: bool) -> Vec<u8> {
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if (c.is_ascii() || !ascii) && go_printable(c) => out.push(c),
            c if u32::from(c) < 0x10000 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.into_bytes()
}

/// Whether Go's `strconv.IsPrint` holds, approximately (see [`go_quoted`]).
fn go_printable(c: char) -> bool {
    c == ' '
        || !(c.is_control()
            || c.is_whitespace()
            || matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}')
            || matches!(c, '\u{2060}'..='\u{2064}' | '\u{feff}'))
}

/// Appends `c` as `\uxxxx` escapes of its UTF-16 units (lower-case hex).
fn push_utf16_escapes(out: &mut String, c: char) {
    for unit in c.encode_utf16(&mut [0; 2]) {
        out.push_str(&format!("\\u{unit:04x}"));
    }
}
