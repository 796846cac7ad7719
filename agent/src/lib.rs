//! `hodei-agent`: the worker side of Hodei Jobs. It dials the host over
//! gRPC (the Hodei Worker Protocol, `hodei.agent.v1`), registers, and runs
//! the jobs it is assigned in a PTY, streaming their output back with
//! exactly-once delivery from the reader's point of view.
//!
//! # Layout
//! - `config` — the command line ([`Args`]), every flag also from `HODEI_*`.
//! - `session` — the connection loop: dial with backoff, `Register`, wait
//!   for `RegisterAck`, heartbeats, dispatch of host messages.
//! - `backoff` — reconnect delays (exponential, jittered, capped).
//! - `jobs` — the running jobs: start, cancel, abandon, shutdown; routes
//!   each job's events into the outbox.
//! - `executor` — one job's life: temp dir, the process on a PTY (stdout)
//!   with a stderr pipe, exit status, cancel and timeout, process-group
//!   cleanup.
//! - `reap` — after a job, SIGKILLs the processes that still carry its
//!   `HODEI_JOB_ID` (escaped the group by a double fork or `setsid`).
//! - `output` — reading a job's PTY (stdout) and stderr pipe into lines.
//! - `mask` — masking the job's secrets in its output, streaming, before
//!   it leaves the agent (the patterns come from the `hodei-mask` crate).
//! - `lines` — cutting raw output into log entries (16 KiB cap).
//! - `script` — how a command is launched: argv directly, a script as
//!   `job.sh` run by bash.
//! - `outbox` — sequence numbers, unacknowledged entries and results,
//!   batching, resend after a reconnect.
//! - `spill` — the on-disk queue of log entries beyond a job's memory
//!   budget.
//! - `metrics` — CPU count, memory and load from sysinfo.
//!
//! Unit tests sit next to the code (`*_tests.rs` for the larger suites) and
//! run real processes on real PTYs; `tests/protocol.rs` runs the binary
//! against a fake host over the wire.
//!
//! # Signals
//! SIGTERM drains: the agent tells the host (heartbeat `draining`, sent at
//! once), refuses new assignments, lets the running jobs finish, waits
//! until the host has stored their logs and results, and exits. A second
//! SIGTERM, or SIGINT at any time, cancels the running jobs (SIGTERM to
//! their groups, SIGKILL after the grace period), delivers their results
//! (CANCELLED) for a few seconds, and exits.
//!
//! # Exit codes
//! 0 after SIGTERM or SIGINT, 2 when the host rejects the token (and for
//! bad flags, clap's convention), 1 for any other error at startup.

mod artifacts;
mod backoff;
mod config;
mod executor;
mod jobs;
mod lines;
mod mask;
mod metrics;
mod outbox;
mod output;
mod reap;
mod script;
mod session;
mod spill;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};
use hodei_proto::PROTOCOL_VERSION;
use hodei_proto::v1::Register;
use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::timeout;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;
use tracing::{info, warn};

pub use config::{Args, Labels, Token, parse_labels};
pub use session::TokenRejected;

use artifacts::ArtifactClient;
use executor::{DRAIN_BOUND, ExecConfig, Stop};
use jobs::JobTable;
use metrics::MachineSampler;
use outbox::SharedOutbox;
use session::Agent;

/// How long results of cancelled jobs may take to be stored at shutdown.
const DELIVERY_WINDOW: Duration = Duration::from_secs(3);
/// How long SIGKILLed jobs get to be reaped and cleaned up.
const KILL_WAIT: Duration = Duration::from_secs(1);

/// Runs the agent until SIGTERM/SIGINT (`Ok`) or until the host rejects the
/// token (an error that downcasts to [`TokenRejected`]).
pub async fn run(args: Args) -> anyhow::Result<()> {
    let ran = serve(args).await;
    // What the last jobs left behind is still killed before the exit.
    let reaped = tokio::task::spawn_blocking(|| reap::drain(REAP_DRAIN)).await;
    if !matches!(reaped, Ok(true)) {
        warn!("exiting before every scan for escaped processes was done");
    }
    ran
}

/// How long an exiting agent waits for the reaper's queued scans.
const REAP_DRAIN: Duration = Duration::from_secs(2);

async fn serve(args: Args) -> anyhow::Result<()> {
    if args.exit_with_parent {
        // SIGINT, not SIGTERM: with its host gone the agent cannot deliver
        // what a drain would wait for, so it cancels.
        nix::sys::prctl::set_pdeathsig(Signal::SIGINT)
            .context("cannot set the parent-death signal")?;
    }
    let grace = Duration::from_secs(args.cancel_grace_secs);
    let agent = Arc::new(agent(args)?);
    info!(
        agent_id = %agent.identity.agent_id,
        name = %agent.identity.name,
        slots = agent.identity.slots,
        servers = %agent
            .endpoints
            .iter()
            .map(|e| e.uri().to_string())
            .collect::<Vec<_>>()
            .join(","),
        "hodei-agent starting"
    );
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut session = tokio::spawn(session::run(Arc::clone(&agent)));
    let mut signal_name = tokio::select! {
        ended = &mut session => {
            agent.jobs.stop_all(Stop::Kill);
            let _ = timeout(KILL_WAIT, agent.jobs.wait_idle()).await;
            return Err(match ended {
                Ok(rejected) => rejected.into(),
                Err(failure) => anyhow!("the session task failed: {failure}"),
            });
        }
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };

    if signal_name == "SIGTERM" {
        info!("SIGTERM: draining (running jobs finish, no new ones; SIGTERM again cancels them)");
        agent.jobs.drain();
        let drained = async {
            agent.jobs.wait_idle().await;
            agent.outbox.wait_empty().await;
        };
        signal_name = tokio::select! {
            () = drained => {
                session.abort();
                info!("drained: every job finished and its result is stored; hodei-agent stopped");
                return Ok(());
            }
            _ = sigterm.recv() => "second SIGTERM",
            _ = sigint.recv() => "SIGINT",
            // The host refused us on a reconnect: nothing can be delivered.
            _ = &mut session => "the session ended",
        };
    }

    info!(signal = signal_name, "stopping: cancelling running jobs");
    agent.jobs.stop_all(Stop::Cancel);
    let graceful = async {
        // Cancelled jobs end within the grace period plus the drain bound.
        let _ = timeout(grace + DRAIN_BOUND + KILL_WAIT, agent.jobs.wait_idle()).await;
        timeout(DELIVERY_WINDOW, agent.outbox.wait_empty())
            .await
            .is_ok()
    };
    let delivered = tokio::select! {
        delivered = graceful => delivered,
        _ = sigterm.recv() => false,
        _ = sigint.recv() => false,
    };
    if !delivered {
        let undelivered = agent.outbox.read(|outbox| outbox.held().len());
        warn!(
            undelivered,
            "exiting before the host stored every job's result"
        );
    }
    agent.jobs.stop_all(Stop::Kill);
    let _ = timeout(KILL_WAIT, agent.jobs.wait_idle()).await;
    session.abort();
    info!("hodei-agent stopped");
    Ok(())
}

/// TLS for `https://` server URLs: the CA to trust (`--ca-cert`; else the
/// system has none: rustls here carries no roots of its own) and, for
/// mutual TLS, the agent's client certificate.
fn tls_config(args: &Args) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let mut tls = tonic::transport::ClientTlsConfig::new();
    if let Some(ca) = &args.ca_cert {
        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?));
    }
    if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            read(cert)?,
            read(key)?,
        ));
    }
    Ok(tls)
}

/// Builds the agent's shared state from the flags, checking what can be
/// checked before dialling.
fn agent(args: Args) -> anyhow::Result<Agent> {
    let tls = tls_config(&args)?;
    let endpoints = args
        .server_url
        .iter()
        .map(|url| url.trim())
        .filter(|url| !url.is_empty())
        .map(|url| {
            let mut endpoint = Endpoint::from_shared(url.to_owned())
                .with_context(|| format!("invalid server URL {url:?}"))?;
            if url.starts_with("https://") {
                endpoint = endpoint
                    .tls_config(tls.clone())
                    .with_context(|| format!("cannot set up TLS for {url}"))?;
            }
            Ok(endpoint
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                // Finds a dead peer behind a silent network within seconds.
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!endpoints.is_empty(), "no server URL given");
    let authorization = MetadataValue::try_from(format!("Bearer {}", args.token.0))
        .map_err(|_| anyhow!("the token contains characters not allowed in a header"))?;
    let work_dir = args.work_dir.unwrap_or_else(std::env::temp_dir);
    anyhow::ensure!(
        work_dir.is_dir(),
        "work directory {} does not exist",
        work_dir.display()
    );
    let cpu_count = metrics::cpu_count();
    let slots = args.slots.unwrap_or(cpu_count);
    let sampler = MachineSampler::new();
    // The id is derived from a secret only this process knows, so no other
    // agent can take it over (see the protocol header).
    let (agent_secret, agent_id) = match &args.identity_file {
        Some(path) => identity_from_file(path)?,
        None => hodei_proto::new_agent_identity(),
    };
    let identity = Register {
        protocol_version: PROTOCOL_VERSION,
        agent_id,
        agent_secret,
        name: args
            .name
            .or_else(metrics::hostname)
            .unwrap_or_else(|| "hodei-agent".into()),
        version: env!("CARGO_PKG_VERSION").into(),
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
        cpu_count,
        memory_bytes: sampler.memory_total_bytes(),
        labels: args.labels.0.into_iter().collect(),
        slots,
        running: Vec::new(),
        draining: false,
    };
    let outbox = Arc::new(SharedOutbox::new(work_dir.clone()));
    let exec = ExecConfig {
        work_dir,
        cancel_grace: Duration::from_secs(args.cancel_grace_secs),
        artifacts: Some(ArtifactClient {
            endpoints: endpoints.clone(),
            authorization: authorization.clone(),
        }),
    };
    let jobs = Arc::new(JobTable::new(
        Arc::clone(&outbox),
        exec,
        usize::try_from(slots).unwrap_or(usize::MAX),
    ));
    Ok(Agent {
        identity,
        endpoints,
        authorization,
        outbox,
        jobs,
        sampler: Mutex::new(sampler),
    })
}

/// The identity kept in `path`: its secret and the id it proves; a new one
/// is written (0600, never overwritten) when the file does not exist.
fn identity_from_file(path: &std::path::Path) -> anyhow::Result<(String, String)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read_to_string(path) {
        Ok(secret) => {
            let secret = secret.trim().to_owned();
            anyhow::ensure!(
                secret.len() >= 32 && secret.bytes().all(|b| b.is_ascii_alphanumeric()),
                "{} does not hold an agent identity (remove it to make a new one)",
                path.display()
            );
            let id = hodei_proto::agent_id_for_secret(&secret);
            Ok((secret, id))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let (secret, id) = hodei_proto::new_agent_identity();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            file.write_all(secret.as_bytes())?;
            file.sync_all()?;
            Ok((secret, id))
        }
        Err(err) => Err(anyhow::Error::new(err).context(format!("cannot read {}", path.display()))),
    }
}
