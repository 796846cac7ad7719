//! `hodei plugin new|build`: start a scheduling-policy crate and build it
//! into the component `hodei policy load` takes.
//!
//! `new` writes a standalone crate (its own `[workspace]`) from the templates
//! in `plugin_template/`: a minimal policy with a native unit test, and a
//! README saying how to test, build, load and activate it. `build` runs
//! cargo for `wasm32-wasip2` and prints where the component landed.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Subcommands of `hodei plugin`.
#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Create a new scheduling-policy crate, ready to test and build.
    New {
        /// Crate and policy name: a lowercase letter, then up to 63 of
        /// a-z, 0-9, '-', '_'.
        name: String,
        /// Directory to create the crate in (as `DIR/NAME`).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The `hodei-plugin-sdk` crate to depend on (a directory). Default:
        /// the SDK of the checkout this `hodei` was built from.
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
    /// Build a plugin crate for wasm32-wasip2 and print the component's path.
    Build {
        /// The plugin crate's directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

/// The SDK next to this crate in the source tree. The SDK is not published
/// yet, so a generated crate depends on it by path.
const DEFAULT_SDK_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk");

/// What the target is called, for cargo and for rustup.
const TARGET: &str = "wasm32-wasip2";

/// `(file, template)` of a new crate, in the order they are written.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("plugin_template/Cargo.toml.tmpl"),
    ),
    ("src/lib.rs", include_str!("plugin_template/lib.rs.tmpl")),
    ("README.md", include_str!("plugin_template/README.md.tmpl")),
];

/// Runs a `hodei plugin` subcommand.
pub async fn run(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::New {
            name,
            dir,
            sdk_path,
        } => {
            let sdk = sdk_path.unwrap_or_else(|| PathBuf::from(DEFAULT_SDK_PATH));
            let crate_dir = new(&name, &dir, &sdk)?;
            println!("created {}", crate_dir.display());
            println!("next:");
            println!("  cd {}", crate_dir.display());
            println!("  cargo test");
            println!("  hodei plugin build");
            println!(
                "  hodei policy load target/{TARGET}/release/{}.wasm --name {name}",
                lib_name(&name)
            );
            println!("  hodei policy use {name}");
        }
        PluginCommand::Build { dir } => {
            let wasm = build(&dir).await?;
            println!("{}", wasm.display());
        }
    }
    Ok(())
}

/// Writes the crate `parent/name` depending on the SDK at `sdk`; returns
/// its directory.
fn new(name: &str, parent: &Path, sdk: &Path) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    let Some(sdk_dir) = sdk
        .canonicalize()
        .ok()
        .filter(|p| p.join("Cargo.toml").is_file())
    else {
        bail!(
            "no hodei-plugin-sdk crate at {}: the SDK is not on crates.io yet, so pass \
             --sdk-path with the sdk/ directory of a Hodei Jobs checkout",
            sdk.display()
        );
    };
    let crate_dir = parent.join(name);
    if crate_dir.exists() {
        let empty = crate_dir.read_dir().map(|mut d| d.next().is_none());
        if !empty.unwrap_or(false) {
            bail!(
                "{} already exists and is not an empty directory",
                crate_dir.display()
            );
        }
    }
    let sdk_path = toml::Value::String(sdk_dir.display().to_string()).to_string();
    for (file, template) in TEMPLATES {
        let text = template
            .replace("{{name}}", name)
            .replace("{{lib_name}}", &lib_name(name))
            .replace("{{type_name}}", &type_name(name))
            .replace("{{sdk_path}}", &sdk_path);
        let path = crate_dir.join(file);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(crate_dir)
}

/// The host's own policy names, crates every Rust program can name, and
/// the SDK: valid characters, but taken.
const RESERVED: &[&str] = &[
    "builtin",
    "binpack",
    "least-loaded",
    "alloc",
    "core",
    "proc-macro",
    "proc_macro",
    "std",
    "test",
    "hodei-plugin-sdk",
    "hodei_plugin_sdk",
];

/// Rust keywords, which cargo refuses as crate names.
const KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
    "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
    "return", "self", "static", "struct", "super", "trait", "true", "try", "type", "typeof",
    "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

/// A name that is at once a valid crate name and a valid policy name.
fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!(
            "invalid plugin name {name:?}: use a lowercase letter, then up to 63 of a-z, 0-9, \
             '-', '_' (e.g. zone-spread)"
        );
    }
    if RESERVED.contains(&name) || KEYWORDS.contains(&name) {
        bail!("invalid plugin name {name:?}: it is reserved; pick another");
    }
    Ok(())
}

/// The crate's library name: what cargo calls the `.wasm`.
fn lib_name(name: &str) -> String {
    name.replace('-', "_")
}

/// `my-policy` → `MyPolicy`; suffixed when it would shadow an SDK type the
/// template imports.
fn type_name(name: &str) -> String {
    let camel: String = name
        .split(['-', '_'])
        .flat_map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase())
                .into_iter()
                .chain(chars)
        })
        .collect();
    if ["Job", "Policy", "Worker"].contains(&camel.as_str()) {
        format!("{camel}Policy")
    } else {
        camel
    }
}

/// Builds the crate in `dir` for wasm32-wasip2 (release); returns the
/// absolute path of the component.
async fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "no Cargo.toml in {}: pass the plugin crate's directory (see `hodei plugin new`)",
            dir.display()
        );
    }
    let wasm = component_path(dir).await?;
    check_target_installed(dir).await?;
    let status = tokio::process::Command::new("cargo")
        .args(["build", "--release", "--target", TARGET])
        .current_dir(dir)
        .status()
        .await
        .context("cannot run cargo (is Rust installed? see https://rustup.rs)")?;
    if !status.success() {
        bail!("cargo build failed ({status}); see its output above");
    }
    if !wasm.is_file() {
        bail!(
            "cargo succeeded but {} is missing: is the crate's lib a cdylib?",
            wasm.display()
        );
    }
    Ok(wasm)
}

/// Where cargo will put the crate's component: the target dir (honouring
/// `CARGO_TARGET_DIR` and cargo config) from `cargo metadata`, and the lib
/// name of the package whose manifest is `dir/Cargo.toml`.
async fn component_path(dir: &Path) -> anyhow::Result<PathBuf> {
    let output = tokio::process::Command::new("cargo")
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(dir)
        .output()
        .await
        .context("cannot run cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("cargo metadata printed no JSON")?;
    let manifest = dir
        .join("Cargo.toml")
        .canonicalize()
        .context("cannot resolve the manifest path")?;
    let package = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path()))
        .with_context(|| format!("{} is a workspace, not a plugin crate", manifest.display()))?;
    let lib = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| {
            t["crate_types"]
                .as_array()
                .is_some_and(|types| types.iter().any(|k| k == "cdylib"))
        })
        .and_then(|t| t["name"].as_str())
        .with_context(|| {
            format!(
                "{} has no cdylib: add crate-type = [\"cdylib\", \"rlib\"] under [lib]",
                manifest.display()
            )
        })?;
    let target_dir = metadata["target_directory"]
        .as_str()
        .context("cargo metadata gave no target_directory")?;
    Ok(Path::new(target_dir)
        .join(TARGET)
        .join("release")
        .join(format!("{}.wasm", lib_name(lib))))
}

/// Fails with the fix when the toolchain `dir` builds with lacks the
/// wasm32-wasip2 standard library. Says nothing when rustc cannot be asked:
/// cargo will then report the problem itself.
async fn check_target_installed(dir: &Path) -> anyhow::Result<()> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(output) = tokio::process::Command::new(rustc)
        .args(["--print", "sysroot"])
        .current_dir(dir)
        .output()
        .await
    else {
        return Ok(());
    };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if output.status.success() && !sysroot.join("lib/rustlib").join(TARGET).is_dir() {
        bail!(
            "the {TARGET} target is not installed for the toolchain at {}: run \
             `rustup target add {TARGET}`",
            sysroot.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["myplacer", "zone-spread", "a", "gpu_first2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "My",
            "2fast",
            "-x",
            "a b",
            "zone.spread",
            "builtin",
            "fn",
            "std",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn type_and_lib_names() {
        assert_eq!(type_name("zone-spread"), "ZoneSpread");
        assert_eq!(type_name("gpu_first2"), "GpuFirst2");
        assert_eq!(type_name("worker"), "WorkerPolicy");
        assert_eq!(lib_name("zone-spread"), "zone_spread");
    }

    #[test]
    fn new_writes_a_crate_and_refuses_to_overwrite() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sdk = Path::new(DEFAULT_SDK_PATH);
        let dir = new("my-policy", tmp.path(), sdk).expect("created");
        let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
        let manifest: toml::Table = cargo.parse().expect("valid TOML");
        assert_eq!(manifest["package"]["name"].as_str(), Some("my-policy"));
        assert!(manifest.contains_key("workspace"));
        let sdk_dep = manifest["dependencies"]["hodei-plugin-sdk"]["path"]
            .as_str()
            .expect("path dependency");
        assert!(Path::new(sdk_dep).join("src/lib.rs").is_file(), "{sdk_dep}");
        let lib = std::fs::read_to_string(dir.join("src/lib.rs")).expect("lib.rs");
        assert!(lib.contains("pub struct MyPolicy;") && !lib.contains("{{"));
        let readme = std::fs::read_to_string(dir.join("README.md")).expect("README");
        assert!(readme.contains("release/my_policy.wasm --name my-policy"));

        let again = new("my-policy", tmp.path(), sdk).expect_err("not empty");
        assert!(
            again.to_string().contains("not an empty directory"),
            "{again}"
        );
        std::fs::create_dir(tmp.path().join("empty")).expect("mkdir");
        assert!(new("empty", tmp.path(), sdk).is_ok());
        let no_sdk = new("other", tmp.path(), &tmp.path().join("nowhere")).expect_err("no sdk");
        assert!(no_sdk.to_string().contains("--sdk-path"), "{no_sdk}");
    }
}
