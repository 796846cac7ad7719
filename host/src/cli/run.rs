//! `hodei run [OPTIONS] -- CMD...`: submit, follow the log live, and exit
//! with the job's exit code, like `docker run`.
//!
//! Exit codes: the job's own code when it exited; 124 when it timed out (as
//! timeout(1)); 130 when cancelled (as after Ctrl-C); 125 when hodei itself
//! failed (as docker). Ctrl-C cancels the job and keeps printing until the
//! agent confirms.

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::{Value, json};

use super::client::{ApiClient, Done};
use super::logs;

/// Exit code when hodei, not the job, failed.
pub const EXIT_HODEI_FAILED: u8 = 125;

/// Arguments of `hodei run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Required worker label (repeatable).
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE", value_parser = parse_pair)]
    labels: Vec<(String, String)>,
    /// Environment variable for the job (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_pair)]
    env: Vec<(String, String)>,
    /// Secret environment variable (repeatable). `NAME` alone takes the value
    /// from this shell's environment, keeping it out of your history.
    #[arg(long = "secret", value_name = "NAME[=VALUE]")]
    secrets: Vec<String>,
    /// Job name.
    #[arg(long)]
    name: Option<String>,
    /// Higher runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// The fair-share queue (one the host is configured with).
    #[arg(long)]
    queue: Option<String>,
    /// Wall-clock limit in seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// CPU to reserve, in thousandths of a core.
    #[arg(long)]
    cpu_millis: Option<u64>,
    /// Memory to reserve, in MiB.
    #[arg(long)]
    memory_mb: Option<u64>,
    /// Attempts allowed when an agent is lost.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Run this bash script instead of an argv.
    #[arg(short = 'c', long = "script", conflicts_with = "args")]
    script: Option<String>,
    /// Print the job id and return without following.
    #[arg(short, long)]
    detach: bool,
    /// The command and its arguments.
    #[arg(last = true, value_name = "CMD")]
    args: Vec<String>,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

impl RunArgs {
    fn body(&self) -> anyhow::Result<Value> {
        let mut secrets = BTreeMap::new();
        for secret in &self.secrets {
            let (name, value) = match secret.split_once('=') {
                Some((name, value)) => (name.to_owned(), value.to_owned()),
                None => (
                    secret.clone(),
                    std::env::var(secret).with_context(|| {
                        format!("--secret {secret}: no such variable in this shell")
                    })?,
                ),
            };
            secrets.insert(name, value);
        }
        let mut body = json!({
            "env": self.env.iter().cloned().collect::<BTreeMap<_, _>>(),
            "labels": self.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
            "secrets": secrets,
            "priority": self.priority,
            "resources": {
                "cpu_millis": self.cpu_millis.unwrap_or(0),
                "memory_mb": self.memory_mb.unwrap_or(0),
            },
        });
        if let Some(queue) = &self.queue {
            body["queue"] = json!(queue);
        }
        match (&self.script, self.args.is_empty()) {
            (Some(script), _) => body["command"] = json!(script),
            (None, false) => body["args"] = json!(self.args),
            (None, true) => anyhow::bail!("nothing to run: give `-- CMD [ARGS...]` or `--script`"),
        }
        if let Some(name) = &self.name {
            body["name"] = json!(name);
        }
        if let Some(timeout) = self.timeout {
            body["timeout_secs"] = json!(timeout);
        }
        if let Some(max_attempts) = self.max_attempts {
            body["max_attempts"] = json!(max_attempts);
        }
        Ok(body)
    }
}

/// The process exit code a finished job maps to.
pub fn exit_code(done: &Done) -> u8 {
    match done.state.as_str() {
        "SUCCEEDED" => 0,
        "TIMED_OUT" => 124,
        "CANCELLED" => 130,
        _ => match done.exit_code {
            Some(code) => u8::try_from(code.rem_euclid(256)).unwrap_or(1).max(1),
            None => 1,
        },
    }
}

/// Runs `hodei run`; returns the process exit code.
pub async fn run(client: &ApiClient, args: RunArgs) -> anyhow::Result<u8> {
    let job = client.submit(&args.body()?).await?;
    let id = job["id"]
        .as_str()
        .context("server returned no job id")?
        .to_owned();
    if args.detach {
        println!("{id}");
        return Ok(0);
    }
    let follow = logs::print(client, &id, true, None);
    tokio::pin!(follow);
    let done = tokio::select! {
        done = &mut follow => done?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("hodei: cancelling job {id}");
            client.cancel(&id).await?;
            follow.await?
        }
    };
    let Some(done) = done else {
        eprintln!("hodei: the log stream ended before the job did (job {id})");
        return Ok(EXIT_HODEI_FAILED);
    };
    if done.state != "SUCCEEDED" && done.exit_code.is_none() {
        eprintln!(
            "hodei: job {id} {}: {}",
            done.state,
            done.reason.as_deref().unwrap_or("no reason given")
        );
    }
    Ok(exit_code(&done))
}
