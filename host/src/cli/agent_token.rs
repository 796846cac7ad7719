//! `hodei agent-token create|ls|revoke|agents|revoke-agent`: agents'
//! bootstrap tokens and the credentials they turned into (see
//! `auth::agents`).

use std::time::Duration;

use serde_json::{Value, json};

use super::client::ApiClient;

/// Subcommands of `hodei agent-token`.
#[derive(Debug, clap::Subcommand)]
pub enum AgentTokenCommand {
    /// Create a bootstrap token; prints it once. Give it to one agent as
    /// `HODEI_TOKEN`: its first connection binds the agent's id to it.
    Create {
        /// The agent name that may redeem it (`--name` of hodei-agent).
        #[arg(long)]
        name: Option<String>,
        /// The pool its agents join (their `pool` label).
        #[arg(long)]
        pool: Option<String>,
        /// How long it may be redeemed: `90s`, `15m`, `2h`, `7d`.
        #[arg(long, default_value = "15m", value_parser = parse_ttl)]
        ttl: Duration,
        /// How many agents may redeem it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
    },
    /// List bootstrap tokens: id, binding, uses, expiry, revocation.
    Ls,
    /// Revoke a bootstrap token (`atk_…`): no more agents may redeem it.
    Revoke {
        /// The token's id.
        id: String,
    },
    /// List agent credentials: agent id, name, token, last connection.
    Agents,
    /// Revoke an agent's credential: its stream closes, it is refused.
    RevokeAgent {
        /// The agent's id (`hodei agent-token agents`).
        agent_id: String,
    },
}

/// `90s`, `15m`, `2h`, `7d`, or plain seconds.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 15m"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown unit {other:?} (s, m, h, d)")),
    };
    Ok(Duration::from_secs(n.saturating_mul(seconds)))
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// Runs a `hodei agent-token` subcommand.
pub async fn run(client: &ApiClient, command: AgentTokenCommand) -> anyhow::Result<()> {
    match command {
        AgentTokenCommand::Create {
            name,
            pool,
            ttl,
            uses,
        } => {
            let created = client
                .send_json(
                    reqwest::Method::POST,
                    "/api/v1/agent-tokens",
                    &json!({ "name": name, "pool": pool, "ttl_secs": ttl.as_secs(), "uses": uses }),
                )
                .await?;
            println!("{}", text(&created["token"]));
            eprintln!(
                "created {} for {} agent(s), redeemable until {} (shown once; only its hash is kept)",
                text(&created["record"]["id"]),
                uses,
                text(&created["record"]["expires_at"]),
            );
        }
        AgentTokenCommand::Ls => {
            let listing = client.get("/api/v1/agent-tokens").await?;
            println!(
                "{:<18}  {:<16}  {:<12}  {:>9}  {:<27}  REVOKED",
                "ID", "NAME", "POOL", "USED", "EXPIRES"
            );
            for t in listing["tokens"].as_array().into_iter().flatten() {
                println!(
                    "{:<18}  {:<16}  {:<12}  {:>9}  {:<27}  {}",
                    text(&t["id"]),
                    text(&t["name"]),
                    text(&t["pool"]),
                    format!("{}/{}", t["used"], t["uses"]),
                    text(&t["expires_at"]),
                    text(&t["revoked_at"]),
                );
            }
        }
        AgentTokenCommand::Revoke { id } => {
            client
                .send_json(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/agent-tokens/{id}"),
                    &Value::Null,
                )
                .await?;
            println!("revoked {id}");
        }
        AgentTokenCommand::Agents => {
            let listing = client.get("/api/v1/agents/credentials").await?;
            println!(
                "{:<34}  {:<16}  {:<18}  {:<27}  REVOKED",
                "AGENT", "NAME", "TOKEN", "LAST CONNECTED"
            );
            for c in listing["credentials"].as_array().into_iter().flatten() {
                println!(
                    "{:<34}  {:<16}  {:<18}  {:<27}  {}",
                    text(&c["agent_id"]),
                    text(&c["name"]),
                    text(&c["token_id"]),
                    text(&c["last_used_at"]),
                    text(&c["revoked_at"]),
                );
            }
        }
        AgentTokenCommand::RevokeAgent { agent_id } => {
            client
                .send_json(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/agents/credentials/{agent_id}"),
                    &Value::Null,
                )
                .await?;
            println!("revoked agent {agent_id}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_with_units() {
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_ttl("m").is_err());
        assert!(parse_ttl("5w").is_err());
    }
}
