//! The agent's command line: every flag can also come from a `HODEI_*`
//! environment variable, which is how a provider configures the agents it
//! starts.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::Parser;

/// `hodei-agent` flags.
#[derive(Debug, Clone, Parser)]
#[command(name = "hodei-agent", version, about = "Hodei Jobs worker agent")]
pub struct Args {
    /// The host's gRPC endpoint, or several hosts sharing one store as a
    /// comma-separated list: the agent dials them in turn and moves to the
    /// next when one cannot be reached or its connection ends.
    #[arg(
        long,
        env = "HODEI_SERVER_URL",
        default_value = "http://127.0.0.1:50051",
        value_delimiter = ','
    )]
    pub server_url: Vec<String>,

    /// Bearer token the host expects on Connect.
    #[arg(long, env = "HODEI_TOKEN", hide_env_values = true)]
    pub token: Token,

    /// Labels for scheduling, as `k=v,k2=v2`.
    #[arg(long, env = "HODEI_LABELS", default_value = "", value_parser = parse_labels)]
    pub labels: Labels,

    /// Jobs run at once [default: number of CPUs].
    #[arg(long, env = "HODEI_SLOTS", value_parser = clap::value_parser!(u32).range(1..))]
    pub slots: Option<u32>,

    /// Name shown for this worker [default: host name].
    #[arg(long, env = "HODEI_AGENT_NAME")]
    pub name: Option<String>,

    /// Directory for the jobs' private temp directories [default: the
    /// system temp dir].
    #[arg(long, env = "HODEI_WORK_DIR")]
    pub work_dir: Option<PathBuf>,

    /// Seconds between SIGTERM and SIGKILL when a job is cancelled or
    /// times out.
    #[arg(long, env = "HODEI_CANCEL_GRACE_SECS", default_value_t = 10)]
    pub cancel_grace_secs: u64,

    /// CA certificate (PEM) to trust for an `https://` server URL (the
    /// host's `hodei certs init` writes one).
    #[arg(long, env = "HODEI_CA_CERT")]
    pub ca_cert: Option<PathBuf>,

    /// Client certificate (PEM) for a host that asks for mutual TLS
    /// (`hodei certs agent`).
    #[arg(long, env = "HODEI_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// Private key (PEM) of `--client-cert`.
    #[arg(long, env = "HODEI_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,

    /// Keep this agent's identity (the secret its id is derived from) in
    /// this file, created 0600 when missing, so a restarted agent is the
    /// same agent: the credential a bootstrap token bound to its id stays
    /// valid [default: a new identity per process].
    #[arg(long, env = "HODEI_IDENTITY_FILE")]
    pub identity_file: Option<PathBuf>,

    /// Receive SIGINT (cancel and exit) when the parent dies (for agents the host spawns).
    #[arg(long, env = "HODEI_EXIT_WITH_PARENT")]
    pub exit_with_parent: bool,
}

/// The bearer token; its Debug output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl FromStr for Token {
    type Err = Infallible;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        Ok(Self(token.to_string()))
    }
}

/// Worker labels, in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(pub BTreeMap<String, String>);

/// Parses `k=v,k2=v2`. Blanks around items, keys and values are trimmed;
/// an empty string means no labels. Rejects items without `=`, empty keys
/// and repeated keys.
pub fn parse_labels(text: &str) -> Result<Labels, String> {
    let mut labels = BTreeMap::new();
    if text.trim().is_empty() {
        return Ok(Labels(labels));
    }
    for item in text.split(',') {
        let Some((key, value)) = item.split_once('=') else {
            return Err(format!(
                "label {:?} is not of the form key=value",
                item.trim()
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("label {:?} has an empty key", item.trim()));
        }
        if labels
            .insert(key.to_string(), value.trim().to_string())
            .is_some()
        {
            return Err(format!("label key {key:?} is given twice"));
        }
    }
    Ok(Labels(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse() {
        let labels = parse_labels(" zone=eu-1 , gpu=true,empty=").expect("valid");
        let pairs: Vec<(&str, &str)> = labels
            .0
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(pairs, [("empty", ""), ("gpu", "true"), ("zone", "eu-1")]);
        assert_eq!(parse_labels("  ").expect("empty"), Labels::default());
    }

    #[test]
    fn malformed_labels_are_rejected() {
        for bad in ["novalue", "a=1,,b=2", "=v", "a=1,a=2", "a=1,"] {
            assert!(parse_labels(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn flags_parse_and_the_token_is_not_printed() {
        let args = Args::try_parse_from([
            "hodei-agent",
            "--token",
            "s3cret",
            "--labels",
            "a=b",
            "--slots",
            "3",
            "--exit-with-parent",
        ])
        .expect("valid flags");
        assert_eq!(args.token.0, "s3cret");
        assert_eq!(args.slots, Some(3));
        assert!(args.exit_with_parent);
        assert_eq!(args.cancel_grace_secs, 10);
        assert!(!format!("{args:?}").contains("s3cret"));
        assert!(Args::try_parse_from(["hodei-agent", "--token", "t", "--slots", "0"]).is_err());
        assert!(Args::try_parse_from(["hodei-agent", "--token", "t", "--labels", "x"]).is_err());
    }
}
