//! `hodei bench latency`: one job's trip, hop by hop, and what a user
//! waits for at the command line.
//!
//! Starts a real `hodei serve --local-agents 1` and, one job at a time:
//! - hops: submits `echo hodei` over REST and follows its log over SSE at
//!   once (as `hodei run` does), then reads the job's timestamps. Each hop
//!   is the time from the submit (the client's clock just before the POST)
//!   to: the 201 (job durable and queued), `scheduled_at` (the scheduler
//!   placed it), `started_at` (the host heard the agent started it), the
//!   line's own timestamp (the agent read it from the PTY), the line at
//!   the SSE reader, `finished_at` (the host took the result), and
//!   `event: done` at the reader. All clocks are this machine's.
//! - the command line: `hodei run -- true` and `hodei run --detach -- true`
//!   as child processes of the `hodei` front binary (beside this one),
//!   timed from spawn to exit, and `--version` of both binaries for what
//!   starting them alone costs.
//! - Slurm, when `srun` is on the PATH (`scripts/slurm.sh` sets up a
//!   single-node cluster): `srun true`, and `sbatch --wrap true` in turns
//!   with `hodei run --detach` (one of each, again and again), then the
//!   ratio of their rates; otherwise the rows say "skipped: no slurm".
//!
//! Build with `--release` for figures worth comparing.

use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

use super::logs::now;
use super::spine::Host;

/// Arguments of `hodei bench latency`.
#[derive(Debug, clap::Args)]
pub struct LatencyArgs {
    /// Jobs followed hop by hop.
    #[arg(long, default_value_t = 200)]
    jobs: usize,
    /// Runs of each command-line measurement.
    #[arg(long, default_value_t = 100)]
    runs: usize,
}

/// Jobs and runs whose figures are not kept (caches, connections, the
/// agent's first spawn).
const WARM_UP: usize = 5;

/// The hops of one job, seconds after its submit.
#[derive(Debug, Default, Clone, Copy)]
struct Hops {
    created: f64,
    scheduled: f64,
    started: f64,
    line_read: f64,
    line_received: f64,
    finished: f64,
    done_received: f64,
}

/// Reads one hop of a trip.
type Hop = fn(&Hops) -> f64;

/// Runs the benchmark and prints two tables.
pub async fn run(args: &LatencyArgs) -> anyhow::Result<()> {
    let host = Host::start(1, 4).await?;
    host.wait_agents(1).await?;
    let http = reqwest::Client::new();
    let mut hops = Vec::with_capacity(args.jobs);
    for i in 0..args.jobs + WARM_UP {
        let trip = one_trip(&http, &host.base).await?;
        if i >= WARM_UP {
            hops.push(trip);
        }
    }
    // What users type: the `hodei` front, which does `run` itself and
    // runs `hodei-host` (this executable) for the rest.
    let this = std::env::current_exe()?;
    let front = this.with_file_name("hodei");
    if !front.is_file() {
        bail!(
            "{} is missing: `bench latency` times the `hodei` command users type (build it: `cargo build --release -p hodei-cli`)",
            front.display()
        );
    }
    let hodei = |extra: &[&str]| {
        let mut command = std::process::Command::new(&front);
        command.env("HODEI_SERVER", &host.base).args(extra);
        command
    };
    let run = time_command(args.runs, || hodei(&["run", "--", "true"]))?;
    let version = time_command(args.runs, || hodei(&["--version"]))?;
    let host_version = time_command(args.runs, || {
        let mut command = std::process::Command::new(&this);
        command.arg("--version");
        command
    })?;
    // `run --detach` and `sbatch` take turns, run by run, so both see the
    // same machine (it is noisy) and the ratio compares like with like.
    let slurm = which("srun");
    let mut submitters: Vec<Box<dyn Fn() -> std::process::Command + '_>> =
        vec![Box::new(|| hodei(&["run", "--detach", "--", "true"]))];
    if slurm {
        submitters.push(Box::new(|| {
            let mut command = std::process::Command::new("sbatch");
            command.args(["--wrap", "true", "--output", "/dev/null"]);
            command
        }));
    }
    let mut submits = time_in_turns(args.runs, &submitters)?.into_iter();
    let detach = submits.next().context("no detach figures")?;
    let sbatch = submits.next();
    drop(submitters);
    host.stop().await;

    println!(
        "| hop (submit → …), {} jobs, one at a time | p50 ms | p99 ms |",
        hops.len()
    );
    println!("|---|---:|---:|");
    let rows: [(&str, Hop); 7] = [
        ("201 received (durable, queued)", |h| h.created),
        ("assigned (`scheduled_at`)", |h| h.scheduled),
        ("started (`started_at`, host heard it)", |h| h.started),
        ("first line read by the agent (its timestamp)", |h| {
            h.line_read
        }),
        ("first line at the SSE reader", |h| h.line_received),
        ("result stored (`finished_at`)", |h| h.finished),
        ("`event: done` at the SSE reader", |h| h.done_received),
    ];
    for (what, hop) in rows {
        let mut values: Vec<f64> = hops.iter().map(hop).collect();
        println!(
            "| {what} | {:.2} | {:.2} |",
            quantile(&mut values, 0.5) * 1e3,
            quantile(&mut values, 0.99) * 1e3
        );
    }

    println!();
    println!(
        "| command, {} sequential runs | p50 ms | p99 ms | per second |",
        args.runs
    );
    println!("|---|---:|---:|---:|");
    print_command("`hodei run -- true`", run.clone());
    print_command("`hodei run --detach -- true`", detach.clone());
    print_command("`hodei --version` (the front, then `hodei-host`)", version);
    print_command(
        "`hodei-host --version` (the host binary starting)",
        host_version,
    );
    match sbatch {
        Some(sbatch) => {
            let srun = time_command(args.runs, || {
                let mut command = std::process::Command::new("srun");
                command.arg("true");
                command
            })?;
            print_command("`srun true`", srun.clone());
            print_command(
                "`sbatch --wrap true` (in turns with `--detach`)",
                sbatch.clone(),
            );
            let rate = |times: &[f64]| times.len() as f64 / times.iter().sum::<f64>();
            println!();
            println!(
                "sequential submits: `hodei run --detach` {:.2} × `sbatch` (aim ≥ 1.5 ×); `hodei run` p50 {:.2} × `srun`'s",
                rate(&detach) / rate(&sbatch),
                quantile(&mut run.clone(), 0.5) / quantile(&mut srun.clone(), 0.5),
            );
        }
        None => {
            println!("| `srun true` | skipped: no slurm | | |");
            println!("| `sbatch --wrap true` | skipped: no slurm | | |");
        }
    }
    Ok(())
}

/// Submits `echo hodei`, follows its log to `done`, then reads its
/// timestamps.
async fn one_trip(http: &reqwest::Client, base: &str) -> anyhow::Result<Hops> {
    let submitted = now();
    let job: Value = http
        .post(format!("{base}/api/v1/jobs"))
        .json(&json!({ "args": ["echo", "hodei"] }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut hops = Hops {
        created: now() - submitted,
        ..Hops::default()
    };
    let id = job["id"].as_str().context("no job id")?.to_owned();
    let response = http
        .get(format!("{base}/api/v1/jobs/{id}/logs?follow=true"))
        .send()
        .await?
        .error_for_status()?;
    let mut body = response.bytes_stream();
    let mut text = String::new();
    'read: while let Some(chunk) = body.next().await {
        let received = now() - submitted;
        text.push_str(std::str::from_utf8(&chunk?)?);
        // Whole lines only; a partial last line waits for the next chunk.
        let Some(end) = text.rfind('\n') else {
            continue;
        };
        for line in text[..end].lines() {
            if line == "event: done" {
                hops.done_received = received;
                break 'read;
            }
            if hops.line_received == 0.0
                && let Some(data) = line.strip_prefix("data: ")
            {
                let record: Value = serde_json::from_str(data)?;
                hops.line_received = received;
                hops.line_read = seconds(&record["timestamp"])? - submitted;
            }
        }
        text.drain(..=end);
    }
    if hops.done_received == 0.0 {
        bail!("the log stream of {id} ended before the job");
    }
    let job: Value = http
        .get(format!("{base}/api/v1/jobs/{id}"))
        .send()
        .await?
        .json()
        .await?;
    if job["state"] != json!("SUCCEEDED") {
        bail!("job {id} ended {}", job["state"]);
    }
    hops.scheduled = seconds(&job["scheduled_at"])? - submitted;
    hops.started = seconds(&job["started_at"])? - submitted;
    hops.finished = seconds(&job["finished_at"])? - submitted;
    Ok(hops)
}

/// An RFC 3339 timestamp as Unix seconds.
pub(super) fn seconds(value: &Value) -> anyhow::Result<f64> {
    let text = value.as_str().context("no timestamp")?;
    let at = time::OffsetDateTime::parse(text, &Rfc3339)?;
    Ok(at.unix_timestamp_nanos() as f64 / 1e9)
}

/// Runs the command `runs` times (after a warm-up), one after the other;
/// returns each run's seconds. A failed run fails the benchmark.
fn time_command(
    runs: usize,
    command: impl Fn() -> std::process::Command,
) -> anyhow::Result<Vec<f64>> {
    let command: Box<dyn Fn() -> std::process::Command + '_> = Box::new(command);
    let mut times = time_in_turns(runs, std::slice::from_ref(&command))?;
    Ok(times.pop().unwrap_or_default())
}

/// Runs each command `runs` times (after a warm-up), taking turns: the
/// first, the second, ..., the first again; returns each one's seconds
/// per run. A failed run fails the benchmark.
fn time_in_turns(
    runs: usize,
    commands: &[Box<dyn Fn() -> std::process::Command + '_>],
) -> anyhow::Result<Vec<Vec<f64>>> {
    let mut times = vec![Vec::with_capacity(runs); commands.len()];
    for i in 0..runs + WARM_UP {
        for (command, times) in commands.iter().zip(&mut times) {
            let started = Instant::now();
            let status = command()
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            let took = started.elapsed().as_secs_f64();
            if !status.success() {
                bail!("{:?} failed: {status}", command());
            }
            if i >= WARM_UP {
                times.push(took);
            }
        }
    }
    Ok(times)
}

fn print_command(what: &str, mut times: Vec<f64>) {
    let total: f64 = times.iter().sum();
    println!(
        "| {what} | {:.1} | {:.1} | {:.0} |",
        quantile(&mut times, 0.5) * 1e3,
        quantile(&mut times, 0.99) * 1e3,
        times.len() as f64 / total
    );
}

/// The `q` quantile (nearest rank) of `values`.
pub(super) fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((values.len().saturating_sub(1)) as f64 * q).round() as usize;
    values.get(rank).copied().unwrap_or(f64::NAN)
}

/// True when `program` is on the PATH.
fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
