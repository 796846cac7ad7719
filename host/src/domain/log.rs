//! A job's output as stored: one record per line, numbered per job.

use serde::Serialize;

use super::Timestamp;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
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

/// What one append keeps of a batch, decided from what the job's log
/// already holds. Both store adapters append through [`admit`], so the
/// rules below hold whichever stores the log.
#[derive(Debug)]
pub struct Admission<'a> {
    /// Lines to store, in sequence order.
    pub kept: Vec<&'a LogRecord>,
    /// The quota marker, stored after `kept` when this batch crossed the
    /// job's log quota.
    pub marker: Option<LogRecord>,
    /// The job's log head after the append: the highest sequence taken,
    /// stored or (past the quota) dropped.
    pub head: u64,
    /// Bytes of output offered for the job so far, stored or not.
    pub bytes: u64,
}

/// Decides what of `lines` an append takes, given the job's log `head`,
/// the `bytes` offered so far and the job's `quota` in bytes.
///
/// - Sequences at or below `head` were stored before: ignored (a resend).
/// - The rest must continue the log densely from `head + 1`; a gap or a
///   jump refuses the whole batch with [`DomainError::LogGap`], so a job's
///   log never has holes an agent chose to leave.
/// - The first line that takes the job past its quota is replaced by a
///   marker saying so; later lines advance the head (the agent is told they
///   are taken and lets go of them) but are not stored.
pub fn admit(
    head: u64,
    bytes: u64,
    quota: u64,
    lines: &[LogRecord],
) -> Result<Admission<'_>, super::DomainError> {
    let mut fresh: Vec<&LogRecord> = lines.iter().filter(|l| l.sequence > head).collect();
    fresh.sort_by_key(|l| l.sequence);
    fresh.dedup_by_key(|l| l.sequence);
    for (expected, line) in (head + 1..).zip(&fresh) {
        if line.sequence != expected {
            return Err(super::DomainError::LogGap {
                expected,
                got: line.sequence,
            });
        }
    }
    let mut admission = Admission {
        kept: Vec::with_capacity(fresh.len()),
        marker: None,
        head: fresh.last().map_or(head, |l| l.sequence),
        bytes,
    };
    for line in fresh {
        let before = admission.bytes;
        admission.bytes = before.saturating_add(line.data.len() as u64);
        if admission.bytes <= quota {
            admission.kept.push(line);
        } else if before <= quota {
            admission.marker = Some(LogRecord {
                sequence: line.sequence,
                stream: LogStream::Stderr,
                data: quota_marker(quota).into_bytes(),
                timestamp: line.timestamp,
            });
        }
    }
    Ok(admission)
}

/// The line that ends a log cut at its quota.
pub fn quota_marker(quota: u64) -> String {
    format!("[hodei] output truncated: this job's log reached its quota of {quota} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DomainError;

    fn line(sequence: u64, text: &str) -> LogRecord {
        LogRecord {
            sequence,
            stream: LogStream::Stdout,
            data: text.as_bytes().to_vec(),
            timestamp: Timestamp(sequence as i64),
        }
    }

    fn seqs(admission: &Admission<'_>) -> Vec<u64> {
        admission.kept.iter().map(|l| l.sequence).collect()
    }

    #[test]
    fn dense_batches_are_taken_and_resends_ignored() {
        let batch = [line(3, "c"), line(1, "a"), line(2, "b"), line(2, "b")];
        let taken = admit(0, 0, u64::MAX, &batch).unwrap();
        assert_eq!(seqs(&taken), vec![1, 2, 3]);
        assert_eq!((taken.head, taken.bytes), (3, 3));
        let again = admit(3, 3, u64::MAX, &batch).unwrap();
        assert!(again.kept.is_empty());
        assert_eq!((again.head, again.bytes), (3, 3));
        let resend = [line(2, "b"), line(3, "c"), line(4, "d")];
        let overlap = admit(2, 2, u64::MAX, &resend).unwrap();
        assert_eq!(seqs(&overlap), vec![3, 4]);
    }

    #[test]
    fn gaps_and_jumps_refuse_the_batch() {
        assert_eq!(
            admit(0, 0, u64::MAX, &[line(2, "b")]).unwrap_err(),
            DomainError::LogGap {
                expected: 1,
                got: 2
            }
        );
        assert_eq!(
            admit(5, 0, u64::MAX, &[line(6, "x"), line(1_000_000, "y")]).unwrap_err(),
            DomainError::LogGap {
                expected: 7,
                got: 1_000_000
            }
        );
    }

    #[test]
    fn the_line_crossing_the_quota_becomes_the_marker_and_the_rest_is_dropped() {
        let batch = [line(1, "aaaa"), line(2, "bbbb"), line(3, "cccc")];
        let taken = admit(0, 0, 6, &batch).unwrap();
        assert_eq!(seqs(&taken), vec![1]);
        let marker = taken.marker.as_ref().unwrap();
        assert_eq!(marker.sequence, 2);
        assert_eq!(marker.data, quota_marker(6).into_bytes());
        assert_eq!((taken.head, taken.bytes), (3, 12));
        let more = [line(4, "d")];
        let later = admit(3, 12, 6, &more).unwrap();
        assert!(later.kept.is_empty() && later.marker.is_none());
        assert_eq!(later.head, 4, "dropped lines still advance the head");
        let exact = admit(0, 0, 8, &batch[..2]).unwrap();
        assert_eq!(seqs(&exact), vec![1, 2]);
        assert!(
            exact.marker.is_none(),
            "a log exactly at its quota is whole"
        );
    }
}
