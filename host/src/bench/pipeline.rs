//! `hodei bench pipeline`: what a pipeline step costs over a lone job.
//!
//! Starts a real `hodei serve --local-agents 1` and measures, from the
//! host's own timestamps (one clock):
//! - a lone job: `created_at` → `started_at` (submit to the agent starting
//!   it), one job at a time;
//! - a chain of steps (`a → b → c …`, each `true`), per edge: the need's
//!   `finished_at` → the dependent's `created_at` (the engine's part: the
//!   result stored, the pipeline advanced, the job inserted) and →
//!   `started_at` (the dependent running: the engine, then the same trip
//!   as a lone job's).
//!
//! The step's overhead is the second minus a lone job's trip. Build with
//! `--release` for figures worth comparing.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::latency::{quantile, seconds};
use super::spine::Host;

/// Arguments of `hodei bench pipeline`.
#[derive(Debug, clap::Args)]
pub struct PipelineArgs {
    /// Lone jobs measured.
    #[arg(long, default_value_t = 100)]
    jobs: usize,
    /// Steps of the chain (edges measured: one less).
    #[arg(long, default_value_t = 101)]
    steps: usize,
}

/// Runs the benchmark and prints a table.
pub async fn run(args: &PipelineArgs) -> anyhow::Result<()> {
    let host = Host::start(1, 4).await?;
    host.wait_agents(1).await?;
    let http = reqwest::Client::new();
    let base = &host.base;
    let mut lone = lone_starts(&http, base, args.jobs).await?;
    let steps: Vec<Value> = (0..args.steps)
        .map(|i| {
            let needs: Vec<String> = (i > 0).then(|| format!("s{}", i - 1)).into_iter().collect();
            json!({ "name": format!("s{i}"), "needs": needs, "args": ["true"] })
        })
        .collect();
    let created: Value = http
        .post(format!("{base}/api/v1/pipelines"))
        .json(&json!({ "name": "bench", "steps": steps }))
        .send()
        .await?
        .json()
        .await?;
    let id = created["id"].as_str().context("no pipeline id")?.to_owned();
    let pipeline = loop {
        let p: Value = http
            .get(format!("{base}/api/v1/pipelines/{id}"))
            .send()
            .await?
            .json()
            .await?;
        match p["state"].as_str() {
            Some("SUCCEEDED") => break p,
            Some("FAILED" | "CANCELLED") => bail!("the pipeline ended {}", p["state"]),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let mut jobs = Vec::new();
    for step in pipeline["steps"].as_array().into_iter().flatten() {
        let job = step["job_id"].as_str().context("a step without a job")?;
        jobs.push(wait_job(&http, base, job).await?);
    }
    let (mut engine, mut start) = (Vec::new(), Vec::new());
    for pair in jobs.windows(2) {
        let ended = seconds(&pair[0]["finished_at"])?;
        engine.push(seconds(&pair[1]["created_at"])? - ended);
        start.push(seconds(&pair[1]["started_at"])? - ended);
    }
    println!("| measurement (ms) | p50 | p99 | n |");
    println!("|---|---:|---:|---:|");
    for (what, values) in [
        ("lone job: created → started", &mut lone),
        ("step: need finished → dependent created", &mut engine),
        ("step: need finished → dependent started", &mut start),
    ] {
        let n = values.len();
        println!(
            "| {what} | {:.1} | {:.1} | {n} |",
            quantile(values, 0.5) * 1e3,
            quantile(values, 0.99) * 1e3
        );
    }
    Ok(())
}

/// Submits `count` `true` jobs one at a time, each once the previous one
/// succeeded; answers each one's `created_at` → `started_at`, in seconds
/// (the host's and agent's own timestamps). Also used by `bench scheduler`.
pub(super) async fn lone_starts(
    http: &reqwest::Client,
    base: &str,
    count: usize,
) -> anyhow::Result<Vec<f64>> {
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
        let id = job["id"].as_str().context("no job id")?;
        let done = wait_job(http, base, id).await?;
        starts.push(seconds(&done["started_at"])? - seconds(&done["created_at"])?);
    }
    Ok(starts)
}

/// Waits until the job ended and succeeded; answers it.
async fn wait_job(http: &reqwest::Client, base: &str, id: &str) -> anyhow::Result<Value> {
    loop {
        let job: Value = http
            .get(format!("{base}/api/v1/jobs/{id}"))
            .send()
            .await?
            .json()
            .await?;
        match job["state"].as_str() {
            Some("SUCCEEDED") => return Ok(job),
            Some("FAILED" | "CANCELLED" | "TIMED_OUT") => bail!("job {id} ended {}", job["state"]),
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}
