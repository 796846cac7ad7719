//! Builds the in-tree plugins (plugins/) for wasm32-wasip2 so the host can
//! embed them, with no extra step for whoever builds the host.
//!
//! The nested cargo uses its own target dir (`target/plugins`): sharing the
//! outer build's directory would deadlock on its lock. Wrapper and flag
//! variables of the outer build (clippy's driver, coverage flags...) are
//! not passed on: they are meant for the host, not for the Wasm guests.

use std::path::PathBuf;
use std::process::Command;

const PLUGINS: &[&str] = &[
    "hodei-policy-binpack",
    "hodei-policy-least-loaded",
    "hodei-policy-fault-fixture",
    "hodei-policy-tier-fixture",
    "hodei-provider-local",
    "hodei-provider-docker",
    "hodei-provider-fault-fixture",
    "hodei-provider-kubernetes",
    "hodei-masker-literal",
    "hodei-masker-patterns",
    "hodei-masker-fault-fixture",
];

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let root = manifest_dir
        .parent()
        .expect("host/ is inside the workspace")
        .to_owned();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("plugins");
    for watched in ["plugins", "sdk", "wit", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&root)
        .args([
            "build",
            "--release",
            // A plugin is small and on the scheduler's hot path: one
            // codegen unit with fat LTO lets the SDK's per-worker helpers
            // inline into the policy's loops.
            "--config",
            "profile.release.lto=\"fat\"",
            "--config",
            "profile.release.codegen-units=1",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for plugin in PLUGINS {
        command.args(["-p", plugin]);
    }
    for var in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        command.env_remove(var);
    }
    let status = command
        .status()
        .expect("cannot run cargo to build the plugins");
    assert!(
        status.success(),
        "building the Wasm plugins failed (see above). If the wasm32-wasip2 target is missing, \
         install it with `rustup target add wasm32-wasip2` (scripts/test.sh and scripts/up.sh do)."
    );
    println!(
        "cargo:rustc-env=HODEI_PLUGIN_DIR={}",
        target_dir.join("wasm32-wasip2").join("release").display()
    );
}
