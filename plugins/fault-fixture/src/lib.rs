//! `fault-fixture`: a scheduling policy that misbehaves on request, for the
//! host's tests only (timeouts, memory cap, traps, bad answers, panics).
//! Never deploy it.
//!
//! The fault is chosen by `configure(config)`:
//!
//! | config                   | behaviour                                  |
//! |--------------------------|--------------------------------------------|
//! | `""`                     | a normal policy: default filter, score 0   |
//! | `loop:filter`            | `filter` spins forever                     |
//! | `loop:score`             | `score` spins forever                      |
//! | `alloc:filter`           | `filter` allocates 1 MiB blocks forever    |
//! | `trap:score`             | `score` executes `unreachable`             |
//! | `wrong-length:score`     | `score` returns one score too few          |
//! | `panic:filter:<message>` | `filter` panics with `<message>`           |

use hodei_plugin_sdk::policy::{Job, Policy, Reject, Worker};

/// The accepted configurations, for the error message.
const ACCEPTED: &str = "\"\", \"loop:filter\", \"loop:score\", \"alloc:filter\", \
                        \"trap:score\", \"wrong-length:score\", \"panic:filter:<message>\"";

/// Which fault to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultFixture {
    /// Behave: default filter, every score 0.
    Normal,
    /// Spin forever in `filter`.
    LoopFilter,
    /// Spin forever in `score`.
    LoopScore,
    /// Allocate without bound in `filter`.
    AllocFilter,
    /// Trap in `score`.
    TrapScore,
    /// Return one score too few.
    WrongLengthScore,
    /// Panic in `filter` with this message.
    PanicFilter(String),
}

impl Policy for FaultFixture {
    const NAME: &'static str = "fault-fixture";

    fn configure(config: &str) -> Result<Self, String> {
        Ok(match config {
            "" => Self::Normal,
            "loop:filter" => Self::LoopFilter,
            "loop:score" => Self::LoopScore,
            "alloc:filter" => Self::AllocFilter,
            "trap:score" => Self::TrapScore,
            "wrong-length:score" => Self::WrongLengthScore,
            other => match other.strip_prefix("panic:filter:") {
                Some(message) => Self::PanicFilter(message.to_owned()),
                None => {
                    return Err(format!(
                        "fault-fixture: unknown configuration {other:?}; accepted: {ACCEPTED}"
                    ));
                }
            },
        })
    }

    fn filter(&self, _job: &Job, _worker: &Worker<'_>) -> Result<(), Reject> {
        // The SDK keeps the hard constraints before asking: the other
        // configurations accept every worker it asks about.
        match self {
            Self::LoopFilter => spin(),
            Self::AllocFilter => {
                let mut hoard = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            Self::PanicFilter(message) => panic!("{message}"),
            _ => Ok(()),
        }
    }

    fn score(&self, _job: &Job, _worker: &Worker<'_>) -> i64 {
        match self {
            Self::LoopScore => spin(),
            Self::TrapScore => trap(),
            _ => 0,
        }
    }

    fn score_all(&self, job: &Job, workers: &[Worker<'_>]) -> Vec<i64> {
        let mut scores: Vec<i64> = workers.iter().map(|w| self.score(job, w)).collect();
        if *self == Self::WrongLengthScore {
            scores.pop();
        }
        scores
    }
}

/// Busy-waits forever; only the host's deadline stops it.
fn spin() -> ! {
    loop {
        std::hint::spin_loop();
    }
}

/// A Wasm trap without a panic message.
fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

hodei_plugin_sdk::export_policy!(FaultFixture);

#[cfg(test)]
mod tests {
    use super::*;
    use hodei_plugin_sdk::policy::testing::{decide, filter, job, score, worker};

    #[test]
    fn configuration_picks_the_fault() {
        assert_eq!(FaultFixture::configure("").unwrap(), FaultFixture::Normal);
        assert_eq!(
            FaultFixture::configure("loop:score").unwrap(),
            FaultFixture::LoopScore
        );
        assert_eq!(
            FaultFixture::configure("panic:filter:boom: now").unwrap(),
            FaultFixture::PanicFilter("boom: now".into())
        );
        let err = FaultFixture::configure("explode").unwrap_err();
        assert!(err.contains("\"wrong-length:score\""), "{err}");
    }

    #[test]
    fn normal_behaves_like_a_policy() {
        let workers = [worker().slots(4, 0), worker(), worker()];
        let policy = FaultFixture::Normal;
        assert_eq!(
            filter(&policy, &job(), &workers)[0],
            Err("no free slot".into())
        );
        assert_eq!(decide(&policy, &job(), &workers), Some(1));
    }

    #[test]
    fn wrong_length_returns_one_score_too_few() {
        assert_eq!(
            score(
                &FaultFixture::WrongLengthScore,
                &job(),
                &[worker(), worker()]
            )
            .len(),
            1
        );
    }

    #[test]
    #[should_panic(expected = "boom")]
    fn panic_panics_with_the_message() {
        let _ = filter(
            &FaultFixture::PanicFilter("boom".into()),
            &job(),
            &[worker()],
        );
    }
}
