//! `hodei serve` settings: flags, `HODEI_*` environment, a TOML file.
//!
//! Precedence, highest first: a flag, its environment variable, the config
//! file (`--config` / `HODEI_CONFIG`), the built-in default. Every setting
//! is optional in the first three layers so the layers can be told apart;
//! [`ServeArgs::resolve`] is the one place defaults live.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::agents::{AgentLimits, LimitArgs};
use crate::auth::AuthMode;
use crate::auth::agents::AgentAuthMode;
use crate::masking::ChainEntry;
use crate::plugins::{ActiveChoice, Limits};
use crate::providers::PoolSpec;
use crate::scheduler::fairness::Fairness;
use crate::store::{PgOptions, StorageKind};
use crate::tls::TlsFiles;

/// Flags of `hodei serve` (each also read from its environment variable).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML config file; its keys are the flag names with underscores.
    #[arg(long, env = "HODEI_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the embedded store keeps its files [default: ./hodei-data].
    #[arg(long, env = "HODEI_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// REST API address; port 0 picks a free port [default: 127.0.0.1:8080].
    #[arg(long, env = "HODEI_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Agent gRPC address; port 0 picks a free port [default: 127.0.0.1:50051].
    #[arg(long, env = "HODEI_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// Storage backend [default: redb].
    #[arg(long, env = "HODEI_STORAGE", value_enum)]
    pub storage: Option<StorageKind>,
    /// Page cache of the embedded store in MiB: bounds its memory whatever
    /// the size of its file [default: 256].
    #[arg(long, env = "HODEI_STORE_CACHE_MB")]
    pub store_cache_mb: Option<usize>,
    /// PostgreSQL URL when `--storage postgres` (postgres://user:pass@host/db).
    #[arg(long, env = "HODEI_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Most PostgreSQL connections this host opens [default: 16].
    #[arg(long, env = "HODEI_DATABASE_MAX_CONNECTIONS")]
    pub database_max_connections: Option<u32>,
    /// Seconds a query waits for a free PostgreSQL connection [default: 10].
    #[arg(long, env = "HODEI_DATABASE_ACQUIRE_TIMEOUT_SECS")]
    pub database_acquire_timeout_secs: Option<u64>,
    /// Seconds one PostgreSQL statement may run [default: 30].
    #[arg(long, env = "HODEI_DATABASE_STATEMENT_TIMEOUT_SECS")]
    pub database_statement_timeout_secs: Option<u64>,
    /// Token agents must present [default: generated once into DATA_DIR/agent.token].
    #[arg(long, env = "HODEI_AGENT_TOKEN", hide_env_values = true)]
    pub agent_token: Option<String>,
    /// Start this many `hodei-agent` processes on this machine [default: 0].
    #[arg(long, env = "HODEI_LOCAL_AGENTS")]
    pub local_agents: Option<u32>,
    /// Slots of each local agent [default: the agent's own default, its CPU count].
    #[arg(long, env = "HODEI_LOCAL_AGENT_SLOTS")]
    pub local_agent_slots: Option<u32>,
    /// Seconds a silent agent keeps its jobs before they count as lost [default: 10].
    #[arg(long, env = "HODEI_LEASE_SECS")]
    pub lease_secs: Option<u64>,
    /// Largest accepted request body in bytes [default: 1048576].
    #[arg(long, env = "HODEI_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Largest plugin component (policy or masker) an upload may carry, in
    /// bytes [default: 33554432].
    #[arg(long, env = "HODEI_MAX_PLUGIN_BYTES")]
    pub max_plugin_bytes: Option<usize>,
    /// Largest pipeline artifact (one step output) kept, in bytes
    /// [default: 1073741824].
    #[arg(long, env = "HODEI_MAX_ARTIFACT_BYTES")]
    pub max_artifact_bytes: Option<u64>,
    /// Scheduling policy at start-up: builtin, binpack, least-loaded or an
    /// uploaded one [default: the last one activated, else builtin].
    #[arg(long, env = "HODEI_POLICY")]
    pub policy: Option<String>,
    /// Configuration string for `--policy`.
    #[arg(long, env = "HODEI_POLICY_CONFIG")]
    pub policy_config: Option<String>,
    /// Fair-share queues with their weights, `NAME=WEIGHT` comma-separated
    /// (e.g. `batch=3,web=1`); `default` always exists, weight 1 unless
    /// given. A job naming another queue is refused. File: a
    /// `[queue_weights]` table.
    #[arg(long, env = "HODEI_QUEUE_WEIGHTS", value_delimiter = ',')]
    pub queue_weights: Option<Vec<String>>,
    /// Priority points a pending job gains per minute it waits [default: 1].
    #[arg(long, env = "HODEI_AGING_PER_MINUTE")]
    pub aging_per_minute: Option<u32>,
    /// Most priority points waiting can earn [default: 100].
    #[arg(long, env = "HODEI_AGING_MAX")]
    pub aging_max: Option<u32>,
    /// Seconds the first job that fits on no worker waits before a worker
    /// is held for it (backfill) [default: 60].
    #[arg(long, env = "HODEI_BACKFILL_AFTER_SECS")]
    pub backfill_after_secs: Option<u64>,
    /// The secret masker chain at start-up, in order, comma-separated
    /// (e.g. `literal,patterns`), or `none` to turn host-side masking off
    /// [default: the last chain activated, else literal,patterns].
    #[arg(long, env = "HODEI_MASKERS", value_delimiter = ',')]
    pub maskers: Option<Vec<String>>,
    /// Deadline of one plugin call in milliseconds [default: 10].
    #[arg(long, env = "HODEI_PLUGIN_DEADLINE_MS")]
    pub plugin_deadline_ms: Option<u64>,
    /// Deadline of one masker call (one batch of up to 1,000 lines) in
    /// milliseconds [default: 100].
    #[arg(long, env = "HODEI_MASKER_DEADLINE_MS")]
    pub masker_deadline_ms: Option<u64>,
    /// Memory cap of one plugin instance in MiB [default: 32].
    #[arg(long, env = "HODEI_PLUGIN_MEMORY_MB")]
    pub plugin_memory_mb: Option<usize>,
    /// Where compiled plugins are cached [default: DATA_DIR/plugin-cache].
    #[arg(long, env = "HODEI_PLUGIN_CACHE_DIR")]
    pub plugin_cache_dir: Option<PathBuf>,
    /// A directory of worker provider components: each `NAME.wasm` is the
    /// provider `NAME`, beside the in-tree `local` and `docker`.
    #[arg(long, env = "HODEI_PROVIDER_DIR")]
    pub provider_dir: Option<PathBuf>,
    /// Whether REST calls need an API token with the route's scope:
    /// `tokens` or `off` [default: tokens].
    #[arg(long, env = "HODEI_API_AUTH", value_enum)]
    pub api_auth: Option<AuthMode>,
    /// Which tokens agents may present: `shared` (the shared agent token
    /// too), `tokens` (bootstrap and registration tokens only), `strict`
    /// (`tokens` and a client certificate from `--client-ca`)
    /// [default: shared].
    #[arg(long, env = "HODEI_AGENT_AUTH", value_enum)]
    pub agent_auth: Option<AgentAuthMode>,
    /// Submits per second one API token may make (a burst of one second's
    /// worth; 429 with Retry-After past it); 0: no limit [default: 200].
    #[arg(long, env = "HODEI_API_SUBMIT_RATE")]
    pub api_submit_rate: Option<u32>,
    /// Allow listening on a non-loopback address without TLS and API
    /// tokens (anyone who reaches the port can then run anything).
    #[arg(long, env = "HODEI_INSECURE")]
    pub insecure: bool,
    /// The key job secrets are sealed with at rest (32 random bytes,
    /// base64; created 0600 when missing) [default: DATA_DIR/secrets.key].
    /// Hosts sharing PostgreSQL must share it.
    #[arg(long, env = "HODEI_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// Keys of before a rotation, still opening what they sealed
    /// (comma-separated files).
    #[arg(long, env = "HODEI_SECRETS_PREVIOUS_KEY_FILES", value_delimiter = ',')]
    pub secrets_previous_key_files: Vec<PathBuf>,
    /// PEM certificate (chain) of this host: REST and the agent gateway
    /// speak TLS (see `hodei certs init`).
    #[arg(long, env = "HODEI_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "HODEI_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The CA that signed `--tls-cert`, handed to the agents this host
    /// starts [default: `ca.pem` beside the certificate, when present].
    #[arg(long, env = "HODEI_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Mutual TLS on the agent gateway: agents must present a client
    /// certificate from this CA (`hodei certs agent`).
    #[arg(long, env = "HODEI_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// What one agent may send (the file's `[limits]` table).
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// The config file's shape: the same settings, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    http_addr: Option<SocketAddr>,
    grpc_addr: Option<SocketAddr>,
    storage: Option<StorageKind>,
    store_cache_mb: Option<usize>,
    database_url: Option<String>,
    database_max_connections: Option<u32>,
    database_acquire_timeout_secs: Option<u64>,
    database_statement_timeout_secs: Option<u64>,
    agent_token: Option<String>,
    local_agents: Option<u32>,
    local_agent_slots: Option<u32>,
    lease_secs: Option<u64>,
    max_body_bytes: Option<usize>,
    max_plugin_bytes: Option<usize>,
    max_artifact_bytes: Option<u64>,
    policy: Option<String>,
    policy_config: Option<String>,
    queue_weights: Option<BTreeMap<String, u32>>,
    aging_per_minute: Option<u32>,
    aging_max: Option<u32>,
    backfill_after_secs: Option<u64>,
    maskers: Option<Vec<String>>,
    api_auth: Option<AuthMode>,
    agent_auth: Option<AgentAuthMode>,
    api_submit_rate: Option<u32>,
    insecure: Option<bool>,
    secrets_key_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    #[serde(default)]
    secrets_previous_key_files: Vec<PathBuf>,
    plugin_deadline_ms: Option<u64>,
    masker_deadline_ms: Option<u64>,
    plugin_memory_mb: Option<usize>,
    plugin_cache_dir: Option<PathBuf>,
    provider_dir: Option<PathBuf>,
    limits: Option<LimitArgs>,
    #[serde(default)]
    pools: Vec<PoolSpec>,
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// REST address.
    pub http_addr: SocketAddr,
    /// gRPC address.
    pub grpc_addr: SocketAddr,
    /// Storage backend.
    pub storage: StorageKind,
    /// Page cache of the embedded store, bytes.
    pub store_cache_bytes: usize,
    /// PostgreSQL settings (used when `storage` is postgres).
    pub postgres: PgOptions,
    /// Explicit agent token, if any.
    pub agent_token: Option<String>,
    /// Local agents to keep (the `local` pool's size).
    pub local_agents: u32,
    /// Lost-agent lease.
    pub lease: Duration,
    /// Request body limit.
    pub max_body_bytes: usize,
    /// Largest plugin component an upload may carry.
    pub max_plugin_bytes: usize,
    /// Largest pipeline artifact kept.
    pub max_artifact_bytes: u64,
    /// Policy to activate at start-up, if configured.
    pub policy: Option<ActiveChoice>,
    /// Queues, aging and backfill.
    pub fairness: Fairness,
    /// Masker chain to activate at start-up, if configured (empty: host
    /// masking off).
    pub maskers: Option<Vec<ChainEntry>>,
    /// REST authentication.
    pub api_auth: AuthMode,
    /// Which tokens agents may present.
    pub agent_auth: AgentAuthMode,
    /// Submits per second per API token (0: no limit).
    pub api_submit_rate: u32,
    /// Non-loopback without TLS and tokens is allowed.
    pub insecure: bool,
    /// The key sealing job secrets at rest.
    pub secrets_key_file: PathBuf,
    /// TLS of REST and the agent gateway, when configured.
    pub tls: Option<TlsFiles>,
    /// The CA agents this host starts should trust.
    pub tls_ca: Option<PathBuf>,
    /// Keys of before a rotation.
    pub secrets_previous_key_files: Vec<PathBuf>,
    /// Limits of every plugin call.
    pub plugin_limits: Limits,
    /// Deadline of one masker call.
    pub masker_deadline: Duration,
    /// Compiled-plugin cache.
    pub plugin_cache_dir: PathBuf,
    /// What one agent may send.
    pub agent_limits: AgentLimits,
    /// Pools declared in the config file (`[[pools]]`), plus the local
    /// pool of `--local-agents`.
    pub pools: Vec<PoolSpec>,
    /// Provider components beyond the in-tree ones, by name.
    pub provider_files: BTreeMap<String, PathBuf>,
}

/// `batch=3` pairs into weights by queue.
fn parse_weights(pairs: &[String]) -> anyhow::Result<BTreeMap<String, u32>> {
    let mut weights = BTreeMap::new();
    for pair in pairs.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let (name, weight) = pair
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("queue_weights: {pair:?} is not NAME=WEIGHT"))?;
        let weight: u32 = weight.trim().parse().map_err(|_| {
            anyhow::anyhow!("queue_weights: {pair:?}: the weight is not a whole number")
        })?;
        anyhow::ensure!(
            weights.insert(name.trim().to_owned(), weight).is_none(),
            "queue_weights: queue {:?} given twice",
            name.trim()
        );
    }
    Ok(weights)
}

impl ServeArgs {
    /// Applies the layers (see the module docs).
    pub fn resolve(self) -> anyhow::Result<ServeConfig> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("hodei-data"));
        let policy = self.policy.or(file.policy).map(|name| ActiveChoice {
            name,
            config: self
                .policy_config
                .or(file.policy_config)
                .unwrap_or_default(),
        });
        let weights = match self.queue_weights {
            Some(pairs) => parse_weights(&pairs)?,
            None => file.queue_weights.unwrap_or_default(),
        };
        let fairness = Fairness::new(
            &weights,
            self.aging_per_minute.or(file.aging_per_minute).unwrap_or(1),
            self.aging_max.or(file.aging_max).unwrap_or(100),
            Duration::from_secs(
                self.backfill_after_secs
                    .or(file.backfill_after_secs)
                    .unwrap_or(60),
            ),
        )
        .map_err(|err| anyhow::anyhow!("queue_weights: {err}"))?;
        let maskers = self.maskers.or(file.maskers).map(|names| {
            names
                .into_iter()
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty() && name != "none")
                .map(|name| ChainEntry {
                    name,
                    config: String::new(),
                })
                .collect()
        });
        let secrets_key_file = self
            .secrets_key_file
            .or(file.secrets_key_file)
            .unwrap_or_else(|| data_dir.join("secrets.key"));
        let tls = match (
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                client_ca: self.client_ca.or(file.client_ca),
            }),
            (None, None) => None,
            _ => anyhow::bail!("tls_cert and tls_key go together"),
        };
        let tls_ca = self.tls_ca.or(file.tls_ca).or_else(|| {
            let beside = tls.as_ref()?.cert.with_file_name("ca.pem");
            beside.is_file().then_some(beside)
        });
        let agent_auth = self
            .agent_auth
            .or(file.agent_auth)
            .unwrap_or(AgentAuthMode::Shared);
        if agent_auth == AgentAuthMode::Strict
            && tls.as_ref().is_none_or(|tls| tls.client_ca.is_none())
        {
            anyhow::bail!(
                "agent_auth strict needs mutual TLS: tls_cert, tls_key and client_ca (--client-ca)"
            );
        }
        let pg = PgOptions::default();
        let postgres = PgOptions {
            url: self.database_url.or(file.database_url),
            max_connections: self
                .database_max_connections
                .or(file.database_max_connections)
                .unwrap_or(pg.max_connections),
            acquire_timeout: self
                .database_acquire_timeout_secs
                .or(file.database_acquire_timeout_secs)
                .map_or(pg.acquire_timeout, Duration::from_secs),
            statement_timeout: self
                .database_statement_timeout_secs
                .or(file.database_statement_timeout_secs)
                .map_or(pg.statement_timeout, Duration::from_secs),
        };
        let defaults = Limits::default();
        let plugin_limits = Limits {
            deadline: self
                .plugin_deadline_ms
                .or(file.plugin_deadline_ms)
                .map_or(defaults.deadline, Duration::from_millis),
            memory_bytes: self
                .plugin_memory_mb
                .or(file.plugin_memory_mb)
                .map_or(defaults.memory_bytes, |mb| mb << 20),
        };
        let local_agents = self.local_agents.or(file.local_agents).unwrap_or(0);
        let local_agent_slots = self.local_agent_slots.or(file.local_agent_slots);
        let mut pools = file.pools;
        if local_agents > 0 {
            anyhow::ensure!(
                pools.iter().all(|p| p.name != "local"),
                "a pool named \"local\" is declared and --local-agents asks for one too"
            );
            pools.push(PoolSpec::local(local_agents, local_agent_slots));
        }
        let provider_files = match self.provider_dir.or(file.provider_dir) {
            Some(dir) => provider_files(&dir)?,
            None => BTreeMap::new(),
        };
        let mut known = crate::providers::provisioner::known_providers();
        known.extend(provider_files.keys().map(String::as_str));
        for pool in &pools {
            pool.validate(&known)?;
        }
        Ok(ServeConfig {
            pools,
            provider_files,
            agent_limits: self.limits.resolve(file.limits)?,
            plugin_cache_dir: self
                .plugin_cache_dir
                .or(file.plugin_cache_dir)
                .unwrap_or_else(|| data_dir.join("plugin-cache")),
            data_dir,
            policy,
            fairness,
            maskers,
            api_auth: self.api_auth.or(file.api_auth).unwrap_or(AuthMode::Tokens),
            agent_auth,
            api_submit_rate: self.api_submit_rate.or(file.api_submit_rate).unwrap_or(200),
            insecure: self.insecure || file.insecure.unwrap_or(false),
            secrets_key_file,
            tls,
            tls_ca,
            secrets_previous_key_files: if self.secrets_previous_key_files.is_empty() {
                file.secrets_previous_key_files
            } else {
                self.secrets_previous_key_files
            },
            plugin_limits,
            masker_deadline: self
                .masker_deadline_ms
                .or(file.masker_deadline_ms)
                .map_or(Duration::from_millis(100), Duration::from_millis),
            http_addr: self
                .http_addr
                .or(file.http_addr)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
            grpc_addr: self
                .grpc_addr
                .or(file.grpc_addr)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 50051))),
            storage: self.storage.or(file.storage).unwrap_or(StorageKind::Redb),
            store_cache_bytes: self
                .store_cache_mb
                .or(file.store_cache_mb)
                .map_or(crate::store::DEFAULT_CACHE_BYTES, |mb| mb << 20),
            postgres,
            agent_token: self.agent_token.or(file.agent_token),
            local_agents,
            lease: Duration::from_secs(self.lease_secs.or(file.lease_secs).unwrap_or(10).max(1)),
            max_body_bytes: self
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(1024 * 1024),
            max_plugin_bytes: self
                .max_plugin_bytes
                .or(file.max_plugin_bytes)
                .unwrap_or(crate::api::DEFAULT_MAX_PLUGIN_BYTES),
            max_artifact_bytes: self
                .max_artifact_bytes
                .or(file.max_artifact_bytes)
                .unwrap_or(crate::artifacts::DEFAULT_MAX_ARTIFACT_BYTES),
        })
    }
}

/// The provider components in `dir`: `NAME.wasm` is provider `NAME`.
fn provider_files(dir: &Path) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the provider directory {}", dir.display()))?;
    let mut out = BTreeMap::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "wasm")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            out.insert(stem.to_owned(), path);
        }
    }
    Ok(out)
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hodei.toml");
        std::fs::write(
            &path,
            "http_addr = \"127.0.0.1:9999\"\nlease_secs = 3\nlocal_agents = 2\n\n[limits]\njob_log_quota_bytes = 1000\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            local_agents: Some(4),
            ..ServeArgs::default()
        };
        let config = args.resolve().unwrap();
        assert_eq!(config.http_addr.port(), 9999);
        assert_eq!(config.lease, Duration::from_secs(3));
        assert_eq!(config.local_agents, 4);
        assert_eq!(config.pools, vec![PoolSpec::local(4, None)]);
        assert_eq!(config.grpc_addr.port(), 50051);
        assert_eq!(config.data_dir, PathBuf::from("hodei-data"));
        assert_eq!(config.agent_limits.log_quota_bytes, 1000);
        assert_eq!(config.agent_limits.max_labels, 64);
    }

    #[test]
    fn queue_weights_come_from_the_file_or_the_flag_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hodei.toml");
        std::fs::write(
            &path,
            "aging_per_minute = 6\n\n[queue_weights]\nbatch = 3\nweb = 1\n",
        )
        .unwrap();
        let config = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap();
        let queues: Vec<(String, u32)> = config
            .fairness
            .queues()
            .map(|(_, name, weight)| (name.to_string(), weight))
            .collect();
        assert_eq!(
            queues,
            [
                ("default".into(), 1),
                ("batch".into(), 3),
                ("web".into(), 1)
            ]
        );
        let flag = |weights: &[&str]| {
            ServeArgs {
                config: Some(path.clone()),
                queue_weights: Some(weights.iter().map(|w| (*w).to_owned()).collect()),
                ..ServeArgs::default()
            }
            .resolve()
        };
        let config = flag(&["gpu=2"]).unwrap();
        assert_eq!(
            config.fairness.weight(config.fairness.id("gpu").unwrap()),
            2
        );
        assert!(
            config.fairness.id("batch").is_none(),
            "the flag replaces the table"
        );
        for (bad, needle) in [
            (&["gpu"][..], "not NAME=WEIGHT"),
            (&["gpu=x"], "not a whole number"),
            (&["gpu=0"], "weight 0"),
            (&["GPU=1"], "a-z 0-9"),
            (&["gpu=1", "gpu=2"], "given twice"),
        ] {
            let err = flag(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }

    #[test]
    fn postgres_settings_come_from_the_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hodei.toml");
        std::fs::write(
            &path,
            "storage = \"postgres\"\ndatabase_url = \"postgres://u:p@db/hodei\"\ndatabase_max_connections = 4\n",
        )
        .unwrap();
        let config = ServeArgs {
            config: Some(path),
            database_acquire_timeout_secs: Some(3),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(config.storage, StorageKind::Postgres);
        assert_eq!(
            config.postgres.url.as_deref(),
            Some("postgres://u:p@db/hodei")
        );
        assert_eq!(config.postgres.max_connections, 4);
        assert_eq!(config.postgres.acquire_timeout, Duration::from_secs(3));
        assert_eq!(config.postgres.statement_timeout, Duration::from_secs(30));
    }

    #[test]
    fn pools_come_from_the_file_and_bad_ones_are_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hodei.toml");
        let pool = "[[pools]]\nname = \"small\"\nprovider = \"docker\"\nconfig = \"image=hodei-worker:0.1.0\"\ngrants = [\"docker\"]\nmax = 3\n";
        std::fs::write(&path, pool).unwrap();
        let config = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(config.pools.len(), 1);
        assert_eq!(
            (config.pools[0].name.as_str(), config.pools[0].max),
            ("small", 3)
        );
        for (bad, says) in [
            (
                pool.replace("max = 3", "max = 3\nmin = 5"),
                "min (5) is greater than max (3)",
            ),
            (
                pool.replace("\"docker\"\nconfig", "\"nomad\"\nconfig"),
                "unknown provider",
            ),
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = ServeArgs {
                config: Some(path.clone()),
                ..ServeArgs::default()
            }
            .resolve()
            .unwrap_err();
            assert!(format!("{err:#}").contains(says), "{err:#}");
        }
    }

    #[test]
    fn unknown_keys_in_the_file_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hodei.toml");
        std::fs::write(&path, "htp_addr = \"127.0.0.1:9999\"\n").unwrap();
        let err = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{err:#}").contains("htp_addr"), "{err:#}");
    }
}
