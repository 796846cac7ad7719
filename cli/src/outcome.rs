//! What a followed job's log stream carries and how `hodei run` ends on
//! the command line: the exit code a finished job maps to, and what is
//! said on stderr when that code alone would not tell. Both halves of the
//! CLI follow logs their own way (async in `hodei-host`, blocking in the
//! front) and end through here.

use serde::Deserialize;

/// A log line as the SSE stream carries it.
#[derive(Debug, Clone, Deserialize)]
pub struct LogLine {
    /// RFC 3339.
    pub timestamp: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The text.
    pub line: String,
    /// Per-job sequence.
    pub sequence: u64,
}

/// The final SSE event.
#[derive(Debug, Clone, Deserialize)]
pub struct Done {
    /// Job state (`SUCCEEDED`...).
    pub state: String,
    /// Exit code when it exited.
    pub exit_code: Option<i32>,
    /// Why it ended so, when not obvious.
    pub reason: Option<String>,
}

/// The process exit code a finished job maps to: the job's own code when
/// it exited; 124 when it timed out (as timeout(1)); 130 when cancelled
/// (as after Ctrl-C).
pub fn exit_code(done: &Done) -> u8 {
    match done.state.as_str() {
        "SUCCEEDED" => 0,
        "TIMED_OUT" => 124,
        "CANCELLED" => 130,
        _ => match done.exit_code {
            Some(code) => u8::try_from(code.rem_euclid(256)).unwrap_or(1).max(1),
            None => 1,
        },
    }
}

/// How `hodei run` ends once job `id`'s stream did, with `done` (None: the
/// stream ended without it): the line for stderr, if any, and the exit
/// code.
pub fn conclude(id: &str, done: Option<&Done>) -> (Option<String>, u8) {
    let Some(done) = done else {
        return (
            Some(format!(
                "hodei: the log stream ended before the job did (job {id})"
            )),
            crate::EXIT_HODEI_FAILED,
        );
    };
    let said = (done.state != "SUCCEEDED" && done.exit_code.is_none()).then(|| {
        format!(
            "hodei: job {id} {}: {}",
            done.state,
            done.reason.as_deref().unwrap_or("no reason given")
        )
    });
    (said, exit_code(done))
}

#[cfg(test)]
mod tests {
    use super::{Done, exit_code};

    fn done(state: &str, exit_code: Option<i32>) -> Done {
        Done {
            state: state.to_owned(),
            exit_code,
            reason: None,
        }
    }

    #[test]
    fn exit_codes_follow_the_job() {
        assert_eq!(exit_code(&done("SUCCEEDED", Some(0))), 0);
        assert_eq!(exit_code(&done("FAILED", Some(3))), 3);
        assert_eq!(exit_code(&done("FAILED", Some(256))), 1);
        assert_eq!(exit_code(&done("FAILED", Some(-1))), 255);
        assert_eq!(exit_code(&done("FAILED", None)), 1);
        assert_eq!(exit_code(&done("TIMED_OUT", None)), 124);
        assert_eq!(exit_code(&done("CANCELLED", None)), 130);
    }
}
