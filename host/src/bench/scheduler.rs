//! `hodei bench scheduler`: what a deep backlog costs the host.
//!
//! Against real `hodei serve` processes with one local agent connected:
//! - durable submits/s of `--clients` clients posting jobs no worker can
//!   take (`labels: {pool: nowhere}`), first into an empty queue, then
//!   with `--backlog` such jobs pending (filled through the batch
//!   endpoint), on the same host; then again on a fresh host, so the
//!   ratio is taken against the mean of two empty-queue figures measured
//!   around it;
//! - with the backlog still pending, `--probes` placeable `true` jobs
//!   submitted one at a time: created → started (the job's own
//!   timestamps: the host stamps `created_at`, the agent's start report
//!   `started_at`).
//!
//! Build with `--release` for figures worth comparing.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::latency::{quantile, seconds};
use super::spine::{Host, submit_batches, submit_load};

/// Arguments of `hodei bench scheduler`.
#[derive(Debug, clap::Args)]
pub struct SchedulerArgs {
    /// Unplaceable jobs pending during the second submit round.
    #[arg(long, default_value_t = 100_000)]
    backlog: usize,
    /// Jobs each submit round posts.
    #[arg(long, default_value_t = 20_000)]
    submits: usize,
    /// Concurrent clients of a submit round.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Placeable jobs timed one at a time with the backlog pending.
    #[arg(long, default_value_t = 50)]
    probes: usize,
}

/// Runs the benchmark and prints a table.
pub async fn run(args: &SchedulerArgs) -> anyhow::Result<()> {
    let nowhere = json!({ "args": ["true"], "labels": { "pool": "nowhere" } });
    let first = empty_queue_round(args, &nowhere).await?;

    let host = Host::start(1, 4).await?;
    host.wait_agents(1).await?;
    let fill = args.backlog.saturating_sub(args.submits);
    let batch = 1_000;
    submit_load(&host.base, args.clients, args.submits, nowhere.clone()).await?;
    let body = json!({ "jobs": vec![nowhere.clone(); batch] });
    submit_batches(&host.base, 4, fill.div_ceil(batch), body).await?;
    let pending = pending(&host.base).await?;
    let deep = submit_load(&host.base, args.clients, args.submits, nowhere.clone()).await?;
    let mut starts = probe(&host.base, args.probes).await?;
    host.stop().await;

    let second = empty_queue_round(args, &nowhere).await?;
    let empty = f64::midpoint(first, second);
    println!("| measurement | figure |");
    println!("|---|---|");
    println!(
        "| durable submits/s, {} clients, empty queue (two fresh hosts) | {first:.0}, {second:.0} |",
        args.clients
    );
    println!(
        "| durable submits/s, {} clients, {pending} unplaceable jobs pending | {deep:.0} ({:.0} % of empty) |",
        args.clients,
        deep / empty * 100.0
    );
    println!(
        "| placeable job created → started with the backlog, p50 / p99 ({} jobs) | {:.1} ms / {:.1} ms |",
        starts.len(),
        quantile(&mut starts, 0.5) * 1e3,
        quantile(&mut starts, 0.99) * 1e3,
    );
    Ok(())
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

/// Submits `count` `true` jobs one at a time, each after the previous one
/// ended; returns created → started of each, in seconds.
async fn probe(base: &str, count: usize) -> anyhow::Result<Vec<f64>> {
    let http = reqwest::Client::new();
    let mut starts = Vec::with_capacity(count);
    for _ in 0..count {
        let job: Value = http
            .post(format!("{base}/api/v1/jobs"))
            .json(&json!({ "args": ["true"] }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = job["id"].as_str().context("no job id")?.to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        let job = loop {
            let job: Value = http
                .get(format!("{base}/api/v1/jobs/{id}"))
                .send()
                .await?
                .json()
                .await?;
            if job["state"] == json!("SUCCEEDED") {
                break job;
            }
            if Instant::now() > deadline {
                bail!(
                    "probe job {id} did not succeed within 30 s: {}",
                    job["state"]
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        starts.push(seconds(&job["started_at"])? - seconds(&job["created_at"])?);
    }
    Ok(starts)
}
