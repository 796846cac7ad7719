//! Worker providers, host side: pools of workers created on demand.
//!
//! - [`pools`]: a pool's configuration and its validation.
//! - [`provisioner`]: the pools of this host; adding one checks it whole
//!   (spec, grants against the provider's imports, the provider's own
//!   reading of its configuration) before its loop starts.
//! - [`pool_loop`]: one pool's loop: settle the ledger, reconcile with the
//!   provider, scale up for demand, retire idle workers.
//! - [`instance`]: a provider instance called from async code.
//! - [`board`]: what each pool is doing, for the API and pending reasons.
//! - [`tokens`]: one-time registration tokens (only their hash is kept).
//! - [`capabilities`]: the native capabilities provider plugins import
//!   (`process`, `docker`), one module and one `add_to_linker` each, and
//!   [`Grants`], what a pool lets its provider use.
//!
//! The provider world itself (compiling, linking, calling under the
//! deadline) is [`crate::plugins::provider`]; the worker ledger is
//! [`crate::store::WorkerLedger`].

pub mod board;
pub mod capabilities;
pub mod instance;
pub mod pool_loop;
pub mod pools;
pub mod provisioner;
pub mod tokens;

pub use board::{PoolBoard, PoolView};
pub use capabilities::Grants;
pub use pools::{PoolError, PoolSpec};
pub use provisioner::Provisioner;
