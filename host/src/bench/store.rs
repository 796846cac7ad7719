//! `hodei bench store`: the two store adapters side by side, and several
//! hosts sharing PostgreSQL.
//!
//! - durable submits/s with 1 and 64 clients, on redb and on PostgreSQL:
//!   real `hodei serve` processes, no agents, every 201 durable;
//! - claim+complete throughput on PostgreSQL with 2 hosts: each host has
//!   its own local agents, `true` jobs are submitted to both hosts by 64
//!   clients, timed until the two hosts together have finished them all.
//!
//! PostgreSQL figures need a server whose role may create databases
//! (`scripts/postgres.sh` starts one and prints its URL); each measurement
//! runs on a fresh scratch database, dropped afterwards.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use super::spine::{Host, finished, submit_load};
use crate::store::PgStore;

/// Arguments of `hodei bench store`.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// Jobs each submit round posts.
    #[arg(long, default_value_t = 10_000)]
    submits: usize,
    /// Client counts to measure submits with.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 64])]
    clients: Vec<usize>,
    /// PostgreSQL server (a role that may create databases).
    #[arg(long, env = "HODEI_TEST_DATABASE_URL")]
    database_url: String,
    /// Trivial jobs run end to end on the two hosts.
    #[arg(long, default_value_t = 5_000)]
    jobs: usize,
    /// Local agents per host.
    #[arg(long, default_value_t = 2)]
    agents_per_host: u32,
    /// Slots per local agent.
    #[arg(long, default_value_t = 8)]
    slots: u32,
}

/// Runs the benchmark and prints two tables.
pub async fn run(args: &StoreArgs) -> anyhow::Result<()> {
    let body = json!({ "args": ["true"] });
    println!(
        "| durable submits/s, {} jobs | redb | PostgreSQL |",
        args.submits
    );
    println!("|---|---:|---:|");
    for &clients in &args.clients {
        let host = Host::start_with(0, 1, &[]).await?;
        let redb = submit_load(&host.base, clients, args.submits, body.clone()).await?;
        host.stop().await;

        let url = PgStore::scratch_database(&args.database_url, "hodei_bench").await?;
        let host =
            Host::start_with(0, 1, &["--storage", "postgres", "--database-url", &url]).await?;
        let pg = submit_load(&host.base, clients, args.submits, body.clone()).await;
        host.stop().await;
        PgStore::drop_database(&args.database_url, &url).await?;
        println!("| {clients} client(s) | {redb:.0} | {:.0} |", pg?);
    }

    let url = PgStore::scratch_database(&args.database_url, "hodei_bench").await?;
    let result = two_hosts(args, &url).await;
    PgStore::drop_database(&args.database_url, &url).await?;
    let (rate, split) = result?;
    println!();
    println!(
        "| PostgreSQL, 2 hosts × {} agents × {} slots, {} jobs | figure |",
        args.agents_per_host, args.slots, args.jobs
    );
    println!("|---|---:|");
    println!("| claimed + completed `true` jobs/s | {rate:.0} |");
    println!(
        "| finished by host 1 / host 2 | {} / {} |",
        split.0, split.1
    );
    Ok(())
}

async fn two_hosts(args: &StoreArgs, url: &str) -> anyhow::Result<(f64, (u64, u64))> {
    let flags = ["--storage", "postgres", "--database-url", url];
    let one = Host::start_with(args.agents_per_host, args.slots, &flags).await?;
    let two = Host::start_with(args.agents_per_host, args.slots, &flags).await?;
    let http = reqwest::Client::new();
    one.wait_agents(args.agents_per_host).await?;
    two.wait_agents(args.agents_per_host).await?;
    let body = json!({ "args": ["true"] });
    let started = Instant::now();
    let half = args.jobs / 2;
    let (a, b) = tokio::join!(
        submit_load(&one.base, 32, half, body.clone()),
        submit_load(&two.base, 32, args.jobs - half, body),
    );
    a?;
    b?;
    let expected = u64::try_from(args.jobs)?;
    let split = loop {
        let split = (
            finished(&http, &one.base).await?,
            finished(&http, &two.base).await?,
        );
        if split.0 + split.1 >= expected {
            break split;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("jobs did not finish within 10 minutes ({split:?})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let rate = args.jobs as f64 / started.elapsed().as_secs_f64();
    one.stop().await;
    two.stop().await;
    Ok((rate, split))
}
