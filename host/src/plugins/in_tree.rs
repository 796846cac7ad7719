//! Policies, worker providers and secret maskers shipped inside the `hodei` binary.
//!
//! `host/build.rs` builds the crates under plugins/ for wasm32-wasip2 (in
//! its own target dir, `target/plugins`) and this module embeds the
//! resulting components, so a fresh host has them without any file on disk.

/// `(name, component bytes)` of every in-tree policy.
pub const POLICIES: &[(&str, &[u8])] = &[
    (
        "binpack",
        include_bytes!(concat!(
            env!("HODEI_PLUGIN_DIR"),
            "/hodei_policy_binpack.wasm"
        )),
    ),
    (
        "least-loaded",
        include_bytes!(concat!(
            env!("HODEI_PLUGIN_DIR"),
            "/hodei_policy_least_loaded.wasm"
        )),
    ),
];

/// `(name, component bytes)` of every in-tree worker provider.
pub const PROVIDERS: &[(&str, &[u8])] = &[
    (
        "local",
        include_bytes!(concat!(
            env!("HODEI_PLUGIN_DIR"),
            "/hodei_provider_local.wasm"
        )),
    ),
    (
        "docker",
        include_bytes!(concat!(
            env!("HODEI_PLUGIN_DIR"),
            "/hodei_provider_docker.wasm"
        )),
    ),
    (
        "kubernetes",
        include_bytes!(concat!(
            env!("HODEI_PLUGIN_DIR"),
            "/hodei_provider_kubernetes.wasm"
        )),
    ),
];

/// `(name, component bytes)` of every in-tree secret masker.
pub const MASKERS: &[(&str, &[u8])] = &[
    (
        "literal",
        include_bytes!(concat!(
            env!("HODEI_PLUGIN_DIR"),
            "/hodei_masker_literal.wasm"
        )),
    ),
    (
        "patterns",
        include_bytes!(concat!(
            env!("HODEI_PLUGIN_DIR"),
            "/hodei_masker_patterns.wasm"
        )),
    ),
];

/// Directory holding every plugin component this build produced, test
/// fixtures included (tests load those over the API).
pub const PLUGIN_DIR: &str = env!("HODEI_PLUGIN_DIR");
