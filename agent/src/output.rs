//! Reading a job's output: the PTY (stdout) from a std thread, the stderr
//! pipe from the runtime, both masked (the job's secrets, see
//! [`crate::mask`]), cut into lines and handed to the job's sink.
//!
//! Reading stops at end of output, or when the executor sets `stopped`
//! (its bound after the job's exit is over): later lines are dropped, so
//! nothing arrives after the job's result.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hodei_proto::v1::Stream;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tokio::io::AsyncReadExt;
use tokio::process::ChildStderr;
use tokio::sync::oneshot;
use tracing::warn;

use crate::executor::JobSink;
use crate::lines::LineSplitter;
use crate::mask::{MaskingStream, SecretMasker};

const READ_CHUNK: usize = 64 * 1024;
/// A PTY read returns at most this much (the line discipline's buffer).
const PTY_READ: usize = 4096;

/// A std thread rather than `spawn_blocking`: a background process can keep
/// the terminal open forever, and a blocking task would then hold up the
/// runtime's shutdown.
///
/// A read of a PTY returns at most [`PTY_READ`] bytes, so a job writing
/// flat out would cost a hand-over to the outbox (a lock and a wake-up of
/// its pump) per 4 KiB. After a read the thread reads again for as long as
/// more output is already waiting (a zero-timeout poll), up to
/// [`READ_CHUNK`], and hands it all over at once. A lone line still leaves
/// at once: nothing waits for more.
pub fn spawn_pty_reader(
    reader: File,
    sink: Arc<dyn JobSink>,
    stopped: Arc<AtomicBool>,
    masker: Option<Arc<SecretMasker>>,
) -> io::Result<oneshot::Receiver<()>> {
    let (done, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("hodei-pty-reader".into())
        .spawn(move || {
            let mut entries = Entries::new(masker);
            let mut buf = vec![0; READ_CHUNK];
            let mut ended = false;
            while !ended {
                let mut filled = 0;
                loop {
                    match read_pty(&reader, &mut buf[filled..]) {
                        Ok(0) => ended = true,
                        Ok(n) => filled += n,
                        Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => ended = true,
                    }
                    if ended || buf.len() - filled < PTY_READ || !readable_now(&reader) {
                        break;
                    }
                }
                if filled > 0 {
                    emit(
                        &*sink,
                        &stopped,
                        Stream::Stdout,
                        entries.push(&buf[..filled]),
                    );
                }
            }
            emit(&*sink, &stopped, Stream::Stdout, entries.finish());
            let _ = done.send(());
        })?;
    Ok(done_rx)
}

/// A read of the PTY's master; EIO (every process closed the terminal)
/// reads as end of output.
fn read_pty(mut reader: &File, buf: &mut [u8]) -> io::Result<usize> {
    match reader.read(buf) {
        Err(error) if error.raw_os_error() == Some(libc::EIO) => Ok(0),
        other => other,
    }
}

/// Whether a read of `file` would return at once (data, or its end).
fn readable_now(file: &File) -> bool {
    let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Reads the job's stderr pipe until EOF, that is until every process of
/// the job has closed it (the executor bounds the wait after the exit).
pub async fn read_stderr(
    mut pipe: ChildStderr,
    sink: Arc<dyn JobSink>,
    stopped: Arc<AtomicBool>,
    masker: Option<Arc<SecretMasker>>,
) {
    let mut entries = Entries::new(masker);
    let mut buf = vec![0; READ_CHUNK];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => emit(&*sink, &stopped, Stream::Stderr, entries.push(&buf[..n])),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                warn!(%error, "reading the job's stderr failed");
                break;
            }
        }
    }
    emit(&*sink, &stopped, Stream::Stderr, entries.finish());
}

/// One stream's way from raw bytes to log entries: masked first, so that
/// a secret spanning a line cut or two reads is still found, then cut.
struct Entries {
    masking: MaskingStream,
    splitter: LineSplitter,
}

impl Entries {
    fn new(masker: Option<Arc<SecretMasker>>) -> Self {
        Self {
            masking: MaskingStream::new(masker),
            splitter: LineSplitter::default(),
        }
    }

    fn push(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        let masked = self.masking.push(chunk);
        self.splitter.push(&masked)
    }

    fn finish(&mut self) -> Vec<Vec<u8>> {
        let rest = self.masking.finish();
        let mut entries = self.splitter.push(&rest);
        entries.extend(self.splitter.finish());
        entries
    }
}

fn emit(sink: &dyn JobSink, stopped: &AtomicBool, stream: Stream, lines: Vec<Vec<u8>>) {
    if !lines.is_empty() && !stopped.load(Ordering::SeqCst) {
        sink.output(stream, lines);
    }
}
