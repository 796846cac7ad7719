//! `literal`: masks a job's declared secrets, and the forms a job prints
//! them in, as `***`.
//!
//! A thin [`Masker`] over [`hodei_mask::SecretMasker`], the same patterns
//! and matching as the agent (which masks before output leaves the worker)
//! and the host's own fallback (which masks when a masker plugin fails):
//! the value, base64 / base64url, URL, JSON, shell and Go quoted forms (see
//! `hodei-mask`). Running it in the host's chain catches what the agent
//! could not: output from an older agent, text the host keeps from a job
//! that is not output (a failure reason), secrets added to a job after its
//! agent started.
//!
//! The host sends lines, so each line is masked on its own. A multi-line
//! secret is therefore masked line by line: each of its lines (6 bytes or
//! longer) is a pattern of its own, and so are the whole value and its
//! `\r\n` form, for output that carries the value inside one line (JSON,
//! `printf %q`). Lines of a secret shorter than 6 bytes are not masked.
//!
//! Configuration: `""` only. No state spans lines, so batches do not
//! matter.

use hodei_mask::SecretMasker;
use hodei_plugin_sdk::masker::{MaskSession, Masker, Stream};

/// The `literal` masker; it has no settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Literal;

/// One job attempt: the patterns of its secrets, or `None` when it has
/// nothing to mask.
#[derive(Debug)]
pub struct LiteralSession(Option<SecretMasker>);

impl Masker for Literal {
    const NAME: &'static str = "literal";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "the job's declared secrets, also base64, URL, JSON, \
                                       shell and Go quoted, as ***";
    type Session = LiteralSession;

    fn configure(config: &str) -> Result<Self, String> {
        match config.trim() {
            "" => Ok(Self),
            other => Err(format!(
                "literal: takes no configuration, got {other:?}; expected \"\""
            )),
        }
    }

    /// # Panics
    /// When the automaton cannot be built (secrets far beyond what a job
    /// declares): the host then masks the attempt with its own fallback.
    fn session(&self, secrets: &[String]) -> LiteralSession {
        match SecretMasker::new(secrets) {
            Ok(masker) => LiteralSession(masker),
            Err(e) => panic!("literal: {e}"),
        }
    }
}

impl MaskSession for LiteralSession {
    fn mask_line(&mut self, _stream: Stream, line: Vec<u8>) -> Vec<u8> {
        match &self.0 {
            Some(masker) => masker.mask_owned(line),
            None => line,
        }
    }

    const BORROWS_LINES: bool = true;

    fn mask_borrowed(&mut self, _stream: Stream, line: &[u8]) -> Option<Vec<u8>> {
        let masker = self.0.as_ref()?;
        masker.is_match(line).then(|| masker.mask(line))
    }
}

hodei_plugin_sdk::export_masker!(Literal);

#[cfg(test)]
mod tests {
    use hodei_plugin_sdk::masker::testing::{TestSession, configure, stderr, stdout, system};

    use super::*;

    #[test]
    fn configuration_is_empty_or_refused() {
        assert_eq!(configure::<Literal>(" "), Literal);
        let err = Literal::configure("strict").expect_err("refused");
        assert!(err.contains("\"strict\""), "{err}");
    }

    #[test]
    fn secrets_become_stars_on_every_stream() {
        let mut session = TestSession::open(&Literal, &["s3cr3t-Value-42", "other-secret"]);
        let masked = session.mask(&[
            stdout("token=s3cr3t-Value-42"),
            stderr("other-secret other-secret"),
            system("failed: s3cr3t-Value-42 rejected"),
            stdout(b"\xff\xfe not utf-8 s3cr3t-Value-42"),
        ]);
        assert_eq!(
            masked,
            [
                b"token=***".to_vec(),
                b"*** ***".to_vec(),
                b"failed: *** rejected".to_vec(),
                b"\xff\xfe not utf-8 ***".to_vec(),
            ]
        );
    }

    #[test]
    fn no_secrets_pass_lines_through() {
        let mut session = TestSession::open(&Literal, &[]);
        assert_eq!(
            session.mask_text(Stream::Stdout, &["anything", ""]),
            ["anything", ""]
        );
    }
}
