//! WebAssembly plugins: the wasmtime engine, its limits, and one module per
//! WIT world.
//!
//! - [`engine`]: the shared engine, compile cache, epoch deadlines, memory
//!   caps, the sandboxed WASI context and plugin output routed to the log.
//! - [`policy`]: the `hodei:scheduler` world (wit/scheduler.wit), host side.
//! - [`provider`]: the `hodei:provider` world (wit/provider.wit), host
//!   side: capability checks, linking what a pool grants, lifecycle calls
//!   under the deadline (plugin time only; host I/O excluded).
//! - [`masker`]: the `hodei:masker` world (wit/masker.wit), host side:
//!   sessions per job attempt, batches checked for their line count. The
//!   chain and its fallback live in `crate::masking`.
//! - [`health`]: calls, errors, latency and backoff of a loaded plugin.
//! - [`registry`]: loaded policies, the active one behind an `ArcSwap`,
//!   fallback to the built-in policy, failure counting and backoff.
//! - [`catalog`]: persistence of uploads and of the active choice.
//! - [`in_tree`]: the policies shipped inside this binary (plugins/),
//!   and the in-tree providers, built for wasm32-wasip2 by this crate's
//!   build script.

pub mod catalog;
pub mod engine;
pub mod health;
pub mod in_tree;
pub mod masker;
pub mod policy;
pub mod provider;
pub mod registry;

pub use catalog::{ActiveChoice, CatalogError, PolicyCatalog};
pub use engine::{Limits, PluginEngine};
pub use registry::{PolicyRegistry, PolicyView, Source, blocking_allowed};

/// What can go wrong loading or managing a plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The bytes are not a usable component of the right world.
    #[error("invalid plugin: {0}")]
    Invalid(String),
    /// A component of the right world, built against a version of its WIT
    /// package this host does not speak: it must be rebuilt.
    #[error(
        "the component was built against hodei:scheduler@{found}; this host speaks \
         hodei:scheduler@{supported}: rebuild it against wit/scheduler.wit of this release \
         (see wit/RATIONALE.md, Versioning)"
    )]
    WorldVersion {
        /// The version the component exports.
        found: String,
        /// The version this host links.
        supported: String,
    },
    /// The plugin refused its configuration or failed to start with it.
    #[error("the plugin refused to start: {0}")]
    Refused(String),
    /// No plugin by that name.
    #[error("no plugin named {0:?}")]
    NotFound(String),
    /// The name is not allowed (`[a-z0-9_-]{{1,64}}`, not `builtin`).
    #[error("invalid plugin name {0:?}: use 1-64 of a-z, 0-9, '-', '_'")]
    BadName(String),
    /// Built-in or in-tree: cannot be replaced or removed.
    #[error("plugin {0:?} ships with hodei and cannot be replaced or removed")]
    Reserved(String),
    /// An active plugin (the active policy, a masker in the chain) cannot
    /// be removed.
    #[error("plugin {0:?} is in use; activate another one first")]
    Active(String),
    /// wasmtime itself failed.
    #[error("plugin engine error: {0}")]
    Engine(String),
}

impl PluginError {
    /// Wraps an engine-level error.
    pub fn engine(err: impl std::fmt::Display) -> Self {
        Self::Engine(err.to_string())
    }
}
