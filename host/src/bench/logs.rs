//! `hodei bench logs`: how fast a job's output reaches a reader.
//!
//! Starts a real `hodei serve` with one local `hodei-agent`, and follows
//! each job's log over SSE (`GET /api/v1/jobs/{id}/logs?follow=true`), as
//! `hodei logs -f` does:
//! - latency: a job prints a line carrying bash's `$EPOCHREALTIME` (the
//!   moment of the write) every 20 ms; the reader subtracts it from its own
//!   clock when the line arrives (same machine, same clock). p50/p99/max;
//!   the first lines are skipped (the reader connects while the job
//!   starts).
//! - throughput: a job prints base64 text (76-character lines, what a
//!   chatty build looks like) as fast as it can; MB/s of log data from the
//!   job's first write to the reader's receipt of the last line.
//!
//! It also prints the size of the static agent binary if it was built
//! (`cargo build --profile agent-release --target x86_64-unknown-linux-musl
//! -p hodei-agent`). Build with `--release` for figures worth comparing.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};

use super::spine::Host;

/// Arguments of `hodei bench logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Timestamped lines of the latency job (one every 20 ms).
    #[arg(long, default_value_t = 500)]
    lines: u32,
    /// Megabytes of output of the throughput job.
    #[arg(long, default_value_t = 200)]
    megabytes: u64,
}

/// Lines skipped at the start of the latency job.
const WARM_UP: usize = 10;

/// Runs the benchmark and prints a table.
pub async fn run(args: &LogsArgs) -> anyhow::Result<()> {
    let host = Host::start(1, 2).await?;
    host.wait_agents(1).await?;
    let http = reqwest::Client::new();

    let script = format!(
        "for i in $(seq {}); do echo \"t $EPOCHREALTIME\"; sleep 0.02; done",
        args.lines
    );
    let mut latencies = Vec::new();
    follow(&http, &host.base, &script, |line, received| {
        if let Some(written) = line.strip_prefix("t ").and_then(parse_epoch) {
            latencies.push(received - written);
        }
    })
    .await?;
    let latencies: Vec<f64> = latencies.into_iter().skip(WARM_UP).collect();
    if latencies.is_empty() {
        bail!("the latency job printed nothing");
    }

    let bytes = args.megabytes * 1_000_000 * 3 / 4;
    let script = format!(
        "echo \"start $EPOCHREALTIME\"; head -c {bytes} /dev/urandom | base64; echo \"end $EPOCHREALTIME\""
    );
    let (mut first, mut last, mut ended, mut volume) = (None, 0.0, None, 0_u64);
    follow(&http, &host.base, &script, |line, received| {
        if let Some(start) = line.strip_prefix("start ").and_then(parse_epoch) {
            first = Some(start);
        } else if let Some(end) = line.strip_prefix("end ").and_then(parse_epoch) {
            ended = Some(end);
        } else {
            volume += line.len() as u64 + 1;
        }
        last = received;
    })
    .await?;
    host.stop().await;
    let (first, ended) = (
        first.context("no start line")?,
        ended.context("no end line")?,
    );
    let seconds = last - first;
    let mb = volume as f64 / 1e6;

    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    let ms = |q: f64| {
        let rank = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[rank] * 1000.0
    };
    println!("| measurement | figure | aim |");
    println!("|---|---:|---|");
    println!(
        "| write → SSE receipt, p50 ({} lines, 1 every 20 ms) | {:.2} ms | < 5 ms |",
        sorted.len(),
        ms(0.5)
    );
    println!(
        "| write → SSE receipt, p99 | {:.2} ms | < 25 ms |",
        ms(0.99)
    );
    println!("| write → SSE receipt, max | {:.2} ms | |", ms(1.0));
    println!(
        "| throughput, {mb:.0} MB of 76-char lines, job's first write → last line at the reader | {:.0} MB/s ({seconds:.1} s) | ≥ 100 MB/s |",
        mb / seconds
    );
    println!(
        "| the job alone writing it (the agent keeps up or spills) | {:.0} MB/s ({:.1} s) | |",
        mb / (ended - first),
        ended - first
    );
    match static_agent() {
        Some((path, size)) => println!(
            "| static agent binary ({}) | {:.2} MB | |",
            path.display(),
            size as f64 / 1e6
        ),
        None => println!(
            "| static agent binary | not built: cargo build --profile agent-release --target x86_64-unknown-linux-musl -p hodei-agent | |"
        ),
    }
    Ok(())
}

/// Submits `script` and follows its log to the end, calling `each` with
/// every line and the reader's clock when it arrived (Unix seconds).
async fn follow(
    http: &reqwest::Client,
    base: &str,
    script: &str,
    mut each: impl FnMut(&str, f64),
) -> anyhow::Result<()> {
    let job: Value = http
        .post(format!("{base}/api/v1/jobs"))
        .json(&json!({ "command": script }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = job["id"].as_str().context("no job id")?;
    let response = http
        .get(format!("{base}/api/v1/jobs/{id}/logs?follow=true"))
        .send()
        .await?
        .error_for_status()?;
    let mut body = response.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    let mut event = String::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let received = now();
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = &pending[start..start + end];
            start += end + 1;
            if let Some(name) = line.strip_prefix(b"event:") {
                event = String::from_utf8_lossy(name).trim().to_owned();
            } else if let Some(data) = line.strip_prefix(b"data:") {
                if event == "done" {
                    let done: Value = serde_json::from_slice(data)?;
                    if done["status"] != json!("SUCCEEDED") {
                        bail!("the job ended {done}");
                    }
                    return Ok(());
                }
                let record: Value = serde_json::from_slice(data)?;
                each(record["line"].as_str().unwrap_or_default(), received);
            } else if line.is_empty() {
                event.clear();
            }
        }
        pending.drain(..start);
    }
    bail!("the log stream ended before the job")
}

/// `$EPOCHREALTIME` (`1732269600.123456`) as seconds.
fn parse_epoch(text: &str) -> Option<f64> {
    text.trim().parse().ok()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// The musl agent next to this build's target directory, and its size.
fn static_agent() -> Option<(PathBuf, u64)> {
    let exe = std::env::current_exe().ok()?;
    let target = exe.parent()?.parent()?;
    let path = target.join("x86_64-unknown-linux-musl/agent-release/hodei-agent");
    let size = std::fs::metadata(&path).ok()?.len();
    Some((path, size))
}
