//! `hodei policy ls|load|use|rm`: manage scheduling policies of a running
//! host.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;

use super::client::ApiClient;

/// Subcommands of `hodei policy`.
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// List policies: which is active, calls, errors, latency.
    Ls,
    /// Upload a component (.wasm built for wasm32-wasip2).
    Load {
        /// The component file.
        file: PathBuf,
        /// Name to load it under.
        #[arg(long)]
        name: String,
    },
    /// Make a policy active for the next decisions.
    Use {
        /// Policy name (`builtin` for the native default).
        name: String,
        /// Configuration passed to the plugin's `configure`.
        #[arg(long, default_value = "")]
        config: String,
    },
    /// Remove an uploaded policy that is not active.
    Rm {
        /// Policy name.
        name: String,
    },
}

/// The table of loaded plugins (policies, maskers): name, source, a mark
/// column (`mark` of each entry), calls, errors, latency, last error.
pub(super) fn print_plugins(
    plugins: &serde_json::Value,
    mark_title: &str,
    mark: impl Fn(&serde_json::Value) -> String,
) {
    println!(
        "{:<16}  {:<9}  {:>6}  {:>8}  {:>6}  {:>8}  {:>8}  LAST ERROR",
        "NAME", "SOURCE", mark_title, "CALLS", "ERRORS", "P50 µs", "P99 µs"
    );
    for p in plugins.as_array().into_iter().flatten() {
        let last = p["last_error"]
            .as_object()
            .map(|e| {
                let message = e["message"].as_str().unwrap_or_default();
                let first = message.lines().next().unwrap_or_default();
                format!("{}: {first}", e["function"].as_str().unwrap_or("?"))
            })
            .unwrap_or_default();
        println!(
            "{:<16}  {:<9}  {:>6}  {:>8}  {:>6}  {:>8}  {:>8}  {last}",
            p["name"].as_str().unwrap_or("-"),
            p["source"].as_str().unwrap_or("-"),
            mark(p),
            p["calls"].as_u64().unwrap_or(0),
            p["errors"].as_u64().unwrap_or(0),
            p["p50_us"].as_u64().unwrap_or(0),
            p["p99_us"].as_u64().unwrap_or(0),
        );
    }
}

fn print(listing: &serde_json::Value) {
    print_plugins(&listing["policies"], "ACTIVE", |p| {
        if p["active"] == json!(true) { "*" } else { "" }.to_owned()
    });
}

/// Runs a `hodei policy` subcommand.
pub async fn run(client: &ApiClient, command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Ls => print(&client.get("/api/v1/policies").await?),
        PolicyCommand::Load { file, name } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let listing = client.upload_policy(&name, bytes).await?;
            println!("loaded {name}");
            print(&listing);
        }
        PolicyCommand::Use { name, config } => {
            let listing = client
                .send_json(
                    reqwest::Method::PUT,
                    "/api/v1/policies/active",
                    &json!({ "name": name, "config": config }),
                )
                .await?;
            println!(
                "active: {}",
                listing["active"]["name"].as_str().unwrap_or("?")
            );
        }
        PolicyCommand::Rm { name } => {
            client
                .send_json(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/policies/{name}"),
                    &serde_json::Value::Null,
                )
                .await?;
            println!("removed {name}");
        }
    }
    Ok(())
}
