//! Reading a job's log: a finished read, or a live follow.
//!
//! Followers read the store, never the bus: the bus only says "something
//! about job X changed", and the follower re-reads from the sequence after
//! the last line it delivered. So every line is delivered exactly once and
//! in order, however slow the follower or however many events it missed,
//! and the log store is the one source of truth.
//!
//! On a shared store (several hosts on one PostgreSQL) the lines of a job
//! whose agent is connected to another host never show up on this host's
//! bus, so a follower also re-reads the store every [`SHARED_POLL`]: new
//! lines reach it within that time, wherever they were written.

use std::sync::Arc;

use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use crate::bus::Event;
use crate::domain::{Job, JobId, LogRecord};
use crate::jobs::JobService;
use crate::store::StoreError;

/// Lines read from the store per query.
const PAGE: usize = 1000;
/// How often a follower re-reads a shared store without being woken.
const SHARED_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// What a log reader yields.
#[derive(Debug)]
pub enum LogItem {
    /// One line.
    Line(LogRecord),
    /// The end: the job as it stands (terminal when following).
    Done(Box<Job>),
}

/// Where to start reading.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// After this sequence (0 = from the beginning).
    After(u64),
    /// The last `n` lines stored.
    Tail(u64),
}

/// Reads `id`'s log from `from`. With `follow`, waits for new lines until
/// the job ends; without, stops at what is stored now. Ends with
/// [`LogItem::Done`] either way.
pub fn read(
    jobs: Arc<JobService>,
    id: JobId,
    from: Start,
    follow: bool,
) -> impl Stream<Item = Result<LogItem, StoreError>> {
    async_stream::try_stream! {
        // Subscribe before the first read, so nothing that happens between
        // the read and the wait can be missed.
        let mut events = jobs.bus().subscribe();
        let store = Arc::clone(jobs.store());
        let poll = store.is_shared();
        let mut next = match from {
            Start::After(seq) => seq,
            Start::Tail(n) => store.log_head(id).await?.saturating_sub(n),
        };
        loop {
            let lines = store.read_logs(id, next, PAGE).await?;
            if let Some(last) = lines.last() {
                next = last.sequence;
                for line in lines {
                    yield LogItem::Line(line);
                }
                continue;
            }
            let job = store.get(id).await?.ok_or(StoreError::NotFound(id))?;
            if job.state.is_terminal() || !follow {
                // Lines stored between the read above and this look.
                for line in store.read_logs(id, next, usize::MAX).await? {
                    yield LogItem::Line(line);
                }
                yield LogItem::Done(Box::new(job));
                break;
            }
            loop {
                let event = if poll {
                    match tokio::time::timeout(SHARED_POLL, events.recv()).await {
                        Ok(event) => event,
                        Err(_) => break,
                    }
                } else {
                    events.recv().await
                };
                match event {
                    Ok(event) => match *event {
                        Event::LogAppended(job, _) | Event::JobStateChanged(job, _) if job == id => break,
                        _ => {}
                    },
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }
}
