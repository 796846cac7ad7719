//! What a Hodei Jobs plugin author depends on.
//!
//! A plugin is a WebAssembly component implementing one of the WIT worlds in
//! `wit/`. This crate hides the generated bindings: an author implements a
//! plain-Rust trait, calls one export macro, and unit-tests the logic with
//! plain `cargo test` on the host target — no Wasm runtime needed.
//!
//! The crate's README.md is the tutorial (scaffold, write, test, build, load
//! and activate a policy) and the reference of the WIT world and its limits.
//!
//! # Layout
//! - [`policy`] — scheduling policies (`hodei:scheduler`): the [`Policy`]
//!   trait, the [`Job`] / [`Worker`] views, [`export_policy!`], and
//!   [`policy::testing`] builders that run a policy the way the host does.
//!
//! - [`provider`] — worker providers (`hodei:provider`): the [`Provider`]
//!   trait, the capability traits it is written against ([`Process`],
//!   [`Docker`], [`Kubernetes`]) with their imported implementations,
//!   [`export_provider!`], and [`provider::testing`] fakes of the
//!   capabilities for native unit tests.
//!
//! - [`masker`] — secret maskers (`hodei:masker`): the [`Masker`] trait
//!   (configuration, one session per job attempt) and [`MaskSession`] (lines
//!   in, masked lines out), [`export_masker!`], and [`masker::testing`],
//!   which drives a session the way the host does.
//!
//! # A minimal policy
//! ```
//! use hodei_plugin_sdk::policy::{Job, Policy, Worker};
//!
//! /// Place the job on the worker with the most free memory.
//! struct MostMemory;
//!
//! impl Policy for MostMemory {
//!     const NAME: &'static str = "most-memory";
//!
//!     fn configure(config: &str) -> Result<Self, String> {
//!         match config.trim() {
//!             "" => Ok(Self),
//!             other => Err(format!("most-memory takes no configuration, got {other:?}")),
//!         }
//!     }
//!
//!     // `filter` keeps its default: labels, free slot, cpu, memory.
//!
//!     fn score(&self, _job: &Job, worker: &Worker<'_>) -> i64 {
//!         i64::try_from(worker.memory_free_mb()).unwrap_or(i64::MAX)
//!     }
//! }
//!
//! hodei_plugin_sdk::export_policy!(MostMemory);
//!
//! // Native test: same filter + score + pick as the host.
//! use hodei_plugin_sdk::policy::testing::{decide, job, worker};
//! let policy = MostMemory::configure("").expect("empty config is accepted");
//! let workers = [
//!     worker().memory(8192, 1024),
//!     worker().memory(8192, 6000),
//!     worker().memory(8192, 7000).slots(4, 0), // full: filtered out
//! ];
//! assert_eq!(decide(&policy, &job().memory(512), &workers), Some(1));
//! ```
//!
//! Build the plugin crate (`crate-type = ["cdylib", "rlib"]`) with
//! `cargo build --release --target wasm32-wasip2`; the `.wasm` produced is
//! the component the host loads.

// Lets the generated bindings name this crate by the same path from inside it
// and from a plugin crate's `export_policy!` expansion.
extern crate self as hodei_plugin_sdk;

pub mod masker;
pub mod policy;
pub mod provider;

pub use masker::{MaskSession, Masker};
pub use policy::{Job, Policy, Reject, Worker};
pub use provider::{Docker, Kubernetes, Process, Provider};

/// Re-exports used by the macros; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}
