//! `hodei serve`: builds the host from its parts and runs it until a signal.
//!
//! Start-up order matters: the store is opened and the queue and cluster
//! are rebuilt from it before any port is bound, so the first request or
//! agent already sees every job acknowledged before a restart. The bound
//! addresses are printed on stdout (one line each) so scripts and tests can
//! use port 0.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

use crate::agents::{AgentGateway, GatewayConfig};
use crate::api::{AppState, router};
use crate::artifacts::Artifacts;
use crate::auth::agents::AgentTokens;
use crate::auth::{ApiTokens, AuthMode};
use crate::bus::Bus;
use crate::config::ServeConfig;
use crate::jobs::JobService;
use crate::masking::{MaskerCatalog, MaskerRegistry, Masking};
use crate::pipelines::Pipelines;
use crate::plugins::{PluginEngine, PolicyCatalog, PolicyRegistry};
use crate::providers::Provisioner;
use crate::providers::pool_loop::HostSide;
use crate::scheduler::Scheduler;
use crate::scheduler::cluster::Cluster;
use crate::sealing::Sealer;
use crate::store::{self, StorageKind};
use crate::usage::UsageBoard;

/// The settings key of this installation's id (shared by the hosts of one
/// store; labels every container and pod it creates).
const INSTALL_SETTING: &str = "install_id";
/// How long agents are asked to wait between heartbeats.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// HTTP/2 receive window of each agent's stream, bytes.
const AGENT_STREAM_WINDOW: u32 = 8 * 1024 * 1024;
/// How long shutdown waits for open connections (SSE followers, agent
/// streams) before leaving anyway. Nothing acknowledged is at risk: every
/// acknowledged write is already durable.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Runs the host until SIGINT or SIGTERM.
pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let store = store::open(
        config.storage,
        &config.data_dir,
        config.store_cache_bytes,
        &config.postgres,
    )
    .await
    .with_context(|| match config.storage {
        StorageKind::Redb => format!("cannot open the store in {}", config.data_dir.display()),
        StorageKind::Postgres => "cannot open the PostgreSQL store".to_owned(),
    })?;
    refuse_open_listeners(&config)?;
    let tokens = Arc::new(
        ApiTokens::load(config.api_auth, store.records())
            .await
            .context("cannot load the API tokens")?
            .with_submit_rate(config.api_submit_rate),
    );
    tokens.spawn_refresh();
    let agent_tokens = AgentTokens::load(store.records())
        .await
        .context("cannot load the agent tokens")?;
    agent_tokens.spawn_refresh();
    let engine = PluginEngine::new(config.plugin_limits, Some(&config.plugin_cache_dir))
        .context("cannot start the WebAssembly engine")?;
    let registry = Arc::new(PolicyRegistry::new(engine.clone()));
    let policies = PolicyCatalog::new(Arc::clone(&registry), Arc::clone(&store));
    policies
        .restore(config.policy.clone())
        .await
        .context("cannot load the scheduling policies")?;
    let maskers = MaskerCatalog::new(
        Arc::new(MaskerRegistry::new(
            engine.with_deadline(config.masker_deadline),
        )),
        Arc::clone(&store),
    );
    maskers
        .restore(config.maskers.clone())
        .await
        .context("cannot load the secret maskers")?;
    let sealer = Arc::new(
        Sealer::load(&config.secrets_key_file, &config.secrets_previous_key_files)
            .context("cannot load the secrets key")?,
    );
    let masking = Arc::new(Masking::new(
        Arc::clone(maskers.registry()),
        Arc::clone(&store),
        Arc::clone(&sealer),
    ));
    let cluster = Arc::new(Cluster::default());
    let scheduler =
        Arc::new(Scheduler::new(cluster, registry).with_fairness(config.fairness.clone()));
    let jobs = Arc::new(
        JobService::new(store, scheduler, Bus::new(4096), config.lease)
            .with_sealer(Arc::clone(&sealer))
            .with_max_artifact_bytes(config.max_artifact_bytes),
    );
    let (pending, held) = jobs
        .restore()
        .await
        .context("cannot rebuild state from the store")?;
    tracing::info!(pending, held, data_dir = %config.data_dir.display(), "state restored");

    let token = agent_token(config.agent_token.clone(), &config.data_dir)?;
    let http = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot bind the REST API to {}", config.http_addr))?;
    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("cannot bind the agent gRPC port to {}", config.grpc_addr))?;
    let (http_addr, grpc_addr) = (http.local_addr()?, grpc.local_addr()?);
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    if config.api_auth == AuthMode::Tokens {
        admin_token(&tokens, &config.data_dir, http_addr).await?;
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "hodei: http listening on {scheme}://{http_addr}")?;
        writeln!(out, "hodei: grpc listening on {scheme}://{grpc_addr}")?;
        out.flush()?;
    }

    tokio::spawn(Arc::clone(&jobs).run_scheduler());
    tokio::spawn(Arc::clone(&jobs).run_monitor());
    let artifacts = Arc::new(Artifacts::new(jobs.store(), config.max_artifact_bytes));
    let pipelines = Arc::new(Pipelines::new(Arc::clone(&jobs), Arc::clone(&artifacts)));
    tokio::spawn(Arc::clone(&pipelines).run());

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let usage = Arc::new(UsageBoard::default());
    let provisioner =
        provisioner(&config, &jobs, engine, format!("{scheme}://{grpc_addr}")).await?;
    let app = router(
        AppState {
            jobs: Arc::clone(&jobs),
            policies,
            maskers,
            masking: Arc::clone(&masking),
            usage: Arc::clone(&usage),
            provisioner: Arc::clone(&provisioner),
            tokens,
            agent_tokens: Arc::clone(&agent_tokens),
            pipelines,
            openapi: Arc::from(crate::api::openapi::document_for(&config.fairness)),
            max_plugin_bytes: config.max_plugin_bytes,
        },
        config.max_body_bytes,
    );
    let api = match &config.tls {
        Some(tls) => tokio::spawn(crate::tls::serve_https(
            http,
            app,
            tls.rest_config()?,
            stop_rx.clone(),
        )),
        None => {
            // TCP_NODELAY on every accepted socket: without it a small
            // write (an SSE `event: done`, a 201) waits behind Nagle for
            // the peer's delayed ACK, ~40 ms on Linux loopback.
            let http = http.tap_io(|tcp| {
                if let Err(err) = tcp.set_nodelay(true) {
                    tracing::debug!(%err, "cannot set TCP_NODELAY");
                }
            });
            let serving = axum::serve(http, app)
                .with_graceful_shutdown(stopped(stop_rx.clone()))
                .into_future();
            tokio::spawn(async move {
                if let Err(err) = serving.await {
                    tracing::error!(%err, "REST server failed");
                }
            })
        }
    };
    let gateway = AgentGateway::new(
        Arc::clone(&jobs),
        GatewayConfig {
            token: token.clone(),
            heartbeat_interval: HEARTBEAT_INTERVAL,
            usage,
            limits: Arc::new(config.agent_limits.clone()),
            ledger: jobs.store().ledger(),
            masking,
            agent_tokens,
            agent_auth: config.agent_auth,
            artifacts,
        },
    );
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        server = server
            .tls_config(tls.grpc_config()?)
            .context("cannot configure TLS on the agent gateway")?;
    }
    let agents_server = tokio::spawn(
        server
            // Room for several log batches in flight per agent, so that a
            // store commit does not stall the agent's stream (see
            // agents/coalesce.rs).
            .initial_stream_window_size(Some(AGENT_STREAM_WINDOW))
            .initial_connection_window_size(Some(AGENT_STREAM_WINDOW))
            .add_service(gateway.into_service())
            // The builder's `tcp_nodelay` is ignored for an incoming stream;
            // set it here (same reason as the REST listener above).
            .serve_with_incoming_shutdown(
                TcpIncoming::from(grpc).with_nodelay(Some(true)),
                stopped(stop_rx),
            ),
    );

    start_pools(&config, &provisioner).await?;

    shutdown_signal().await;
    tracing::info!("shutting down");
    provisioner.shutdown().await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        let _ = api.await;
        let _ = agents_server.await;
    })
    .await;
    Ok(())
}

/// The pools of this host, none started yet.
async fn provisioner(
    config: &ServeConfig,
    jobs: &Arc<JobService>,
    engine: PluginEngine,
    server_url: String,
) -> anyhow::Result<Arc<Provisioner>> {
    let store = jobs.store();
    let install = match store.setting(INSTALL_SETTING).await? {
        Some(id) => id,
        None => {
            let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
            store.put_setting(INSTALL_SETTING, id.clone()).await?;
            id
        }
    };
    let host = HostSide {
        jobs: Arc::clone(jobs),
        ledger: store.ledger(),
        board: Arc::clone(jobs.pool_board()),
        server_url,
        agent_env: config
            .tls_ca
            .iter()
            .map(|ca| ("HODEI_CA_CERT".to_owned(), ca.display().to_string()))
            .collect(),
        host_id: uuid::Uuid::new_v4().to_string(),
        lease: config.lease,
    };
    Ok(Arc::new(Provisioner::new(
        host,
        engine,
        install,
        crate::providers::provisioner::agent_binary(),
        config.provider_files.clone(),
    )))
}

/// Starts the configured pools, then those posted over REST before. A bad
/// configured pool stops the start; a stored one that no longer starts is
/// logged and skipped.
async fn start_pools(config: &ServeConfig, provisioner: &Provisioner) -> anyhow::Result<()> {
    for pool in &config.pools {
        provisioner
            .add(pool.clone())
            .await
            .with_context(|| format!("cannot start pool {:?}", pool.name))?;
    }
    for pool in provisioner.kept().await {
        if config.pools.iter().any(|p| p.name == pool.name) {
            tracing::warn!(pool = %pool.name, "a stored pool has the name of a configured one; the configured one wins");
            continue;
        }
        if let Err(err) = provisioner.add(pool).await {
            tracing::error!(%err, "a stored pool no longer starts; skipped");
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The configured token, or the one generated at first start and kept in
/// `DATA_DIR/agent.token` (mode 0600) for remote agents to use.
/// A host reachable from other machines must not hand out job execution
/// to anyone: without `--insecure`, a non-loopback address needs API
/// tokens (and TLS, once configured).
fn refuse_open_listeners(config: &ServeConfig) -> anyhow::Result<()> {
    if config.insecure || (config.tls.is_some() && config.api_auth == AuthMode::Tokens) {
        return Ok(());
    }
    for (what, addr) in [
        ("--http-addr", config.http_addr),
        ("--grpc-addr", config.grpc_addr),
    ] {
        if !addr.ip().is_loopback() {
            anyhow::bail!(
                "refusing to listen on {addr} ({what}): a host reachable from other machines \
                 needs TLS (--tls-cert/--tls-key, see `hodei certs init`) and API tokens \
                 (--api-auth tokens); bind to 127.0.0.1, or pass --insecure to accept that \
                 anyone who reaches the port can run anything"
            );
        }
    }
    if config.api_auth == AuthMode::Off {
        tracing::warn!(
            "REST authentication is off (--api-auth off): anyone who reaches the port may do anything"
        );
    }
    Ok(())
}

/// Makes sure the data dir holds a valid admin token (0600), and, for a
/// host on loopback, leaves a copy where the CLI of this user finds it by
/// port, so `hodei run` works with no token handling.
async fn admin_token(
    tokens: &Arc<ApiTokens>,
    data_dir: &Path,
    http_addr: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let path = data_dir.join("admin.token");
    tokens.ensure_admin_file(&path).await?;
    if http_addr.ip().is_loopback()
        && let Some(local) = crate::auth::local_token_path(http_addr.port())
    {
        let token = std::fs::read_to_string(&path)?;
        if let Err(err) = write_private(&local, token.trim()) {
            tracing::warn!(path = %local.display(), %err, "cannot leave the admin token for the local CLI");
        }
    }
    Ok(())
}

/// Writes `contents` to `path` readable by this user only.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

fn agent_token(configured: Option<String>, data_dir: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(token) = configured.filter(|t| !t.is_empty()) {
        return Ok(token);
    }
    let path = data_dir.join("agent.token");
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_owned()),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(token.as_bytes())?;
    tracing::info!(path = %path.display(), "generated the agent token");
    Ok(token)
}
