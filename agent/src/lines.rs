//! Cutting a job's raw output into log entries.
//!
//! A log entry is one line without its terminator. The agent's PTY does
//! no output processing, but a job may turn the terminal's ONLCR on (every
//! `\n` becomes `\r\n`) or write `\r\n` itself, so a trailing `\r` is
//! stripped too. A line longer than [`MAX_LINE`] is cut into several entries so that
//! a job printing megabytes without a newline cannot make one entry (or the
//! agent's memory for a partial line) grow without bound. Bytes are passed
//! through untouched: ANSI colour escapes and invalid UTF-8 arrive as sent.

/// The longest entry the agent produces, in bytes.
pub const MAX_LINE: usize = 16 * 1024;

/// Accumulates output chunks and hands back complete lines.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Adds a chunk of output; returns the entries it completed, in order.
    pub fn push(&mut self, mut chunk: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        while let Some(newline) = chunk.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&chunk[..newline]);
            chunk = &chunk[newline + 1..];
            self.cut_long(&mut lines);
            let mut line = std::mem::take(&mut self.partial);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            lines.push(line);
        }
        self.partial.extend_from_slice(chunk);
        self.cut_long(&mut lines);
        lines
    }

    /// The unterminated remainder at end of output, if any.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let mut rest = std::mem::take(&mut self.partial);
        if rest.last() == Some(&b'\r') {
            rest.pop();
        }
        (!rest.is_empty()).then_some(rest)
    }

    /// Emits full-size pieces while the partial line is over the cap. A
    /// piece of exactly `MAX_LINE` bytes followed only by `\r` waits: that
    /// `\r` is probably the first half of the line's terminator, and cutting
    /// there would produce an empty entry.
    fn cut_long(&mut self, lines: &mut Vec<Vec<u8>>) {
        while self.partial.len() > MAX_LINE
            && !(self.partial.len() == MAX_LINE + 1 && self.partial[MAX_LINE] == b'\r')
        {
            let rest = self.partial.split_off(MAX_LINE);
            lines.push(std::mem::replace(&mut self.partial, rest));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_strips_terminators() {
        let mut splitter = LineSplitter::default();
        assert_eq!(splitter.push(b"one\r\ntw"), vec![b"one".to_vec()]);
        assert_eq!(
            splitter.push(b"o\n\nthree\r"),
            vec![b"two".to_vec(), b"".to_vec()]
        );
        assert_eq!(splitter.push(b"\n"), vec![b"three".to_vec()]);
        assert_eq!(splitter.finish(), None);
    }

    #[test]
    fn remainder_is_emitted_at_the_end() {
        let mut splitter = LineSplitter::default();
        assert!(splitter.push(b"no newline").is_empty());
        assert_eq!(splitter.finish(), Some(b"no newline".to_vec()));
    }

    #[test]
    fn keeps_escape_sequences_and_invalid_utf8() {
        let mut splitter = LineSplitter::default();
        let raw = b"\x1b[31mred\x1b[0m \xff\xfe";
        let mut input = raw.to_vec();
        input.extend_from_slice(b"\r\n");
        assert_eq!(splitter.push(&input), vec![raw.to_vec()]);
    }

    #[test]
    fn long_lines_are_cut_at_the_cap() {
        let mut splitter = LineSplitter::default();
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let mut lines = splitter.push(&long[..MAX_LINE + 5]);
        lines.extend(splitter.push(&long[MAX_LINE + 5..]));
        lines.extend(splitter.push(b"\n"));
        let sizes: Vec<usize> = lines.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![MAX_LINE, MAX_LINE, 10]);
    }

    #[test]
    fn a_line_of_exactly_the_cap_stays_whole() {
        let mut splitter = LineSplitter::default();
        let mut input = vec![b'y'; MAX_LINE];
        input.extend_from_slice(b"\r");
        assert!(splitter.push(&input).is_empty());
        let lines = splitter.push(b"\nnext\n");
        let sizes: Vec<usize> = lines.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![MAX_LINE, 4]);
    }
}
