//! `hodei bench footprint`: the host's memory and listing time with a long
//! history.
//!
//! On one data directory:
//! 1. a host with 4 local agents × 8 slots runs `--finished` jobs that each
//!    print 3 lines (`seq 3`), until all are finished;
//! 2. that host stops, and a host with no agents starts on the same
//!    directory (the store holds the finished jobs and their logs); it
//!    takes `--pending` more jobs, which stay pending;
//! 3. listing by state (`GET /api/v1/jobs?state=…`, one page of 50, as
//!    `hodei jobs ls --state` asks) is timed against that history.
//!
//! Memory is the host process's resident set (`VmRSS`) and its peak
//! (`VmHWM`) from /proc, read after each step. The agents' memory is not
//! counted (separate processes).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use super::spine::{Host, finished, submit_load};

/// Arguments of `hodei bench footprint`.
#[derive(Debug, clap::Args)]
pub struct FootprintArgs {
    /// Jobs run to the end first (each prints 3 lines).
    #[arg(long, default_value_t = 50_000)]
    finished: usize,
    /// Jobs submitted afterwards to a host without agents.
    #[arg(long, default_value_t = 50_000)]
    pending: usize,
    /// Timed requests per listing.
    #[arg(long, default_value_t = 50)]
    requests: usize,
}

/// Runs the benchmark and prints a table.
pub async fn run(args: &FootprintArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut rows = Vec::new();

    let host = Host::start_in(dir.path(), 4, 8, &[]).await?;
    host.wait_agents(4).await?;
    rows.push(("idle, 4 local agents".to_owned(), memory(&host)?));
    let http = reqwest::Client::new();
    let started = Instant::now();
    submit_load(
        &host.base,
        64,
        args.finished,
        json!({ "args": ["seq", "3"] }),
    )
    .await?;
    let expected = u64::try_from(args.finished)?;
    while finished(&http, &host.base).await? < expected {
        if started.elapsed() > Duration::from_secs(900) {
            bail!("jobs did not finish within 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rows.push((
        format!("after running {} jobs (3 log lines each)", args.finished),
        memory(&host)?,
    ));
    host.stop().await;

    let host = Host::start_in(dir.path(), 0, 1, &[]).await?;
    rows.push((
        format!("restarted on that store ({} finished jobs)", args.finished),
        memory(&host)?,
    ));
    submit_load(&host.base, 64, args.pending, json!({ "args": ["true"] })).await?;
    rows.push((
        format!(
            "+ {} pending jobs ({} stored)",
            args.pending,
            args.finished + args.pending
        ),
        memory(&host)?,
    ));
    let mut listings = Vec::new();
    for state in ["succeeded", "pending", "running"] {
        let url = format!("{}/api/v1/jobs?state={state}", host.base);
        listings.push((state, time_get(&http, &url, args.requests).await?));
    }
    let url = format!("{}/api/v1/jobs", host.base);
    listings.push(("(any)", time_get(&http, &url, args.requests).await?));
    rows.push(("after the listings".to_owned(), memory(&host)?));
    host.stop().await;

    println!("| host memory | RSS MB | peak RSS MB |");
    println!("|---|---:|---:|");
    for (what, (rss, peak)) in rows {
        println!("| {what} | {rss:.0} | {peak:.0} |");
    }
    println!();
    println!(
        "| `GET /api/v1/jobs?state=…` (a page of 50), {} jobs stored | p50 ms | p99 ms |",
        args.finished + args.pending
    );
    println!("|---|---:|---:|");
    for (state, mut times) in listings {
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize] * 1e3;
        println!("| {state} | {:.2} | {:.2} |", at(0.5), at(0.99));
    }
    Ok(())
}

/// The host's `VmRSS` and `VmHWM`, MB.
fn memory(host: &Host) -> anyhow::Result<(f64, f64)> {
    let pid = host.pid().context("the host has exited")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kib: f64 = line
            .split_whitespace()
            .nth(1)
            .context("bad /proc status line")?
            .parse()?;
        Ok(kib * 1024.0 / 1e6)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Seconds of each of `requests` GETs of `url` (after 3 untimed ones).
async fn time_get(http: &reqwest::Client, url: &str, requests: usize) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(requests);
    for i in 0..requests + 3 {
        let started = Instant::now();
        let response = http.get(url).send().await?.error_for_status()?;
        response.bytes().await?;
        if i >= 3 {
            times.push(started.elapsed().as_secs_f64());
        }
    }
    Ok(times)
}
