//! `patterns`: masks well-known token formats wherever they appear, whether
//! or not the job declared them as secrets, as `[MASKED:<rule-id>]`.
//!
//! The literal masker only knows the values a job declared; a token a job
//! fetched, generated or found in a file is invisible to it. This one
//! recognises tokens by shape instead:
//!
//! | rule id              | what                                                    |
//! |----------------------|---------------------------------------------------------|
//! | `github-token`       | `ghp_` / `gho_` / `ghs_` / `ghu_` / `ghr_` + 36 base62   |
//! | `github-pat`         | `github_pat_` + 22 base62 + `_` + 59 base62              |
//! | `aws-access-key-id`  | `AKIA` / `ASIA` + 16 of `A-Z2-7`, not the documented examples (ending in `EXAMPLE`) |
//! | `slack-token`        | `xox[abprs]-` + a numeric segment and 2-5 more, 40+ characters |
//! | `private-key`        | a PEM / PGP private key block, BEGIN line through END line, across lines and batches |
//! | `jwt`                | `eyJ…` `.` `ey…` `.` signature (base64url, 10+ / 8+ / 16+) |
//! | `hodei-api-token`    | `hodei_` + 32 or more base62                            |
//! | `hodei-worker-token` | `hwt_` + 64 lower-case hex (as the host generates them)  |
//!
//! A token must stand on its own (see `rules.rs` on boundaries): a near
//! miss (too short, too long, wrong characters, inside a longer
//! identifier, a documented example) stays. The rule id in the output says
//! *what* was there, which `***` cannot: that is how an operator tells a
//! leaked credential from a declared secret.
//!
//! Every line is first searched for the rules' keywords (one Aho-Corasick
//! pass); only where a keyword occurs is a token validated. The private key
//! state is kept per stream, so a block on stderr is not ended by a stdout
//! line.
//!
//! Configuration: `""` (every rule) or `disable=<id>,<id>` (every rule but
//! those, e.g. `disable=jwt`).

mod pem;
mod rules;
mod scan;

use std::sync::Arc;

use hodei_plugin_sdk::masker::{MaskSession, Masker, Stream};

pub use pem::MAX_BLOCK_LINES;
pub use scan::marker;

use pem::Block;
use scan::Scanner;

/// The `patterns` masker: the enabled rules, compiled once.
#[derive(Debug, Clone)]
pub struct Patterns(Arc<Scanner>);

/// One job attempt: the rules, and the private key state of each stream.
#[derive(Debug)]
pub struct PatternsSession {
    /// The masker's rules.
    scanner: Arc<Scanner>,
    /// Per stream (stdout, stderr, system): inside a private key block?
    blocks: [Block; 3],
}

/// Every rule id, for the configuration and its error message.
pub fn rule_ids() -> Vec<&'static str> {
    rules::ids().collect()
}

impl Masker for Patterns {
    const NAME: &'static str = "patterns";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "well-known token formats (GitHub, AWS, Slack, JWT, \
                                       private keys, Hodei) as [MASKED:rule-id]";
    type Session = PatternsSession;

    fn configure(config: &str) -> Result<Self, String> {
        let config = config.trim();
        let disabled: Vec<&str> = if config.is_empty() {
            Vec::new()
        } else if let Some(list) = config.strip_prefix("disable=") {
            list.split(',').map(str::trim).collect()
        } else {
            return Err(format!(
                "patterns: unknown configuration {config:?}; expected \"\" or \
                 \"disable=<rule-id>,...\" with rule ids {:?}",
                rule_ids()
            ));
        };
        if let Some(unknown) = disabled.iter().find(|id| !rules::ids().any(|k| k == **id)) {
            return Err(format!(
                "patterns: unknown rule {unknown:?}; rule ids are {:?}",
                rule_ids()
            ));
        }
        Ok(Self(Arc::new(Scanner::new(|id| !disabled.contains(&id)))))
    }

    fn session(&self, _secrets: &[String]) -> PatternsSession {
        PatternsSession {
            scanner: Arc::clone(&self.0),
            blocks: [Block::Outside; 3],
        }
    }
}

impl MaskSession for PatternsSession {
    fn mask_line(&mut self, stream: Stream, line: Vec<u8>) -> Vec<u8> {
        self.mask_borrowed(stream, &line).unwrap_or(line)
    }

    const BORROWS_LINES: bool = true;

    fn mask_borrowed(&mut self, stream: Stream, line: &[u8]) -> Option<Vec<u8>> {
        let block = &mut self.blocks[match stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
            Stream::System => 2,
        }];
        self.scanner.mask_slice(line, block)
    }
}

hodei_plugin_sdk::export_masker!(Patterns);

#[cfg(test)]
mod tests;
