//! What the two halves of the `hodei` command share, and the front half.
//!
//! `hodei` is two executables installed side by side. `hodei` (this
//! crate's binary) is small: it does `hodei run` itself (submit, and
//! follow the log unless `--detach`) with blocking HTTP requests, and
//! hands every other command line, unchanged, to `hodei-host` (the host
//! crate's binary: `serve`, the other client commands, `bench`, ...) by
//! `exec`, so the process, its id and its signals stay the same. A run
//! then pays for starting a 2 MB program rather than the host's 70 MB one
//! (wasmtime, redb, sqlx, ...), which was most of a detached submit's time
//! (README, `bench latency`).
//!
//! Everything both halves parse or print is defined here once: the global
//! options and `run`'s ([`args`]), where the API token comes from
//! ([`token`]), the texts of API errors and the retry of a rate-limited
//! submit ([`api`]), and how a followed job ends ([`outcome`]).

pub mod api;
pub mod args;
pub mod outcome;
pub mod token;

/// Exit code when hodei, not the job, failed (as `docker run`).
pub const EXIT_HODEI_FAILED: u8 = 125;

/// The executable that holds every command but the front's fast path,
/// installed beside `hodei`.
pub const HOST_BIN: &str = "hodei-host";
