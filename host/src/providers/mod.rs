//! Worker providers, host side.
//!
//! - [`capabilities`]: the native capabilities provider plugins import
//!   (`process`, `docker`), one module and one `add_to_linker` each, and
//!   [`Grants`], what a pool lets its provider use.
//!
//! The provider world itself (compiling, linking, calling under the
//! deadline) is [`crate::plugins::provider`]. The provisioning loop, pools,
//! the worker ledger and registration tokens (issue 10) build on these.

pub mod capabilities;

pub use capabilities::Grants;
