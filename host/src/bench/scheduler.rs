//! `hodei bench scheduler`: what one host coordinates, and what a deep
//! backlog costs it.
//!
//! Throughput: a real `hodei serve` with `--sim-agents` simulated agents
//! ([`super::sim_agents`]: real gRPC sessions in this process that finish
//! every job the moment it arrives) runs `--jobs` `true` jobs submitted in
//! batches of 1,000 by 4 clients; jobs/s from the first submit to the last
//! job finished, and the host process's CPU time (user + system, from
//! `/proc`) per job. The simulated agents and the clients share the
//! machine's two cores with the host.
//!
//! Backlog, against real `hodei serve` processes with one local agent
//! connected:
//! - durable submits/s of `--clients` clients posting jobs no worker can
//!   take (`labels: {pool: nowhere}`): `--runs` rounds into an empty queue
//!   (a fresh host each), alternating with as many rounds into a host
//!   with `--backlog` such jobs pending (filled through the batch
//!   endpoint first); the ratio of the medians;
//! - with the backlog still pending, `--probes` placeable `true` jobs
//!   submitted one at a time: created → started (the job's own
//!   timestamps: the host stamps `created_at`, the agent's start report
//!   `started_at`).
//!
//! Build with `--release` for figures worth comparing.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::cpu;
use super::latency::quantile;
use super::pipeline::lone_starts;
use super::sim_agents;
use super::spine::{Host, finished, submit_batches, submit_load};

/// Arguments of `hodei bench scheduler`.
#[derive(Debug, clap::Args)]
pub struct SchedulerArgs {
    /// Unplaceable jobs pending during the second submit round.
    #[arg(long, default_value_t = 100_000)]
    backlog: usize,
    /// Jobs each submit round posts.
    #[arg(long, default_value_t = 10_000)]
    submits: usize,
    /// Submit rounds on each side (empty queue, deep backlog), alternating.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Concurrent clients of a submit round.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Placeable jobs timed one at a time with the backlog pending.
    #[arg(long, default_value_t = 50)]
    probes: usize,
    /// Jobs run end to end through the simulated agents.
    #[arg(long, default_value_t = 50_000)]
    jobs: usize,
    /// Simulated agents.
    #[arg(long, default_value_t = 100)]
    sim_agents: usize,
    /// Slots of each simulated agent.
    #[arg(long, default_value_t = 16)]
    sim_slots: u32,
    /// Only the throughput part, or only the backlog part.
    #[arg(long, value_enum)]
    only: Option<Part>,
}

/// A part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Jobs/s and host CPU per job through simulated agents.
    Throughput,
    /// Submits/s and a job's start with a deep unplaceable backlog.
    Backlog,
}

/// Runs the benchmark and prints a table.
pub async fn run(args: &SchedulerArgs) -> anyhow::Result<()> {
    println!("| measurement | figure |");
    println!("|---|---|");
    if args.only != Some(Part::Backlog) {
        throughput(args).await?;
    }
    if args.only != Some(Part::Throughput) {
        backlog(args).await?;
    }
    Ok(())
}

/// Jobs/s end to end and host CPU per job, through simulated agents.
async fn throughput(args: &SchedulerArgs) -> anyhow::Result<()> {
    let host = Host::start_with(0, 1, &["--agent-token", sim_agents::TOKEN]).await?;
    let agents = sim_agents::start(&host.grpc, args.sim_agents, args.sim_slots).await?;
    host.wait_agents(u32::try_from(args.sim_agents)?).await?;
    let pid = host.pid().context("the host has no pid")?;
    let http = reqwest::Client::new();
    let batch = 1_000;
    let batches = args.jobs.div_ceil(batch);
    let total = u64::try_from(batches * batch)?;
    let body = json!({ "jobs": vec![json!({ "args": ["true"] }); batch] });
    let cpu_before = cpu::process_seconds(pid)?;
    let started = Instant::now();
    submit_batches(&host.base, 4, batches, body).await?;
    while finished(&http, &host.base).await? < total {
        if started.elapsed() > Duration::from_secs(600) {
            bail!("jobs did not finish within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu::process_seconds(pid)? - cpu_before;
    drop(agents);
    host.stop().await;
    println!(
        "| `true` jobs/s end to end, {} simulated agents × {} slots, {total} jobs | {:.0} |",
        args.sim_agents,
        args.sim_slots,
        total as f64 / elapsed
    );
    println!(
        "| host CPU per job (user + system) | {:.0} µs |",
        cpu / total as f64 * 1e6
    );
    Ok(())
}

/// Submits/s with and without a deep backlog, and a job's start with it.
async fn backlog(args: &SchedulerArgs) -> anyhow::Result<()> {
    let nowhere = json!({ "args": ["true"], "labels": { "pool": "nowhere" } });
    let host = Host::start(1, 4).await?;
    host.wait_agents(1).await?;
    let batch = 1_000;
    let body = json!({ "jobs": vec![nowhere.clone(); batch] });
    submit_batches(&host.base, 4, args.backlog.div_ceil(batch), body).await?;
    let pending_before = pending(&host.base).await?;
    // Rounds alternate between a fresh host (empty queue) and the deep
    // one, so both see the same moments of a noisy machine.
    let (mut empty, mut deep) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        empty.push(empty_queue_round(args, &nowhere).await?);
        deep.push(submit_load(&host.base, args.clients, args.submits, nowhere.clone()).await?);
    }
    let mut starts = lone_starts(&reqwest::Client::new(), &host.base, args.probes).await?;
    host.stop().await;
    let list = |figures: &[f64]| {
        figures
            .iter()
            .map(|f| format!("{f:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (empty_median, deep_median) = (median(&empty), median(&deep));
    println!(
        "| durable submits/s, {} clients × {} jobs, empty queue (fresh hosts) | {} (median {empty_median:.0}) |",
        args.clients,
        args.submits,
        list(&empty)
    );
    println!(
        "| the same with {pending_before}+ unplaceable jobs pending, alternating | {} (median {deep_median:.0}: {:.0} % of empty) |",
        list(&deep),
        deep_median / empty_median * 100.0
    );
    println!(
        "| placeable job created → started with the backlog, p50 / p99 ({} jobs) | {:.1} ms / {:.1} ms |",
        starts.len(),
        quantile(&mut starts, 0.5) * 1e3,
        quantile(&mut starts, 0.99) * 1e3,
    );
    Ok(())
}

fn median(figures: &[f64]) -> f64 {
    let mut sorted = figures.to_vec();
    quantile(&mut sorted, 0.5)
}

/// Submits/s into an empty queue on a fresh host with one agent.
async fn empty_queue_round(args: &SchedulerArgs, body: &Value) -> anyhow::Result<f64> {
    let host = Host::start(1, 4).await?;
    host.wait_agents(1).await?;
    let rate = submit_load(&host.base, args.clients, args.submits, body.clone()).await?;
    host.stop().await;
    Ok(rate)
}

/// How many jobs are pending (from `/healthz`).
async fn pending(base: &str) -> anyhow::Result<u64> {
    let health: Value = reqwest::get(format!("{base}/healthz"))
        .await?
        .json()
        .await?;
    health["queued_jobs"]
        .as_u64()
        .context("healthz has no queued_jobs")
}
