//! How jobs and log lines are laid out as bytes. A job is a versioned JSON
//! envelope `{"v":1,"job":…}` (every adapter), so a newer build can tell an
//! old record from one it does not understand. A log chunk (redb) is the
//! lines of one stored batch, each `[seq u64][ts i64][stream u8][len u32]
//! [bytes]`, little-endian.

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::domain::{Job, LogRecord, LogStream, Timestamp};

#[derive(Serialize)]
struct EnvelopeRef<'a> {
    v: u32,
    job: &'a Job,
}

#[derive(Deserialize)]
struct Envelope {
    v: u32,
    job: Job,
}

pub(super) fn encode_job(job: &Job) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(&EnvelopeRef { v: 1, job }).map_err(StoreError::backend)
}

pub(super) fn decode_job(bytes: &[u8]) -> Result<Job, StoreError> {
    let envelope: Envelope = serde_json::from_slice(bytes).map_err(StoreError::backend)?;
    if envelope.v != 1 {
        return Err(StoreError::Backend(format!(
            "job record version {} is newer than this build understands",
            envelope.v
        )));
    }
    Ok(envelope.job)
}

fn stream_byte(stream: LogStream) -> u8 {
    match stream {
        LogStream::Stdout => 1,
        LogStream::Stderr => 2,
    }
}

fn stream_of(byte: u8) -> LogStream {
    if byte == 2 {
        LogStream::Stderr
    } else {
        LogStream::Stdout
    }
}

fn truncated() -> StoreError {
    StoreError::Backend("truncated log record".into())
}

/// Encodes lines (in sequence order) as one chunk.
pub(super) fn encode_chunk(lines: &[&LogRecord]) -> Vec<u8> {
    let size = lines.iter().map(|l| 21 + l.data.len()).sum();
    let mut out = Vec::with_capacity(size);
    for line in lines {
        out.extend_from_slice(&line.sequence.to_le_bytes());
        out.extend_from_slice(&line.timestamp.0.to_le_bytes());
        out.push(stream_byte(line.stream));
        let len = u32::try_from(line.data.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&line.data[..len as usize]);
    }
    out
}

/// Calls `each` with every line of a chunk, in order.
pub(super) fn decode_chunk(
    mut bytes: &[u8],
    mut each: impl FnMut(LogRecord),
) -> Result<(), StoreError> {
    while !bytes.is_empty() {
        let (seq, rest) = bytes.split_first_chunk::<8>().ok_or_else(truncated)?;
        let (ts, rest) = rest.split_first_chunk::<8>().ok_or_else(truncated)?;
        let (stream, rest) = rest.split_first().ok_or_else(truncated)?;
        let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(truncated());
        }
        let (data, rest) = rest.split_at(len);
        each(LogRecord {
            sequence: u64::from_le_bytes(*seq),
            stream: stream_of(*stream),
            data: data.to_vec(),
            timestamp: Timestamp(i64::from_le_bytes(*ts)),
        });
        bytes = rest;
    }
    Ok(())
}

/// A line of the older row-per-line layout: `[ts i64][stream u8][bytes]`.
pub(super) fn decode_line_v1(sequence: u64, bytes: &[u8]) -> Result<LogRecord, StoreError> {
    let (ts, rest) = bytes.split_first_chunk::<8>().ok_or_else(truncated)?;
    let (stream, data) = rest.split_first().ok_or_else(truncated)?;
    Ok(LogRecord {
        sequence,
        stream: stream_of(*stream),
        data: data.to_vec(),
        timestamp: Timestamp(i64::from_le_bytes(*ts)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_truncation_is_an_error() {
        let lines: Vec<LogRecord> = (1..=3)
            .map(|i| LogRecord {
                sequence: 10 + i,
                stream: if i == 2 {
                    LogStream::Stderr
                } else {
                    LogStream::Stdout
                },
                data: vec![b'x'; usize::try_from(i * 7).unwrap()],
                timestamp: Timestamp(1_700_000_000_000_000 + i64::try_from(i).unwrap()),
            })
            .collect();
        let refs: Vec<&LogRecord> = lines.iter().collect();
        let bytes = encode_chunk(&refs);
        let mut back = Vec::new();
        decode_chunk(&bytes, |l| back.push(l)).unwrap();
        assert_eq!(back, lines);
        assert!(decode_chunk(&bytes[..bytes.len() - 1], |_| {}).is_err());
    }
}
