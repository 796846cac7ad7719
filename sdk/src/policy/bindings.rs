//! The wit-bindgen expansion of `wit/scheduler.wit`, world
//! `scheduling-policy`. Public only so `export_policy!` can reach it.

// The generated ABI glue (exported `extern "C"` functions, lifting and
// lowering of lists) is unsafe by nature; nothing hand-written lives here.
#![allow(unsafe_code, missing_debug_implementations)]

wit_bindgen::generate!({
    world: "scheduling-policy",
    path: "../wit/scheduler.wit",
    pub_export_macro: true,
    export_macro_name: "export",
    default_bindings_module: "hodei_plugin_sdk::policy::bindings",
    runtime_path: "hodei_plugin_sdk::__private::wit_bindgen::rt",
    // `Worker` derives PartialEq and borrows the label columns.
    additional_derives: [PartialEq],
});

pub use exports::hodei::scheduler::policy::Guest;
pub use hodei::scheduler::types::{Demand, LabelColumn, Ranking, Workers};
