//! `hodei token create|ls|revoke`: API tokens of a running host.

use serde_json::{Value, json};

use super::client::ApiClient;

/// Subcommands of `hodei token`.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints it once (keep it: only its hash is stored).
    Create {
        /// What the token is for.
        #[arg(long)]
        name: String,
        /// A scope it grants (repeat): jobs:read, jobs:submit, jobs:cancel,
        /// logs:read, workers:read, workers:manage, admin.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Lifetime in seconds [default: until revoked].
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
    /// List tokens: id, name, scopes, expiry, last use, revocation.
    Ls,
    /// Revoke a token by its id (`tok_…`): refused from now on.
    Revoke {
        /// The token's id.
        id: String,
    },
}

/// Runs a `hodei token` subcommand.
pub async fn run(client: &ApiClient, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            name,
            scopes,
            ttl_secs,
        } => {
            let created = client
                .send_json(
                    reqwest::Method::POST,
                    "/api/v1/tokens",
                    &json!({ "name": name, "scopes": scopes, "ttl_secs": ttl_secs }),
                )
                .await?;
            println!("{}", created["token"].as_str().unwrap_or_default());
            eprintln!(
                "created {} (shown once; only its hash is kept)",
                created["record"]["id"].as_str().unwrap_or("?")
            );
        }
        TokenCommand::Ls => {
            let listing = client.get("/api/v1/tokens").await?;
            println!(
                "{:<18}  {:<24}  {:<40}  {:<27}  LAST USED",
                "ID", "NAME", "SCOPES", "EXPIRES / REVOKED"
            );
            for t in listing["tokens"].as_array().into_iter().flatten() {
                let scopes: Vec<&str> = t["scopes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let end = match (t["revoked_at"].as_str(), t["expires_at"].as_str()) {
                    (Some(at), _) => format!("revoked {at}"),
                    (None, Some(at)) => at.to_owned(),
                    (None, None) => "-".to_owned(),
                };
                println!(
                    "{:<18}  {:<24}  {:<40}  {:<27}  {}",
                    t["id"].as_str().unwrap_or("-"),
                    t["name"].as_str().unwrap_or("-"),
                    scopes.join(","),
                    end,
                    t["last_used_at"].as_str().unwrap_or("-"),
                );
            }
        }
        TokenCommand::Revoke { id } => {
            client
                .send_json(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/tokens/{id}"),
                    &Value::Null,
                )
                .await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}
