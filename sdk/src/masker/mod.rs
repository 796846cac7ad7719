//! Secret maskers: the `hodei:masker` world (wit/masker.wit).
//!
//! The host runs the active maskers as a chain over every batch of log
//! lines an agent sends, before anything is stored, streamed or counted.
//! For each job attempt it opens one session with that job's secret values,
//! then hands the session the attempt's lines batch by batch, in order; the
//! session answers one masked line per line. A session may keep state from
//! line to line and batch to batch, per stream (inside a private key block,
//! say).
//!
//! Implement [`Masker`] (configuration, and how a session starts) and
//! [`MaskSession`] (how a line is masked), export with
//! [`export_masker!`](crate::export_masker), and test natively with
//! [`testing`], which drives a session the way the host does.
//!
//! A masker that panics, loops or answers the wrong number of lines fails
//! *closed*: the host masks that batch itself with its built-in literal
//! masker and reports the plugin. So a masker need not be perfect to be
//! safe, but it must be deterministic: the same lines give the same output
//! however the host happens to cut them into batches.
//!
//! ```
//! use hodei_plugin_sdk::masker::{MaskSession, Masker, Stream};
//!
//! /// Masks each secret where it appears literally.
//! struct Naive;
//!
//! /// One job attempt: its secrets.
//! struct NaiveSession {
//!     secrets: Vec<Vec<u8>>,
//! }
//!
//! impl Masker for Naive {
//!     const NAME: &'static str = "naive";
//!     const VERSION: &'static str = "0.1.0";
//!     const DESCRIPTION: &'static str = "the job's secrets, literally";
//!     type Session = NaiveSession;
//!
//!     fn configure(_config: &str) -> Result<Self, String> {
//!         Ok(Self)
//!     }
//!
//!     fn session(&self, secrets: &[String]) -> NaiveSession {
//!         let secrets = secrets.iter().map(|s| s.as_bytes().to_vec()).collect();
//!         NaiveSession { secrets }
//!     }
//! }
//!
//! impl MaskSession for NaiveSession {
//!     fn mask_line(&mut self, _stream: Stream, mut line: Vec<u8>) -> Vec<u8> {
//!         for secret in &self.secrets {
//!             while let Some(at) = line.windows(secret.len()).position(|w| w == secret) {
//!                 line.splice(at..at + secret.len(), *b"***");
//!             }
//!         }
//!         line
//!     }
//! }
//!
//! hodei_plugin_sdk::export_masker!(Naive);
//!
//! // Native test: one session, batches of lines, as the host sends them.
//! use hodei_plugin_sdk::masker::testing::{TestSession, stderr, stdout};
//! let mut session = TestSession::open(&Naive, &["hunter2-long"]);
//! let masked = session.mask(&[stdout("pw=hunter2-long"), stderr("ok")]);
//! assert_eq!(masked, [b"pw=***".to_vec(), b"ok".to_vec()]);
//! ```

#[doc(hidden)]
pub mod bindings;
mod export;
pub mod testing;

pub use bindings::{Info, Stream};

/// One line of a batch: its stream and its bytes, without terminator (not
/// always UTF-8). The WIT carries a batch as columns (`lines`); the export
/// hands a session one `Entry` per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where the line came from.
    pub stream: Stream,
    /// The line's bytes.
    pub data: Vec<u8>,
}

#[doc(hidden)]
pub use export::Exported;

/// A secret masker: its configuration, and how a session starts.
///
/// One instance lives in the component, created by [`Masker::configure`];
/// the host opens any number of sessions on it, one per job attempt, and
/// drops each at the attempt's end. Keep the instance immutable after
/// `configure`: the state of a job lives in its session.
pub trait Masker: Sized + 'static {
    /// A short, stable name, e.g. `literal`; what the host shows.
    const NAME: &'static str;
    /// The masker's own version, usually `env!("CARGO_PKG_VERSION")`.
    const VERSION: &'static str;
    /// One line on what it masks.
    const DESCRIPTION: &'static str;

    /// One job attempt's masking state.
    type Session: MaskSession;

    /// Builds the masker from the operator's configuration string. `""`
    /// means "defaults" and should be accepted. An error refuses the
    /// configuration (the host keeps its previous chain), so say what is
    /// accepted.
    fn configure(config: &str) -> Result<Self, String>;

    /// Opens a session for one job attempt with its secret values (possibly
    /// none, possibly multi-line; never shorter than the host's minimum
    /// secret length, 6 bytes). Cannot fail: a masker that cannot work with
    /// these secrets should panic, and the host masks the attempt itself.
    fn session(&self, secrets: &[String]) -> Self::Session;
}

/// One job attempt's masking: lines in, masked lines out, in order.
pub trait MaskSession: 'static {
    /// Masks one line of `stream` (without its terminator; not always
    /// UTF-8). Return `line` itself when there is nothing to mask: that
    /// costs no copy.
    fn mask_line(&mut self, stream: Stream, line: Vec<u8>) -> Vec<u8>;

    /// `true`: the SDK masks each batch by calling
    /// [`MaskSession::mask_borrowed`] on every line where it lies in the
    /// host's batch, and [`MaskSession::mask`] is not called. A session
    /// that masks line by line gains by it: a clean line then costs the
    /// component neither an allocation nor a copy, and a batch with no
    /// line changed is handed back without one. Default `false`.
    const BORROWS_LINES: bool = false;

    /// Masks one line borrowed from the batch, answering `None` when it
    /// stays as it is (used when [`MaskSession::BORROWS_LINES`] is true; it
    /// must answer as [`MaskSession::mask_line`] would). The default copies
    /// the line into `mask_line`.
    fn mask_borrowed(&mut self, stream: Stream, line: &[u8]) -> Option<Vec<u8>> {
        Some(self.mask_line(stream, line.to_vec()))
    }

    /// Masks one batch of consecutive lines: exactly one answer per entry,
    /// in order (a different count is a failure). The default calls
    /// [`MaskSession::mask_line`] on each; override to look at a batch as
    /// a whole, but answer the same as line by line would, since the host
    /// cuts batches as output arrives.
    fn mask(&mut self, entries: Vec<Entry>) -> Vec<Vec<u8>> {
        entries
            .into_iter()
            .map(|entry| self.mask_line(entry.stream, entry.data))
            .collect()
    }
}

/// Exports `$masker` (a type implementing [`Masker`]) as the component's
/// `hodei:masker/masker@0.1.0` interface, its sessions as the `session`
/// resource. Use once, in the plugin crate's `lib.rs`:
///
/// ```ignore
/// hodei_plugin_sdk::export_masker!(MyMasker);
/// ```
///
/// `configure` replaces the stored instance on success (and keeps the old
/// one on error); a session opened before any successful `configure` first
/// runs `configure("")`.
#[macro_export]
macro_rules! export_masker {
    ($masker:ty) => {
        // Only a Wasm build exports anything; a native build is for tests.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __HodeiExportedMasker = $crate::masker::Exported<$masker>;
            $crate::masker::bindings::export!(
                __HodeiExportedMasker with_types_in $crate::masker::bindings
            );
        };
        // Natively, still check that the type is a masker.
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = || {
            fn is_masker<M: $crate::masker::Masker>() {}
            is_masker::<$masker>();
        };
    };
}
