//! The command-line arguments both halves of `hodei` parse: the global
//! client options and `hodei run`'s. They are defined once, here, so the
//! front binary's fast path and `hodei-host`'s full command line cannot
//! drift apart: the same flags, the same defaults, the same request body.

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::{Value, json};

/// The options every client command takes (`global`: before or after the
/// subcommand).
#[derive(Debug, Clone, clap::Args)]
pub struct Globals {
    /// REST address of the host the client commands talk to.
    #[arg(
        long,
        env = "HODEI_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
    /// API token for the client commands [default: the one a host on this
    /// machine left for its port, else ./hodei-data/admin.token].
    #[arg(long, env = "HODEI_API_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate to trust for an `https://` server [default:
    /// ./hodei-data/tls/ca.pem when present].
    #[arg(long, env = "HODEI_CA_CERT", global = true)]
    pub ca_cert: Option<std::path::PathBuf>,
    /// How log lines on stderr are written: `text` for people, `json` (one
    /// object per line, with the spans it happened in) for collectors.
    #[arg(long, env = "HODEI_LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The format of log lines (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: timestamp, level, target, fields, and
    /// the current span with its parents (`span`, `spans`).
    Json,
}

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
    /// `--detach`: print the id, do not follow.
    pub fn detach(&self) -> bool {
        self.detach
    }

    /// The `POST /api/v1/jobs` body these arguments ask for. Fails when
    /// there is nothing to run or a `--secret NAME` is not in this shell.
    pub fn body(&self) -> anyhow::Result<Value> {
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
