//! A job's output as stored: one record per line, numbered per job.

use serde::Serialize;

use super::Timestamp;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output (the job's terminal).
    Stdout,
    /// Standard error.
    Stderr,
}

/// One stored line of a job's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Dense, increasing per job across all of its attempts, from 1.
    pub sequence: u64,
    /// Stream of origin.
    pub stream: LogStream,
    /// The line's bytes without terminator, exactly as the job wrote them.
    pub data: Vec<u8>,
    /// When the agent read it.
    pub timestamp: Timestamp,
}
