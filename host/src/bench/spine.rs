//! `hodei bench spine`: the spine's figures, measured against real processes.
//!
//! Starts a real `hodei serve` (this binary) on a temporary data directory
//! and ports picked by the OS, then measures over HTTP, as a user would:
//! - durable submits/s: N clients each POST jobs back to back; every 201
//!   means the job is fsynced (no agents, so nothing competes);
//! - durable batch submits: jobs/s when clients POST `/api/v1/jobs/batch`
//!   with `--batch-size` jobs each (every 201 means the whole batch is
//!   fsynced);
//! - completed jobs/s: a fresh host with local agents, `true` jobs submitted
//!   by 64 clients, timed from the first submit until the host has finished
//!   them all;
//! - with `--secure`, what TLS and API tokens cost: each submit round runs
//!   `--runs` times against a plain host and a host with TLS (`hodei certs
//!   init` output) and token auth (its admin token, no rate limit),
//!   alternating, and the medians and their ratio are printed. Both use
//!   HTTP/1.1 keep-alive connections, one per client, so the difference is
//!   TLS and the token check, not h2 multiplexing.
//!
//! Build with `--release` for figures worth comparing.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Arguments of `hodei bench spine`.
#[derive(Debug, clap::Args)]
pub struct SpineArgs {
    /// Jobs each submit round posts.
    #[arg(long, default_value_t = 20_000)]
    submits: usize,
    /// Client counts to measure submits with.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 64])]
    clients: Vec<usize>,
    /// Jobs each batch submit round posts, in batches.
    #[arg(long, default_value_t = 200_000)]
    batch_jobs: usize,
    /// Jobs per batch.
    #[arg(long, default_value_t = 1_000)]
    batch_size: usize,
    /// Concurrent clients posting batches.
    #[arg(long, default_value_t = 4)]
    batch_clients: usize,
    /// Trivial jobs run end to end.
    #[arg(long, default_value_t = 5_000)]
    jobs: usize,
    /// Local agents for the end-to-end round.
    #[arg(long, default_value_t = 4)]
    agents: u32,
    /// Slots per local agent.
    #[arg(long, default_value_t = 8)]
    slots: u32,
    /// Measure submits plain and with TLS + token auth, side by side.
    #[arg(long)]
    secure: bool,
    /// Rounds per mode with `--secure` (medians are printed).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// A `hodei serve` child on a temporary data directory (also used by
/// `bench logs`, `store`, `latency` and `footprint`).
pub(super) struct Host {
    child: Child,
    /// `http://ADDR` of its REST API.
    pub(super) base: String,
    /// `http://ADDR` of its agent gRPC port.
    pub(super) grpc: String,
    /// Removed when the host is dropped (when the benchmark made it).
    temp_dir: Option<tempfile::TempDir>,
}

impl Host {
    /// Starts a host with `local_agents` local agents of `slots` slots.
    pub(super) async fn start(local_agents: u32, slots: u32) -> anyhow::Result<Self> {
        Self::start_with(local_agents, slots, &[]).await
    }

    /// The same, with extra `serve` flags.
    pub(super) async fn start_with(
        local_agents: u32,
        slots: u32,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut host = Self::start_in(dir.path(), local_agents, slots, extra).await?;
        host.temp_dir = Some(dir);
        Ok(host)
    }

    /// The same on the data directory `dir`, which outlives the host.
    pub(super) async fn start_in(
        dir: &std::path::Path,
        local_agents: u32,
        slots: u32,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "serve",
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir)
            .args(["--local-agents", &local_agents.to_string()])
            .args(["--local-agent-slots", &slots.to_string()])
            .args(if extra.contains(&"--api-auth") {
                &[][..]
            } else {
                &["--api-auth", "off"][..]
            })
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut base, mut grpc) = (None, None);
        while base.is_none() || grpc.is_none() {
            let line = lines
                .next_line()
                .await?
                .context("host exited during start-up")?;
            if let Some(addr) = line.strip_prefix("hodei: http listening on ") {
                base = Some(addr.to_owned());
            }
            if let Some(addr) = line.strip_prefix("hodei: grpc listening on ") {
                grpc = Some(addr.to_owned());
            }
        }
        let (base, grpc) = (base.unwrap_or_default(), grpc.unwrap_or_default());
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            base,
            grpc,
            temp_dir: None,
        })
    }

    /// The host process's id.
    pub(super) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits until `agents` workers are connected (30 s at most).
    pub(super) async fn wait_agents(&self, agents: u32) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let health: serde_json::Value = http
                .get(format!("{}/healthz", self.base))
                .send()
                .await?
                .json()
                .await?;
            if health["connected_workers"].as_u64() == Some(u64::from(agents)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("local agents did not connect within 30s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits (10 s at most) for the host to exit.
    pub(super) async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// Posts `total` jobs from `clients` concurrent clients; returns jobs/s.
pub(super) async fn submit_load(
    base: &str,
    clients: usize,
    total: usize,
    body: serde_json::Value,
) -> anyhow::Result<f64> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    submit_with(&http, base, clients, total, body).await
}

/// The same through `http` (which carries any CA and token).
async fn submit_with(
    http: &reqwest::Client,
    base: &str,
    clients: usize,
    total: usize,
    body: serde_json::Value,
) -> anyhow::Result<f64> {
    let body = bytes::Bytes::from(serde_json::to_vec(&body)?);
    post_load(http, &format!("{base}/api/v1/jobs"), clients, total, body).await
}

/// Posts `batches` batch bodies from `clients` concurrent clients; returns
/// batches/s.
pub(super) async fn submit_batches(
    base: &str,
    clients: usize,
    batches: usize,
    body: serde_json::Value,
) -> anyhow::Result<f64> {
    let body = bytes::Bytes::from(serde_json::to_vec(&body)?);
    let url = format!("{base}/api/v1/jobs/batch");
    post_load(&reqwest::Client::new(), &url, clients, batches, body).await
}

/// POSTs the JSON `body` to `url` `total` times from `clients` concurrent
/// clients, each answer a 201 read to its end; returns requests/s. The body
/// is serialized once: the figure is the host's, not this client's JSON.
async fn post_load(
    http: &reqwest::Client,
    url: &str,
    clients: usize,
    total: usize,
    body: bytes::Bytes,
) -> anyhow::Result<f64> {
    let left = Arc::new(AtomicUsize::new(total));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (http, left, url, body) = (
            http.clone(),
            Arc::clone(&left),
            url.to_owned(),
            body.clone(),
        );
        tasks.spawn(async move {
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let response = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?;
                if response.status() != reqwest::StatusCode::CREATED {
                    bail!("{url} answered {}", response.status());
                }
                response.bytes().await?;
            }
            Ok(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// `jobs_finished` of the host's `/healthz`.
pub(super) async fn finished(http: &reqwest::Client, base: &str) -> anyhow::Result<u64> {
    let health: serde_json::Value = http
        .get(format!("{base}/healthz"))
        .send()
        .await?
        .json()
        .await?;
    health["jobs_finished"]
        .as_u64()
        .context("healthz has no jobs_finished")
}

/// Runs the benchmark and prints a table.
pub async fn run(args: SpineArgs) -> anyhow::Result<()> {
    if args.secure {
        return secure(&args).await;
    }
    println!("| measurement | figure |");
    println!("|---|---|");
    let body = json!({ "args": ["true"] });
    for &clients in &args.clients {
        let host = Host::start(0, 1).await?;
        let rate = submit_load(&host.base, clients, args.submits, body.clone()).await?;
        println!(
            "| durable submits/s, {clients} client(s), {} jobs (redb) | {rate:.0} |",
            args.submits
        );
        host.stop().await;
    }

    let host = Host::start(0, 1).await?;
    let batch = json!({ "jobs": vec![body.clone(); args.batch_size] });
    let batches = args.batch_jobs.div_ceil(args.batch_size.max(1));
    let rate = submit_batches(&host.base, args.batch_clients, batches, batch).await?
        * args.batch_size as f64;
    println!(
        "| durable submits/s in batches of {}, {} client(s), {} jobs (redb) | {rate:.0} |",
        args.batch_size,
        args.batch_clients,
        batches * args.batch_size
    );
    host.stop().await;

    let host = Host::start(args.agents, args.slots).await?;
    host.wait_agents(args.agents).await?;
    let http = reqwest::Client::new();
    let started = Instant::now();
    submit_load(&host.base, 64, args.jobs, body).await?;
    let expected = u64::try_from(args.jobs)?;
    while finished(&http, &host.base).await? < expected {
        if started.elapsed() > Duration::from_secs(600) {
            bail!("jobs did not finish within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = args.jobs as f64 / started.elapsed().as_secs_f64();
    println!(
        "| completed `true` jobs/s end to end, {} agents × {} slots, {} jobs | {rate:.0} |",
        args.agents, args.slots, args.jobs
    );
    host.stop().await;
    Ok(())
}

/// Durable submits/s of one round against a fresh host, plain or with TLS
/// and token auth.
async fn secure_round(secure: bool, clients: usize, submits: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let body = json!({ "args": ["true"] });
    let builder = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(clients);
    if !secure {
        let host = Host::start_in(dir.path(), 0, 1, &[]).await?;
        let rate = submit_with(&builder.build()?, &host.base, clients, submits, body).await;
        host.stop().await;
        return rate;
    }
    let tls = dir.path().join("tls");
    crate::tls::certs::init(&tls, Vec::new(), 1)?;
    let (cert, key) = (tls.join("server.pem"), tls.join("server.key"));
    let host = Host::start_in(
        dir.path(),
        0,
        1,
        &[
            "--api-auth",
            "tokens",
            "--api-submit-rate",
            "0",
            "--tls-cert",
            cert.to_str().context("temp path is not UTF-8")?,
            "--tls-key",
            key.to_str().context("temp path is not UTF-8")?,
        ],
    )
    .await?;
    let token = std::fs::read_to_string(dir.path().join("admin.token"))?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", token.trim()).parse()?,
    );
    let ca = reqwest::Certificate::from_pem(&std::fs::read(tls.join("ca.pem"))?)?;
    let http = builder
        .add_root_certificate(ca)
        .default_headers(headers)
        .build()?;
    let rate = submit_with(&http, &host.base, clients, submits, body).await;
    host.stop().await;
    rate
}

fn median(mut figures: Vec<f64>) -> f64 {
    figures.sort_by(f64::total_cmp);
    figures.get(figures.len() / 2).copied().unwrap_or(0.0)
}

/// `--secure`: plain against TLS + tokens, alternating, medians and ratio.
async fn secure(args: &SpineArgs) -> anyhow::Result<()> {
    println!(
        "| durable submits/s (redb), {} jobs per round, median of {} | plain | TLS + token | ratio |",
        args.submits, args.runs
    );
    println!("|---|---:|---:|---:|");
    for &clients in &args.clients {
        let (mut plain, mut secured) = (Vec::new(), Vec::new());
        for run in 0..args.runs.max(1) {
            // Alternate which goes first, so drift of the machine does not
            // favour one mode.
            for secure in [run % 2 == 1, run % 2 == 0] {
                let rate = secure_round(secure, clients, args.submits).await?;
                if secure {
                    secured.push(rate)
                } else {
                    plain.push(rate)
                }
            }
        }
        let (plain, secured) = (median(plain), median(secured));
        println!(
            "| {clients} client(s) | {plain:.0} | {secured:.0} | {:.2} |",
            secured / plain
        );
    }
    Ok(())
}
