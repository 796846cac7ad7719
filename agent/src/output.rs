//! Reading a job's output: the PTY (stdout) from a std thread, the stderr
//! FIFO from the runtime, both cut into lines and handed to the job's sink.
//!
//! Reading stops at end of output, or when the executor sets `stopped`
//! (its bound after the job's exit is over): later lines are dropped, so
//! nothing arrives after the job's result.

use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hodei_proto::v1::Stream;
use nix::sys::stat::Mode;
use nix::unistd::mkfifo;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tracing::warn;

use crate::executor::JobSink;
use crate::lines::LineSplitter;

const READ_CHUNK: usize = 8 * 1024;
/// Reads of the FIFO after the exit: more than a pipe holds, yet finite
/// even if a background process keeps writing.
const MAX_DRAIN_READS: usize = 64;

/// Creates the FIFO and opens it read-write and non-blocking.
pub fn open_fifo(path: &Path) -> io::Result<pipe::Receiver> {
    mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR)?;
    pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
}

/// A std thread rather than `spawn_blocking`: a background process can keep
/// the terminal open forever, and a blocking task would then hold up the
/// runtime's shutdown.
pub fn spawn_pty_reader(
    mut reader: Box<dyn Read + Send>,
    sink: Arc<dyn JobSink>,
    stopped: Arc<AtomicBool>,
) -> io::Result<oneshot::Receiver<()>> {
    let (done, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("hodei-pty-reader".into())
        .spawn(move || {
            let mut splitter = LineSplitter::default();
            let mut buf = vec![0; READ_CHUNK];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => emit(&*sink, &stopped, Stream::Stdout, splitter.push(&buf[..n])),
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            emit(&*sink, &stopped, Stream::Stdout, splitter.finish());
            let _ = done.send(());
        })?;
    Ok(done_rx)
}

pub async fn read_stderr(
    fifo: pipe::Receiver,
    sink: Arc<dyn JobSink>,
    stopped: Arc<AtomicBool>,
    mut exited: oneshot::Receiver<()>,
) {
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0; READ_CHUNK];
    loop {
        tokio::select! {
            biased;
            _ = &mut exited => break,
            ready = fifo.readable() => {
                if let Err(error) = ready {
                    warn!(%error, "waiting on the stderr FIFO failed");
                    break;
                }
                match fifo.try_read(&mut buf) {
                    Ok(n) => emit(&*sink, &stopped, Stream::Stderr, splitter.push(&buf[..n])),
                    Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                    Err(error) => {
                        warn!(%error, "reading the stderr FIFO failed");
                        break;
                    }
                }
            }
        }
    }
    // Whatever the job wrote before it exited is already in the pipe, but
    // tokio's `try_read` only tries when the reactor has seen readiness,
    // which may not have happened yet. Read the descriptor itself until the
    // pipe is empty (EAGAIN), so the drain is deterministic.
    match fifo.into_nonblocking_fd() {
        Ok(fd) => {
            for _ in 0..MAX_DRAIN_READS {
                match nix::unistd::read(&fd, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => emit(&*sink, &stopped, Stream::Stderr, splitter.push(&buf[..n])),
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => break,
                }
            }
        }
        Err(error) => warn!(%error, "cannot drain the stderr FIFO"),
    }
    emit(&*sink, &stopped, Stream::Stderr, splitter.finish());
}

fn emit(
    sink: &dyn JobSink,
    stopped: &AtomicBool,
    stream: Stream,
    lines: impl IntoIterator<Item = Vec<u8>>,
) {
    for line in lines {
        if stopped.load(Ordering::SeqCst) {
            return;
        }
        sink.line(stream, line);
    }
}
