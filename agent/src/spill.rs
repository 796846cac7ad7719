//! Spilling log entries to disk: the part of a job's outbox that does not
//! fit its memory budget.
//!
//! A [`SpillQueue`] is a first-in first-out queue of log entries kept in an
//! unnamed temporary file (`tempfile::tempfile_in`: the file has no name,
//! so it disappears with the agent, even after a SIGKILL). Entries are
//! appended at the back and taken from the front, in order. Writes and
//! reads go through small buffers so that a job printing millions of short
//! lines costs a few system calls per 64 KiB, not one per line. Once every
//! entry has been taken back the file is truncated, so disk use follows
//! what is still owed to the host.
//!
//! The record format is private to the agent's process: sequence (u64),
//! stream (i32), timestamp (i64), data length (u32), all little-endian,
//! then the data.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use hodei_proto::v1::LogEntry;

/// Bytes buffered before a write to the file.
const WRITE_BUFFER: usize = 64 * 1024;
/// Bytes read from the file at once.
const READ_CHUNK: usize = 256 * 1024;
/// Fixed part of a record: sequence, stream, timestamp, data length.
const HEADER: usize = 8 + 4 + 8 + 4;

/// A FIFO of log entries on disk.
#[derive(Debug)]
pub struct SpillQueue {
    file: File,
    /// End of the data written to the file.
    written: u64,
    /// Start of the data not yet read back from the file.
    read: u64,
    /// Records appended but not yet written (they follow the file's data).
    write_buf: Vec<u8>,
    /// Bytes read back from the file, not yet decoded (from `read_off`).
    read_buf: Vec<u8>,
    read_off: usize,
    /// Entries in the queue.
    len: usize,
}

impl SpillQueue {
    /// An empty queue backed by a new unnamed file in `dir`.
    pub fn new(dir: &Path) -> io::Result<Self> {
        Ok(Self {
            file: tempfile::tempfile_in(dir)?,
            written: 0,
            read: 0,
            write_buf: Vec::with_capacity(WRITE_BUFFER),
            read_buf: Vec::new(),
            read_off: 0,
            len: 0,
        })
    }

    /// Entries in the queue.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the queue holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends an entry at the back.
    pub fn push(&mut self, entry: &LogEntry) -> io::Result<()> {
        let len = u32::try_from(entry.data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "log entry too long"))?;
        self.write_buf
            .extend_from_slice(&entry.sequence.to_le_bytes());
        self.write_buf
            .extend_from_slice(&entry.stream.to_le_bytes());
        self.write_buf
            .extend_from_slice(&entry.timestamp_us.to_le_bytes());
        self.write_buf.extend_from_slice(&len.to_le_bytes());
        self.write_buf.extend_from_slice(&entry.data);
        self.len += 1;
        if self.write_buf.len() >= WRITE_BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    /// Takes the entry at the front.
    pub fn pop(&mut self) -> io::Result<Option<LogEntry>> {
        if self.len == 0 {
            return Ok(None);
        }
        loop {
            if let Some(entry) = self.decode() {
                self.len -= 1;
                if self.len == 0 {
                    self.reset()?;
                }
                return Ok(Some(entry));
            }
            self.refill()?;
        }
    }

    /// Decodes the record at the front of the read buffer, if complete.
    fn decode(&mut self) -> Option<LogEntry> {
        let rest = &self.read_buf[self.read_off..];
        let header = rest.get(..HEADER)?;
        let (sequence, header) = header.split_at(8);
        let (stream, header) = header.split_at(4);
        let (timestamp, len) = header.split_at(8);
        let len = usize::try_from(u32::from_le_bytes(len.try_into().ok()?)).ok()?;
        let data = rest.get(HEADER..HEADER + len)?.to_vec();
        self.read_off += HEADER + len;
        Some(LogEntry {
            sequence: u64::from_le_bytes(sequence.try_into().ok()?),
            stream: i32::from_le_bytes(stream.try_into().ok()?),
            data,
            timestamp_us: i64::from_le_bytes(timestamp.try_into().ok()?),
        })
    }

    /// Moves more bytes into the read buffer: from the file while it has
    /// unread data, then the records not written yet.
    fn refill(&mut self) -> io::Result<()> {
        self.read_buf.drain(..self.read_off);
        self.read_off = 0;
        if self.read < self.written {
            let want = usize::try_from(self.written - self.read)
                .unwrap_or(usize::MAX)
                .min(READ_CHUNK);
            let start = self.read_buf.len();
            self.read_buf.resize(start + want, 0);
            self.file
                .read_exact_at(&mut self.read_buf[start..], self.read)?;
            self.read += want as u64;
        } else if !self.write_buf.is_empty() {
            self.read_buf.append(&mut self.write_buf);
        } else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "spill file ends inside a record",
            ));
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.write_all_at(&self.write_buf, self.written)?;
        self.written += self.write_buf.len() as u64;
        self.write_buf.clear();
        Ok(())
    }

    /// Empty again: give the disk space back.
    fn reset(&mut self) -> io::Result<()> {
        self.read_buf.clear();
        self.read_buf.shrink_to(READ_CHUNK);
        self.read_off = 0;
        self.write_buf.clear();
        self.written = 0;
        self.read = 0;
        self.file.set_len(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sequence: u64, data: Vec<u8>) -> LogEntry {
        LogEntry {
            sequence,
            stream: 2,
            data,
            timestamp_us: -7 * i64::try_from(sequence).unwrap(),
        }
    }

    #[test]
    fn entries_come_back_in_order_across_buffers_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut queue = SpillQueue::new(dir.path()).unwrap();
        // Sizes crossing the write buffer and read chunk in odd places,
        // with pops interleaved so that reads meet the unwritten tail.
        let size = |seq: u64| usize::try_from(seq * 37 % 20_000).unwrap();
        let mut next_pop = 1;
        for seq in 1..=2_000u64 {
            queue
                .push(&entry(
                    seq,
                    vec![u8::try_from(seq % 251).unwrap(); size(seq)],
                ))
                .unwrap();
            if seq % 3 == 0 {
                let got = queue.pop().unwrap().unwrap();
                assert_eq!(
                    got,
                    entry(
                        next_pop,
                        vec![u8::try_from(next_pop % 251).unwrap(); size(next_pop)]
                    )
                );
                next_pop += 1;
            }
        }
        assert!(queue.written > queue.read, "large queues live on disk");
        while let Some(got) = queue.pop().unwrap() {
            assert_eq!(got.sequence, next_pop);
            assert_eq!(got.data.len(), size(next_pop));
            next_pop += 1;
        }
        assert_eq!(next_pop, 2_001);
        assert!(queue.is_empty());
        assert_eq!(queue.written, 0);
        assert_eq!(
            queue.file.metadata().unwrap().len(),
            0,
            "truncated once empty"
        );
    }
}
