//! The wit-bindgen expansion of `wit/provider.wit`, world `any-provider`.
//! Public only so `export_provider!` and the imported capabilities can
//! reach it.
//!
//! A component built from these bindings imports only the capability
//! functions its code calls: the linker drops the rest, and so does the
//! component encoder, so a provider calling `process` alone is a
//! `local-provider`.

// The generated ABI glue (exported `extern "C"` functions, lifting and
// lowering of lists) is unsafe by nature; nothing hand-written lives here.
#![allow(unsafe_code, missing_debug_implementations)]

wit_bindgen::generate!({
    world: "any-provider",
    path: "../wit/provider.wit",
    pub_export_macro: true,
    export_macro_name: "export",
    default_bindings_module: "hodei_plugin_sdk::provider::bindings",
    runtime_path: "hodei_plugin_sdk::__private::wit_bindgen::rt",
    additional_derives: [PartialEq, Eq],
});

pub use exports::hodei::provider::provider::Guest;
