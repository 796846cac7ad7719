//! `hodei masker ls|load|use|rm`: manage the secret maskers of a running
//! host and the chain every job's output passes through.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::{Value, json};

use super::client::ApiClient;

/// Subcommands of `hodei masker`.
#[derive(Debug, clap::Subcommand)]
pub enum MaskerCommand {
    /// List maskers: the chain, calls, errors, latency, fallbacks.
    Ls,
    /// Upload a component (.wasm built for wasm32-wasip2).
    Load {
        /// The component file.
        file: PathBuf,
        /// Name to load it under.
        #[arg(long)]
        name: String,
    },
    /// Make these maskers the chain, in this order, for the next batches:
    /// `hodei masker use literal patterns`, or `NAME=CONFIG` to configure
    /// one (`patterns='{"rules":["jwt"]}'`).
    Use {
        /// Masker names, optionally `NAME=CONFIG`.
        #[arg(required = true)]
        maskers: Vec<String>,
    },
    /// Remove an uploaded masker that is not in the chain.
    Rm {
        /// Masker name.
        name: String,
    },
}

fn print(listing: &Value) {
    let chain: Vec<&str> = listing["chain"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str())
        .collect();
    println!("chain: {}", chain.join(" → "));
    let m = &listing["masking"];
    println!(
        "batches {}  lines {}  fallbacks {}  withheld {}  sessions {}",
        m["batches"], m["lines"], m["fallbacks"], m["withheld"], m["sessions"]
    );
    super::policy::print_plugins(&listing["maskers"], "CHAIN", |p| {
        p["position"]
            .as_u64()
            .map_or_else(String::new, |i| (i + 1).to_string())
    });
}

/// Runs a `hodei masker` subcommand.
pub async fn run(client: &ApiClient, command: MaskerCommand) -> anyhow::Result<()> {
    match command {
        MaskerCommand::Ls => print(&client.get("/api/v1/maskers").await?),
        MaskerCommand::Load { file, name } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let listing = client
                .upload_component("/api/v1/maskers", &name, bytes)
                .await?;
            println!("loaded {name}");
            print(&listing);
        }
        MaskerCommand::Use { maskers } => {
            let chain: Vec<Value> = maskers
                .iter()
                .map(|m| match m.split_once('=') {
                    Some((name, config)) => json!({ "name": name, "config": config }),
                    None => json!({ "name": m, "config": "" }),
                })
                .collect();
            let listing = client
                .send_json(
                    reqwest::Method::PUT,
                    "/api/v1/maskers/chain",
                    &json!({ "maskers": chain }),
                )
                .await?;
            print(&listing);
        }
        MaskerCommand::Rm { name } => {
            client
                .send_json(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/maskers/{name}"),
                    &Value::Null,
                )
                .await?;
            println!("removed {name}");
        }
    }
    Ok(())
}
