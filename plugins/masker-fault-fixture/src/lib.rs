//! `masker-fault-fixture`: a secret masker that misbehaves on request, for
//! the host's tests of failing closed (deadline, trap, wrong count). Never
//! deploy it: it masks nothing.
//!
//! The fault is chosen by `configure(config)`:
//!
//! | config          | behaviour                                             |
//! |-----------------|-------------------------------------------------------|
//! | `trap`          | `mask` panics (a trap) on every batch                 |
//! | `loop`          | `mask` spins forever                                  |
//! | `wrong-count`   | `mask` answers one line fewer than it was sent        |
//! | `trap-on:WORD`  | `mask` panics when a line of the batch contains WORD  |
//! | `refuse`        | `configure` itself fails (the host keeps its chain)   |
//! | anything else   | identity: every line back as it was (`""` included)  |

use hodei_plugin_sdk::masker::{Entry, MaskSession, Masker, Stream};

/// Which fault to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskerFault {
    /// Every line back unchanged.
    Identity,
    /// Panic in `mask`.
    Trap,
    /// Spin forever in `mask`.
    Loop,
    /// Answer one line fewer.
    WrongCount,
    /// Panic when a line contains this word.
    TrapOn(Vec<u8>),
}

impl Masker for MaskerFault {
    const NAME: &'static str = "fault-fixture";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "test fixture: misbehaves as configured, masks nothing";
    type Session = Self;

    fn configure(config: &str) -> Result<Self, String> {
        Ok(match config {
            "trap" => Self::Trap,
            "loop" => Self::Loop,
            "wrong-count" => Self::WrongCount,
            "refuse" => return Err("fault-fixture: refused, as configured".into()),
            other => match other.strip_prefix("trap-on:") {
                Some(word) if !word.is_empty() => Self::TrapOn(word.as_bytes().to_vec()),
                _ => Self::Identity,
            },
        })
    }

    fn session(&self, _secrets: &[String]) -> Self {
        self.clone()
    }
}

impl MaskSession for MaskerFault {
    fn mask_line(&mut self, _stream: Stream, line: Vec<u8>) -> Vec<u8> {
        if let Self::TrapOn(word) = self
            && line
                .windows(word.len())
                .any(|window| window == word.as_slice())
        {
            panic!(
                "fault-fixture: trap on a line containing {:?}",
                String::from_utf8_lossy(word)
            );
        }
        line
    }

    fn mask(&mut self, entries: Vec<Entry>) -> Vec<Vec<u8>> {
        match self {
            Self::Trap => panic!("fault-fixture: trap, as configured"),
            Self::Loop => loop {
                std::hint::spin_loop();
            },
            Self::WrongCount => {
                let mut lines: Vec<Vec<u8>> = entries.into_iter().map(|e| e.data).collect();
                lines.pop();
                lines
            }
            Self::Identity | Self::TrapOn(_) => entries
                .into_iter()
                .map(|entry| self.mask_line(entry.stream, entry.data))
                .collect(),
        }
    }
}

hodei_plugin_sdk::export_masker!(MaskerFault);

#[cfg(test)]
mod tests {
    use hodei_plugin_sdk::masker::testing::{CountMismatch, TestSession, configure, stdout};

    use super::*;

    #[test]
    fn configuration_picks_the_fault() {
        assert_eq!(configure::<MaskerFault>(""), MaskerFault::Identity);
        assert_eq!(configure::<MaskerFault>("nonsense"), MaskerFault::Identity);
        assert_eq!(configure::<MaskerFault>("loop"), MaskerFault::Loop);
        assert_eq!(
            configure::<MaskerFault>("trap-on:BOOM"),
            MaskerFault::TrapOn(b"BOOM".to_vec())
        );
        assert!(MaskerFault::configure("refuse").is_err());
    }

    #[test]
    fn identity_answers_every_line_unchanged() {
        let mut session = TestSession::open(&MaskerFault::Identity, &["s3cr3t-value"]);
        let lines = [stdout("s3cr3t-value"), stdout(b"\xff")];
        assert_eq!(session.mask(&lines), [b"s3cr3t-value".to_vec(), vec![0xff]]);
    }

    #[test]
    fn wrong_count_answers_one_line_fewer() {
        let mut session = TestSession::open(&MaskerFault::WrongCount, &[]);
        assert_eq!(
            session.try_mask(&[stdout("a"), stdout("b")]),
            Err(CountMismatch {
                sent: 2,
                answered: 1
            })
        );
    }

    #[test]
    fn trap_on_traps_only_on_the_word() {
        let masker = MaskerFault::TrapOn(b"BOOM".to_vec());
        let mut session = TestSession::open(&masker, &[]);
        assert_eq!(session.mask(&[stdout("calm")]), [b"calm".to_vec()]);
        let boom = std::panic::catch_unwind(move || session.mask(&[stdout("a BOOM b")]));
        assert!(boom.is_err());
    }

    #[test]
    #[should_panic(expected = "trap, as configured")]
    fn trap_traps() {
        let _ = TestSession::open(&MaskerFault::Trap, &[]).mask(&[stdout("x")]);
    }
}
