//! The wit-bindgen expansion of `wit/masker.wit`, world `secret-masker`.
//! Public only so `export_masker!` can reach it.

// The generated ABI glue (exported `extern "C"` functions, lifting and
// lowering of lists, the resource's handle table) is unsafe by nature;
// nothing hand-written lives here.
#![allow(unsafe_code, missing_debug_implementations)]

wit_bindgen::generate!({
    world: "secret-masker",
    path: "../wit/masker.wit",
    pub_export_macro: true,
    export_macro_name: "export",
    default_bindings_module: "hodei_plugin_sdk::masker::bindings",
    runtime_path: "hodei_plugin_sdk::__private::wit_bindgen::rt",
    // Tests compare entries; a masker may key per-stream state by stream.
    additional_derives: [PartialEq, Eq, Hash],
});

pub use exports::hodei::masker::masker::{Guest, GuestSession};
pub use hodei::masker::types::{Info, Lines, Masked, Stream};
